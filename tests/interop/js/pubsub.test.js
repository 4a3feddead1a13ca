'use strict';
// Broker contract (Autobahn|JS): exact-match subscriptions, acknowledged
// publications, publisher exclusion (exclude_me, default true), fan-out to
// several subscribers, unsubscribe.
//
// "Did not receive" is checked without sleeping: WAMP delivers the events of
// one publisher on one topic to a subscriber in publication order, so once a
// later marker event arrived, an earlier event that was not delivered before
// it never will be.

const assert = require('node:assert/strict');

const {
  SERIALIZER_IDS,
  Inbox,
  bounded,
  newUri,
  publishAck,
  scenario,
  subscribe,
  suite,
} = require('./wamp');

const MAX_ID = 2 ** 53;

function assertId(id, what) {
  assert.ok(Number.isInteger(id) && id >= 1 && id <= MAX_ID, `${what}: not a WAMP id: ${id}`);
}

for (const ser of SERIALIZER_IDS) {
  suite(`pubsub [${ser}]`, [ser], () => {
    scenario('subscriber receives args/kwargs of a publication', ser, async (w) => {
      const topic = newUri('t_basic');
      const sub = await w.connect('sub');
      const pub = await w.connect('pub');
      const inbox = new Inbox('sub');
      const subscription = await subscribe(sub, topic, inbox);
      assertId(subscription.id, 'SUBSCRIBED.Subscription');

      const args = [1, 'two', { three: 3 }, [4.5, null, true], 'ünïcødé 🚀'];
      const kwargs = { k: 'v', n: [1, 2], nested: { a: { b: [] } }, f: false };
      // fire-and-forget publish (no acknowledge): nothing to await
      assert.equal(pub.session.publish(topic, args, kwargs), undefined);
      await inbox.waitFor(1, 'the publication');
      const [ev] = inbox.events;
      assert.deepStrictEqual(ev.args, args, 'event args changed in transit');
      assert.deepStrictEqual(ev.kwargs, kwargs, 'event kwargs changed in transit');
      assert.equal(ev.details.topic, topic);
      assertId(ev.details.publication, 'EVENT.Publication');

      // kwargs only / no payload at all
      pub.session.publish(topic, undefined, { only: 'kw' });
      pub.session.publish(topic);
      await inbox.waitFor(3, 'two more publications');
      assert.deepStrictEqual(inbox.events.slice(1).map((e) => [e.args, e.kwargs]),
        [[[], { only: 'kw' }], [[], {}]]);
    });

    scenario('acknowledge: true -> PUBLISHED with the publication id of the EVENT', ser, async (w) => {
      const topic = newUri('t_ack');
      const sub = await w.connect('sub');
      const pub = await w.connect('pub');
      const inbox = new Inbox('sub');
      await subscribe(sub, topic, inbox);

      const p1 = await publishAck(pub, topic, ['one']);
      assertId(p1.id, 'PUBLISHED.Publication');
      const p2 = await publishAck(pub, topic, ['two'], { k: 2 });
      assertId(p2.id, 'PUBLISHED.Publication');
      assert.notEqual(p1.id, p2.id, 'two publications got the same id');

      await inbox.waitFor(2, 'both publications');
      assert.deepStrictEqual(inbox.labels(), ['one', 'two']);
      assert.equal(inbox.events[0].details.publication, p1.id, 'EVENT publication id != PUBLISHED id');
      assert.equal(inbox.events[1].details.publication, p2.id, 'EVENT publication id != PUBLISHED id');

      // acknowledged even with no subscriber at all
      const p3 = await publishAck(pub, newUri('t_ack_nobody'), ['nobody listens']);
      assertId(p3.id, 'PUBLISHED.Publication without subscribers');
    });

    scenario('exclude_me defaults to true: the publisher does not get its own event', ser, async (w) => {
      const topic = newUri('t_excl');
      const pub = await w.connect('pub');
      const other = await w.connect('other');
      const pubInbox = new Inbox('pub');
      const otherInbox = new Inbox('other');
      await subscribe(pub, topic, pubInbox);
      await subscribe(other, topic, otherInbox);

      await publishAck(pub, topic, ['default']);
      await publishAck(pub, topic, ['explicit'], {}, { exclude_me: true });
      await otherInbox.waitFor(2, 'both publications');
      // marker the publisher must receive; anything before it would show up first
      await publishAck(pub, topic, ['marker'], {}, { exclude_me: false });
      await pubInbox.waitFor(1, 'the exclude_me: false marker');
      await otherInbox.waitFor(3, 'the marker');
      assert.deepStrictEqual(pubInbox.labels(), ['marker'],
        'publisher received its own publication although exclude_me was absent/true');
      assert.deepStrictEqual(otherInbox.labels(), ['default', 'explicit', 'marker']);
    });

    scenario('exclude_me: false: the publisher receives its own event', ser, async (w) => {
      const topic = newUri('t_incl');
      const pub = await w.connect('pub');
      const other = await w.connect('other');
      const pubInbox = new Inbox('pub');
      const otherInbox = new Inbox('other');
      await subscribe(pub, topic, pubInbox);
      await subscribe(other, topic, otherInbox);

      const p = await publishAck(pub, topic, ['mine'], { k: 1 }, { exclude_me: false });
      await pubInbox.waitFor(1, 'its own publication');
      await otherInbox.waitFor(1, 'the publication');
      for (const inbox of [pubInbox, otherInbox]) {
        assert.deepStrictEqual(inbox.events.map((e) => [e.args, e.kwargs]), [[['mine'], { k: 1 }]], inbox.name);
        assert.equal(inbox.events[0].details.publication, p.id, `${inbox.name}: publication id`);
      }
    });

    scenario('several subscribers each receive every event once, in order', ser, async (w) => {
      const topic = newUri('t_fanout');
      const names = ['S1', 'S2', 'S3'];
      const inboxes = [];
      const ids = new Set();
      for (const n of names) {
        const s = await w.connect(n);
        const inbox = new Inbox(n);
        ids.add((await subscribe(s, topic, inbox)).id);
        inboxes.push(inbox);
      }
      // not a spec requirement, just what every broker does for exact-match topics
      assert.equal(ids.size, 1, `subscribers of one topic got different subscription ids: ${[...ids]}`);
      const pub = await w.connect('pub');
      const published = [];
      for (const label of ['e1', 'e2', 'e3', 'marker']) {
        published.push((await publishAck(pub, topic, [label])).id);
      }
      for (const inbox of inboxes) {
        await inbox.waitFor(4, 'all four publications');
        assert.deepStrictEqual(inbox.labels(), ['e1', 'e2', 'e3', 'marker'], `${inbox.name} events`);
        assert.deepStrictEqual(inbox.events.map((e) => e.details.publication), published,
          `${inbox.name} publication ids`);
      }
    });

    scenario('unsubscribe stops events; the other subscriber keeps getting them', ser, async (w) => {
      const topic = newUri('t_unsub');
      const a = await w.connect('A');
      const b = await w.connect('B');
      const pub = await w.connect('pub');
      const aInbox = new Inbox('A');
      const bInbox = new Inbox('B');
      const aSub = await subscribe(a, topic, aInbox);
      await subscribe(b, topic, bInbox);

      await publishAck(pub, topic, ['before']);
      await aInbox.waitFor(1, 'the first publication');
      await bInbox.waitFor(1, 'the first publication');

      await bounded(aSub.unsubscribe(), 'UNSUBSCRIBE by A');
      assert.equal(aSub.active, false);
      await publishAck(pub, topic, ['while unsubscribed']);
      await bInbox.waitFor(2, 'the second publication');

      // Autobahn|JS closes the connection on an EVENT for a subscription it
      // no longer has, so a leaked event would show up here as a dead session.
      assert.ok(a.isOpen,
        `A's session was closed after UNSUBSCRIBE (${a.closeReason}); the router probably ` +
        'kept sending it events of the old subscription');
      // resubscribe into the same inbox: the third publication must be the
      // first event A sees after "before"
      await subscribe(a, topic, aInbox);
      await publishAck(pub, topic, ['after resubscribe']);
      await aInbox.waitFor(2, 'the publication after resubscribing');
      await bInbox.waitFor(3, 'the third publication');
      assert.deepStrictEqual(aInbox.labels(), ['before', 'after resubscribe'],
        'A received an event while it was unsubscribed');
      assert.deepStrictEqual(bInbox.labels(), ['before', 'while unsubscribed', 'after resubscribe']);
    });
  });
}
