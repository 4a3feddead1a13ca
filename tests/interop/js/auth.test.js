'use strict';
// Authentication with Autobahn|JS: ticket and WAMP-CRA (plain and salted) against the "auth"
// realm of tests/interop/router.toml; a wrong secret is refused with the spec's URI. Then an
// Autobahn|JS dynamic authenticator (registered in realm1) admits Autobahn|JS clients to the
// "auth.dynamic" realm.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { test } = require('node:test');

const {
  autobahn,
  SERIALIZER_IDS,
  bounded,
  closeClient,
  connect,
  expectError,
  suite,
} = require('./wamp');

const AUTH = 'auth';

function ticket(authid, secret) {
  return { authmethods: ['ticket'], authid, onchallenge: () => secret };
}

function wampcra(authid, secret) {
  return {
    authmethods: ['wampcra'],
    authid,
    onchallenge: (session, method, extra) => {
      let key = secret;
      if (extra.salt) key = autobahn.auth_cra.derive_key(secret, extra.salt, extra.iterations, extra.keylen);
      return autobahn.auth_cra.sign(key, extra.challenge);
    },
  };
}

const LOGINS = [
  ['ticket', 'joe', ticket('joe', 'secret!!!')],
  ['wampcra', 'cra', wampcra('cra', 'L3L1YUE8Txlw')],
  ['wampcra', 'salty', wampcra('salty', 'saltypw')],
];

const REFUSALS = [
  ['wrong ticket', ticket('joe', 'wrong'), 'wamp.error.authentication_denied'],
  ['wrong WAMP-CRA secret', wampcra('cra', 'wrong'), 'wamp.error.authentication_denied'],
  ['wrong salted WAMP-CRA secret', wampcra('salty', 'wrong'), 'wamp.error.authentication_denied'],
  ['unknown authid', ticket('nobody', 'x'), 'wamp.error.no_such_principal'],
];

for (const ser of SERIALIZER_IDS) {
  suite(`authentication [${ser}]`, [ser], () => {
    for (const [method, authid, auth] of LOGINS) {
      test(`${method} welcomes ${authid} in role user, authorized by its rules`, async () => {
        const client = await connect(ser, `auth-${authid}`, { realm: AUTH, auth });
        try {
          assert.equal(client.welcome.authid, authid);
          assert.equal(client.welcome.authrole, 'user');
          assert.equal(client.welcome.authmethod, method);
          const uri = `com.app.js.p${crypto.randomBytes(5).toString('hex')}`;
          await bounded(client.session.register(uri, () => 'ok'), 'register');
          assert.equal(await bounded(client.session.call(uri), 'call'), 'ok');
          await expectError(client.session.call('com.app.secret.x'), 'wamp.error.not_authorized', 'denied call');
        } finally {
          await closeClient(client);
        }
      });
    }
    for (const [what, auth, uri] of REFUSALS) {
      test(`${what} is refused with ${uri}`, async () => {
        await assert.rejects(connect(ser, `refused-${what}`, { realm: AUTH, auth }), (e) => {
          assert.ok(e.message.includes(uri), e.message);
          return true;
        });
      });
    }
  });
}

// A dynamic authenticator in Autobahn|JS: router.toml's "auth.dynamic" realm asks
// com.interop.authenticate, registered in realm1, with (realm, authid, authmethod, details).
const DYNAMIC = 'auth.dynamic';

function authenticate([realm, authid, authmethod, details]) {
  assert.equal(realm, DYNAMIC);
  if (authmethod === 'ticket' && authid === 'js-joe') {
    if (details.ticket === 'js-ticket') return { role: 'user', authextra: { source: 'js' } };
    throw new autobahn.Error('wamp.error.authentication_denied', ['wrong ticket for js-joe']);
  }
  if (authmethod === 'wampcra' && authid === 'js-cra') return { role: 'user', secret: 'js-cra-secret' };
  throw new autobahn.Error('wamp.error.no_such_principal', [`no principal ${authid}`]);
}

for (const ser of SERIALIZER_IDS) {
  suite(`dynamic authenticator [${ser}]`, [ser], () => {
    test('an Autobahn|JS authenticator admits Autobahn|JS clients, and refuses with its URIs', async () => {
      const backend = await connect(ser, 'js-authenticator');
      try {
        await bounded(backend.session.register('com.interop.authenticate', authenticate), 'register the authenticator');
        for (const [method, authid, auth] of [
          ['ticket', 'js-joe', ticket('js-joe', 'js-ticket')],
          ['wampcra', 'js-cra', wampcra('js-cra', 'js-cra-secret')],
        ]) {
          const client = await connect(ser, `dynamic-${authid}`, { realm: DYNAMIC, auth });
          try {
            assert.equal(client.welcome.authid, authid);
            assert.equal(client.welcome.authrole, 'user');
            assert.equal(client.welcome.authmethod, method);
            assert.equal(client.welcome.authprovider, 'dynamic');
          } finally {
            await closeClient(client);
          }
        }
        for (const [auth, uri] of [
          [ticket('js-joe', 'wrong'), 'wamp.error.authentication_denied'],
          [ticket('nobody', 'x'), 'wamp.error.no_such_principal'],
        ]) {
          await assert.rejects(connect(ser, 'dynamic-refused', { realm: DYNAMIC, auth }), (e) => {
            assert.ok(e.message.includes(uri), e.message);
            return true;
          });
        }
      } finally {
        await closeClient(backend);
      }
    });
  });
}
