"""Advanced broker features: pattern-based subscriptions (prefix, wildcard),
subscriber black/white listing by session id, authid and authrole, and
publisher disclosure.

"Did not receive" is checked as in test_pubsub.py: every scenario ends with an
acknowledged marker publication every subscriber must get; all publications
come from one publisher and are acknowledged one after the other, so an event
that was wrongly delivered would have arrived before the marker.

Anonymous sessions have authid ``anonymous-<session id>`` and authrole
``anonymous`` (checked against WELCOME here).
"""

from autobahn.wamp import message

from _wamp import (
    Inbox,
    new_uri,
    publish_with,
    subscribe_inbox,
)

MARKER = "marker"


async def _subscribers(wamp, ser, topic, names=("A", "B", "C"), match=None):
    """Sessions subscribed to ``topic``; returns {name: (session, inbox)}."""
    out = {}
    for name in names:
        s = await wamp.connect(ser, name)
        inbox = Inbox(name)
        await subscribe_inbox(s, topic, inbox, match=match)
        out[name] = (s, inbox)
    return out


async def _finish(pub, topic, subs, expected: dict):
    """Publish the marker, wait for it everywhere, compare every inbox's labels
    (args[0] of each event) with ``expected[name] + [MARKER]``."""
    await publish_with(pub, topic, MARKER)
    for name, (_, inbox) in subs.items():
        want = list(expected[name]) + [MARKER]
        await inbox.wait_for(len(want), "the marker")
        assert inbox.labels() == want, (
            f"{name} received {inbox.labels()}, expected {want}"
        )


# -- pattern-based subscriptions ------------------------------------------------


async def test_prefix_subscription(wamp, ser):
    base = new_uri("prefix")
    subs = await _subscribers(wamp, ser, base, names=("P1", "P2"), match="prefix")
    pub = await wamp.connect(ser, "pub")

    matching = [base, f"{base}.a", f"{base}.a.b.c", f"{base}-low"]
    not_matching = [base[:-1], f"com.roundhouse.interop.other.{base.rsplit('.', 1)[1]}"]
    for topic in matching[:2] + not_matching + matching[2:]:
        await publish_with(pub, topic, topic, k=1)
    await publish_with(pub, f"{base}.last", MARKER)

    want = matching + [f"{base}.last"]
    for name, (s, inbox) in subs.items():
        await inbox.wait_for(len(want), "every matching publication")
        labels = inbox.labels()
        assert labels == matching + [MARKER], f"{name}: prefix subscription got {labels}"
        topics = [d.topic for _, _, d in inbox.events]
        assert topics == want, (
            f"{name}: EVENT.Details.topic (details.topic) should be the concrete "
            f"topic of each publication: {topics}"
        )
        # on the wire, not autobahn's fallback to the subscription's pattern
        wire_topics = [m.topic for m in s.received(message.Event)]
        assert wire_topics == want, f"{name}: EVENT.Details.topic on the wire: {wire_topics}"
        ids = {d.subscription.id for _, _, d in inbox.events}
        assert len(ids) == 1, f"{name}: one prefix subscription, several ids {ids}"

    sub_ids = {inbox.events[0][2].subscription.id for _, inbox in subs.values()}
    assert len(sub_ids) == 1, (
        f"two sessions subscribed to the same prefix got different subscription ids {sub_ids}"
    )


async def test_wildcard_subscription(wamp, ser):
    base = new_uri("wildcard")
    pattern = f"{base}..status"
    subs = await _subscribers(wamp, ser, pattern, names=("W",), match="wildcard")
    s, inbox = subs["W"]
    pub = await wamp.connect(ser, "pub")

    matching = [f"{base}.dev1.status", f"{base}.dev2.status"]
    not_matching = [
        f"{base}.dev1.state",  # last component differs
        f"{base}.dev1.x.status",  # one component too many
        f"{base}.status",  # one component too few
        f"{base}x.dev1.status",  # a fixed component differs
    ]
    for topic in [matching[0]] + not_matching + [matching[1]]:
        await publish_with(pub, topic, topic)
    await publish_with(pub, f"{base}.last.status", MARKER)

    want_topics = matching + [f"{base}.last.status"]
    await inbox.wait_for(3, "the matching publications")
    assert inbox.labels() == matching + [MARKER], f"wildcard subscription got {inbox.labels()}"
    topics = [d.topic for _, _, d in inbox.events]
    assert topics == want_topics, f"details.topic: {topics}"
    wire_topics = [m.topic for m in s.received(message.Event)]
    assert wire_topics == want_topics, f"EVENT.Details.topic on the wire: {wire_topics}"


async def test_overlapping_subscriptions_each_deliver(wamp, ser):
    """One session with an exact, a prefix and a wildcard subscription that all
    match a topic gets the publication once per subscription."""
    base = new_uri("overlap")
    topic = f"{base}.room1.temp"
    s = await wamp.connect(ser, "S")
    inboxes = {kind: Inbox(kind) for kind in ("exact", "prefix", "wildcard")}
    subs = {
        "exact": await subscribe_inbox(s, topic, inboxes["exact"]),
        "prefix": await subscribe_inbox(s, f"{base}.room", inboxes["prefix"], match="prefix"),
        "wildcard": await subscribe_inbox(s, f"{base}..temp", inboxes["wildcard"], match="wildcard"),
    }
    assert len({sub.id for sub in subs.values()}) == 3, (
        f"exact/prefix/wildcard subscriptions share ids: { {k: v.id for k, v in subs.items()} }"
    )
    other = await wamp.connect(ser, "exact-only")
    other_inbox = Inbox("exact-only")
    await subscribe_inbox(other, topic, other_inbox)
    pub = await wamp.connect(ser, "pub")

    p = await publish_with(pub, topic, "once", n=1)
    for kind, inbox in inboxes.items():
        await inbox.wait_for(1, f"the publication via the {kind} subscription")
    await other_inbox.wait_for(1, "the publication")
    # a second publication (exact subscription only) as the marker for "exactly once"
    await publish_with(pub, f"{base}.room1.temp", MARKER)
    for kind, inbox in inboxes.items():
        await inbox.wait_for(2, f"the marker via the {kind} subscription")
        assert inbox.labels() == ["once", MARKER], f"{kind} subscription: {inbox.labels()}"
        details = inbox.events[0][2]
        assert details.subscription.id == subs[kind].id, f"{kind}: subscription id"
        assert details.publication == p.id, f"{kind}: publication id"
        assert details.topic == topic, f"{kind}: details.topic"
    events = s.received(message.Event)
    assert sorted(m.subscription for m in events) == sorted(
        [sub.id for sub in subs.values()] * 2
    ), "one EVENT per matching subscription"
    await other_inbox.wait_for(2, "the marker")
    assert other_inbox.labels() == ["once", MARKER]


# -- black/white listing ----------------------------------------------------------


async def test_exclude_by_session_id(wamp, ser):
    topic = new_uri("t_exclude")
    subs = await _subscribers(wamp, ser, topic)
    pub = await wamp.connect(ser, "pub")
    sid = {n: s.session_id for n, (s, _) in subs.items()}

    await publish_with(pub, topic, "not-B", options={"exclude": [sid["B"]]})
    await publish_with(pub, topic, "only-B", options={"exclude": [sid["A"], sid["C"]]})
    await publish_with(pub, topic, "nobody", options={"exclude": list(sid.values())})
    await _finish(
        pub, topic, subs, {"A": ["not-B"], "B": ["only-B"], "C": ["not-B"]}
    )


async def test_eligible_by_session_id(wamp, ser):
    topic = new_uri("t_eligible")
    subs = await _subscribers(wamp, ser, topic)
    pub = await wamp.connect(ser, "pub")
    sid = {n: s.session_id for n, (s, _) in subs.items()}

    await publish_with(pub, topic, "only-A", options={"eligible": [sid["A"]]})
    await publish_with(pub, topic, "B-and-C", options={"eligible": [sid["B"], sid["C"]]})
    # both lists: eligible and not excluded
    await publish_with(
        pub,
        topic,
        "A-not-B",
        options={"eligible": [sid["A"], sid["B"]], "exclude": [sid["B"]]},
    )
    # an empty white list admits nobody
    await publish_with(pub, topic, "empty-eligible", options={"eligible": []})
    await _finish(
        pub,
        topic,
        subs,
        {"A": ["only-A", "A-not-B"], "B": ["B-and-C"], "C": ["B-and-C"]},
    )


async def test_publisher_exclusion_with_lists(wamp, ser):
    topic = new_uri("t_eligible_me")
    subs = await _subscribers(wamp, ser, topic, names=("pub", "A"))
    pub, _ = subs["pub"]
    me = pub.session_id

    # exclude_me defaults to true and wins over the white list
    await publish_with(pub, topic, "eligible-me-default", options={"eligible": [me]})
    await publish_with(
        pub, topic, "eligible-me-included", options={"eligible": [me], "exclude_me": False}
    )
    # exclude_me=false does not override an explicit exclude of the publisher
    await publish_with(
        pub, topic, "not-me-by-id", options={"exclude_me": False, "exclude": [me]}
    )
    # the marker must reach the publisher too
    await publish_with(pub, topic, MARKER, options={"exclude_me": False})
    for name, want in {
        "pub": ["eligible-me-included", MARKER],
        "A": ["not-me-by-id", MARKER],
    }.items():
        _, inbox = subs[name]
        await inbox.wait_for(len(want), "the marker")
        assert inbox.labels() == want, f"{name}: {inbox.labels()}"


async def test_identity_of_anonymous_sessions(wamp, ser):
    s = await wamp.connect(ser, "anon")
    assert s.authid == f"anonymous-{s.session_id}", f"WELCOME.authid {s.authid!r}"
    assert s.authrole == "anonymous", f"WELCOME.authrole {s.authrole!r}"


async def test_exclude_and_eligible_by_authid(wamp, ser):
    topic = new_uri("t_authid")
    subs = await _subscribers(wamp, ser, topic)
    pub = await wamp.connect(ser, "pub")
    authid = {n: s.authid for n, (s, _) in subs.items()}

    await publish_with(pub, topic, "not-B", options={"exclude_authid": [authid["B"]]})
    await publish_with(
        pub, topic, "A-and-C", options={"eligible_authid": [authid["A"], authid["C"]]}
    )
    await publish_with(pub, topic, "only-B", options={"eligible_authid": [authid["B"]]})
    await publish_with(
        pub,
        topic,
        "nobody",
        options={"eligible_authid": [authid["B"]], "exclude_authid": [authid["B"]]},
    )
    await publish_with(
        pub, topic, "unknown-excluded", options={"exclude_authid": ["nobody-has-this-authid"]}
    )
    everyone = ["unknown-excluded"]
    await _finish(
        pub,
        topic,
        subs,
        {
            "A": ["not-B", "A-and-C"] + everyone,
            "B": ["only-B"] + everyone,
            "C": ["not-B", "A-and-C"] + everyone,
        },
    )


async def test_exclude_and_eligible_by_authrole(wamp, ser):
    topic = new_uri("t_authrole")
    subs = await _subscribers(wamp, ser, topic, names=("A", "B"))
    pub = await wamp.connect(ser, "pub")

    await publish_with(pub, topic, "excl-anonymous", options={"exclude_authrole": ["anonymous"]})
    await publish_with(pub, topic, "elig-anonymous", options={"eligible_authrole": ["anonymous"]})
    await publish_with(pub, topic, "elig-admin", options={"eligible_authrole": ["admin"]})
    await publish_with(pub, topic, "excl-admin", options={"exclude_authrole": ["admin"]})
    await publish_with(
        pub,
        topic,
        "elig-both-excl-B",
        options={"eligible_authrole": ["admin", "anonymous"], "exclude": [subs["B"][0].session_id]},
    )
    await _finish(
        pub,
        topic,
        subs,
        {
            "A": ["elig-anonymous", "excl-admin", "elig-both-excl-B"],
            "B": ["elig-anonymous", "excl-admin"],
        },
    )


# -- publisher disclosure ------------------------------------------------------------


async def test_disclose_me(wamp, ser):
    """PUBLISH.Options.disclose_me=true -> EVENT.Details.publisher /
    publisher_authid / publisher_authrole; absent or false -> none of them.
    autobahn-python's PublishOptions has no disclose_me, so it is added to the
    wire Options by hand."""
    topic = new_uri("t_disclose")
    subs = await _subscribers(wamp, ser, topic, names=("S",))
    _, inbox = subs["S"]
    pub = await wamp.connect(ser, "pub")

    await publish_with(pub, topic, "disclosed", disclose_me=True)
    await publish_with(pub, topic, "absent")
    await publish_with(pub, topic, "false", disclose_me=False)
    await inbox.wait_for(3, "three publications")
    assert inbox.labels() == ["disclosed", "absent", "false"]

    d = inbox.events[0][2]
    assert (d.publisher, d.publisher_authid, d.publisher_authrole) == (
        pub.session_id,
        f"anonymous-{pub.session_id}",
        "anonymous",
    ), f"disclosed publisher: {d}"
    for label, (_, _, d) in zip(["absent", "false"], inbox.events[1:]):
        assert (d.publisher, d.publisher_authid, d.publisher_authrole) == (None, None, None), (
            f"publisher disclosed although disclose_me was {label}: {d}"
        )
