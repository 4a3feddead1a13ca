"""Which member of a shared registration gets each call.

Callees answer with their own name; every call is awaited before the next.
Members are registered in order A, B, C, each REGISTER awaited before the next.
"""

import pytest

from _wamp import (
    LEAVE_KINDS,
    call_names,
    depart,
    new_uri,
    register_named,
)


async def _members(wamp, ser, uri, invoke, names=("A", "B", "C")):
    """Connect all callees first, then register them one after another."""
    sessions = [await wamp.connect(ser, n) for n in names]
    regs = {}
    for s in sessions:
        regs[s.name] = await register_named(s, uri, invoke)
    return {s.name: s for s in sessions}, regs


# -- roundrobin ---------------------------------------------------------------


async def test_roundrobin_rotation(wamp, ser):
    uri = new_uri("rr")
    await _members(wamp, ser, uri, "roundrobin")
    caller = await wamp.connect(ser, "caller")
    assert await call_names(caller, uri, 6) == ["A", "B", "C", "A", "B", "C"]


async def test_roundrobin_join_keeps_rotation(wamp, ser):
    uri = new_uri("rr_join")
    await _members(wamp, ser, uri, "roundrobin", names=("A", "B"))
    caller = await wamp.connect(ser, "caller")
    assert await call_names(caller, uri, 3) == ["A", "B", "A"]

    c = await wamp.connect(ser, "C")
    await register_named(c, uri, "roundrobin")
    assert await call_names(caller, uri, 3) == ["B", "C", "A"]


@pytest.mark.parametrize("kind", LEAVE_KINDS)
async def test_roundrobin_leave_keeps_rotation(wamp, ser, kind):
    uri = new_uri("rr_leave")
    sessions, regs = await _members(wamp, ser, uri, "roundrobin")
    caller = await wamp.connect(ser, "caller")
    assert await call_names(caller, uri, 4) == ["A", "B", "C", "A"]

    await depart(sessions["C"], kind, regs["C"])
    assert await call_names(caller, uri, 2) == ["B", "A"], f"after C left via {kind}"


# -- first / last: hot standby ------------------------------------------------


@pytest.mark.parametrize("kind", LEAVE_KINDS)
async def test_first_failover(wamp, ser, kind):
    uri = new_uri("first")
    sessions, regs = await _members(wamp, ser, uri, "first")
    caller = await wamp.connect(ser, "caller")
    assert await call_names(caller, uri, 3) == ["A", "A", "A"]

    await depart(sessions["A"], kind, regs["A"])
    assert await call_names(caller, uri, 2) == ["B", "B"], f"after A left via {kind}"

    await depart(sessions["B"], kind, regs["B"])
    assert await call_names(caller, uri, 2) == ["C", "C"], f"after B left via {kind}"


@pytest.mark.parametrize("kind", LEAVE_KINDS)
async def test_last_failover(wamp, ser, kind):
    uri = new_uri("last")
    sessions, regs = await _members(wamp, ser, uri, "last")
    caller = await wamp.connect(ser, "caller")
    assert await call_names(caller, uri, 3) == ["C", "C", "C"]

    await depart(sessions["C"], kind, regs["C"])
    assert await call_names(caller, uri, 2) == ["B", "B"], f"after C left via {kind}"

    await depart(sessions["B"], kind, regs["B"])
    assert await call_names(caller, uri, 2) == ["A", "A"], f"after B left via {kind}"


async def test_first_ignores_later_joiners(wamp, ser):
    uri = new_uri("first_join")
    await _members(wamp, ser, uri, "first", names=("A", "B"))
    caller = await wamp.connect(ser, "caller")
    assert await call_names(caller, uri, 2) == ["A", "A"]
    c = await wamp.connect(ser, "C")
    await register_named(c, uri, "first")
    assert await call_names(caller, uri, 2) == ["A", "A"]


async def test_last_follows_newest_joiner(wamp, ser):
    uri = new_uri("last_join")
    await _members(wamp, ser, uri, "last", names=("A", "B"))
    caller = await wamp.connect(ser, "caller")
    assert await call_names(caller, uri, 2) == ["B", "B"]
    c = await wamp.connect(ser, "C")
    await register_named(c, uri, "last")
    assert await call_names(caller, uri, 2) == ["C", "C"]


# -- random ---------------------------------------------------------------------


async def test_random_reaches_every_member(wamp, ser):
    uri = new_uri("random")
    await _members(wamp, ser, uri, "random")
    caller = await wamp.connect(ser, "caller")
    got = await call_names(caller, uri, 300)
    counts = {n: got.count(n) for n in ("A", "B", "C")}
    assert sum(counts.values()) == 300, f"unexpected answers: {set(got)}"
    assert all(v >= 30 for v in counts.values()), f"skewed random distribution: {counts}"


@pytest.mark.parametrize("kind", LEAVE_KINDS)
async def test_random_failover(wamp, ser, kind):
    uri = new_uri("random_leave")
    sessions, regs = await _members(wamp, ser, uri, "random")
    caller = await wamp.connect(ser, "caller")
    await call_names(caller, uri, 10)

    await depart(sessions["C"], kind, regs["C"])
    got = await call_names(caller, uri, 60)
    counts = {n: got.count(n) for n in ("A", "B", "C")}
    assert counts["C"] == 0 and counts["A"] + counts["B"] == 60, (
        f"after C left via {kind}: {counts}"
    )
    assert counts["A"] > 0 and counts["B"] > 0, f"after C left via {kind}: {counts}"
