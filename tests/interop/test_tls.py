"""autobahn-python over TLS: ``wss://`` and RawSocket over TLS (``rss://``), and the ``tls``
authentication method with a client certificate.

The suite's shared router speaks plain text, so this module starts a router of
its own (the binary in ``ROUNDHOUSE_BIN``, default ``target/debug/roundhouse``)
with a plain listener and a TLS ``[[listener]]`` that serves both transports,
using a CA and a router certificate for ``127.0.0.1`` made at test time with
``trustme`` (PyPI). Clients trust that CA through a standard ``ssl`` context.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import ssl
import subprocess
import threading

import pytest
import trustme
from autobahn.asyncio.wamp import ApplicationRunner, ApplicationSession

from _wamp import SERIALIZERS, TIMEOUT, bounded, new_uri

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ROUNDHOUSE_BIN", os.path.join(ROOT, "target", "debug", "roundhouse"))
REALM = "realm1"


class TlsRouter:
    def __init__(self, wss: str, ca: trustme.CA, device: trustme.LeafCert, stranger: trustme.LeafCert):
        host_port = wss.split("://", 1)[1].split("/", 1)[0]
        self.wss = wss
        self.rss = f"rss://{host_port}"
        self.ca = ca
        self.device = device
        self.stranger = stranger

    def trusting(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        return ctx

    def presenting(self, leaf: trustme.LeafCert) -> ssl.SSLContext:
        ctx = self.trusting()
        leaf.configure_cert(ctx)
        return ctx


def fingerprint(leaf: trustme.LeafCert) -> str:
    """SHA-256 of the leaf certificate's DER, as the router's tls_fingerprint takes it."""
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode("ascii"))
    return hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
def tls_router(tmp_path_factory):
    if not os.path.isfile(BIN):
        if os.environ.get("INTEROP_EXTERNAL_URL"):
            pytest.skip("TLS interop starts its own router; no binary next to an external router")
        raise AssertionError(f"router binary {BIN} not found (build it, or set ROUNDHOUSE_BIN)")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    work = tmp_path_factory.mktemp("tls")
    with open(work / "router.pem", "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    cert.private_key_pem.write_to_path(str(work / "router.key"))
    # Client certificates: "device" is a principal of the "secure" realm (by fingerprint);
    # "stranger" is verified by the same CA but maps to nobody.
    clients = trustme.CA()
    clients.cert_pem.write_to_path(str(work / "clients-ca.pem"))
    device = clients.issue_cert("device-1.example.com")
    stranger = clients.issue_cert("stranger.example.com")
    (work / "router.toml").write_text(
        'listen = "127.0.0.1:0"\n'
        'log_level = "info"\n'
        'log_format = "json"\n'
        "[[realm]]\n"
        'name = "realm1"\n'
        "[[realm]]\n"
        'name = "secure"\n'
        "anonymous = false\n"
        "[[realm.principal]]\n"
        'authid = "device-1"\n'
        'role = "device"\n'
        f'tls_fingerprint = "{fingerprint(device)}"\n'
        "[[realm.role]]\n"
        'name = "device"\n'
        'permissions = [{ uri = "com.device.", match = "prefix", allow = ["call", "register"] }]\n'
        "[[listener]]\n"
        'listen = "127.0.0.1:0"\n'
        'tls = { cert = "router.pem", key = "router.key", client_ca = "clients-ca.pem", client_auth = "optional" }\n'
    )
    proc = subprocess.Popen(
        [BIN, "--config", str(work / "router.toml")],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True).start()
    wss = None
    try:
        while wss is None:
            line = lines.get(timeout=10)
            # JSON logs are flat: an event's fields sit beside its message.
            fields = json.loads(line)
            if str(fields.get("url", "")).startswith("wss://"):
                wss = fields["url"]
        yield TlsRouter(wss, ca, device, stranger)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"the TLS router exited with {proc.returncode}"


class Session(ApplicationSession):
    def __init__(self, config):
        super().__init__(config)
        self.joined = asyncio.get_running_loop().create_future()

    def onJoin(self, details):
        if not self.joined.done():
            self.joined.set_result(details)

    def onLeave(self, details):
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(f"left before joining: {details.reason}"))
        return super().onLeave(details)

    def onDisconnect(self):
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("transport closed before WELCOME"))
        super().onDisconnect()


class TlsAuthSession(Session):
    """Joins offering only the ``tls`` authentication method."""

    def onConnect(self):
        self.join(self.config.realm, authmethods=["tls"])


async def join(url: str, ctx: ssl.SSLContext, serializer: str, realm: str = REALM, tls_auth: bool = False) -> Session:
    created = asyncio.get_running_loop().create_future()

    def make(cfg):
        s = TlsAuthSession(cfg) if tls_auth else Session(cfg)
        created.set_result(s)
        return s

    runner = ApplicationRunner(url, realm, ssl=ctx, serializers=[SERIALIZERS[serializer]()])
    await bounded(runner.run(make, start_loop=False), f"TLS connect to {url}")
    session = await bounded(created, f"handshake with {url}")
    await bounded(asyncio.shield(session.joined), f"HELLO/WELCOME over {url}")
    return session


async def leave(session: Session) -> None:
    closed = session.leave()
    if asyncio.isfuture(closed):
        await bounded(closed, "GOODBYE")


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
async def test_calls_over_wss_and_rawsocket_tls(tls_router, serializer):
    callee = await join(tls_router.wss, tls_router.trusting(), serializer)
    caller = await join(tls_router.rss, tls_router.trusting(), serializer)
    uri = new_uri("tls")
    await bounded(callee.register(lambda x: ["echo", x], uri), "REGISTER over wss")
    result = await bounded(caller.call(uri, 42), "CALL over RawSocket-TLS")
    assert result == ["echo", 42]
    # and the other way round
    uri2 = new_uri("tls")
    await bounded(caller.register(lambda: "from rss", uri2), "REGISTER over RawSocket-TLS")
    assert await bounded(callee.call(uri2), "CALL over wss") == "from rss"
    await leave(caller)
    await leave(callee)


@pytest.mark.parametrize("scheme", ["wss", "rss"])
async def test_a_client_that_does_not_trust_the_router_fails_and_others_go_on(tls_router, scheme):
    url = tls_router.wss if scheme == "wss" else tls_router.rss
    stranger = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trustme.CA().configure_trust(stranger)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        await asyncio.wait_for(join(url, stranger, "json"), TIMEOUT)
    session = await join(url, tls_router.trusting(), "json")
    await leave(session)


@pytest.mark.parametrize("scheme", ["wss", "rss"])
async def test_a_client_certificate_logs_in_with_the_tls_method(tls_router, scheme):
    url = tls_router.wss if scheme == "wss" else tls_router.rss
    device = await join(url, tls_router.presenting(tls_router.device), "json", realm="secure", tls_auth=True)
    details = await device.joined
    assert (details.authid, details.authrole, details.authmethod) == ("device-1", "device", "tls")
    uri = "com.device." + new_uri("tls")
    await bounded(device.register(lambda: "ok", uri), "REGISTER as the device")
    assert await bounded(device.call(uri), "CALL as the device") == "ok"
    # A certificate no principal has, and no certificate at all: ABORT no_such_principal.
    for ctx in (tls_router.presenting(tls_router.stranger), tls_router.trusting()):
        with pytest.raises(ConnectionError) as refused:
            await join(url, ctx, "json", realm="secure", tls_auth=True)
        assert "wamp.error.no_such_principal" in str(refused.value)
    await leave(device)
