"""Sessions on different transports and serializers talking to each other.

The router transcodes payloads between JSON, MessagePack and CBOR, over
WebSocket and RawSocket alike. Everything must arrive with its type intact:
ints stay ints (up to 2**64-1 / down to -2**63), floats stay floats (also
integral ones like 2.0), and bytes stay bytes -- native in MessagePack and
CBOR, ``"\\u0000" + base64`` strings in JSON (autobahn-python decodes those
back to bytes, so a JSON session sees bytes too).

One inherent limit of the JSON convention is not tested: a *string* whose
first character is U+0000 reads as bytes in any JSON peer.
"""

import itertools

import pytest
from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, RegisterOptions

from _wamp import (
    TRANSPORTS,
    Inbox,
    assert_same,
    bounded,
    echo_handler,
    expect_error,
    new_uri,
    normalize_result,
    publish_ack,
    publish_with,
    subscribe_inbox,
)
from test_rpc import ARGS, BYTES_ARGS, BYTES_KWARGS, KWARGS

# values whose type or range a careless transcoder loses
EDGE_ARGS = [2.0, -0.5, 1e-310, 123456789.0, 2**63 - 1, 2**64 - 1, -(2**63), 2**53 + 1]

MIXED_ARGS = ARGS + BYTES_ARGS + EDGE_ARGS
MIXED_KWARGS = {**KWARGS, **BYTES_KWARGS, "edge": EDGE_ARGS, "bin": b"\x00\xff" * 40}

# every ordered pair of different transports: JSON caller -> CBOR callee,
# msgpack <-> cbor, RawSocket <-> WebSocket, ...
PAIRS = [(a, b) for a, b in itertools.permutations(TRANSPORTS, 2)]
PAIR_IDS = [f"{a}_to_{b}" for a, b in PAIRS]


def _label(caller, callee):
    return f"{caller.spec} caller -> {callee.spec} callee"


@pytest.mark.parametrize("caller_spec,callee_spec", PAIRS, ids=PAIR_IDS)
async def test_call_across_transports(wamp, caller_spec, callee_spec):
    """CALL args/kwargs reach the callee and the RESULT reaches the caller
    unchanged, bytes included."""
    uri = new_uri("mixed_echo")
    callee = await wamp.connect(callee_spec, "callee")
    caller = await wamp.connect(caller_spec, "caller")
    received = []
    await bounded(callee.register(echo_handler(received), uri), "REGISTER echo")

    res = await bounded(caller.call(uri, *MIXED_ARGS, **MIXED_KWARGS), "CALL echo")

    label = _label(caller, callee)
    assert len(received) == 1, f"{label}: callee invoked {len(received)} times"
    got_args, got_kwargs = received[0]
    assert_same(MIXED_ARGS, got_args, f"CALL args as seen by the callee ({label})")
    assert_same(MIXED_KWARGS, got_kwargs, f"CALL kwargs as seen by the callee ({label})")
    res_args, res_kwargs = normalize_result(res)
    assert_same(MIXED_ARGS, res_args, f"RESULT args as seen by the caller ({label})")
    assert_same(MIXED_KWARGS, res_kwargs, f"RESULT kwargs as seen by the caller ({label})")

    # a single bytes value as the whole result, and no payload at all
    callee_single = []

    def single(*args, **kwargs):
        callee_single.append((args, kwargs))
        return b"\x01\x02\x03"

    uri2 = new_uri("mixed_single")
    await bounded(callee.register(single, uri2), "REGISTER single")
    got = await bounded(caller.call(uri2), "CALL without payload")
    assert_same([((), {})], callee_single, f"empty CALL as seen by the callee ({label})")
    assert_same(b"\x01\x02\x03", got, f"bytes RESULT ({label})")


MIXED_ERROR_PAIRS = [
    ("ws-json", "ws-cbor"),
    ("ws-cbor", "rs-json"),
    ("rs-msgpack", "ws-cbor"),
    ("ws-msgpack", "rs-cbor"),
    ("rs-cbor", "ws-json"),
]


@pytest.mark.parametrize(
    "caller_spec,callee_spec", MIXED_ERROR_PAIRS, ids=[f"{a}_to_{b}" for a, b in MIXED_ERROR_PAIRS]
)
async def test_error_across_transports(wamp, caller_spec, callee_spec):
    uri = new_uri("mixed_oops")
    callee = await wamp.connect(callee_spec, "callee")
    caller = await wamp.connect(caller_spec, "caller")

    def oops():
        raise ApplicationError("com.example.oops", 1, b"\xde\xad", 2.0, x={"y": [b"z"]})

    await bounded(callee.register(oops, uri), "REGISTER oops")
    e = await expect_error(caller.call(uri), "com.example.oops", "CALL to a raising callee")
    label = _label(caller, callee)
    assert_same([1, b"\xde\xad", 2.0], list(e.args), f"error args ({label})")
    assert_same({"x": {"y": [b"z"]}}, dict(e.kwargs), f"error kwargs ({label})")


FINAL = {"done": True, "bin": b"\x00\x01"}

MIXED_PROGRESS_PAIRS = [
    ("ws-json", "rs-cbor"),
    ("rs-msgpack", "ws-json"),
    ("ws-cbor", "rs-msgpack"),
]


@pytest.mark.parametrize(
    "caller_spec,callee_spec",
    MIXED_PROGRESS_PAIRS,
    ids=[f"{a}_to_{b}" for a, b in MIXED_PROGRESS_PAIRS],
)
async def test_progressive_results_across_transports(wamp, caller_spec, callee_spec):
    uri = new_uri("mixed_progress")
    callee = await wamp.connect(callee_spec, "callee")
    caller = await wamp.connect(caller_spec, "caller")
    chunks = [b"\x00chunk-1", {"n": 2, "b": b"\xff"}, [3.0, None]]

    async def produce(details=None):
        assert details is not None and details.progress is not None, (
            "callee got no progress callable although the caller asked for progress"
        )
        for i, c in enumerate(chunks):
            details.progress(i, c, last=False)
        return FINAL

    await bounded(
        callee.register(produce, uri, options=RegisterOptions(details=True)), "REGISTER"
    )
    progress = []
    res = await bounded(
        caller.call(
            uri, options=CallOptions(on_progress=lambda *a, **k: progress.append((list(a), k)))
        ),
        "progressive CALL",
    )
    label = _label(caller, callee)
    assert_same(
        [([i, c], {"last": False}) for i, c in enumerate(chunks)],
        progress,
        f"progressive results ({label})",
    )
    assert_same(FINAL, res, f"final result ({label})")


# -- pub/sub ---------------------------------------------------------------------


@pytest.mark.parametrize("pub_spec", TRANSPORTS)
async def test_publish_reaches_subscribers_on_every_transport(wamp, pub_spec):
    """One publisher, one subscriber per transport (RawSocket publisher ->
    WebSocket JSON/MessagePack/CBOR subscribers and vice versa): every
    subscriber gets the same payload, types intact, with the publication id
    the publisher got."""
    topic = new_uri("mixed_topic")
    inboxes = []
    for spec in TRANSPORTS:
        s = await wamp.connect(spec, f"sub-{spec}")
        inbox = Inbox(f"sub-{spec}")
        await subscribe_inbox(s, topic, inbox)
        inboxes.append(inbox)
    pub = await wamp.connect(pub_spec, f"pub-{pub_spec}")

    p1 = await publish_ack(pub, topic, *MIXED_ARGS, **MIXED_KWARGS)
    p2 = await publish_ack(pub, topic, b"\x00only-bytes")
    for inbox in inboxes:
        await inbox.wait_for(2, "both publications")
        what = f"event from {pub_spec} publisher at {inbox.name}"
        assert len(inbox.events) == 2, f"{what}: {len(inbox.events)} events"
        (a1, k1, d1), (a2, k2, d2) = inbox.events
        assert_same(MIXED_ARGS, a1, f"{what}: args")
        assert_same(MIXED_KWARGS, k1, f"{what}: kwargs")
        assert_same([b"\x00only-bytes"], a2, f"{what}: bytes-only args")
        assert_same({}, k2, f"{what}: bytes-only kwargs")
        assert [d1.publication, d2.publication] == [p1.id, p2.id], f"{what}: publication ids"
        assert d1.topic == topic, f"{what}: topic"


@pytest.mark.parametrize("pub_spec", ["ws-json", "rs-cbor"])
async def test_pattern_subscribers_on_every_transport(wamp, pub_spec):
    """Subscribers on all six transports, each with an exact, a prefix and a
    wildcard subscription matching one topic; a disclosed publication: every
    EVENT names its own subscription, the concrete topic (pattern matches) and
    the publisher, whatever the subscriber's serializer."""
    base = new_uri("mixed_patterns")
    topic = f"{base}.dev7.status"
    pub = await wamp.connect(pub_spec, f"pub-{pub_spec}")
    subscribers = []
    for spec in TRANSPORTS:
        s = await wamp.connect(spec, f"sub-{spec}")
        ids = {}
        inboxes = {}
        for kind, pattern, match in (
            ("exact", topic, None),
            ("prefix", f"{base}.dev", "prefix"),
            ("wildcard", f"{base}..status", "wildcard"),
        ):
            inboxes[kind] = Inbox(f"{spec}/{kind}")
            ids[kind] = (await subscribe_inbox(s, pattern, inboxes[kind], match=match)).id
        subscribers.append((s, ids, inboxes))

    p = await publish_with(pub, topic, b"\x00\x01", 2.0, disclose_me=True, k=[b"v"])
    for s, ids, inboxes in subscribers:
        for kind, inbox in inboxes.items():
            await inbox.wait_for(1, f"the publication via {kind}")
            assert len(inbox.events) == 1, f"{inbox.name}: {inbox.payloads()}"
            args, kwargs, d = inbox.events[0]
            assert_same([b"\x00\x01", 2.0], args, f"{inbox.name}: args")
            assert_same({"k": [b"v"]}, kwargs, f"{inbox.name}: kwargs")
            assert d.subscription.id == ids[kind], f"{inbox.name}: subscription id"
            assert d.publication == p.id, f"{inbox.name}: publication id"
            assert d.topic == topic, f"{inbox.name}: topic {d.topic!r}"
            assert (d.publisher, d.publisher_authid, d.publisher_authrole) == (
                pub.session_id,
                pub.authid,
                "anonymous",
            ), f"{inbox.name}: publisher {d}"
        by_sub = {m.subscription: m for m in s.received(message.Event)}
        assert set(by_sub) == set(ids.values()), f"{s.name}: EVENTs {list(by_sub)}"
        for kind in ("prefix", "wildcard"):
            assert by_sub[ids[kind]].topic == topic, (
                f"{s.name}: EVENT.Details.topic of the {kind} subscription on the wire"
            )
