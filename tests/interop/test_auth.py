"""Authentication and authorization with autobahn-python: ticket, WAMP-CRA (plain and salted) and
cryptosign (autobahn's CryptosignKey) against the "auth" realm of router.toml, over every
transport; refusals reach the client as the spec's URIs."""

import asyncio

import pytest
from autobahn.wamp import auth as wamp_auth
from autobahn.wamp.cryptosign import CryptosignKey
from autobahn.wamp.exception import ApplicationError

from _wamp import bounded, connect, expect_error, new_uri

AUTH = "auth"
# The spec's first cryptosign test vector; router.toml holds its public key for "signer".
SIGNER_KEY = bytes.fromhex("4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510")
OTHER_KEY = bytes.fromhex("d511fe78e23934b3dadb52fcd022974b80bd92bccc7c5cf404e46cc0a8a2f5cd")


def ticket(authid, secret):
    return {"authmethods": ["ticket"], "authid": authid, "on_challenge": lambda c: secret}


def wampcra(authid, secret):
    def answer(challenge):
        key = secret
        if "salt" in challenge.extra:
            extra = challenge.extra
            key = wamp_auth.derive_key(secret, extra["salt"], extra["iterations"], extra["keylen"])
        return wamp_auth.compute_wcs(key, challenge.extra["challenge"]).decode("ascii")

    return {"authmethods": ["wampcra"], "authid": authid, "on_challenge": answer}


def cryptosign(private_key):
    key = CryptosignKey.from_bytes(private_key)
    return {
        "authmethods": ["cryptosign"],
        "authextra": {"pubkey": key.public_key()},
        "on_challenge": key.sign_challenge,
    }


METHODS = {
    "ticket": ("joe", "ticket", ticket("joe", "secret!!!")),
    "wampcra": ("cra", "wampcra", wampcra("cra", "L3L1YUE8Txlw")),
    "wampcra-salted": ("salty", "wampcra", wampcra("salty", "saltypw")),
    "cryptosign": ("signer", "cryptosign", cryptosign(SIGNER_KEY)),
}


@pytest.mark.parametrize("method", list(METHODS))
async def test_each_method_joins_and_is_authorized_by_its_role(wamp, ser, method):
    authid, authmethod, auth = METHODS[method]
    session = await wamp.connect(ser, f"auth-{method}", realm=AUTH, auth=auth)
    assert session.authid == authid
    assert session.authrole == "user"
    assert session.welcome.authmethod == authmethod

    uri = "com.app." + new_uri("auth")
    seen = []

    def who(*args, details=None):
        seen.append((details.caller_authid, details.caller_authrole))
        return "ok"

    from autobahn.wamp.types import RegisterOptions

    await bounded(session.register(who, uri, options=RegisterOptions(details_arg="details")), "register")
    assert await bounded(session.call(uri), "call") == "ok"
    assert seen == [(authid, "user")], "the role's disclose rule names the caller"

    await expect_error(session.call("com.app.secret.x"), "wamp.error.not_authorized", "call in a denied subtree")
    await expect_error(session.register(who, "org.elsewhere.p"), "wamp.error.not_authorized", "register outside")
    await expect_error(session.subscribe(lambda: None, "org.elsewhere.t"), "wamp.error.not_authorized", "subscribe")
    await expect_error(session.call("wamp.session.kill_all"), "wamp.error.not_authorized", "admin meta")


REFUSALS = {
    "wrong ticket": (ticket("joe", "wrong"), "wamp.error.authentication_denied"),
    "unknown authid": (ticket("nobody", "x"), "wamp.error.no_such_principal"),
    "wrong wampcra secret": (wampcra("cra", "wrong"), "wamp.error.authentication_denied"),
    "wrong salted secret": (wampcra("salty", "wrong"), "wamp.error.authentication_denied"),
    "unknown cryptosign key": (cryptosign(OTHER_KEY), "wamp.error.no_such_principal"),
    "method not offered": (
        {"authmethods": ["anonymous"], "on_challenge": lambda c: ""},
        "wamp.error.no_matching_auth_method",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refusals_reach_the_client_as_the_specs_uris(ser, case):
    auth, uri = REFUSALS[case]
    with pytest.raises(ConnectionError) as refused:
        await connect(ser, f"refused-{case}", realm=AUTH, auth=auth)
    assert uri in str(refused.value), f"{case}: {refused.value}"


async def test_a_wrong_cryptosign_key_for_a_named_authid_is_denied(ser):
    auth = cryptosign(OTHER_KEY)
    auth["authid"] = "signer"
    with pytest.raises(ConnectionError) as refused:
        await connect(ser, "wrong-key", realm=AUTH, auth=auth)
    assert "wamp.error.no_such_principal" in str(refused.value)


async def test_anonymous_realm1_still_works_beside_the_auth_realm(wamp, ser):
    session = await wamp.connect(ser, "anonymous")
    assert session.authrole == "anonymous"
    assert session.welcome.authmethod == "anonymous"
    with pytest.raises(ApplicationError):
        await asyncio.wait_for(session.call(new_uri("nobody.here")), 5)


# ---------------------------------------------------------------------------------------------
# A dynamic authenticator written with autobahn-python: it registers com.interop.authenticate in
# realm1 (router.toml's "auth.dynamic" realm asks it) and admits autobahn-python clients.

DYNAMIC = "auth.dynamic"
AUTHENTICATOR = "com.interop.authenticate"
DYN_SIGNER = CryptosignKey.from_bytes(OTHER_KEY)


def authenticate(realm, authid, authmethod, details):
    """The authenticator: (realm, authid, authmethod, details) -> the principal, or an error."""
    assert realm == DYNAMIC, realm
    assert details["authmethod"] == authmethod
    assert details["transport"]["type"] in ("websocket", "rawsocket")
    if authmethod == "ticket" and authid == "dyn-joe":
        if details.get("ticket") == "dyn-ticket":
            return {"role": "user", "authextra": {"source": "python"}}
        raise ApplicationError("wamp.error.authentication_denied", "wrong ticket for dyn-joe")
    if authmethod == "wampcra" and authid == "dyn-salty":
        key = wamp_auth.derive_key("dyn-salty-pw", "pepper", 1000, 32).decode("ascii")
        return {"role": "user", "derived_key": key, "salt": "pepper", "iterations": 1000, "keylen": 32}
    if authmethod == "wampcra" and authid == "dyn-cra":
        return {"role": "user", "secret": "dyn-cra-secret"}
    if authmethod == "cryptosign" and details["authextra"].get("pubkey") == DYN_SIGNER.public_key():
        return {"role": "user", "authid": "dyn-signer", "pubkey": DYN_SIGNER.public_key()}
    raise ApplicationError("wamp.error.no_such_principal", f"no principal {authid!r}")


DYNAMIC_LOGINS = {
    "ticket": (ticket("dyn-joe", "dyn-ticket"), "dyn-joe", "ticket"),
    "wampcra": (wampcra("dyn-cra", "dyn-cra-secret"), "dyn-cra", "wampcra"),
    "wampcra-salted": (wampcra("dyn-salty", "dyn-salty-pw"), "dyn-salty", "wampcra"),
    "cryptosign": (cryptosign(OTHER_KEY), "dyn-signer", "cryptosign"),
}

DYNAMIC_REFUSALS = {
    "wrong ticket": (ticket("dyn-joe", "wrong"), "wamp.error.authentication_denied"),
    "unknown authid": (ticket("nobody", "x"), "wamp.error.no_such_principal"),
    "wrong wampcra secret": (wampcra("dyn-cra", "wrong"), "wamp.error.authentication_denied"),
    "unknown key": (cryptosign(SIGNER_KEY), "wamp.error.no_such_principal"),
}


async def test_an_autobahn_authenticator_admits_autobahn_clients(wamp, ser):
    backend = await wamp.connect(ser, "authenticator")
    await bounded(backend.register(authenticate, AUTHENTICATOR), "register the authenticator")
    for login, (auth, authid, authmethod) in DYNAMIC_LOGINS.items():
        session = await wamp.connect(ser, f"dynamic-{login}", realm=DYNAMIC, auth=auth)
        assert session.authid == authid, login
        assert session.authrole == "user", login
        assert session.welcome.authmethod == authmethod, login
        assert session.welcome.authprovider == "dynamic", login
        if login == "ticket":
            assert session.welcome.authextra == {"source": "python"}
        uri = "com.app." + new_uri("dynamic")
        await bounded(session.register(lambda: "ok", uri), "register as a dynamic principal")
        assert await bounded(session.call(uri), "call") == "ok"
    for case, (auth, uri) in DYNAMIC_REFUSALS.items():
        with pytest.raises(ConnectionError) as refused:
            await connect(ser, f"dynamic-refused-{case}", realm=DYNAMIC, auth=auth)
        assert uri in str(refused.value), f"{case}: {refused.value}"

    # Without the authenticator, logins fail (and say why); the router goes on.
    closed = backend.leave()
    if asyncio.isfuture(closed):
        await bounded(closed, "authenticator leaves")
    with pytest.raises(ConnectionError) as refused:
        await connect(ser, "dynamic-no-authenticator", realm=DYNAMIC, auth=DYNAMIC_LOGINS["wampcra"][0])
    assert "wamp.error.authentication_failed" in str(refused.value)
