"""REGISTER / UNREGISTER contract for shared registrations.

- same invocation policy on an existing URI -> shared, same registration id
- existing ``single`` registration + any second REGISTER -> procedure_already_exists
- existing shared registration + different or absent policy ->
  procedure_exists_with_different_invocation_policy
- unknown policy -> invalid_argument
- second UNREGISTER of the same registration -> no_such_registration
"""

import pytest
from autobahn.wamp.types import RegisterOptions

from _wamp import (
    DIFFERENT_POLICY,
    INVALID_ARGUMENT,
    NO_SUCH_PROCEDURE,
    NO_SUCH_REGISTRATION,
    PROCEDURE_ALREADY_EXISTS,
    SHARED_POLICIES,
    bounded,
    call_names,
    expect_error,
    new_uri,
    raw_register,
    raw_unregister,
    register_named,
)


@pytest.mark.parametrize("invoke", SHARED_POLICIES)
async def test_same_policy_shares_one_registration_id(wamp, ser, invoke):
    uri = new_uri("shared_id")
    other_uri = new_uri("shared_id_other")
    a = await wamp.connect(ser, "A")
    b = await wamp.connect(ser, "B")
    c = await wamp.connect(ser, "C")

    reg_a = await register_named(a, uri, invoke)
    reg_b = await register_named(b, uri, invoke)
    reg_c = await register_named(c, uri, invoke)
    assert reg_a.id == reg_b.id == reg_c.id, (
        f"invoke={invoke}: members of one shared registration got different ids "
        f"A={reg_a.id} B={reg_b.id} C={reg_c.id}"
    )

    # a different URI is a different registration
    reg_other = await register_named(a, other_uri, invoke)
    assert reg_other.id != reg_a.id

    # and the shared registration is callable
    caller = await wamp.connect(ser, "caller")
    got = await call_names(caller, uri, 3)
    assert set(got) <= {"A", "B", "C"}, got


@pytest.mark.parametrize("second_invoke", [None, "roundrobin", "first", "random", "last"])
async def test_single_registration_rejects_second_register(wamp, ser, second_invoke):
    uri = new_uri("single_dup")
    a = await wamp.connect(ser, "A")
    b = await wamp.connect(ser, "B")
    await register_named(a, uri)  # no invoke option -> "single"

    await expect_error(
        b.register(lambda: "B", uri, options=_opts(second_invoke)),
        PROCEDURE_ALREADY_EXISTS,
        f"second REGISTER (invoke={second_invoke}) on an existing single registration",
    )

    # A still owns it
    caller = await wamp.connect(ser, "caller")
    assert await call_names(caller, uri, 2) == ["A", "A"]


async def test_explicit_single_on_the_wire(wamp, ser):
    """invoke="single" sent explicitly behaves exactly like an absent option.

    autobahn never puts invoke="single" on the wire, so the first REGISTER is
    built by hand.
    """
    uri = new_uri("explicit_single")
    a = await wamp.connect(ser, "A")
    b = await wamp.connect(ser, "B")

    await raw_register(a, uri, {"invoke": "single"})
    await expect_error(
        b.register(lambda: "B", uri),
        PROCEDURE_ALREADY_EXISTS,
        "REGISTER (no invoke) on an existing explicit-single registration",
    )
    await expect_error(
        raw_register(b, uri, {"invoke": "single"}),
        PROCEDURE_ALREADY_EXISTS,
        "REGISTER invoke=single on an existing explicit-single registration",
    )
    caller = await wamp.connect(ser, "caller")
    assert await call_names(caller, uri, 1) == ["A"]


@pytest.mark.parametrize("existing", SHARED_POLICIES)
async def test_shared_registration_rejects_other_policy(wamp, ser, existing):
    uri = new_uri("policy_mismatch")
    a = await wamp.connect(ser, "A")
    b = await wamp.connect(ser, "B")
    reg_a = await register_named(a, uri, existing)

    for other in [None] + [p for p in SHARED_POLICIES if p != existing]:
        await expect_error(
            b.register(lambda: "B", uri, options=_opts(other)),
            DIFFERENT_POLICY,
            f"REGISTER invoke={other} on an existing invoke={existing} registration",
        )
    # explicit "single" on the wire is a different policy as well
    await expect_error(
        raw_register(b, uri, {"invoke": "single"}),
        DIFFERENT_POLICY,
        f"REGISTER invoke=single (explicit) on an existing invoke={existing} registration",
    )

    # the failed attempts changed nothing: B can still join with the right policy
    reg_b = await register_named(b, uri, existing)
    assert reg_b.id == reg_a.id


async def test_unknown_policy_is_invalid_argument(wamp, ser):
    """invoke="bogus" -> wamp.error.invalid_argument.

    autobahn rejects invoke="bogus" client-side (AssertionError in
    RegisterOptions / message.Register), so the REGISTER is built by hand.
    """
    uri = new_uri("bogus_policy")
    a = await wamp.connect(ser, "A")
    caller = await wamp.connect(ser, "caller")

    await expect_error(
        raw_register(a, uri, {"invoke": "bogus"}),
        INVALID_ARGUMENT,
        'REGISTER with invoke="bogus"',
    )
    # nothing was registered ...
    await expect_error(
        caller.call(uri), NO_SUCH_PROCEDURE, "CALL after a rejected REGISTER"
    )
    # ... and the URI is still free for a proper registration
    await register_named(a, uri, "roundrobin")
    assert await call_names(caller, uri, 1) == ["A"]


async def test_unregister_twice(wamp, ser):
    uri = new_uri("unregister_twice")
    a = await wamp.connect(ser, "A")
    caller = await wamp.connect(ser, "caller")
    reg = await register_named(a, uri)
    reg_id = reg.id

    await bounded(reg.unregister(), "first UNREGISTER")
    await expect_error(
        raw_unregister(a, reg_id), NO_SUCH_REGISTRATION, "second UNREGISTER"
    )
    await expect_error(caller.call(uri), NO_SUCH_PROCEDURE, "CALL after UNREGISTER")


async def test_unregister_twice_shared(wamp, ser):
    """A member that left a shared registration can't unregister again,
    even though the registration itself lives on with the other members."""
    uri = new_uri("unregister_twice_shared")
    a = await wamp.connect(ser, "A")
    b = await wamp.connect(ser, "B")
    caller = await wamp.connect(ser, "caller")
    reg_a = await register_named(a, uri, "roundrobin")
    reg_b = await register_named(b, uri, "roundrobin")
    assert reg_a.id == reg_b.id

    await bounded(reg_a.unregister(), "UNREGISTER by A")
    await expect_error(
        raw_unregister(a, reg_a.id), NO_SUCH_REGISTRATION, "second UNREGISTER by A"
    )
    assert await call_names(caller, uri, 3) == ["B", "B", "B"]


async def test_registration_gone_after_last_member_leaves(wamp, ser):
    uri = new_uri("last_member")
    a = await wamp.connect(ser, "A")
    b = await wamp.connect(ser, "B")
    caller = await wamp.connect(ser, "caller")
    reg_a = await register_named(a, uri, "roundrobin")
    reg_b = await register_named(b, uri, "roundrobin")

    await bounded(reg_a.unregister(), "UNREGISTER by A")
    await bounded(reg_b.unregister(), "UNREGISTER by B")
    await expect_error(
        caller.call(uri), NO_SUCH_PROCEDURE, "CALL after every member unregistered"
    )
    # a fresh registration with another policy is now allowed
    await register_named(a, uri, "first")
    await register_named(b, uri, "first")
    assert await call_names(caller, uri, 2) == ["A", "A"]


def _opts(invoke):
    return RegisterOptions(invoke=invoke) if invoke is not None else None
