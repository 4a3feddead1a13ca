"""Trusting the router on a network, with autobahn-python: sessions that stay quiet through
several of the router's keepalive rounds stay connected (WebSocket peers answer the pings;
RawSocket peers are not pinged by default, since autobahn-python's RawSocket does not implement
PING), and one client sending bytes the JSON grammar forbids is aborted without disturbing the
callees it meant to call."""

import asyncio
import json
import socket
import struct

from _wamp import RS_URL, bounded, call_names, new_uri, register_named

# The interop router (tests/interop/router.toml) pings every 0.3 s and closes a peer silent
# for 1.5 s.
QUIET = 3.5


async def test_a_quiet_session_outlives_the_idle_timeout(wamp, ser):
    quiet = await wamp.connect(ser, "quiet")
    await asyncio.sleep(QUIET)
    count = await bounded(quiet.call("wamp.session.count"), "CALL after a quiet spell")
    assert count >= 1


def _rawsocket_json(host: str, port: int) -> socket.socket:
    """A RawSocket-JSON connection made by hand, joined to realm1."""
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(bytes([0x7F, 0xF1, 0, 0]))
    reply = s.recv(4)
    assert reply[0] == 0x7F and reply[1] & 0x0F == 1, reply
    _send(s, json.dumps([1, "realm1", {"roles": {"caller": {}}}]).encode())
    welcome = json.loads(_recv(s))
    assert welcome[0] == 2, welcome
    return s


def _send(s: socket.socket, payload: bytes) -> None:
    s.sendall(struct.pack(">I", len(payload)) + payload)


def _recv(s: socket.socket) -> bytes:
    header = b""
    while len(header) < 4:
        header += s.recv(4 - len(header))
    length = struct.unpack(">I", b"\0" + header[1:])[0]
    body = b""
    while len(body) < length:
        body += s.recv(length - len(body))
    return body


async def test_a_malformed_call_hurts_only_its_sender(wamp, ser):
    uri = new_uri("echo")
    workers = [await wamp.connect(ser, f"w{i}") for i in range(2)]
    for worker in workers:
        await register_named(worker, uri, "roundrobin")
    host, port = RS_URL.removeprefix("rs://").split(":")
    for bad in (
        b'[48,1,{},"' + uri.encode() + b'",[01]]',  # a leading zero
        b'[48,2,{},"' + uri.encode() + b'",["\xff"]]',  # not UTF-8
    ):
        def attack():
            s = _rawsocket_json(host, int(port))
            try:
                _send(s, bad)
                return json.loads(_recv(s))
            finally:
                s.close()

        abort = await asyncio.to_thread(attack)
        assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation", abort
    caller = await wamp.connect(ser, "caller")
    names = await call_names(caller, uri, 4)
    assert sorted(names) == ["w0", "w0", "w1", "w1"], names
