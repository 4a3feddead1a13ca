"""Broker contract: exact-match subscriptions, acknowledged publications,
publisher exclusion (``exclude_me``, default true), fan-out to several
subscribers, unsubscribe.

"Did not receive" is checked without sleeping: WAMP delivers the events of one
publisher on one topic to a subscriber in publication order, so once a later
marker event arrived, an earlier event that was not delivered before it never
will be.
"""

from _wamp import (
    Inbox,
    assert_same,
    bounded,
    new_uri,
    publish_ack,
    subscribe_inbox,
)

MAX_ID = 2**53


def _assert_id(value, what: str) -> None:
    assert type(value) is int and 1 <= value <= MAX_ID, f"{what}: not a WAMP id: {value!r}"


async def test_subscriber_receives_args_and_kwargs(wamp, ser):
    topic = new_uri("t_basic")
    sub = await wamp.connect(ser, "sub")
    pub = await wamp.connect(ser, "pub")
    inbox = Inbox("sub")
    subscription = await subscribe_inbox(sub, topic, inbox)
    _assert_id(subscription.id, "SUBSCRIBED.Subscription")

    args = [1, "two", {"three": 3}, [4.5, None, True], "ünïcødé 🚀"]
    kwargs = {"k": "v", "n": [1, 2], "nested": {"a": {"b": []}}, "f": False}
    # fire-and-forget publish (no acknowledge): nothing to await
    assert pub.publish(topic, *args, **kwargs) is None
    await inbox.wait_for(1, "the publication")
    ev_args, ev_kwargs, details = inbox.events[0]
    assert_same(args, ev_args, "event args")
    assert_same(kwargs, ev_kwargs, "event kwargs")
    assert details.topic == topic
    _assert_id(details.publication, "EVENT.Publication")

    # kwargs only / no payload at all
    pub.publish(topic, only="kw")
    pub.publish(topic)
    await inbox.wait_for(3, "two more publications")
    assert_same([([], {"only": "kw"}), ([], {})], inbox.payloads()[1:], "events")


async def test_acknowledge_returns_publication_id_of_the_event(wamp, ser):
    topic = new_uri("t_ack")
    sub = await wamp.connect(ser, "sub")
    pub = await wamp.connect(ser, "pub")
    inbox = Inbox("sub")
    await subscribe_inbox(sub, topic, inbox)

    p1 = await publish_ack(pub, topic, "one")
    _assert_id(p1.id, "PUBLISHED.Publication")
    p2 = await publish_ack(pub, topic, "two", k=2)
    _assert_id(p2.id, "PUBLISHED.Publication")
    assert p1.id != p2.id, "two publications got the same id"

    await inbox.wait_for(2, "both publications")
    assert inbox.labels() == ["one", "two"]
    assert [d.publication for _, _, d in inbox.events] == [p1.id, p2.id], (
        "EVENT publication ids != PUBLISHED ids"
    )

    # acknowledged even with no subscriber at all
    p3 = await publish_ack(pub, new_uri("t_ack_nobody"), "nobody listens")
    _assert_id(p3.id, "PUBLISHED.Publication without subscribers")


async def test_exclude_me_defaults_to_true(wamp, ser):
    topic = new_uri("t_excl")
    pub = await wamp.connect(ser, "pub")
    other = await wamp.connect(ser, "other")
    pub_inbox = Inbox("pub")
    other_inbox = Inbox("other")
    await subscribe_inbox(pub, topic, pub_inbox)
    await subscribe_inbox(other, topic, other_inbox)

    await publish_ack(pub, topic, "default")  # exclude_me not sent
    await publish_ack(pub, topic, "explicit", exclude_me=True)
    await other_inbox.wait_for(2, "both publications")
    # a marker the publisher must receive; anything before it would show up first
    await publish_ack(pub, topic, "marker", exclude_me=False)
    await pub_inbox.wait_for(1, "the exclude_me=False marker")
    await other_inbox.wait_for(3, "the marker")
    assert pub_inbox.labels() == ["marker"], (
        "publisher received its own publication although exclude_me was absent/true: "
        f"{pub_inbox.labels()}"
    )
    assert other_inbox.labels() == ["default", "explicit", "marker"]


async def test_exclude_me_false_delivers_to_publisher(wamp, ser):
    topic = new_uri("t_incl")
    pub = await wamp.connect(ser, "pub")
    other = await wamp.connect(ser, "other")
    pub_inbox = Inbox("pub")
    other_inbox = Inbox("other")
    await subscribe_inbox(pub, topic, pub_inbox)
    await subscribe_inbox(other, topic, other_inbox)

    p = await publish_ack(pub, topic, "mine", exclude_me=False, k=1)
    await pub_inbox.wait_for(1, "its own publication")
    await other_inbox.wait_for(1, "the publication")
    for inbox in (pub_inbox, other_inbox):
        assert_same([(["mine"], {"k": 1})], inbox.payloads(), f"{inbox.name} events")
        assert inbox.events[0][2].publication == p.id, f"{inbox.name}: publication id"


async def test_several_subscribers_each_receive_every_event_once(wamp, ser):
    topic = new_uri("t_fanout")
    inboxes = []
    ids = set()
    for name in ("S1", "S2", "S3"):
        s = await wamp.connect(ser, name)
        inbox = Inbox(name)
        ids.add((await subscribe_inbox(s, topic, inbox)).id)
        inboxes.append(inbox)
    # not a spec requirement, just what every broker does for exact-match topics
    assert len(ids) == 1, f"subscribers of one topic got different subscription ids: {ids}"

    pub = await wamp.connect(ser, "pub")
    published = []
    for label in ("e1", "e2", "e3", "marker"):
        published.append((await publish_ack(pub, topic, label)).id)
    for inbox in inboxes:
        await inbox.wait_for(4, "all four publications")
        assert inbox.labels() == ["e1", "e2", "e3", "marker"], f"{inbox.name} events"
        assert [d.publication for _, _, d in inbox.events] == published, (
            f"{inbox.name} publication ids"
        )


async def test_unsubscribe_stops_events(wamp, ser):
    topic = new_uri("t_unsub")
    a = await wamp.connect(ser, "A")
    b = await wamp.connect(ser, "B")
    pub = await wamp.connect(ser, "pub")
    a_inbox = Inbox("A")
    b_inbox = Inbox("B")
    a_sub = await subscribe_inbox(a, topic, a_inbox)
    await subscribe_inbox(b, topic, b_inbox)

    await publish_ack(pub, topic, "before")
    await a_inbox.wait_for(1, "the first publication")
    await b_inbox.wait_for(1, "the first publication")

    await bounded(a_sub.unsubscribe(), "UNSUBSCRIBE by A")
    assert not a_sub.active
    await publish_ack(pub, topic, "while unsubscribed")
    await b_inbox.wait_for(2, "the second publication")

    # autobahn drops the connection (ProtocolError) on an EVENT for a
    # subscription it no longer has, so a leaked event shows up as a dead session
    assert a.is_connected() and not a.gone.done(), (
        "A's session was closed after UNSUBSCRIBE; the router probably kept "
        "sending it events of the old subscription"
    )
    # resubscribe into the same inbox: the third publication must be the
    # first event A sees after "before"
    await subscribe_inbox(a, topic, a_inbox)
    await publish_ack(pub, topic, "after resubscribe")
    await a_inbox.wait_for(2, "the publication after resubscribing")
    await b_inbox.wait_for(3, "the third publication")
    assert a_inbox.labels() == ["before", "after resubscribe"], (
        f"A received an event while it was unsubscribed: {a_inbox.labels()}"
    )
    assert b_inbox.labels() == ["before", "while unsubscribed", "after resubscribe"]
