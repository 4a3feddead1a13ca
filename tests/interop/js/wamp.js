'use strict';
// Shared helpers for the Autobahn|JS part of the Roundhouse interop suite.
//
// Every session is a plain `new autobahn.Connection({...}).open()` with one
// serializer pinned (JSON or MessagePack), so every scenario runs once per
// serializer. Everything that waits on the router goes through `bounded()`,
// so a broken router fails a test within INTEROP_TIMEOUT seconds instead of
// hanging it.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { inspect } = require('node:util');
const { before, describe, test } = require('node:test');

const autobahn = require('autobahn');

const URL = process.env.ROUNDHOUSE_URL || 'ws://127.0.0.1:8080/ws';
const REALM = process.env.ROUNDHOUSE_REALM || 'realm1';
// Upper bound for any single await on the router, ms.
const TIMEOUT = 1000 * Number(process.env.INTEROP_TIMEOUT || 5);
// After a departure without GOODBYE the router learns about it on the dropped
// connection, which races with the caller's next CALL on another connection.
const SETTLE = 1000 * Number(process.env.INTEROP_SETTLE || 0.3);
// Last-resort guard per test (every await is bounded already).
const TEST_TIMEOUT = 60_000;

const SERIALIZERS = {
  json: () => new autobahn.serializer.JSONSerializer(),
  msgpack: () => {
    // autobahn only defines MsgpackSerializer when require('msgpack5') works
    assert.ok(
      autobahn.serializer.MsgpackSerializer,
      'autobahn.serializer.MsgpackSerializer missing: msgpack5 not installed?',
    );
    return new autobahn.serializer.MsgpackSerializer();
  },
};
const SERIALIZER_IDS = Object.keys(SERIALIZERS);

// The ways a callee stops being a member of a registration.
//   unregister: UNREGISTER, the session stays joined
//   close:      connection.close() -> WAMP GOODBYE, then the WebSocket closes
//   ws_close:   WebSocket close handshake without any WAMP GOODBYE
//               (connection._transport.close(), an Autobahn|JS internal)
const LEAVE_KINDS = ['unregister', 'close', 'ws_close'];
const SHARED_POLICIES = ['roundrobin', 'random', 'first', 'last'];

const NO_SUCH_PROCEDURE = 'wamp.error.no_such_procedure';
const PROCEDURE_ALREADY_EXISTS = 'wamp.error.procedure_already_exists';
const DIFFERENT_POLICY = 'wamp.error.procedure_exists_with_different_invocation_policy';
const INVALID_ARGUMENT = 'wamp.error.invalid_argument';

// -- autobahn's own log output ---------------------------------------------
//
// Autobahn|JS logs through console.warn / console.error (e.g. "connection
// closed" on every close, and every error a callee raises). Buffer it and show
// it only with a failing test, like pytest's captured output.
// INTEROP_AUTOBAHN_LOG=warn prints it live instead.
const LIVE_LOG = ['warn', 'info', 'debug'].includes(process.env.INTEROP_AUTOBAHN_LOG || '');
let logBuffer = [];
function fmt(args) {
  return args
    .map((a) => (typeof a === 'string' ? a : inspect(a, { depth: 4 })))
    .join(' ');
}
function record(level, args) {
  const line = `[autobahn ${level}] ${fmt(args)}`;
  if (LIVE_LOG) console.error(line);
  else logBuffer.push(line);
}
autobahn.log.warn = (...args) => record('warn', args);
const onUserError = (err, msg) => record('user_error', [msg || '', err]);
const onInternalError = (err, msg) => record('internal_error', [msg || '', err]);

// -- bounded waits ------------------------------------------------------------

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Await `p` for at most `ms`; fail with `what` otherwise. */
async function bounded(p, what, ms = TIMEOUT) {
  const promise = Promise.resolve(p);
  promise.catch(() => {}); // a late rejection after a timeout is not "unhandled"
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new assert.AssertionError({
        message: `router did not answer within ${(ms / 1000).toFixed(1)}s: ${what}`,
      })),
      ms,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Await `p` (bounded) and require an autobahn.Error with `uri`. */
async function expectError(p, uri, what) {
  let res;
  try {
    res = await bounded(p, what);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(
      e instanceof autobahn.Error,
      `${what}: expected autobahn.Error ${uri}, got ${fmt([e])}`,
    );
    assert.equal(
      e.error, uri,
      `${what}: expected error ${uri}, got ${e.error} (args=${JSON.stringify(e.args)}, kwargs=${JSON.stringify(e.kwargs)})`,
    );
    return e;
  }
  assert.fail(`${what}: expected error ${uri}, but it succeeded with ${fmt([res])}`);
}

let uriCounter = 0;
/** A URI unique to this run (tests never share state). */
function newUri(tag) {
  uriCounter += 1;
  return `com.roundhouse.interop.js.${tag}.p${uriCounter}_${crypto.randomBytes(5).toString('hex')}`;
}

// -- sessions -------------------------------------------------------------------

class Client {
  constructor(name, ser) {
    this.name = name;
    this.ser = ser;
    this.conn = null;
    this.session = null;
    this.closeReason = null;
    this.closeDetails = null;
    this.isClosed = false;
    this.gone = new Promise((resolve) => { this._resolveGone = resolve; });
  }

  get isOpen() {
    return !this.isClosed && this.session !== null && this.session.isOpen;
  }
}

/**
 * Open one connection with a single serializer and wait for WELCOME. `auth` adds Autobahn|JS's
 * authentication options (`authmethods`, `authid`, `onchallenge`).
 */
async function connect(ser, name, { url = URL, realm = REALM, auth = {} } = {}) {
  const client = new Client(name, ser);
  const joined = new Promise((resolve, reject) => {
    const conn = new autobahn.Connection({
      url,
      realm,
      serializers: [SERIALIZERS[ser]()],
      // no auto-reconnect: a dropped connection must stay dropped
      max_retries: 0,
      retry_if_unreachable: false,
      // native promises instead of when.js
      use_es6_promises: true,
      on_user_error: onUserError,
      on_internal_error: onInternalError,
      ...auth,
    });
    client.conn = conn;
    conn.onopen = (session, details) => {
      client.session = session;
      client.welcome = details;
      resolve(session);
    };
    conn.onclose = (reason, details) => {
      client.isClosed = true;
      client.closeReason = reason;
      client.closeDetails = details;
      client._resolveGone({ reason, details });
      reject(new Error(
        `session ${name} (${ser}) closed before WELCOME: ${reason} ${JSON.stringify(details)}`,
      ));
      return true; // never retry
    };
    conn.open();
  });
  try {
    await bounded(joined, `WebSocket + HELLO/WELCOME of session ${name} (${ser}) at ${url}`);
  } catch (e) {
    forceClose(client);
    throw e;
  }
  const proto = client.welcome.transport && client.welcome.transport.protocol;
  assert.equal(proto, `wamp.2.${ser}`, `negotiated subprotocol of ${name}`);
  return client;
}

function forceClose(client) {
  try {
    if (client.conn && client.conn._transport) client.conn._transport.close();
  } catch (_) { /* already closed */ }
}

/** GOODBYE + WebSocket close, bounded. */
async function closeClient(client, ms = TIMEOUT) {
  if (client.isClosed) return;
  client.conn.close();
  await bounded(client.gone, `GOODBYE/close of ${client.name}`, ms);
}

/** Per-test session pool; everything it opened is closed afterwards. */
class Pool {
  constructor(ser) {
    this.ser = ser;
    this.clients = [];
  }

  async connect(name, ser = this.ser) {
    const c = await connect(ser, name);
    this.clients.push(c);
    return c;
  }

  async close() {
    await Promise.all(this.clients.map(async (c) => {
      if (c.isClosed) return;
      try {
        if (c.isOpen) await closeClient(c, 2000);
        else {
          forceClose(c);
          await bounded(c.gone, `close of ${c.name}`, 2000);
        }
      } catch (_) {
        forceClose(c);
      }
    }));
  }
}

const preflights = {};
/**
 * One join per serializer and test file, run from a `before()` hook: if the
 * router cannot be joined at all, the whole group fails at once with a clear
 * message instead of every test timing out on its own.
 */
function preflight(ser) {
  if (!preflights[ser]) {
    preflights[ser] = (async () => {
      const c = await connect(ser, `preflight-${ser}`);
      await closeClient(c);
    })();
  }
  return preflights[ser].catch((e) => {
    throw new Error(`cannot join realm ${REALM} at ${URL} with wamp.2.${ser}: ${e.message}`);
  });
}

/** `describe()` whose tests only run once every serializer in `sers` can join. */
function suite(title, sers, fn) {
  describe(title, () => {
    before(() => Promise.all(sers.map(preflight)));
    fn();
  });
}

/**
 * `test()` with a fresh session pool that is torn down afterwards; on failure
 * autobahn's buffered log output is appended to the error message.
 */
function scenario(name, ser, fn) {
  test(name, { timeout: TEST_TIMEOUT }, async () => {
    logBuffer = [];
    const pool = new Pool(ser);
    try {
      await fn(pool);
    } catch (e) {
      if (logBuffer.length && e && typeof e.message === 'string') {
        e.message += `\n--- autobahn log ---\n${logBuffer.join('\n')}`;
      }
      throw e;
    } finally {
      await pool.close();
      logBuffer = [];
    }
  });
}

// -- callees --------------------------------------------------------------------

/** A procedure that answers with the callee's name. */
function nameHandler(name, hits) {
  return () => {
    if (hits) hits.push(name);
    return name;
  };
}

/** Register `uri` on `client` with `{invoke}` (no options when undefined). */
function registerNamed(client, uri, invoke, hits) {
  const opts = invoke === undefined ? undefined : { invoke };
  return bounded(
    client.session.register(uri, nameHandler(client.name, hits), opts),
    `REGISTER ${uri} by ${client.name} (invoke=${invoke})`,
  );
}

/** n sequential calls, each awaited before the next; returns who answered. */
async function callNames(caller, uri, n) {
  const out = [];
  for (let i = 0; i < n; i += 1) {
    out.push(await bounded(caller.session.call(uri), `CALL #${i + 1} of ${uri}`));
  }
  return out;
}

/** Make `client` stop serving `registration` in the given way. */
async function depart(client, kind, registration) {
  if (kind === 'unregister') {
    await bounded(registration.unregister(), `UNREGISTER by ${client.name}`);
  } else if (kind === 'close') {
    // GOODBYE, router answers GOODBYE, then the WebSocket is closed
    await closeClient(client);
  } else if (kind === 'ws_close') {
    // WebSocket close handshake, no WAMP GOODBYE
    client.conn._transport.close();
    await bounded(client.gone, `WebSocket close of ${client.name}`);
    await sleep(SETTLE);
  } else {
    throw new Error(`unknown departure ${kind}`);
  }
}

// -- events ----------------------------------------------------------------------

/** Records the events one subscriber receives; wait for a count, bounded. */
class Inbox {
  constructor(name) {
    this.name = name;
    this.events = [];
    this._waiters = [];
    this.handler = (args, kwargs, details) => {
      this.events.push({ args, kwargs, details });
      this._waiters = this._waiters.filter((w) => {
        if (this.events.length >= w.n) { w.resolve(); return false; }
        return true;
      });
    };
  }

  /** Resolve once at least n events arrived (bounded). */
  async waitFor(n, what) {
    if (this.events.length < n) {
      await bounded(
        new Promise((resolve) => this._waiters.push({ n, resolve })),
        `${this.name} waiting for event #${n}: ${what} (got ${this.events.length}: ${this.describe()})`,
      );
    }
    return this.events;
  }

  /** Positional args[0] of every event, in arrival order. */
  labels() {
    return this.events.map((e) => e.args[0]);
  }

  describe() {
    return JSON.stringify(this.events.map((e) => ({ args: e.args, kwargs: e.kwargs })));
  }
}

function subscribe(client, topic, inbox, options) {
  return bounded(
    client.session.subscribe(topic, inbox.handler, options),
    `SUBSCRIBE ${topic} by ${client.name}`,
  );
}

/** PUBLISH with acknowledge: true (plus `options`); resolves to the Publication. */
function publishAck(client, topic, args, kwargs, options = {}) {
  return bounded(
    client.session.publish(topic, args, kwargs, { ...options, acknowledge: true }),
    `acknowledged PUBLISH to ${topic} by ${client.name} (options ${JSON.stringify(options)})`,
  );
}

module.exports = {
  autobahn,
  URL,
  REALM,
  TIMEOUT,
  SETTLE,
  SERIALIZER_IDS,
  LEAVE_KINDS,
  SHARED_POLICIES,
  NO_SUCH_PROCEDURE,
  PROCEDURE_ALREADY_EXISTS,
  DIFFERENT_POLICY,
  INVALID_ARGUMENT,
  sleep,
  bounded,
  expectError,
  newUri,
  connect,
  closeClient,
  Pool,
  preflight,
  suite,
  scenario,
  nameHandler,
  registerNamed,
  callNames,
  depart,
  Inbox,
  subscribe,
  publishAck,
};
