"""pytest fixtures for the Roundhouse interop suite (autobahn-python, asyncio)."""

import asyncio
import os
import sys

import pytest
import txaio

sys.path.insert(0, os.path.dirname(__file__))

from _wamp import RS_URL, TRANSPORTS, URL, Wamp  # noqa: E402

# Route autobahn's own log output (warnings and up) into the captured output
# of a failing test.
txaio.use_asyncio()
txaio.start_logging(level=os.environ.get("INTEROP_AUTOBAHN_LOG", "warn"))


def pytest_report_header(config):
    return [
        f"roundhouse interop: router {URL} (WebSocket), {RS_URL} (RawSocket)",
        f"transports: {', '.join(TRANSPORTS)}",
    ]


def _preflight() -> dict:
    """Try one join per transport; returns {transport: error or None}."""
    from _wamp import connect

    async def probe(spec):
        s = await connect(spec, f"preflight-{spec}")
        closed = s.leave()
        if asyncio.isfuture(closed):
            await asyncio.wait_for(closed, 2.0)

    out = {}
    for ser in TRANSPORTS:
        try:
            asyncio.run(probe(ser))
            out[ser] = None
        except BaseException as e:  # noqa: BLE001 - report anything
            out[ser] = f"{type(e).__name__}: {e}"
    return out


@pytest.fixture(scope="session", autouse=True)
def router_reachable():
    """Fail the whole run at once if no session can join at all, instead of
    letting every test time out on its own."""
    errors = _preflight()
    if all(errors.values()):
        pytest.exit(
            f"cannot join realm at {URL} / {RS_URL}: "
            + "; ".join(f"{k}: {v}" for k, v in errors.items()),
            returncode=1,
        )


@pytest.fixture(params=TRANSPORTS)
def ser(request):
    """Every scenario runs once per transport: WebSocket and RawSocket, each
    with JSON, MessagePack and CBOR ("ws-json", ..., "rs-cbor")."""
    return request.param


@pytest.fixture
async def wamp():
    pool = Wamp()
    try:
        yield pool
    finally:
        await pool.close()
