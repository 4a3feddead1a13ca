"""Advanced RPC: progressive call results, call canceling, call timeouts,
caller identification and call reroute.

autobahn-python specifics these tests rely on (see README):

- The callee gets autobahn's ``CallDetails`` only when it registered with
  ``RegisterOptions(details=True)`` (keyword ``details``) or
  ``details_arg="name"``; ``details.progress`` is a callable only when the
  INVOCATION carried ``receive_progress`` (the caller passed
  ``CallOptions(on_progress=...)``), else ``None``.
- ``call_future.cancel()`` sends ``CANCEL`` with empty Options (no ``mode``:
  the router's default, ``killnowait``, applies) and cancels the future
  locally, so the router's ERROR is only visible on the wire. autobahn has no
  API for a cancel mode; ``send_cancel()`` sends ``CANCEL`` with one by hand.
- An INTERRUPT cancels the callee's handler task (``CancelledError`` inside
  the coroutine); whatever the handler then returns or raises is sent as the
  invocation's YIELD/ERROR.
- ``CallOptions(timeout=...)`` is put on the wire verbatim, and
  ``message.Call`` only accepts an ``int``: it is milliseconds, as in the WAMP
  spec (``timeout=0.3`` fails client-side with an AssertionError). autobahn
  does not enforce it itself.
- Neither ``CallOptions`` nor ``RegisterOptions`` has ``disclose_me`` /
  ``disclose_caller``; they are added to the wire Options by hand.
"""

import asyncio
import time

import pytest
from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, CallResult, RegisterOptions

from _wamp import (
    CANCELED,
    NO_AVAILABLE_CALLEE,
    SHARED_POLICIES,
    TIMEOUT,
    TIMEOUT_ERROR,
    UNAVAILABLE,
    assert_same,
    bounded,
    call_error_for,
    expect_error,
    extra_options,
    new_uri,
    raw_register,
    record_sent,
    replies_to_call,
    send_cancel,
    start_call,
)

# -- helpers --------------------------------------------------------------------


class Blocking:
    """An async callee that blocks until released, and records whether its
    handler was cancelled (by an INTERRUPT).

    ``on_cancel`` decides what the interrupted handler answers: ``None``
    re-raises the CancelledError (autobahn then sends ERROR
    wamp.error.runtime_error), a callable's return value is YIELDed, an
    exception it raises is sent as ERROR.
    A call with the single argument ``"fast"`` answers at once.
    """

    def __init__(self, name: str, on_cancel=None):
        self.name = name
        self.on_cancel = on_cancel
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.running = 0
        self._release = asyncio.Event()

    def release(self):
        self._release.set()

    async def __call__(self, *args, **kwargs):
        if args == ("fast",):
            return f"{self.name}:fast"
        self.running += 1
        self.started.set()
        try:
            await self._release.wait()
            return f"{self.name}:released"
        except asyncio.CancelledError:
            self.cancelled.set()
            if self.on_cancel is None:
                raise
            return self.on_cancel()
        finally:
            self.running -= 1


async def _blocking_callee(wamp, ser, uri, name="callee", invoke=None, on_cancel=None):
    session = await wamp.connect(ser, name)
    handler = Blocking(name, on_cancel)
    wamp.on_cleanup(handler.release)
    opts = RegisterOptions(invoke=invoke) if invoke else None
    await bounded(session.register(handler, uri, options=opts), f"REGISTER {uri} by {name}")
    # a second procedure on the same session, to flush its message queue:
    # an answer to it arrives after anything the router sent it before
    ping_uri = f"{uri}.ping_{name}"
    await bounded(session.register(lambda: "pong", ping_uri), f"REGISTER ping by {name}")
    session.ping_uri = ping_uri
    return session, handler


async def _flush(caller, callee, what: str):
    """A round trip to ``callee`` through the router: whatever the router queued
    for ``callee`` before this call has reached it afterwards."""
    assert await bounded(caller.call(callee.ping_uri), f"ping {callee.name} ({what})") == "pong"


def _interrupts(session) -> list:
    return session.received(message.Interrupt)


# -- progressive call results -------------------------------------------------------


async def test_progressive_results(wamp, ser):
    uri = new_uri("progress")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")
    n = 5

    async def produce(count, details=None):
        assert details is not None and callable(details.progress), (
            f"no progress callable in the callee's details: {details}"
        )
        for i in range(count):
            details.progress(i, b"\x00" * i, step=i)
            await asyncio.sleep(0)
        return CallResult("final", total=count)

    await bounded(callee.register(produce, uri, options=RegisterOptions(details=True)), "REGISTER")

    seen = []
    fut, rid = start_call(
        caller,
        uri,
        n,
        options=CallOptions(on_progress=lambda *a, **k: seen.append(("progress", list(a), k))),
    )
    res = await bounded(fut, "progressive CALL")
    seen.append(("final", list(res.results), dict(res.kwresults)))

    assert_same(
        [("progress", [i, b"\x00" * i], {"step": i}) for i in range(n)]
        + [("final", ["final"], {"total": n})],
        seen,
        "progressive results, then the final result",
    )
    results = [m for m in replies_to_call(caller, rid)]
    assert [bool(m.progress) for m in results] == [True] * n + [False], (
        f"RESULT.Details.progress flags on the wire: {[m.progress for m in results]}"
    )
    # the INVOCATION asked the callee for progress
    inv = callee.received(message.Invocation)
    assert len(inv) == 1 and inv[0].receive_progress is True, (
        f"INVOCATION.Details.receive_progress: {[m.receive_progress for m in inv]}"
    )


async def test_no_progress_unless_the_caller_asks(wamp, ser):
    uri = new_uri("no_progress")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")
    progress_callables = []

    def plain(details=None):
        progress_callables.append(details.progress)
        return "plain"

    await bounded(callee.register(plain, uri, options=RegisterOptions(details=True)), "REGISTER")
    assert await bounded(caller.call(uri), "CALL without on_progress") == "plain"
    assert progress_callables == [None], (
        "the callee was offered progress although the caller did not ask for it"
    )


async def test_progress_then_error(wamp, ser):
    uri = new_uri("progress_error")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")

    async def fail_late(details=None):
        details.progress("working")
        details.progress("still working")
        await asyncio.sleep(0)
        raise ApplicationError("com.example.failed_late", "gave up")

    await bounded(callee.register(fail_late, uri, options=RegisterOptions(details=True)), "REGISTER")
    progress = []
    e = await expect_error(
        caller.call(uri, options=CallOptions(on_progress=lambda *a: progress.append(a[0]))),
        "com.example.failed_late",
        "progressive CALL ending in an error",
    )
    assert list(e.args) == ["gave up"]
    assert progress == ["working", "still working"]


# -- call canceling -----------------------------------------------------------------


async def test_cancel_autobahn_default(wamp, ser):
    """``future.cancel()``: autobahn sends CANCEL without a mode; the router
    treats it as killnowait: the caller gets ERROR wamp.error.canceled at
    once and the callee an INTERRUPT that cancels its handler."""
    uri = new_uri("cancel_default")
    callee, handler = await _blocking_callee(wamp, ser, uri)
    caller = await wamp.connect(ser, "caller")

    fut, rid = start_call(caller, uri)
    await bounded(handler.started.wait(), "INVOCATION to reach the callee")
    with record_sent(caller) as sent:
        fut.cancel()
        await caller.wait_received(
            message.Error, call_error_for(rid), "ERROR for the canceled CALL"
        )
    cancels = [m for m in sent if isinstance(m, message.Cancel)]
    assert len(cancels) == 1 and cancels[0].request == rid and cancels[0].mode is None, (
        f"autobahn's future.cancel() sent {[(m.request, m.mode) for m in cancels]}"
    )
    assert fut.cancelled()
    (err,) = replies_to_call(caller, rid)
    assert isinstance(err, message.Error) and err.error == CANCELED, (
        f"reply to the canceled CALL: {err}"
    )

    await bounded(handler.cancelled.wait(), "the callee's handler to be cancelled (INTERRUPT)")
    (interrupt,) = _interrupts(callee)
    assert interrupt.mode == "killnowait", f"INTERRUPT.Options.mode {interrupt.mode!r}"

    # the callee's late ERROR (runtime_error from the cancelled task) is dropped:
    # the caller got exactly one reply and is still connected
    await _flush(caller, callee, "after the cancel")
    assert len(replies_to_call(caller, rid)) == 1, replies_to_call(caller, rid)
    assert await bounded(caller.call(uri, "fast"), "CALL after the cancel") == "callee:fast"


async def test_cancel_mode_killnowait(wamp, ser):
    uri = new_uri("cancel_killnowait")

    def too_late():
        raise ApplicationError("com.example.too_late")

    callee, handler = await _blocking_callee(wamp, ser, uri, on_cancel=too_late)
    caller = await wamp.connect(ser, "caller")

    fut, rid = start_call(caller, uri)
    await bounded(handler.started.wait(), "INVOCATION to reach the callee")
    send_cancel(caller, rid, "killnowait")
    e = await expect_error(fut, CANCELED, "CALL canceled with mode killnowait")
    assert e.error == CANCELED
    await bounded(handler.cancelled.wait(), "the callee's handler to be cancelled")
    (interrupt,) = _interrupts(callee)
    assert interrupt.mode == "killnowait", f"INTERRUPT.Options.mode {interrupt.mode!r}"
    # the callee's own answer to the INTERRUPT is not forwarded
    await _flush(caller, callee, "after the cancel")
    assert len(replies_to_call(caller, rid)) == 1, replies_to_call(caller, rid)


@pytest.mark.parametrize("callee_answer", ["error", "result"])
async def test_cancel_mode_kill(wamp, ser, callee_answer):
    """kill: the callee is interrupted and the caller gets whatever the callee
    answers to the INTERRUPT (not an error made up by the router)."""
    uri = new_uri("cancel_kill")

    def answer():
        if callee_answer == "error":
            raise ApplicationError(CANCELED, "stopped by the callee", at=b"\x07")
        return "partial result"

    callee, handler = await _blocking_callee(wamp, ser, uri, on_cancel=answer)
    caller = await wamp.connect(ser, "caller")

    fut, rid = start_call(caller, uri)
    await bounded(handler.started.wait(), "INVOCATION to reach the callee")
    send_cancel(caller, rid, "kill")
    if callee_answer == "error":
        e = await expect_error(fut, CANCELED, "CALL canceled with mode kill")
        assert_same(["stopped by the callee"], list(e.args), "the callee's error args")
        assert_same({"at": b"\x07"}, dict(e.kwargs), "the callee's error kwargs")
    else:
        res = await bounded(fut, "CALL canceled with mode kill, callee answers with a result")
        assert res == "partial result"
    assert handler.cancelled.is_set()
    (interrupt,) = _interrupts(callee)
    assert interrupt.mode == "kill", f"INTERRUPT.Options.mode {interrupt.mode!r}"
    assert len(replies_to_call(caller, rid)) == 1, replies_to_call(caller, rid)


async def test_cancel_mode_skip(wamp, ser):
    """skip: the caller gets ERROR wamp.error.canceled at once; the callee is
    not told, and its later YIELD is dropped."""
    uri = new_uri("cancel_skip")
    callee, handler = await _blocking_callee(wamp, ser, uri)
    caller = await wamp.connect(ser, "caller")

    fut, rid = start_call(caller, uri)
    await bounded(handler.started.wait(), "INVOCATION to reach the callee")
    send_cancel(caller, rid, "skip")
    await expect_error(fut, CANCELED, "CALL canceled with mode skip")

    await _flush(caller, callee, "after the skip cancel")
    assert _interrupts(callee) == [], "callee got an INTERRUPT for a skip-mode cancel"
    assert not handler.cancelled.is_set() and handler.running == 1

    # the callee finishes anyway; its YIELD must not reach the caller
    # (autobahn would drop the connection on a RESULT for an unknown request)
    handler.release()
    await _flush(caller, callee, "after the callee answered")
    assert handler.running == 0
    assert len(replies_to_call(caller, rid)) == 1, replies_to_call(caller, rid)
    assert caller.is_connected() and not caller.gone.done()


async def test_cancel_after_the_result_is_ignored(wamp, ser):
    """A CANCEL for a call that was already answered gets no reply (autobahn
    would drop the connection on an ERROR for a request it no longer has)."""
    uri = new_uri("cancel_late")
    callee, _ = await _blocking_callee(wamp, ser, uri)
    caller = await wamp.connect(ser, "caller")
    fut, rid = start_call(caller, uri, "fast")
    assert await bounded(fut, "CALL") == "callee:fast"
    for mode in ("killnowait", "kill", "skip"):
        send_cancel(caller, rid, mode)
    await _flush(caller, callee, "after the late CANCELs")
    assert caller.is_connected() and not caller.gone.done()
    assert len(replies_to_call(caller, rid)) == 1, replies_to_call(caller, rid)
    assert _interrupts(callee) == []


async def test_cancel_skip_drops_later_progress(wamp, ser):
    """skip-mode cancel of a progressive call: progress sent before the cancel
    reaches the caller, progress and the final result sent after it don't."""
    uri = new_uri("cancel_skip_progress")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")
    go_on = asyncio.Event()
    finished = asyncio.Event()
    wamp.on_cleanup(go_on.set)

    async def chatty(details=None):
        details.progress("before")
        await go_on.wait()
        details.progress("after")
        finished.set()
        return "final"

    await bounded(callee.register(chatty, uri, options=RegisterOptions(details=True)), "REGISTER")
    callee.ping_uri = new_uri("ping")
    await bounded(callee.register(lambda: "pong", callee.ping_uri), "REGISTER ping")

    progress = []
    fut, rid = start_call(
        caller, uri, options=CallOptions(on_progress=lambda *a: progress.append(a[0]))
    )
    await caller.wait_received(message.Result, lambda m: m.request == rid, "the first progress")
    send_cancel(caller, rid, "skip")
    await expect_error(fut, CANCELED, "progressive CALL canceled with mode skip")
    go_on.set()
    await bounded(finished.wait(), "the callee to finish")
    await _flush(caller, callee, "after the callee's late progress and result")
    assert progress == ["before"], f"progress after a skip cancel reached the caller: {progress}"
    assert [type(m).__name__ for m in replies_to_call(caller, rid)] == ["Result", "Error"], (
        replies_to_call(caller, rid)
    )
    assert caller.is_connected() and not caller.gone.done()


@pytest.mark.parametrize("victim", ["A", "B"])
async def test_cancel_interrupts_only_the_running_member(wamp, ser, victim):
    """roundrobin A, B: one call runs at each; canceling one interrupts only
    the member running it, the other call completes normally."""
    uri = new_uri("cancel_shared")
    a, ha = await _blocking_callee(wamp, ser, uri, name="A", invoke="roundrobin")
    b, hb = await _blocking_callee(wamp, ser, uri, name="B", invoke="roundrobin")
    caller = await wamp.connect(ser, "caller")
    members = {"A": (a, ha), "B": (b, hb)}

    fut_a, rid_a = start_call(caller, uri)
    await bounded(ha.started.wait(), "first call to reach A")
    fut_b, rid_b = start_call(caller, uri)
    await bounded(hb.started.wait(), "second call to reach B")
    calls = {"A": (fut_a, rid_a), "B": (fut_b, rid_b)}
    survivor = "B" if victim == "A" else "A"

    v_fut, v_rid = calls[victim]
    v_fut.cancel()
    await caller.wait_received(
        message.Error, call_error_for(v_rid, CANCELED), f"ERROR canceled for {victim}'s call"
    )
    v_session, v_handler = members[victim]
    await bounded(v_handler.cancelled.wait(), f"{victim}'s handler to be cancelled")
    assert len(_interrupts(v_session)) == 1

    s_session, s_handler = members[survivor]
    await _flush(caller, s_session, f"{survivor} after the cancel")
    assert _interrupts(s_session) == [], f"{survivor} was interrupted for {victim}'s call"
    assert not s_handler.cancelled.is_set() and s_handler.running == 1

    s_handler.release()
    s_fut, _ = calls[survivor]
    assert await bounded(s_fut, f"{survivor}'s call") == f"{survivor}:released"


# -- call timeout ---------------------------------------------------------------------


async def test_timeout(wamp, ser):
    """CallOptions(timeout=300): 300 ms on the wire; the caller gets
    wamp.error.timeout after about that long, the callee an INTERRUPT."""
    uri = new_uri("timeout")
    callee, handler = await _blocking_callee(wamp, ser, uri)
    caller = await wamp.connect(ser, "caller")

    with record_sent(caller) as sent:
        t0 = time.monotonic()
        fut, rid = start_call(caller, uri, options=CallOptions(timeout=300))
    (call,) = [m for m in sent if isinstance(m, message.Call)]
    assert call.timeout == 300 and type(call.timeout) is int, f"CALL.Options.timeout {call.timeout!r}"

    await expect_error(fut, TIMEOUT_ERROR, "CALL with timeout=300 to a callee that never answers")
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < TIMEOUT, f"timeout of 300 ms fired after {elapsed:.3f}s"
    await bounded(handler.cancelled.wait(), "the callee's handler to be cancelled on timeout")
    (interrupt,) = _interrupts(callee)
    assert interrupt.mode == "killnowait", f"INTERRUPT.Options.mode {interrupt.mode!r}"
    assert interrupt.reason in (None, TIMEOUT_ERROR), f"INTERRUPT.Options.reason {interrupt.reason!r}"

    await _flush(caller, callee, "after the timeout")
    assert len(replies_to_call(caller, rid)) == 1, replies_to_call(caller, rid)


async def test_timeout_after_progress(wamp, ser):
    """A progressive call that runs past its timeout: the progress so far
    reaches the caller, then wamp.error.timeout, and the callee is interrupted."""
    uri = new_uri("timeout_progress")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")
    interrupted = asyncio.Event()

    async def slow(details=None):
        details.progress(1)
        details.progress(2)
        try:
            await asyncio.sleep(TIMEOUT * 2)
        except asyncio.CancelledError:
            interrupted.set()
            raise
        return "too late"

    await bounded(callee.register(slow, uri, options=RegisterOptions(details=True)), "REGISTER")
    progress = []
    await expect_error(
        caller.call(
            uri, options=CallOptions(timeout=200, on_progress=lambda *a: progress.append(a[0]))
        ),
        TIMEOUT_ERROR,
        "progressive CALL with timeout=200",
    )
    assert progress == [1, 2]
    await bounded(interrupted.wait(), "the callee's handler to be cancelled on timeout")


async def test_timeout_not_reached(wamp, ser):
    uri = new_uri("timeout_ok")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")

    async def quick(x):
        await asyncio.sleep(0.05)
        return x * 2

    await bounded(callee.register(quick, uri), "REGISTER")
    got = await bounded(caller.call(uri, 21, options=CallOptions(timeout=3000)), "CALL in time")
    assert got == 42
    assert callee.received(message.Interrupt) == []


# -- caller identification ---------------------------------------------------------------


def _identity_handler(details=None):
    return [details.caller, details.caller_authid, details.caller_authrole]


async def test_caller_disclose_me(wamp, ser):
    """CALL.Options.disclose_me=true -> INVOCATION.Details.caller /
    caller_authid / caller_authrole (autobahn: details.caller etc. with
    RegisterOptions(details=True)); absent or false -> not disclosed."""
    uri = new_uri("disclose")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")
    await bounded(
        callee.register(_identity_handler, uri, options=RegisterOptions(details=True)), "REGISTER"
    )

    with extra_options(caller, message.Call, disclose_me=True):
        fut = caller.call(uri)
    got = await bounded(fut, "CALL with disclose_me")
    assert got == [caller.session_id, f"anonymous-{caller.session_id}", "anonymous"], got

    assert await bounded(caller.call(uri), "CALL") == [None, None, None]
    with extra_options(caller, message.Call, disclose_me=False):
        fut = caller.call(uri)
    assert await bounded(fut, "CALL with disclose_me=false") == [None, None, None]


async def test_callee_asks_for_caller_disclosure(wamp, ser):
    """REGISTER.Options.disclose_caller=true: every call to this callee names
    its caller (autobahn's RegisterOptions has no such option)."""
    uri = new_uri("disclose_caller")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")
    await raw_register(
        callee, uri, {"disclose_caller": True}, handler=_identity_handler, details_arg="details"
    )
    got = await bounded(caller.call(uri), "CALL without disclose_me")
    assert got == [caller.session_id, f"anonymous-{caller.session_id}", "anonymous"], got


# -- call reroute --------------------------------------------------------------------------


async def _reroute_members(wamp, ser, uri, invoke, unavailable: set, names=("A", "B", "C")):
    """Members that answer with their name, or raise wamp.error.unavailable
    while they are in ``unavailable``; ``tries`` counts invocations."""
    tries = {n: 0 for n in names}

    def member(name):
        def handler():
            tries[name] += 1
            if name in unavailable:
                raise ApplicationError(UNAVAILABLE, f"{name} is busy")
            return name

        return handler

    opts = RegisterOptions(invoke=invoke) if invoke else None
    for n in names:
        s = await wamp.connect(ser, n)
        await bounded(s.register(member(n), uri, options=opts), f"REGISTER {n}")
    return tries


REROUTES = [
    # rule, unavailable members, who answers each call, invocations per member
    ("first", {"A"}, ["B", "B", "B"], {"A": 3, "B": 3, "C": 0}),
    ("first", {"A", "B"}, ["C", "C", "C"], {"A": 3, "B": 3, "C": 3}),
    ("last", {"C"}, ["B", "B", "B"], {"A": 0, "B": 3, "C": 3}),
    ("last", {"C", "B"}, ["A", "A", "A"], {"A": 3, "B": 3, "C": 3}),
    # the rotation goes on after the member that served the call
    ("roundrobin", {"A"}, ["B", "C", "B", "C"], {"A": 2, "B": 2, "C": 2}),
    ("roundrobin", {"B"}, ["A", "C", "A", "C"], {"A": 2, "B": 2, "C": 2}),
]


@pytest.mark.parametrize(
    "invoke,unavailable,answers,tries",
    REROUTES,
    ids=[f"{r[0]}-{''.join(sorted(r[1]))}" for r in REROUTES],
)
async def test_reroute(wamp, ser, invoke, unavailable, answers, tries):
    """A member answering wamp.error.unavailable makes the router try the next
    one by the rule: first -> the one after, last -> the one before,
    roundrobin -> the next in the rotation."""
    uri = new_uri(f"reroute_{invoke}")
    unavailable = set(unavailable)
    counts = await _reroute_members(wamp, ser, uri, invoke, unavailable)
    caller = await wamp.connect(ser, "caller")
    got = [await bounded(caller.call(uri), f"CALL #{i + 1}") for i in range(len(answers))]
    assert got == answers, f"{invoke} with {sorted(unavailable)} unavailable: answered by {got}"
    assert counts == tries, f"invocations per member: {counts}"

    # once available again, the preferred member serves again
    unavailable.clear()
    expected = {"first": "A", "last": "C"}.get(invoke)
    if expected:
        assert await bounded(caller.call(uri), "CALL after recovery") == expected


async def test_reroute_keeps_the_call_options(wamp, ser):
    """The member a call is rerouted to gets the caller's options too: the
    caller disclosed, progress on."""
    uri = new_uri("reroute_options")
    a = await wamp.connect(ser, "A")
    b = await wamp.connect(ser, "B")
    caller = await wamp.connect(ser, "caller")
    seen = {}

    def busy(details=None):
        seen["A"] = details.caller
        raise ApplicationError(UNAVAILABLE)

    async def serve(details=None):
        seen["B"] = details.caller
        details.progress("B working")
        return "B"

    opts = RegisterOptions(invoke="first", details=True)
    await bounded(a.register(busy, uri, options=opts), "REGISTER A")
    await bounded(b.register(serve, uri, options=opts), "REGISTER B")
    progress = []
    with extra_options(caller, message.Call, disclose_me=True):
        fut = caller.call(uri, options=CallOptions(on_progress=progress.append))
    assert await bounded(fut, "rerouted CALL") == "B"
    assert seen == {"A": caller.session_id, "B": caller.session_id}, seen
    assert progress == ["B working"]


async def test_reroute_random(wamp, ser):
    uri = new_uri("reroute_random")
    unavailable = {"A", "B"}
    counts = await _reroute_members(wamp, ser, uri, "random", unavailable)
    caller = await wamp.connect(ser, "caller")
    got = [await bounded(caller.call(uri), f"CALL #{i + 1}") for i in range(20)]
    assert got == ["C"] * 20, got
    assert counts["C"] == 20 and counts["A"] <= 20 and counts["B"] <= 20, counts


@pytest.mark.parametrize("invoke", SHARED_POLICIES)
async def test_all_unavailable(wamp, ser, invoke):
    """Every member answers unavailable -> wamp.error.no_available_callee,
    after each member was tried exactly once."""
    uri = new_uri(f"all_unavailable_{invoke}")
    counts = await _reroute_members(wamp, ser, uri, invoke, {"A", "B", "C"})
    caller = await wamp.connect(ser, "caller")
    await expect_error(caller.call(uri), NO_AVAILABLE_CALLEE, f"CALL ({invoke}, all unavailable)")
    assert counts == {"A": 1, "B": 1, "C": 1}, f"invocations per member: {counts}"
    await expect_error(caller.call(uri), NO_AVAILABLE_CALLEE, "second CALL")
    assert counts == {"A": 2, "B": 2, "C": 2}, f"invocations per member: {counts}"


async def test_single_callee_unavailable(wamp, ser):
    uri = new_uri("single_unavailable")
    counts = await _reroute_members(wamp, ser, uri, None, {"A"}, names=("A",))
    caller = await wamp.connect(ser, "caller")
    await expect_error(caller.call(uri), NO_AVAILABLE_CALLEE, "CALL to an unavailable sole callee")
    assert counts == {"A": 1}
