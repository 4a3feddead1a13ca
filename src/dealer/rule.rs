//! Invocation rules: which member of a shared registration serves a call.

use std::fmt;

use crate::wire::Value;

/// `REGISTER.Options.invoke`, per the shared-registration contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvocationRule {
    /// One callee only (the default); a second REGISTER fails.
    Single,
    /// Each call goes to the member after the one that served the previous call.
    RoundRobin,
    /// Each call goes to a member chosen uniformly at random.
    Random,
    /// Calls go to the earliest registered member (hot standby).
    First,
    /// Calls go to the latest registered member (hot standby).
    Last,
}

impl InvocationRule {
    /// Every rule, in the contract's order.
    pub const ALL: [InvocationRule; 5] = [
        InvocationRule::Single,
        InvocationRule::RoundRobin,
        InvocationRule::Random,
        InvocationRule::First,
        InvocationRule::Last,
    ];

    /// The rule's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            InvocationRule::Single => "single",
            InvocationRule::RoundRobin => "roundrobin",
            InvocationRule::Random => "random",
            InvocationRule::First => "first",
            InvocationRule::Last => "last",
        }
    }

    /// Reads `Options.invoke`; absent means `single`.
    pub fn from_option(value: Option<&Value>) -> Result<Self, String> {
        let Some(value) = value else {
            return Ok(InvocationRule::Single);
        };
        let name = value
            .as_str()
            .ok_or_else(|| format!("REGISTER.Options.invoke must be a string, got {}", value.describe()))?;
        Self::ALL.into_iter().find(|r| r.as_str() == name).ok_or_else(|| {
            format!("unknown invocation rule '{name}' (expected single, roundrobin, random, first or last)")
        })
    }

    /// Picks the index of the serving member among `len > 0` members. `ticket` is the call's
    /// round-robin position (see [`super::registry`]); only `RoundRobin` uses it.
    #[inline]
    pub fn pick(self, len: usize, rotation: impl FnOnce() -> usize) -> usize {
        match self {
            InvocationRule::Single | InvocationRule::First => 0,
            InvocationRule::Last => len - 1,
            InvocationRule::Random => fastrand::usize(..len),
            InvocationRule::RoundRobin => rotation(),
        }
    }
}

impl fmt::Display for InvocationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_rule_and_refuses_others() {
        assert_eq!(InvocationRule::from_option(None), Ok(InvocationRule::Single));
        for rule in InvocationRule::ALL {
            assert_eq!(InvocationRule::from_option(Some(&Value::from(rule.as_str()))), Ok(rule));
        }
        assert!(InvocationRule::from_option(Some(&Value::from("bogus"))).is_err());
        assert!(InvocationRule::from_option(Some(&Value::UInt(1))).is_err());
        assert!(InvocationRule::from_option(Some(&Value::from("RoundRobin"))).is_err());
    }

    #[test]
    fn fixed_rules_pick_ends() {
        assert_eq!(InvocationRule::First.pick(3, || unreachable!()), 0);
        assert_eq!(InvocationRule::Last.pick(3, || unreachable!()), 2);
        for _ in 0..100 {
            assert!(InvocationRule::Random.pick(3, || unreachable!()) < 3);
        }
    }
}
