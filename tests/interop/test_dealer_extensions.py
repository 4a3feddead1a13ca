"""Roundhouse's dealer extensions from autobahn-python: its ``RegisterOptions(concurrency=...)``
(the router holds further calls in the registration's queue) and ``force_reregister`` (refused for
anonymous sessions, as a stale registration is replaced only for the same authenticated authid).
"""

import asyncio

from autobahn.wamp.types import RegisterOptions

from _wamp import bounded, expect_error, new_uri


async def _until(condition, what: str):
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_concurrency_option_queues_further_calls(wamp, ser):
    uri = new_uri("concurrency")
    callee = await wamp.connect(ser, "A")
    waiting = []

    async def handler():
        answer = asyncio.get_running_loop().create_future()
        waiting.append(answer)
        return await answer

    options = RegisterOptions(invoke="roundrobin", concurrency=1)
    await bounded(callee.register(handler, uri, options=options), f"REGISTER {uri}")
    caller = await wamp.connect(ser, "caller")
    first = asyncio.ensure_future(caller.call(uri))
    second = asyncio.ensure_future(caller.call(uri))
    await _until(lambda: len(waiting) == 1, "the first invocation")
    await asyncio.sleep(0.1)
    assert len(waiting) == 1, "the second call waits in the router's queue"
    waiting[0].set_result("first")
    assert await bounded(first, "first result") == "first"
    await _until(lambda: len(waiting) == 2, "the second invocation")
    waiting[1].set_result("second")
    assert await bounded(second, "second result") == "second"


async def test_force_reregister_never_replaces_for_anonymous_sessions(wamp, ser):
    uri = new_uri("force")
    first = await wamp.connect(ser, "A")
    await bounded(first.register(lambda: "A", uri), f"REGISTER {uri}")
    second = await wamp.connect(ser, "B")
    options = RegisterOptions(force_reregister=True)
    await expect_error(
        second.register(lambda: "B", uri, options=options),
        "wamp.error.procedure_already_exists",
        "force_reregister by another anonymous session",
    )
    caller = await wamp.connect(ser, "caller")
    assert await bounded(caller.call(uri), "the first callee still serves") == "A"
