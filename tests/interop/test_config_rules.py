"""Invocation rules from the router's config (``[[realm.procedure]]`` in router.toml) for
autobahn-python, whose ``RegisterOptions(invoke=...)`` takes the contract's five names only and
whose ``call()`` cannot send ``rkey``: callees register plainly and the config's rule routes.
"""

import asyncio

from _wamp import bounded, new_uri

# router.toml: realm1's blocks for these prefixes.
LEAST_LOADED = "cfg_least_loaded"  # invoke = "queue_least_loaded"
KEYED = "cfg_keyed"  # invoke = "jump_consistent_hash", rkey = "kwargs.user_id"
DEEP_KEYED = "cfg_deep_keyed"  # invoke = "jump_consistent_hash", rkey = "kwargs.user.id"

MASK = (1 << 64) - 1


def rkey_hash(key: str) -> int:
    """The router's key hash: FNV-1a of the UTF-8 bytes, then splitmix64's finalizer."""
    h = 0xCBF29CE484222325
    for byte in key.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & MASK
    return h ^ (h >> 31)


def jump_consistent_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash, as the router computes it."""
    bucket, following = -1, 0
    while following < buckets:
        bucket = following
        key = (key * 2862933555777941757 + 1) & MASK
        following = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return max(bucket, 0)


async def _until(condition, what: str):
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _rule_in_force(session, uri: str) -> str:
    registration = await bounded(session.call("wamp.registration.lookup", uri), "lookup")
    details = await bounded(session.call("wamp.registration.get", registration), "get")
    return details["invoke"]


async def test_config_makes_plain_registers_least_loaded(wamp, ser):
    uri = new_uri(LEAST_LOADED)
    names = ["A", "B", "C"]
    waiting: list[tuple[str, asyncio.Future]] = []

    def holder(name):
        async def handler():
            answer = asyncio.get_running_loop().create_future()
            waiting.append((name, answer))
            return await answer

        return handler

    for name in names:
        callee = await wamp.connect(ser, name)
        # No options: without the config the second REGISTER would be procedure_already_exists.
        await bounded(callee.register(holder(name), uri), f"REGISTER {uri} as {name}")
    caller = await wamp.connect(ser, "caller")
    assert await _rule_in_force(caller, uri) == "queue_least_loaded"
    calls = []
    for expected in ["A", "B", "C"]:
        calls.append(asyncio.ensure_future(caller.call(uri)))
        await _until(lambda: len(waiting) == len(calls), f"invocation {len(calls)}")
        assert waiting[-1][0] == expected, f"idle members in registration order: {waiting}"
    # B answers: it alone has nothing in flight, so it takes the next call.
    waiting[1][1].set_result("B done")
    assert await bounded(calls[1], "B's result") == "B done"
    calls.append(asyncio.ensure_future(caller.call(uri)))
    await _until(lambda: len(waiting) == 4, "invocation 4")
    assert waiting[3][0] == "B", f"the least loaded member: {waiting}"
    for _, answer in waiting:
        if not answer.done():
            answer.set_result("done")
    for call in calls:
        await bounded(call, "result")


async def _keyed_by(wamp, ser, prefix: str, kwargs_of):
    """Three plain callees of a keyed registration; 24 keys, each sent as `kwargs_of(key)`, reach
    the member the router's hash names, every time."""
    uri = new_uri(prefix)
    names = ["A", "B", "C"]
    for name in names:
        callee = await wamp.connect(ser, name)
        await bounded(callee.register(lambda name=name, **_: name, uri), f"REGISTER {uri} as {name}")
    caller = await wamp.connect(ser, "caller")
    assert await _rule_in_force(caller, uri) == "jump_consistent_hash"
    served = set()
    for k in range(24):
        user = f"user-{k}"
        expected = names[jump_consistent_hash(rkey_hash(user), len(names))]
        got = await bounded(caller.call(uri, **kwargs_of(user)), f"call for {user}")
        assert got == expected, f"{user}: served by {got}, expected {expected}"
        again = await bounded(caller.call(uri, **kwargs_of(user)), f"second call for {user}")
        assert again == got, "one key, one member"
        served.add(got)
    assert served == set(names), "24 keys spread over all three members"


async def test_config_keys_calls_by_a_kwarg(wamp, ser):
    await _keyed_by(wamp, ser, KEYED, lambda user: {"user_id": user})


async def test_config_keys_calls_by_a_path_into_a_kwarg(wamp, ser):
    await _keyed_by(wamp, ser, DEEP_KEYED, lambda user: {"user": {"id": user, "name": "someone"}})
