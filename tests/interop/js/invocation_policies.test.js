'use strict';
// Which member of a shared registration gets each call (Autobahn|JS).
//
// Callees answer with their own name; every call is awaited before the next.
// Members register in order A, B, C, each REGISTER awaited before the next.

const assert = require('node:assert/strict');

const {
  SERIALIZER_IDS,
  LEAVE_KINDS,
  callNames,
  depart,
  newUri,
  registerNamed,
  scenario,
  suite,
} = require('./wamp');

/** Connect all callees first, then register them one after another. */
async function members(w, uri, invoke, names = ['A', 'B', 'C']) {
  const clients = {};
  for (const n of names) clients[n] = await w.connect(n);
  const regs = {};
  for (const n of names) regs[n] = await registerNamed(clients[n], uri, invoke);
  return { clients, regs };
}

function counts(got, names = ['A', 'B', 'C']) {
  const c = Object.fromEntries(names.map((n) => [n, 0]));
  for (const g of got) c[g] = (c[g] || 0) + 1;
  return c;
}

for (const ser of SERIALIZER_IDS) {
  suite(`invocation policies [${ser}]`, [ser], () => {
    // -- roundrobin ------------------------------------------------------------

    scenario('roundrobin rotates A,B,C,A,B,C', ser, async (w) => {
      const uri = newUri('rr');
      await members(w, uri, 'roundrobin');
      const caller = await w.connect('caller');
      assert.deepEqual(await callNames(caller, uri, 6), ['A', 'B', 'C', 'A', 'B', 'C']);
    });

    scenario('roundrobin keeps its rotation when C joins (A,B,A -> B,C,A)', ser, async (w) => {
      const uri = newUri('rr_join');
      await members(w, uri, 'roundrobin', ['A', 'B']);
      const caller = await w.connect('caller');
      assert.deepEqual(await callNames(caller, uri, 3), ['A', 'B', 'A']);

      const c = await w.connect('C');
      await registerNamed(c, uri, 'roundrobin');
      assert.deepEqual(await callNames(caller, uri, 3), ['B', 'C', 'A'], 'after C joined');
    });

    for (const kind of LEAVE_KINDS) {
      scenario(`roundrobin keeps its rotation when C leaves via ${kind} (A,B,C,A -> B,A)`, ser, async (w) => {
        const uri = newUri('rr_leave');
        const { clients, regs } = await members(w, uri, 'roundrobin');
        const caller = await w.connect('caller');
        assert.deepEqual(await callNames(caller, uri, 4), ['A', 'B', 'C', 'A']);

        await depart(clients.C, kind, regs.C);
        assert.deepEqual(await callNames(caller, uri, 2), ['B', 'A'], `after C left via ${kind}`);
      });
    }

    // -- first / last: hot standby ----------------------------------------------

    for (const kind of LEAVE_KINDS) {
      scenario(`first: A serves, fails over to B then C via ${kind}`, ser, async (w) => {
        const uri = newUri('first');
        const { clients, regs } = await members(w, uri, 'first');
        const caller = await w.connect('caller');
        assert.deepEqual(await callNames(caller, uri, 3), ['A', 'A', 'A']);

        await depart(clients.A, kind, regs.A);
        assert.deepEqual(await callNames(caller, uri, 2), ['B', 'B'], `after A left via ${kind}`);

        await depart(clients.B, kind, regs.B);
        assert.deepEqual(await callNames(caller, uri, 2), ['C', 'C'], `after B left via ${kind}`);
      });

      scenario(`last: C serves, fails over to B then A via ${kind}`, ser, async (w) => {
        const uri = newUri('last');
        const { clients, regs } = await members(w, uri, 'last');
        const caller = await w.connect('caller');
        assert.deepEqual(await callNames(caller, uri, 3), ['C', 'C', 'C']);

        await depart(clients.C, kind, regs.C);
        assert.deepEqual(await callNames(caller, uri, 2), ['B', 'B'], `after C left via ${kind}`);

        await depart(clients.B, kind, regs.B);
        assert.deepEqual(await callNames(caller, uri, 2), ['A', 'A'], `after B left via ${kind}`);
      });
    }

    scenario('first ignores later joiners', ser, async (w) => {
      const uri = newUri('first_join');
      await members(w, uri, 'first', ['A', 'B']);
      const caller = await w.connect('caller');
      assert.deepEqual(await callNames(caller, uri, 2), ['A', 'A']);
      const c = await w.connect('C');
      await registerNamed(c, uri, 'first');
      assert.deepEqual(await callNames(caller, uri, 2), ['A', 'A'], 'after C joined');
    });

    scenario('last follows the newest joiner', ser, async (w) => {
      const uri = newUri('last_join');
      await members(w, uri, 'last', ['A', 'B']);
      const caller = await w.connect('caller');
      assert.deepEqual(await callNames(caller, uri, 2), ['B', 'B']);
      const c = await w.connect('C');
      await registerNamed(c, uri, 'last');
      assert.deepEqual(await callNames(caller, uri, 2), ['C', 'C'], 'after C joined');
    });

    // -- random ------------------------------------------------------------------

    scenario('random spreads 300 calls over A, B and C', ser, async (w) => {
      const uri = newUri('random');
      await members(w, uri, 'random');
      const caller = await w.connect('caller');
      const got = await callNames(caller, uri, 300);
      const c = counts(got);
      assert.equal(got.length, 300);
      assert.deepEqual(Object.keys(c).sort(), ['A', 'B', 'C'], `unexpected answers: ${JSON.stringify(c)}`);
      for (const n of ['A', 'B', 'C']) {
        assert.ok(c[n] >= 30, `skewed random distribution: ${JSON.stringify(c)}`);
      }
    });

    for (const kind of LEAVE_KINDS) {
      scenario(`random never picks C after it left via ${kind}`, ser, async (w) => {
        const uri = newUri('random_leave');
        const { clients, regs } = await members(w, uri, 'random');
        const caller = await w.connect('caller');
        await callNames(caller, uri, 10);

        await depart(clients.C, kind, regs.C);
        const c = counts(await callNames(caller, uri, 60));
        assert.deepEqual(Object.keys(c).sort(), ['A', 'B', 'C'], `unexpected answers: ${JSON.stringify(c)}`);
        assert.equal(c.C, 0, `after C left via ${kind}: ${JSON.stringify(c)}`);
        assert.ok(c.A > 0 && c.B > 0, `after C left via ${kind}: ${JSON.stringify(c)}`);
      });
    }
  });
}
