"""Shared helpers for the Roundhouse third-party interop suite.

Every session is a plain autobahn-python asyncio ``ApplicationSession``
connected with ``ApplicationRunner(...).run(make, start_loop=False)`` -- i.e.
exactly what a new user gets from autobahn's defaults -- except that the
serializer list is pinned to a single serializer, so that each scenario runs
once per *transport*: WebSocket (``ws://.../ws``, subprotocol
``wamp.2.<serializer>``) or RawSocket (``rs://host:port``, the same port: the
router tells them apart by the first octet, 0x7F for RawSocket) times JSON,
MessagePack and CBOR. A transport is named ``"<ws|rs>-<serializer>"``
(``"ws-json"``, ``"rs-cbor"``, ...); a bare serializer name means WebSocket.

Everything that waits on the router goes through :func:`bounded`, so a broken
router fails a test within a few seconds instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from typing import Any, Callable
from urllib.parse import urlparse

import txaio

txaio.use_asyncio()

from autobahn.asyncio.rawsocket import WampRawSocketClientProtocol  # noqa: E402
from autobahn.asyncio.wamp import ApplicationRunner, ApplicationSession  # noqa: E402
from autobahn.wamp import message  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.request import Endpoint, RegisterRequest, UnregisterRequest  # noqa: E402
from autobahn.wamp.serializer import (  # noqa: E402
    CBORSerializer,
    JsonSerializer,
    MsgPackSerializer,
)
from autobahn.wamp.types import (  # noqa: E402
    CallResult,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)

URL = os.environ.get("ROUNDHOUSE_URL", "ws://127.0.0.1:8080/ws")


def _rawsocket_url(ws_url: str) -> str:
    """RawSocket is served on the WebSocket port: ws://h:p/ws -> rs://h:p.

    autobahn's asyncio ApplicationRunner takes RawSocket URLs of the form
    ``rs://host:port`` (``rss://`` for TLS) -- no path, no query -- and then
    speaks RawSocket with the *first* serializer of its ``serializers`` list.
    """
    u = urlparse(ws_url)
    scheme = "rss" if u.scheme == "wss" else "rs"
    port = u.port or (443 if u.scheme == "wss" else 80)
    return f"{scheme}://{u.hostname}:{port}"


RS_URL = os.environ.get("ROUNDHOUSE_RS_URL") or _rawsocket_url(URL)
REALM = os.environ.get("ROUNDHOUSE_REALM", "realm1")
# Upper bound for any single await on the router.
TIMEOUT = float(os.environ.get("INTEROP_TIMEOUT", "5"))
# After an *abrupt* drop (no GOODBYE) the router learns about it on the dropped
# connection, which races with the caller's next CALL on another connection.
# Give it this long to notice before asserting the failover target.
SETTLE = float(os.environ.get("INTEROP_SETTLE", "0.3"))

SERIALIZERS = {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}

# Every scenario parametrized with the ``ser`` fixture runs over each of these.
TRANSPORTS = [
    "ws-json",
    "ws-msgpack",
    "ws-cbor",
    "rs-json",
    "rs-msgpack",
    "rs-cbor",
]


def parse_transport(spec: str) -> tuple[str, str]:
    """``"rs-cbor"`` -> ``("rs", "cbor")``; a bare serializer means WebSocket."""
    kind, _, ser = spec.rpartition("-")
    kind = kind or "ws"
    if kind not in ("ws", "rs") or ser not in SERIALIZERS:
        raise ValueError(f"unknown transport {spec!r} (use e.g. ws-json, rs-cbor)")
    return kind, ser

# The ways a callee can stop being a member of a registration.
#   unregister: UNREGISTER, session stays joined
#   goodbye:    session.leave() -> WAMP GOODBYE, then the transport closes
#   ws_close:   WebSocket close handshake without any WAMP GOODBYE
#   tcp_abort:  asyncio transport.abort() - TCP connection torn down, no
#               WebSocket close frame, no GOODBYE
LEAVE_KINDS = ["unregister", "goodbye", "ws_close", "tcp_abort"]
DROP_KINDS = ["goodbye", "ws_close", "tcp_abort"]

SHARED_POLICIES = ["roundrobin", "random", "first", "last"]

# WAMP error URIs the router must use.
NO_SUCH_PROCEDURE = "wamp.error.no_such_procedure"
NO_SUCH_REGISTRATION = "wamp.error.no_such_registration"
PROCEDURE_ALREADY_EXISTS = "wamp.error.procedure_already_exists"
DIFFERENT_POLICY = "wamp.error.procedure_exists_with_different_invocation_policy"
INVALID_ARGUMENT = "wamp.error.invalid_argument"
CANCELED = "wamp.error.canceled"
TIMEOUT_ERROR = "wamp.error.timeout"
UNAVAILABLE = "wamp.error.unavailable"
NO_AVAILABLE_CALLEE = "wamp.error.no_available_callee"

_uri_counter = itertools.count(1)


def new_uri(tag: str) -> str:
    """A procedure URI unique to this test run (tests never share state)."""
    return f"com.roundhouse.interop.{tag}.p{next(_uri_counter)}_{uuid.uuid4().hex[:10]}"


async def bounded(awaitable, what: str, timeout: float = TIMEOUT):
    """Await ``awaitable`` for at most ``timeout`` seconds; fail the test otherwise."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise AssertionError(
            f"router did not answer within {timeout:.1f}s: {what}"
        ) from None


async def expect_error(awaitable, uri: str, what: str) -> ApplicationError:
    """Await ``awaitable`` (bounded) and require an ApplicationError with ``uri``."""
    try:
        res = await bounded(awaitable, what)
    except ApplicationError as e:
        assert e.error == uri, (
            f"{what}: expected error {uri!r}, got {e.error!r} "
            f"(args={list(e.args)!r}, kwargs={e.kwargs!r})"
        )
        return e
    raise AssertionError(f"{what}: expected error {uri!r}, but it succeeded with {res!r}")


class Client(ApplicationSession):
    """An ApplicationSession that exposes join/leave/disconnect as futures and
    records every WAMP message it receives (``wire``), in arrival order."""

    def __init__(self, config):
        super().__init__(config)
        loop = asyncio.get_running_loop()
        self.name: str = config.extra.get("name", "?")
        self.spec: str = config.extra.get("spec", "?")
        self.joined: asyncio.Future = loop.create_future()
        self.gone: asyncio.Future = loop.create_future()
        self.leave_details = None
        self.welcome = None
        self.wire: list = []
        self._wire_waiters: list[tuple[Callable[[Any], bool], asyncio.Future]] = []

    def onConnect(self):
        # With an "auth" entry in extra (see connect()), join with its authmethods, authid and
        # authextra and answer CHALLENGE with its on_challenge; otherwise anonymously.
        auth = self.config.extra.get("auth")
        if not auth:
            return super().onConnect()
        self.join(
            self.config.realm,
            authmethods=auth["authmethods"],
            authid=auth.get("authid"),
            authextra=auth.get("authextra"),
        )

    def onChallenge(self, challenge):
        return self.config.extra["auth"]["on_challenge"](challenge)

    def onJoin(self, details):
        self.welcome = details
        if not self.joined.done():
            self.joined.set_result(details)

    def onMessage(self, msg):
        self.wire.append(msg)
        if self._wire_waiters:
            still = []
            for pred, fut in self._wire_waiters:
                if fut.done():
                    continue
                try:
                    hit = pred(msg)
                except Exception as e:  # a broken predicate fails its waiter
                    fut.set_exception(e)
                    continue
                if hit:
                    fut.set_result(msg)
                else:
                    still.append((pred, fut))
            self._wire_waiters = still
        return super().onMessage(msg)

    def onLeave(self, details):
        self.leave_details = details
        if not self.joined.done():
            self.joined.set_exception(
                ConnectionError(
                    f"session {self.name} closed before WELCOME: "
                    f"{details.reason} {details.message or ''}"
                )
            )
        return super().onLeave(details)

    def onDisconnect(self):
        super().onDisconnect()
        if not self.joined.done():
            self.joined.set_exception(
                ConnectionError(f"transport of {self.name} closed before WELCOME")
            )
        if not self.gone.done():
            self.gone.set_result(True)

    # -- helpers -----------------------------------------------------------

    @property
    def session_id(self) -> int:
        return self.welcome.session

    @property
    def authid(self) -> str:
        return self.welcome.authid

    @property
    def authrole(self) -> str:
        return self.welcome.authrole

    @property
    def serializer_id(self) -> str | None:
        t = self._transport
        return t._serializer.SERIALIZER_ID if t is not None else None

    @property
    def transport_kind(self) -> str | None:
        t = self._transport
        if t is None:
            return None
        return "rs" if isinstance(t, WampRawSocketClientProtocol) else "ws"

    def tcp_transport(self):
        """The underlying asyncio transport of the WebSocket/RawSocket connection."""
        return self._transport.transport

    def received(self, cls, pred: Callable[[Any], bool] | None = None) -> list:
        """Messages of type ``cls`` received so far (matching ``pred``)."""
        return [m for m in self.wire if isinstance(m, cls) and (pred is None or pred(m))]

    async def wait_received(self, cls, pred: Callable[[Any], bool] | None, what: str):
        """Wait (bounded) for a received message of type ``cls`` matching ``pred``,
        including one that already arrived; returns it."""
        match = lambda m: isinstance(m, cls) and (pred is None or pred(m))  # noqa: E731
        for m in self.wire:
            if match(m):
                return m
        fut = asyncio.get_running_loop().create_future()
        self._wire_waiters.append((match, fut))
        return await bounded(fut, f"{self.name}: {what}")


async def connect(
    spec: str, name: str, realm: str = REALM, auth: dict | None = None, url: str | None = None
) -> Client:
    """Connect + join one session with autobahn's defaults over one transport
    (``"ws-json"``, ``"rs-cbor"``, ...; a bare serializer name means WebSocket).
    ``auth``: ``{"authmethods", "authid", "authextra", "on_challenge"}`` to authenticate.
    ``url``: another router's WebSocket URL (a cluster node) instead of the suite's."""
    kind, serializer = parse_transport(spec)
    if url is None:
        url = URL if kind == "ws" else RS_URL
    elif kind == "rs":
        url = _rawsocket_url(url)
    what = "WebSocket opening handshake" if kind == "ws" else "RawSocket handshake"
    loop = asyncio.get_running_loop()
    created: asyncio.Future = loop.create_future()

    def make(cfg):
        s = Client(cfg)
        if not created.done():
            created.set_result(s)
        return s

    runner = ApplicationRunner(
        url,
        realm,
        extra={"name": name, "spec": spec, "auth": auth},
        serializers=[SERIALIZERS[serializer]()],
    )
    _transport, proto = await bounded(
        runner.run(make, start_loop=False), f"TCP connect of session {name} to {url}"
    )
    # the session object is created once the WebSocket opening handshake /
    # the RawSocket handshake is done
    done, _ = await asyncio.wait(
        [created, proto.is_closed], timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    if created not in done:
        try:
            proto.transport.abort()
        except Exception:
            pass
        if proto.is_closed in done:
            if kind == "ws":
                why = (
                    f"wrong path, subprotocol wamp.2.{serializer} refused, or no answer "
                    f"within autobahn's 2.5 s openHandshakeTimeout"
                )
            else:
                why = f"RawSocket serializer {serializer} refused or handshake rejected"
            raise AssertionError(
                f"{what} of {name} ({spec}) to {url} failed: connection closed "
                f"before it completed ({why})"
            )
        raise AssertionError(f"{what} of {name} ({spec}) to {url} timed out")
    session: Client = created.result()
    await bounded(asyncio.shield(session.joined), f"HELLO/WELCOME of session {name} ({spec})")
    assert session.serializer_id == serializer, (
        f"negotiated serializer {session.serializer_id!r}, expected {serializer!r}"
    )
    assert session.transport_kind == kind, (
        f"session {name} runs over {session.transport_kind!r}, expected {kind!r}"
    )
    return session


class Wamp:
    """Per-test session pool; everything it opened is torn down afterwards."""

    def __init__(self):
        self.sessions: list[Client] = []
        self._cleanups: list[Callable[[], Any]] = []

    async def connect(self, spec: str, name: str, **kwargs) -> Client:
        s = await connect(spec, name, **kwargs)
        self.sessions.append(s)
        return s

    def on_cleanup(self, fn: Callable[[], Any]) -> None:
        self._cleanups.append(fn)

    async def close(self) -> None:
        for fn in self._cleanups:
            try:
                fn()
            except Exception:
                pass
        for s in self.sessions:
            if s._transport is None:
                continue
            try:
                if s._session_id and not s._goodbye_sent:
                    closed = s.leave()
                    if asyncio.isfuture(closed):
                        await asyncio.wait_for(closed, 2.0)
                else:
                    s._transport.close()
                    await asyncio.wait_for(asyncio.shield(s.gone), 2.0)
            except Exception:
                try:
                    if s._transport is not None:
                        s._transport.transport.abort()
                except Exception:
                    pass
        # let connection_lost callbacks run before the loop goes away
        await asyncio.sleep(0.01)


# -- callees ---------------------------------------------------------------


def name_handler(name: str, hits: list | None = None):
    """A procedure that answers with the callee's name."""

    def handler(*args, **kwargs):
        if hits is not None:
            hits.append(name)
        return name

    return handler


async def register_named(
    session: Client, uri: str, invoke: str | None = None, hits: list | None = None
):
    """Register ``uri`` on ``session`` with an autobahn RegisterOptions(invoke=...)."""
    opts = RegisterOptions(invoke=invoke) if invoke is not None else None
    return await bounded(
        session.register(name_handler(session.name, hits), uri, options=opts),
        f"REGISTER {uri} by {session.name} (invoke={invoke})",
    )


async def call_names(caller: Client, uri: str, n: int) -> list:
    """n sequential calls, each awaited before the next; returns who answered."""
    out = []
    for i in range(n):
        out.append(await bounded(caller.call(uri), f"CALL #{i + 1} of {uri}"))
    return out


async def depart(session: Client, kind: str, registration=None) -> None:
    """Make ``session`` stop serving ``registration`` in the given way."""
    if kind == "unregister":
        await bounded(registration.unregister(), f"UNREGISTER by {session.name}")
    elif kind == "goodbye":
        # leave() sends GOODBYE and resolves once the router answered GOODBYE
        # and the WebSocket is closed.
        closed = session.leave()
        if asyncio.isfuture(closed):
            await bounded(closed, f"GOODBYE of {session.name}")
        await bounded(asyncio.shield(session.gone), f"disconnect of {session.name}")
    elif kind == "ws_close":
        # WebSocket close handshake, no WAMP GOODBYE
        session._transport.close()
        await bounded(asyncio.shield(session.gone), f"WebSocket close of {session.name}")
        await asyncio.sleep(SETTLE)
    elif kind == "tcp_abort":
        # tear the TCP connection down: no close frame, no GOODBYE
        session.tcp_transport().abort()
        await bounded(asyncio.shield(session.gone), f"TCP abort of {session.name}")
        await asyncio.sleep(SETTLE)
    else:  # pragma: no cover
        raise ValueError(kind)


# -- wire-level helpers (bypass autobahn's client-side validation) ---------


class RawRegister(message.Register):
    """A REGISTER whose Options dict is sent verbatim.

    autobahn validates ``invoke`` client-side (an ``assert`` in both
    ``RegisterOptions`` and ``message.Register``) and never puts
    ``invoke: "single"`` on the wire, so to check the router's handling of an
    unknown policy or an explicit "single" we build the message ourselves.
    """

    __slots__ = ("raw_options",)

    def marshal_options(self):
        return dict(self.raw_options)


async def raw_register(
    session: Client, uri: str, options: dict, handler=None, details_arg: str | None = None
):
    """Send REGISTER with verbatim ``options``; returns autobahn's Registration.

    ``details_arg``: the keyword the handler gets autobahn's CallDetails in
    (what ``RegisterOptions(details=True)`` sets to ``"details"``)."""
    handler = handler or name_handler(session.name)
    request_id = session._request_id_gen.next()
    on_reply = txaio.create_future()
    session._register_reqs[request_id] = RegisterRequest(
        request_id, on_reply, uri, Endpoint(handler, None, details_arg)
    )
    msg = RawRegister(request_id, uri)
    msg.raw_options = options
    session._transport.send(msg)
    return await bounded(on_reply, f"REGISTER {uri} with raw options {options!r}")


def raw_unregister(session: Client, registration_id: int):
    """Send UNREGISTER for an id regardless of autobahn's local bookkeeping.

    ``Registration.unregister()`` refuses client-side ("registration no longer
    active") once a registration was unregistered, so a second UNREGISTER has
    to be sent by hand.
    """
    request_id = session._request_id_gen.next()
    on_reply = txaio.create_future()
    session._unregister_reqs[request_id] = UnregisterRequest(
        request_id, on_reply, registration_id
    )
    session._transport.send(message.Unregister(request_id, registration_id))
    return on_reply


@contextlib.contextmanager
def _wrap_send(session: Client, wrapper):
    """While active, ``session``'s outgoing messages go through
    ``wrapper(msg, send)``; nests (the previous ``send`` is restored)."""
    transport = session._transport
    previous = transport.__dict__.get("send")
    inner = transport.send

    def send(msg):
        return wrapper(msg, inner)

    transport.send = send
    try:
        yield
    finally:
        if transport.__dict__.get("send") is send:
            if previous is None:
                del transport.send
            else:
                transport.send = previous


@contextlib.contextmanager
def extra_options(session: Client, msg_type, **extra):
    """While active, every ``msg_type`` message ``session`` sends carries
    ``extra`` in its Options dict, on top of what autobahn puts there.

    autobahn-python has no API for some options the router implements:
    ``CALL.Options.disclose_me`` (not in ``CallOptions``),
    ``PUBLISH.Options.disclose_me`` (not in ``PublishOptions``),
    ``REGISTER.Options.disclose_caller`` (not in ``RegisterOptions``). The
    message is still built and tracked by autobahn (``session.call()``,
    ``session.publish()`` work as usual); only its Options dict is extended.
    autobahn sends synchronously from ``call()``/``publish()``, so the call
    must be made inside the ``with`` block.
    """

    def wrapper(msg, send):
        if isinstance(msg, msg_type):
            _extend_options(msg, extra)
        return send(msg)

    with _wrap_send(session, wrapper):
        yield


@contextlib.contextmanager
def record_sent(session: Client):
    """While active, every message ``session`` sends is appended to the list
    this yields (to check what autobahn put on the wire)."""
    sent: list = []

    def wrapper(msg, send):
        sent.append(msg)
        return send(msg)

    with _wrap_send(session, wrapper):
        yield sent


def _extend_options(msg, extra: dict) -> None:
    """Turn ``msg`` into an instance of a throw-away subclass whose Options
    carry ``extra`` (autobahn's message classes build Options in
    ``marshal_options()``)."""
    base = type(msg)
    extra = dict(extra)

    def marshal_options(self):
        return {**base.marshal_options(self), **extra}

    msg.__class__ = type(
        base.__name__, (base,), {"__slots__": (), "marshal_options": marshal_options}
    )


def start_call(session: Client, uri: str, *args, **kwargs):
    """``session.call(...)`` that also returns the CALL's request id.

    Returns ``(future, request_id)``; the future is autobahn's own, so
    ``future.cancel()`` is autobahn's cancel (CANCEL without options)."""
    before = set(session._call_reqs)
    fut = session.call(uri, *args, **kwargs)
    new = [r for r in session._call_reqs if r not in before]
    assert len(new) == 1, f"could not tell the request id of the CALL to {uri}: {new}"
    return fut, new[0]


def send_cancel(session: Client, request_id: int, mode: str | None) -> None:
    """Send CANCEL for ``request_id`` with an explicit ``mode``.

    autobahn's only way to cancel is ``future.cancel()``, which sends
    ``CANCEL`` with empty Options (no mode: the router applies its default,
    ``killnowait``) and leaves the future cancelled locally, so the caller
    never sees the router's ERROR as an exception. With a CANCEL sent by hand
    the future stays pending and gets whatever the router answers."""
    session._transport.send(message.Cancel(request_id, mode=mode))


def call_error_for(request_id: int, uri: str | None = None):
    """Predicate for :meth:`Client.wait_received`: ERROR to CALL ``request_id``."""

    def pred(m):
        return (
            m.request_type == message.Call.MESSAGE_TYPE
            and m.request == request_id
            and (uri is None or m.error == uri)
        )

    return pred


def replies_to_call(session: Client, request_id: int) -> list:
    """Every RESULT/ERROR ``session`` received for its CALL ``request_id``."""
    return [
        m
        for m in session.wire
        if (isinstance(m, message.Result) and m.request == request_id)
        or (
            isinstance(m, message.Error)
            and m.request_type == message.Call.MESSAGE_TYPE
            and m.request == request_id
        )
    ]


# -- payload comparison ------------------------------------------------------


def first_difference(a, b, path: str = "$") -> str | None:
    """Type-strict structural comparison (True != 1, 1 != 1.0, list vs dict...)."""
    if isinstance(a, tuple):
        a = list(a)
    if isinstance(b, tuple):
        b = list(b)
    if type(a) is not type(b):
        return f"{path}: type {type(a).__name__} {a!r} != {type(b).__name__} {b!r}"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(a)!r} != {sorted(b)!r}"
        for k in a:
            d = first_difference(a[k], b[k], f"{path}[{k!r}]")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)} ({a!r} != {b!r})"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if a != b:
        return f"{path}: {a!r} != {b!r}"
    return None


def assert_same(expected, got, what: str) -> None:
    d = first_difference(expected, got)
    assert d is None, f"{what} changed in transit: {d}"


def normalize_result(res) -> tuple[list, dict]:
    """autobahn's call() result -> (args, kwargs)."""
    if isinstance(res, CallResult):
        return list(res.results), dict(res.kwresults)
    if res is None:
        return [], {}
    return [res], {}


def echo_handler(received: list):
    """Callee that records what it got and yields it straight back."""

    def echo(*args, **kwargs):
        received.append((list(args), dict(kwargs)))
        return CallResult(*args, **kwargs)

    return echo


# -- pub/sub -----------------------------------------------------------------


class Inbox:
    """Records the events one subscriber receives, in arrival order.

    ``events`` holds ``(args, kwargs, details)`` tuples; ``wait_for(n)`` waits
    (bounded) until at least ``n`` events arrived.
    """

    def __init__(self, name: str):
        self.name = name
        self.events: list[tuple[list, dict, Any]] = []
        self._waiters: list[tuple[int, asyncio.Future]] = []

    def handler(self, *args, details=None, **kwargs):
        self.events.append((list(args), dict(kwargs), details))
        still = []
        for n, fut in self._waiters:
            if len(self.events) >= n:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((n, fut))
        self._waiters = still

    async def wait_for(self, n: int, what: str) -> list:
        if len(self.events) < n:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append((n, fut))
            await bounded(
                fut,
                f"{self.name} waiting for event #{n}: {what} "
                f"(got {len(self.events)}: {self.payloads()!r})",
            )
        return self.events

    def labels(self) -> list:
        """args[0] of every event, in arrival order."""
        return [a[0] if a else None for a, _, _ in self.events]

    def payloads(self) -> list:
        return [(a, k) for a, k, _ in self.events]


async def subscribe_inbox(session: Client, topic: str, inbox: Inbox, match: str | None = None):
    """SUBSCRIBE ``topic`` (exact match, or ``match="prefix"|"wildcard"``)
    delivering events with details into ``inbox``."""
    return await bounded(
        session.subscribe(
            inbox.handler, topic, options=SubscribeOptions(match=match, details=True)
        ),
        f"SUBSCRIBE {topic} (match={match}) by {session.name}",
    )


async def publish_ack(session: Client, topic: str, *args, exclude_me=None, **kwargs):
    """PUBLISH with acknowledge=True; returns autobahn's Publication."""
    opts = PublishOptions(acknowledge=True, exclude_me=exclude_me)
    return await bounded(
        session.publish(topic, *args, options=opts, **kwargs),
        f"acknowledged PUBLISH to {topic} by {session.name} (exclude_me={exclude_me})",
    )


async def publish_with(
    session: Client, topic: str, *args, options: dict | None = None, disclose_me=None, **kwargs
):
    """Acknowledged PUBLISH with ``PublishOptions(**options)``; ``disclose_me``
    (which autobahn's PublishOptions lacks) is added to the wire Options."""
    opts = PublishOptions(acknowledge=True, **(options or {}))
    what = f"acknowledged PUBLISH to {topic} by {session.name} ({options}, disclose_me={disclose_me})"
    if disclose_me is None:
        return await bounded(session.publish(topic, *args, options=opts, **kwargs), what)
    with extra_options(session, message.Publish, disclose_me=disclose_me):
        fut = session.publish(topic, *args, options=opts, **kwargs)
    return await bounded(fut, what)
