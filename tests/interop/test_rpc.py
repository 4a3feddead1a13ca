"""Plain RPC contract: errors, payload fidelity (incl. binary), and in-flight
cancellation when the callee is lost. Calls across serializers and transports
are in test_mixed.py; progressive results, CANCEL, timeouts, caller
disclosure and reroute in test_advanced_rpc.py."""

import asyncio

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions

from _wamp import (
    CANCELED,
    DROP_KINDS,
    NO_SUCH_PROCEDURE,
    assert_same,
    bounded,
    depart,
    echo_handler,
    expect_error,
    new_uri,
    normalize_result,
    register_named,
)

# -- payloads ---------------------------------------------------------------

ARGS = [
    0,
    1,
    -1,
    2**31,
    2**32 + 1,
    2**53,
    -(2**53),
    3.25,
    -0.1,
    1.5e300,
    -2.5e-7,
    True,
    False,
    None,
    "",
    "plain ascii",
    "héllo wörld",
    "日本語テキスト",
    "emoji 🚀🎉 (outside the BMP)",
    'quote" backslash\\ slash/ newline\n tab\t cr\r',
    "control \u0001\u001f del \u007f",
    "line sep \u2028 para sep \u2029",
    [],
    {},
    [1, [2, [3, [4, []]]]],
    {"nested": {"list": [1, "two", 3.5, None, True, False, {"k": []}]}},
    [{"a": 1}, {"b": [None]}, [[], {}]],
]

KWARGS = {
    "int": 42,
    "zero": 0,
    "big": 2**53,
    "neg_big": -(2**53),
    "float": 0.1,
    "t": True,
    "f": False,
    "none": None,
    "str": "ünïcødé ✓ 🚀",
    "ключ": "значение",
    "empty_str": "",
    "empty_list": [],
    "empty_dict": {},
    "list": [1, 2.5, "three", [4], {"five": 5}],
    "dict": {"a": {"b": {"c": [1, 2, 3]}}, "x y": "space in key"},
}

BYTES_ARGS = [b"", b"\x00\x01\x02\xff", bytes(range(256)), {"blob": b"\xde\xad\xbe\xef"}]
BYTES_KWARGS = {"raw": b"\x00binary\x00", "nested": [b"a", {"b": b"\xff"}]}

SHAPES = {
    "args_and_kwargs": (ARGS, KWARGS),
    "args_only": (ARGS, {}),
    "kwargs_only": ([], KWARGS),
    "single_arg": (["just one"], {}),
    "single_dict_arg": ([{"k": [1, "v", None]}], {}),
    "no_payload": ([], {}),
}


async def _echo_roundtrip(wamp, caller_ser, callee_ser, args, kwargs):
    uri = new_uri("echo")
    callee = await wamp.connect(callee_ser, "callee")
    caller = await wamp.connect(caller_ser, "caller")
    received = []
    await bounded(callee.register(echo_handler(received), uri), "REGISTER echo")

    res = await bounded(caller.call(uri, *args, **kwargs), "CALL echo")

    assert len(received) == 1
    got_args, got_kwargs = received[0]
    label = f"{caller_ser} caller -> {callee_ser} callee"
    assert_same(list(args), got_args, f"CALL args as seen by the callee ({label})")
    assert_same(dict(kwargs), got_kwargs, f"CALL kwargs as seen by the callee ({label})")

    res_args, res_kwargs = normalize_result(res)
    assert_same(list(args), res_args, f"RESULT args as seen by the caller ({label})")
    assert_same(dict(kwargs), res_kwargs, f"RESULT kwargs as seen by the caller ({label})")


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_payload_roundtrip(wamp, ser, shape):
    args, kwargs = SHAPES[shape]
    await _echo_roundtrip(wamp, ser, ser, args, kwargs)


async def test_binary_payload_roundtrip(wamp, ser):
    """bytes must arrive as bytes: native in MessagePack and CBOR; in JSON
    both autobahn and the router carry them as "\\u0000" + base64."""
    await _echo_roundtrip(wamp, ser, ser, BYTES_ARGS + ARGS, {**KWARGS, **BYTES_KWARGS})


# -- errors -----------------------------------------------------------------


async def test_call_unregistered_uri(wamp, ser):
    caller = await wamp.connect(ser, "caller")
    await expect_error(
        caller.call(new_uri("nobody_home")), NO_SUCH_PROCEDURE, "CALL to an unregistered URI"
    )


async def test_call_after_sole_callee_unregistered(wamp, ser):
    uri = new_uri("gone")
    a = await wamp.connect(ser, "A")
    caller = await wamp.connect(ser, "caller")
    reg = await register_named(a, uri)
    assert await bounded(caller.call(uri), "CALL") == "A"
    await bounded(reg.unregister(), "UNREGISTER")
    await expect_error(caller.call(uri), NO_SUCH_PROCEDURE, "CALL after UNREGISTER")


async def _error_roundtrip(wamp, caller_ser, callee_ser):
    uri = new_uri("oops")
    callee = await wamp.connect(callee_ser, "callee")
    caller = await wamp.connect(caller_ser, "caller")

    def oops():
        raise ApplicationError("com.example.oops", 1, 2, x=3)

    await bounded(callee.register(oops, uri), "REGISTER oops")
    e = await expect_error(caller.call(uri), "com.example.oops", "CALL to a raising callee")
    assert_same([1, 2], list(e.args), "error args")
    assert_same({"x": 3}, dict(e.kwargs), "error kwargs")


async def test_application_error_roundtrip(wamp, ser):
    await _error_roundtrip(wamp, ser, ser)


# -- callee gone while a call is in flight -------------------------------------


@pytest.mark.parametrize("kind", DROP_KINDS)
async def test_callee_leaves_with_call_in_flight(wamp, ser, kind):
    uri = new_uri("in_flight")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")

    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    never = loop.create_future()
    wamp.on_cleanup(lambda: never.done() or never.cancel())

    async def stuck():
        started.set()
        await never  # never completes

    reg = await bounded(callee.register(stuck, uri), "REGISTER stuck")
    call = asyncio.ensure_future(caller.call(uri))
    try:
        await bounded(started.wait(), "INVOCATION to reach the callee")
        assert not call.done(), f"call finished early: {call}"

        await depart(callee, kind, reg)

        await expect_error(call, CANCELED, f"in-flight CALL after the callee left via {kind}")
    finally:
        if not call.done():
            call.cancel()

    # the registration died with its only member
    await expect_error(caller.call(uri), NO_SUCH_PROCEDURE, "CALL after the callee left")


@pytest.mark.parametrize("kind", DROP_KINDS)
async def test_hot_standby_takes_over_after_in_flight_cancel(wamp, ser, kind):
    """invoke=first: three calls stuck in A; A is lost -> all three get
    wamp.error.canceled, and the next call goes to the standby B."""
    uri = new_uri("standby_in_flight")
    a = await wamp.connect(ser, "A")
    b = await wamp.connect(ser, "B")
    caller = await wamp.connect(ser, "caller")

    loop = asyncio.get_running_loop()
    never = loop.create_future()
    wamp.on_cleanup(lambda: never.done() or never.cancel())
    entered = []
    all_in = asyncio.Event()

    async def stuck():
        entered.append(1)
        if len(entered) == 3:
            all_in.set()
        await never

    reg_a = await bounded(
        a.register(stuck, uri, options=RegisterOptions(invoke="first")), "REGISTER A"
    )
    await register_named(b, uri, "first")

    calls = [asyncio.ensure_future(caller.call(uri)) for _ in range(3)]
    try:
        await bounded(all_in.wait(), "3 INVOCATIONs to reach A")
        await depart(a, kind, reg_a)
        for i, c in enumerate(calls):
            await expect_error(c, CANCELED, f"in-flight CALL #{i + 1} after A left via {kind}")
    finally:
        for c in calls:
            if not c.done():
                c.cancel()

    assert await bounded(caller.call(uri), "CALL after failover") == "B"
