"""autobahn-python against a Roundhouse cluster: three nodes on one nats-server, callers on one
node, callees on the others, and every shared-registration rule behaving as on one router.

The suite starts its own cluster from ``ROUNDHOUSE_BIN`` and ``NATS_SERVER_BIN`` (scripts/interop.sh
sets both); without them, as against an external router, these tests are skipped. Nodes use a
1 s lease, so a killed node is seen lost within about a second.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from _wamp import (
    DIFFERENT_POLICY,
    PROCEDURE_ALREADY_EXISTS,
    bounded,
    call_names,
    expect_error,
    new_uri,
    register_named,
)

ROUNDHOUSE_BIN = os.environ.get("ROUNDHOUSE_BIN")
NATS_SERVER_BIN = os.environ.get("NATS_SERVER_BIN")

pytestmark = pytest.mark.skipif(
    not (ROUNDHOUSE_BIN and NATS_SERVER_BIN),
    reason="needs ROUNDHOUSE_BIN and NATS_SERVER_BIN (scripts/interop.sh sets them)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(path: str, needle: str, proc: subprocess.Popen, what: str, seconds: float = 20) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with open(path) as f:
                text = f.read()
            if needle in text:
                return text
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    with open(path) as f:
        raise AssertionError(f"{what} did not start:\n{f.read()[-3000:]}")


class Cluster:
    """One nats-server and Roundhouse nodes started from the real binaries."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="rh-interop-cluster-")
        self.nats_port = _free_port()
        self.name = f"interop{os.getpid()}"
        log = os.path.join(self.dir, "nats.log")
        self.nats = subprocess.Popen(
            [NATS_SERVER_BIN, "-a", "127.0.0.1", "-p", str(self.nats_port), "-js",
             "-sd", os.path.join(self.dir, "nats"), "-l", log]
        )
        _wait_for(log, "Server is ready", self.nats, "nats-server")
        self.nodes: dict[str, tuple[subprocess.Popen, str]] = {}

    def start_node(self, node: str) -> str:
        port = _free_port()
        config = os.path.join(self.dir, f"{node}.toml")
        with open(config, "w") as f:
            f.write(
                f'listen = "127.0.0.1:{port}"\n'
                "[admin]\nenabled = false\n"
                "[cluster]\n"
                f'nats_urls = ["nats://127.0.0.1:{self.nats_port}"]\n'
                f'cluster_name = "{self.name}"\n'
                f'node_id = "{node}"\n'
                "heartbeat_ms = 250\nlease_ms = 1000\n"
                '[[realm]]\nname = "realm1"\n'
            )
        log = os.path.join(self.dir, f"{node}.log")
        with open(log, "w") as out:
            proc = subprocess.Popen([ROUNDHOUSE_BIN, "--config", config], stdout=out, stderr=out)
        _wait_for(log, "router listening", proc, f"node {node}")
        url = f"ws://127.0.0.1:{port}/ws"
        self.nodes[node] = (proc, url)
        return url

    def kill(self, node: str) -> None:
        proc, _ = self.nodes.pop(node)
        proc.kill()
        proc.wait()

    def close(self) -> None:
        for proc, _ in self.nodes.values():
            proc.terminate()
        for proc, _ in self.nodes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.nats.terminate()
        self.nats.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    for node in ("n1", "n2", "n3"):
        c.start_node(node)
    yield c
    c.close()


def url(cluster: Cluster, node: str) -> str:
    return cluster.nodes[node][1]


async def three_callees(wamp, cluster, uri, invoke):
    """c1 on n2, c2 on n3, c3 on n2, registered one after the other (so in that order)."""
    callees = []
    for name, node in (("c1", "n2"), ("c2", "n3"), ("c3", "n2")):
        s = await wamp.connect("ws-json", name, url=url(cluster, node))
        await register_named(s, uri, invoke)
        callees.append(s)
    return callees


async def test_first_and_last_are_the_cluster_wide_first_and_last(cluster, wamp):
    for invoke, expected in (("first", "c1"), ("last", "c3")):
        uri = new_uri(f"cluster.{invoke}")
        await three_callees(wamp, cluster, uri, invoke)
        for node in ("n1", "n2", "n3"):
            caller = await wamp.connect("ws-json", f"caller-{invoke}-{node}", url=url(cluster, node))
            assert await call_names(caller, uri, 4) == [expected] * 4, f"{invoke} from {node}"


async def test_roundrobin_from_one_node_cycles_the_cluster_list_in_order(cluster, wamp):
    uri = new_uri("cluster.roundrobin")
    await three_callees(wamp, cluster, uri, "roundrobin")
    caller = await wamp.connect("ws-json", "caller-rr", url=url(cluster, "n1"))
    names = await call_names(caller, uri, 9)
    start = ["c1", "c2", "c3"].index(names[0])
    rotation = ["c1", "c2", "c3"][start:] + ["c1", "c2", "c3"][:start]
    assert names == rotation * 3, names


async def test_random_reaches_every_member_on_every_node(cluster, wamp):
    uri = new_uri("cluster.random")
    await three_callees(wamp, cluster, uri, "random")
    caller = await wamp.connect("ws-json", "caller-random", url=url(cluster, "n1"))
    names = await call_names(caller, uri, 60)
    assert set(names) == {"c1", "c2", "c3"}, names


async def test_single_and_a_different_rule_are_refused_on_another_node(cluster, wamp):
    uri = new_uri("cluster.single")
    owner = await wamp.connect("ws-json", "owner", url=url(cluster, "n2"))
    await register_named(owner, uri, "single")
    rival = await wamp.connect("ws-json", "rival", url=url(cluster, "n3"))
    await expect_error(register_named(rival, uri, "single"), PROCEDURE_ALREADY_EXISTS, "second single REGISTER on n3")
    shared = new_uri("cluster.mismatch")
    await register_named(owner, shared, "roundrobin")
    await expect_error(register_named(rival, shared, "random"), DIFFERENT_POLICY, "REGISTER with another rule on n3")
    caller = await wamp.connect("ws-json", "caller-single", url=url(cluster, "n1"))
    assert await call_names(caller, uri, 2) == ["owner", "owner"]


async def test_calls_fail_over_when_the_first_callees_node_is_killed(cluster, wamp):
    uri = new_uri("cluster.failover")
    victim_url = cluster.start_node("victim")
    primary = await wamp.connect("ws-json", "primary", url=victim_url)
    await register_named(primary, uri, "first")
    standby = await wamp.connect("ws-json", "standby", url=url(cluster, "n3"))
    await register_named(standby, uri, "first")
    caller = await wamp.connect("ws-json", "caller-failover", url=url(cluster, "n1"))
    assert await call_names(caller, uri, 2) == ["primary", "primary"]

    cluster.kill("victim")
    killed = time.monotonic()
    # NATS tells the caller's node at once that nobody listens on the dead node, and the call goes
    # to the standby; only a call that raced NATS noticing the closed connection may fail.
    while True:
        try:
            name = await bounded(caller.call(uri), "CALL after the kill", timeout=3)
            if name == "standby":
                break
        except Exception:  # noqa: BLE001 - a call routed to the dead node fails
            pass
        assert time.monotonic() - killed < 5, "the standby did not take over within the lease"
        await asyncio.sleep(0.05)
    assert await call_names(caller, uri, 3) == ["standby"] * 3
