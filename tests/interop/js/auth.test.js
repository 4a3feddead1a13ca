'use strict';
// Authentication with Autobahn|JS: ticket and WAMP-CRA (plain and salted) against the "auth"
// realm of tests/interop/router.toml; a wrong secret is refused with the spec's URI.

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
