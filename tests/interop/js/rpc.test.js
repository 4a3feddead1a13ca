'use strict';
// REGISTER errors, CALL errors and payload fidelity (Autobahn|JS).
//
// Registration contract:
// - same invocation policy on an existing URI -> shared, same registration id
// - existing single registration + any second REGISTER -> procedure_already_exists
// - existing shared registration + different or absent policy ->
//   procedure_exists_with_different_invocation_policy
// - unknown policy -> invalid_argument
// Autobahn|JS passes `options` through verbatim (no client-side check of
// `invoke`), so `invoke: 'single'` and bogus policies go on the wire as is.

const assert = require('node:assert/strict');

const {
  autobahn,
  SERIALIZER_IDS,
  SHARED_POLICIES,
  NO_SUCH_PROCEDURE,
  PROCEDURE_ALREADY_EXISTS,
  DIFFERENT_POLICY,
  INVALID_ARGUMENT,
  bounded,
  callNames,
  closeClient,
  expectError,
  newUri,
  registerNamed,
  scenario,
  suite,
} = require('./wamp');

// -- payloads -------------------------------------------------------------------
// JSON-representable values only: Autobahn|JS has no binary convention for
// JSON, and JS numbers do not distinguish 3 from 3.0.

const ARGS = [
  0, 1, -1, 2 ** 31, 2 ** 32 + 1, 2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 53, -(2 ** 53),
  3.25, -0.1, 1.5e300, -2.5e-7,
  true, false, null,
  '', 'plain ascii', 'héllo wörld', '日本語テキスト', 'emoji 🚀🎉 (outside the BMP)',
  'quote" backslash\\ slash/ newline\n tab\t cr\r',
  'control \u0001\u001f del \u007f', 'line sep \u2028 para sep \u2029',
  [], {}, [1, [2, [3, [4, []]]]],
  { nested: { list: [1, 'two', 3.5, null, true, false, { k: [] }] } },
  [{ a: 1 }, { b: [null] }, [[], {}]],
];

const KWARGS = {
  int: 42,
  zero: 0,
  big: 2 ** 53,
  neg_big: -(2 ** 53),
  float: 0.1,
  t: true,
  f: false,
  none: null,
  str: 'ünïcødé ✓ 🚀',
  'ключ': 'значение',
  empty_str: '',
  empty_list: [],
  empty_dict: {},
  list: [1, 2.5, 'three', [4], { five: 5 }],
  dict: { a: { b: { c: [1, 2, 3] } }, 'x y': 'space in key' },
};

const SHAPES = {
  'args and kwargs': [ARGS, KWARGS],
  'args only': [ARGS, undefined],
  'kwargs only': [undefined, KWARGS],
  'two args': [[1, 'two'], undefined],
};

/** Callee that records what it got and yields it straight back. */
function echo(received) {
  return (args, kwargs) => {
    received.push({ args, kwargs });
    return new autobahn.Result(args, kwargs);
  };
}

async function roundTrip(caller, uri, received, args, kwargs, what) {
  const res = await bounded(caller.session.call(uri, args, kwargs), `CALL ${what}`);
  const wantArgs = args || [];
  const wantKwargs = kwargs || {};
  assert.equal(received.length, 1, `${what}: callee invoked ${received.length} times`);
  assert.deepStrictEqual(received[0].args, wantArgs, `${what}: INVOCATION args changed in transit`);
  assert.deepStrictEqual(received[0].kwargs, wantKwargs, `${what}: INVOCATION kwargs changed in transit`);
  // Autobahn|JS wraps the result in autobahn.Result when there is more than one
  // positional result or any keyword result
  assert.ok(res instanceof autobahn.Result, `${what}: expected autobahn.Result, got ${JSON.stringify(res)}`);
  assert.deepStrictEqual(res.args, wantArgs, `${what}: RESULT args changed in transit`);
  assert.deepStrictEqual(res.kwargs, wantKwargs, `${what}: RESULT kwargs changed in transit`);
}

for (const ser of SERIALIZER_IDS) {
  suite(`registration [${ser}]`, [ser], () => {
    for (const invoke of SHARED_POLICIES) {
      scenario(`invoke=${invoke}: members share one registration id`, ser, async (w) => {
        const uri = newUri('shared_id');
        const [a, b, c] = [await w.connect('A'), await w.connect('B'), await w.connect('C')];
        const ra = await registerNamed(a, uri, invoke);
        const rb = await registerNamed(b, uri, invoke);
        const rc = await registerNamed(c, uri, invoke);
        assert.ok(ra.id === rb.id && rb.id === rc.id,
          `members of one shared registration got different ids A=${ra.id} B=${rb.id} C=${rc.id}`);
        const other = await registerNamed(a, newUri('shared_id_other'), invoke);
        assert.notEqual(other.id, ra.id, 'a different URI is a different registration');
      });
    }

    for (const second of [undefined, 'single', ...SHARED_POLICIES]) {
      scenario(`single registration + REGISTER invoke=${second} -> procedure_already_exists`, ser, async (w) => {
        const uri = newUri('single_dup');
        const a = await w.connect('A');
        const b = await w.connect('B');
        await registerNamed(a, uri); // no invoke option -> single
        await expectError(
          b.session.register(uri, () => 'B', second === undefined ? undefined : { invoke: second }),
          PROCEDURE_ALREADY_EXISTS,
          `second REGISTER (invoke=${second}) on an existing single registration`,
        );
        const caller = await w.connect('caller');
        assert.deepEqual(await callNames(caller, uri, 2), ['A', 'A'], 'A still owns the procedure');
      });
    }

    scenario("explicit invoke: 'single' on the wire is a single registration", ser, async (w) => {
      const uri = newUri('explicit_single');
      const a = await w.connect('A');
      const b = await w.connect('B');
      await registerNamed(a, uri, 'single');
      await expectError(b.session.register(uri, () => 'B'), PROCEDURE_ALREADY_EXISTS,
        'REGISTER without invoke after invoke=single');
      await expectError(b.session.register(uri, () => 'B', { invoke: 'single' }), PROCEDURE_ALREADY_EXISTS,
        'REGISTER invoke=single after invoke=single');
      await expectError(b.session.register(uri, () => 'B', { invoke: 'roundrobin' }), PROCEDURE_ALREADY_EXISTS,
        'REGISTER invoke=roundrobin after invoke=single');
    });

    for (const first of SHARED_POLICIES) {
      const others = [undefined, 'single', ...SHARED_POLICIES.filter((p) => p !== first)];
      scenario(`shared invoke=${first} + a different policy -> procedure_exists_with_different_invocation_policy`, ser, async (w) => {
        const uri = newUri('policy_clash');
        const a = await w.connect('A');
        const b = await w.connect('B');
        await registerNamed(a, uri, first);
        for (const second of others) {
          await expectError(
            b.session.register(uri, () => 'B', second === undefined ? undefined : { invoke: second }),
            DIFFERENT_POLICY,
            `REGISTER invoke=${second} on an existing invoke=${first} registration`,
          );
        }
        const caller = await w.connect('caller');
        assert.deepEqual(await callNames(caller, uri, 2), ['A', 'A'], 'A is still the only member');
      });
    }

    scenario('unknown invocation policy -> invalid_argument', ser, async (w) => {
      const uri = newUri('bogus_policy');
      const a = await w.connect('A');
      await expectError(a.session.register(uri, () => 'A', { invoke: 'bogus' }), INVALID_ARGUMENT,
        'REGISTER invoke=bogus');
      const caller = await w.connect('caller');
      await expectError(caller.session.call(uri), NO_SUCH_PROCEDURE, 'CALL after a rejected REGISTER');
    });
  });

  suite(`rpc [${ser}]`, [ser], () => {
    scenario('CALL of an unknown procedure -> no_such_procedure', ser, async (w) => {
      const caller = await w.connect('caller');
      await expectError(caller.session.call(newUri('nobody')), NO_SUCH_PROCEDURE, 'CALL of an unregistered URI');
    });

    scenario('no_such_procedure once the only callee unregistered', ser, async (w) => {
      const uri = newUri('gone_unreg');
      const a = await w.connect('A');
      const reg = await registerNamed(a, uri);
      const caller = await w.connect('caller');
      assert.deepEqual(await callNames(caller, uri, 1), ['A']);
      await bounded(reg.unregister(), 'UNREGISTER');
      await expectError(caller.session.call(uri), NO_SUCH_PROCEDURE, 'CALL after UNREGISTER');
    });

    scenario('no_such_procedure once the last shared member closed its session', ser, async (w) => {
      const uri = newUri('gone_close');
      const a = await w.connect('A');
      const b = await w.connect('B');
      await registerNamed(a, uri, 'roundrobin');
      await registerNamed(b, uri, 'roundrobin');
      const caller = await w.connect('caller');
      assert.deepEqual(await callNames(caller, uri, 2), ['A', 'B']);
      await closeClient(a);
      await closeClient(b);
      await expectError(caller.session.call(uri), NO_SUCH_PROCEDURE, 'CALL after both callees left');
    });

    for (const how of ['throw', 'reject']) {
      scenario(`callee ${how}s autobahn.Error('com.example.oops', [1,2], {x:3}) -> caller gets it unchanged`, ser, async (w) => {
        const uri = newUri('app_error');
        const callee = await w.connect('callee');
        await bounded(callee.session.register(uri, () => {
          const err = new autobahn.Error('com.example.oops', [1, 2], { x: 3 });
          if (how === 'throw') throw err;
          return Promise.reject(err);
        }), 'REGISTER');
        const caller = await w.connect('caller');
        const e = await expectError(caller.session.call(uri, ['in']), 'com.example.oops', 'CALL of a failing procedure');
        assert.deepStrictEqual(e.args, [1, 2], 'error args');
        assert.deepStrictEqual(e.kwargs, { x: 3 }, 'error kwargs');
      });
    }

    scenario('callee error without args/kwargs arrives with empty args/kwargs', ser, async (w) => {
      const uri = newUri('bare_error');
      const callee = await w.connect('callee');
      await bounded(callee.session.register(uri, () => { throw new autobahn.Error('com.example.bare'); }), 'REGISTER');
      const caller = await w.connect('caller');
      const e = await expectError(caller.session.call(uri), 'com.example.bare', 'CALL');
      assert.deepStrictEqual(e.args, []);
      assert.deepStrictEqual(e.kwargs, {});
    });

    for (const [shape, [args, kwargs]] of Object.entries(SHAPES)) {
      scenario(`args/kwargs round trip: ${shape}`, ser, async (w) => {
        const uri = newUri('echo');
        const received = [];
        const callee = await w.connect('callee');
        await bounded(callee.session.register(uri, echo(received)), 'REGISTER');
        const caller = await w.connect('caller');
        await roundTrip(caller, uri, received, args, kwargs, shape);
      });
    }

    scenario('single positional result and empty result', ser, async (w) => {
      const uri = newUri('plain');
      const callee = await w.connect('callee');
      const received = [];
      await bounded(callee.session.register(uri, (args, kwargs) => {
        received.push({ args, kwargs });
        return args.length ? args[0] : new autobahn.Result();
      }), 'REGISTER');
      const caller = await w.connect('caller');
      const value = { k: ['v', 1, null, true] };
      // Autobahn|JS unwraps a RESULT with exactly one positional arg and no kwargs
      assert.deepStrictEqual(await bounded(caller.session.call(uri, [value]), 'CALL [value]'), value);
      // ...and a RESULT without payload resolves to null
      assert.equal(await bounded(caller.session.call(uri), 'CALL ()'), null);
      assert.deepStrictEqual(received, [{ args: [value], kwargs: {} }, { args: [], kwargs: {} }]);
    });
  });
}

suite('rpc across serializers', ['json', 'msgpack'], () => {
  for (const [callerSer, calleeSer] of [['json', 'msgpack'], ['msgpack', 'json']]) {
    scenario(`${callerSer} caller -> ${calleeSer} callee: payload and errors unchanged`, callerSer, async (w) => {
      const uri = newUri('cross');
      const errUri = newUri('cross_err');
      const received = [];
      const callee = await w.connect('callee', calleeSer);
      await bounded(callee.session.register(uri, echo(received)), 'REGISTER echo');
      await bounded(callee.session.register(errUri, () => {
        throw new autobahn.Error('com.example.oops', [1, 2], { x: 3 });
      }), 'REGISTER failing');
      const caller = await w.connect('caller', callerSer);
      await roundTrip(caller, uri, received, ARGS, KWARGS, `${callerSer} -> ${calleeSer}`);
      const e = await expectError(caller.session.call(errUri), 'com.example.oops', 'CALL of a failing procedure');
      assert.deepStrictEqual(e.args, [1, 2]);
      assert.deepStrictEqual(e.kwargs, { x: 3 });
    });
  }
});
