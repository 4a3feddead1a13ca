"""Pattern-based registrations and the meta API with autobahn-python.

- ``RegisterOptions(match="prefix"|"wildcard", details_arg="details")``: the
  callee learns the procedure actually called from ``details.procedure``.
- The meta API is plain CALLs to ``wamp.registration.*`` / ``wamp.session.*``
  and SUBSCRIBEs to their ``on_*`` topics, answered by the router itself.
"""

import asyncio

from autobahn.wamp.types import RegisterOptions

from _wamp import Inbox, bounded, new_uri, subscribe_inbox


def _called(tag):
    """A handler answering with its tag and the procedure the caller called."""

    def handler(*args, details=None, **kwargs):
        return [tag, details.procedure if details is not None else None]

    return handler


async def test_calls_go_to_the_most_specific_pattern_registration(wamp, ser):
    base = new_uri("pattern")
    callee = await wamp.connect(ser, "callee")
    caller = await wamp.connect(ser, "caller")
    for tag, uri, match in [
        ("exact", f"{base}.a.b", None),
        ("short-prefix", f"{base}.a", "prefix"),
        ("long-prefix", f"{base}.a.b", "prefix"),
        ("wildcard", f"{base}..x", "wildcard"),
    ]:
        opts = RegisterOptions(match=match, details_arg="details")
        await bounded(callee.register(_called(tag), uri, options=opts), f"REGISTER {uri} ({match})")

    async def who(uri):
        return await bounded(caller.call(uri), f"CALL {uri}")

    # autobahn fills details.procedure from the registration when the router sends none
    assert (await who(f"{base}.a.b"))[0] == "exact", "an exact registration wins"
    assert await who(f"{base}.a.b.c") == ["long-prefix", f"{base}.a.b.c"], "the longer prefix wins"
    assert await who(f"{base}.a.z") == ["short-prefix", f"{base}.a.z"]
    assert await who(f"{base}.q.x") == ["wildcard", f"{base}.q.x"]


async def test_registration_meta_procedures_and_events(wamp, ser):
    uri = new_uri("meta")
    observer = await wamp.connect(ser, "observer")
    callee = await wamp.connect(ser, "callee")
    inboxes = {}
    for topic in ["on_create", "on_register", "on_unregister", "on_delete"]:
        inboxes[topic] = Inbox(topic)
        await subscribe_inbox(observer, f"wamp.registration.{topic}", inboxes[topic])

    registration = await bounded(
        callee.register(lambda: "ok", uri, options=RegisterOptions(invoke="roundrobin")), "REGISTER"
    )
    reg_id = registration.id
    assert await bounded(observer.call("wamp.registration.lookup", uri), "lookup") == reg_id
    assert await bounded(observer.call("wamp.registration.match", uri), "match") == reg_id
    got = await bounded(observer.call("wamp.registration.get", reg_id), "get")
    assert (got["uri"], got["invoke"], got["match"]) == (uri, "roundrobin", "exact")
    callees = await bounded(observer.call("wamp.registration.list_callees", reg_id), "list_callees")
    assert callees == [callee.session_id]
    assert await bounded(observer.call("wamp.registration.count_callees", reg_id), "count") == 1

    await inboxes["on_create"].wait_for(1, "on_create")
    await inboxes["on_register"].wait_for(1, "on_register")
    args, _, _ = inboxes["on_register"].events[0]
    assert args == [callee.session_id, reg_id]
    await bounded(registration.unregister(), "UNREGISTER")
    await inboxes["on_unregister"].wait_for(1, "on_unregister")
    await inboxes["on_delete"].wait_for(1, "on_delete")
    assert inboxes["on_delete"].events[0][0] == [callee.session_id, reg_id]


async def test_session_meta_procedures_events_and_kill(wamp, ser):
    admin = await wamp.connect(ser, "admin")
    joins, leaves = Inbox("on_join"), Inbox("on_leave")
    await subscribe_inbox(admin, "wamp.session.on_join", joins)
    await subscribe_inbox(admin, "wamp.session.on_leave", leaves)
    victim = await wamp.connect(ser, "victim")
    await joins.wait_for(1, "on_join of the victim")
    assert joins.events[-1][0][0]["session"] == victim.session_id

    ids = await bounded(admin.call("wamp.session.list"), "session.list")
    assert victim.session_id in ids and admin.session_id in ids
    details = await bounded(admin.call("wamp.session.get", victim.session_id), "session.get")
    assert details["authrole"] == "anonymous"

    left = asyncio.get_running_loop().create_future()
    victim.on("leave", lambda session, details: left.done() or left.set_result(details.reason))
    await bounded(admin.call("wamp.session.kill", victim.session_id, reason="com.example.maintenance"), "kill")
    assert await bounded(left, "the victim's GOODBYE") == "com.example.maintenance"
    await leaves.wait_for(1, "on_leave of the victim")
    assert leaves.events[-1][0][0] == victim.session_id
