'use strict';
// Roundhouse's dealer extensions from Autobahn|JS, which sends REGISTER and CALL options as given:
// the load-based invoke names, per-callee `concurrency` with the call queue, `rkey` with
// `jump_consistent_hash` and `runmode: "partition"`, `_callee`, and invoke-all (`runmode: "all"`).

const assert = require('node:assert/strict');

const {
  autobahn,
  SERIALIZER_IDS,
  INVALID_ARGUMENT,
  bounded,
  expectError,
  newUri,
  registerNamed,
  scenario,
  sleep,
  suite,
} = require('./wamp');

const NO_AVAILABLE_CALLEE = 'wamp.error.no_available_callee';

/** Registers a callee whose calls wait until the test lets them go: `held` lists them. */
function registerHolding(client, uri, options, held) {
  const endpoint = () => new Promise((resolve) => held.push({ name: client.name, release: () => resolve(client.name) }));
  return bounded(client.session.register(uri, endpoint, options), `REGISTER ${uri} by ${client.name}`);
}

async function until(condition, what) {
  for (let i = 0; i < 200; i += 1) {
    if (condition()) return;
    await sleep(10);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** The member jump consistent hash names for `key` among the first `members` (mirrors the router). */
function bucket(key, members) {
  const mask = (1n << 64n) - 1n;
  let hash = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(String(key), 'utf8')) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & mask;
  }
  hash = ((hash ^ (hash >> 30n)) * 0xbf58476d1ce4e5b9n) & mask;
  hash = ((hash ^ (hash >> 27n)) * 0x94d049bb133111ebn) & mask;
  let k = hash ^ (hash >> 31n);
  let b = -1;
  let j = 0;
  while (j < members) {
    b = j;
    k = (k * 2862933555777941757n + 1n) & mask;
    j = Math.floor((b + 1) * (Number(1n << 31n) / Number((k >> 33n) + 1n)));
  }
  return b;
}

for (const ser of SERIALIZER_IDS) {
  suite(`dealer extensions [${ser}]`, [ser], () => {
    scenario('queue_least_loaded sends a call to the member with the fewest in flight', ser, async (w) => {
      const uri = newUri('least_loaded');
      const held = [];
      for (const name of ['A', 'B', 'C']) {
        await registerHolding(await w.connect(name), uri, { invoke: 'queue_least_loaded' }, held);
      }
      const caller = await w.connect('caller');
      const calls = [caller.session.call(uri), caller.session.call(uri), caller.session.call(uri)];
      await until(() => held.length === 3, 'three held calls');
      assert.deepEqual(held.map((h) => h.name).sort(), ['A', 'B', 'C']);
      held.find((h) => h.name === 'B').release();
      assert.ok((await bounded(Promise.race(calls), 'a result')) === 'B');
      const fourth = caller.session.call(uri);
      await until(() => held.length === 4, 'the fourth call');
      assert.equal(held[3].name, 'B', 'B had nothing in flight');
      held.forEach((h) => h.release());
      assert.deepEqual((await bounded(Promise.all([...calls, fourth]), 'all results')).sort(), ['A', 'B', 'B', 'C']);
    });

    scenario('concurrency 1 queues the second call until the first is answered', ser, async (w) => {
      const uri = newUri('concurrency');
      const held = [];
      await registerHolding(await w.connect('A'), uri, { invoke: 'roundrobin', concurrency: 1 }, held);
      const caller = await w.connect('caller');
      const first = caller.session.call(uri);
      const second = caller.session.call(uri);
      await until(() => held.length === 1, 'the first call');
      await sleep(100);
      assert.equal(held.length, 1, 'the second call waits in the queue');
      held[0].release();
      assert.equal(await bounded(first, 'first result'), 'A');
      await until(() => held.length === 2, 'the second call');
      held[1].release();
      assert.equal(await bounded(second, 'second result'), 'A');
    });

    scenario('jump_consistent_hash and runmode partition stick each rkey to one member', ser, async (w) => {
      const sticky = newUri('jch');
      const pool = newUri('partition');
      const names = ['A', 'B', 'C'];
      for (const name of names) {
        const client = await w.connect(name);
        await registerNamed(client, sticky, 'jump_consistent_hash');
        await registerNamed(client, pool, 'roundrobin');
      }
      const caller = await w.connect('caller');
      for (const key of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 42]) {
        const expected = names[bucket(key, 3)];
        for (let i = 0; i < 2; i += 1) {
          assert.equal(await bounded(caller.session.call(sticky, [], {}, { rkey: key }), `rkey ${key}`), expected);
          const partitioned = caller.session.call(pool, [], {}, { runmode: 'partition', rkey: key });
          assert.equal(await bounded(partitioned, `partition ${key}`), expected);
        }
      }
      await expectError(caller.session.call(sticky), INVALID_ARGUMENT, 'a keyed call without rkey');
      await expectError(caller.session.call(pool, [], {}, { runmode: 'partition' }), INVALID_ARGUMENT, 'partition without rkey');
    });

    scenario('_callee sends a call to that member only', ser, async (w) => {
      const uri = newUri('targeted');
      const members = {};
      for (const name of ['A', 'B', 'C']) {
        members[name] = await w.connect(name);
        await registerNamed(members[name], uri, 'roundrobin');
      }
      const caller = await w.connect('caller');
      for (const name of ['C', 'C', 'A', 'B']) {
        const options = { _callee: members[name].session.id };
        assert.equal(await bounded(caller.session.call(uri, [], {}, options), `_callee ${name}`), name);
      }
      await expectError(caller.session.call(uri, [], {}, { _callee: caller.session.id }), NO_AVAILABLE_CALLEE, 'not a member');
    });

    scenario('runmode all reaches every member, one progressive result each, then the final one', ser, async (w) => {
      const uri = newUri('all');
      const names = ['A', 'B', 'C'];
      for (const name of names) {
        await registerNamed(await w.connect(name), uri, 'roundrobin');
      }
      const failing = await w.connect('D');
      const fail = () => {
        throw new autobahn.Error('com.example.oops', ['bad', 1]);
      };
      await bounded(failing.session.register(uri, fail, { invoke: 'roundrobin' }), `REGISTER ${uri} by D`);
      const caller = await w.connect('caller');
      // Autobahn|JS hands a progressive RESULT to its deferred's notify(), which native promises
      // lack: this caller's deferreds record them.
      const progress = [];
      caller.session._defer = () => {
        const d = { notify: (result) => progress.push(result) };
        d.promise = new Promise((resolve, reject) => Object.assign(d, { resolve, reject }));
        return d;
      };
      const all = caller.session.call(uri, ['x'], {}, { runmode: 'all', receive_progress: true });
      assert.equal(await bounded(all, 'invoke-all call'), null, 'the final RESULT is empty');
      assert.deepEqual(progress.filter((r) => typeof r === 'string').sort(), names);
      assert.deepEqual(progress.filter((r) => typeof r !== 'string').map((r) => r.args), [['bad', 1]]);
      await expectError(caller.session.call(uri, [], {}, { runmode: 'all' }), INVALID_ARGUMENT, 'without receive_progress');
    });
  });
}
