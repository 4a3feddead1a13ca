//! Type checks on the `Options` and `Details` a peer sends, beyond what decoding checks.
//!
//! Decoding only checks a message's shape (arity, element types). This module owns the next
//! layer: the value types of the option and detail keys whose misuse the WAMP conformance
//! vectors (`wamp-testsuite/singlemessage`) classify as a protocol violation — PUBLISH and
//! SUBSCRIBE options, EVENT details. A peer that gets them wrong is broken, not merely asking for
//! something the router refuses, so the session aborts rather than answering with an ERROR.
//!
//! Keys not listed here are not checked: the spec tells peers to ignore options they do not know.
//! The `enc_*` names are autobahn's names for payload transparency (the spec's `ppt_*` section is
//! a draft); the accepted values are the ones the vectors list.

use super::format::DecodeError;
use super::message::{Message, MAX_ID};
use super::value::{Dict, Value};

/// The type a key's value must have.
#[derive(Clone, Copy)]
enum Rule {
    Bool,
    /// A string, such as a URI, authid or hash.
    Str,
    /// A WAMP id: an integer in `[0, 2^53]`.
    Id,
    /// A list of ids.
    Ids,
    /// A list of strings.
    Strs,
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
    /// A router-to-router forwarding chain: a list of `{session, authid, authrole}` dictionaries.
    ForwardFor,
}

const ENC_ALGOS: &[&str] = &["null", "cryptobox", "mqtt", "xbr"];
const ENC_SERIALIZERS: &[&str] = &["null", "json", "msgpack", "cbor", "ubjson", "opaque", "flatbuffers"];
const MATCH_POLICIES: &[&str] = &["exact", "prefix", "wildcard"];

const PUBLISH_OPTIONS: &[(&str, Rule)] = &[
    ("acknowledge", Rule::Bool),
    ("exclude_me", Rule::Bool),
    ("exclude", Rule::Ids),
    ("exclude_authid", Rule::Strs),
    ("exclude_authrole", Rule::Strs),
    ("eligible", Rule::Ids),
    ("eligible_authid", Rule::Strs),
    ("eligible_authrole", Rule::Strs),
    ("retain", Rule::Bool),
    ("transaction_hash", Rule::Str),
    ("forward_for", Rule::ForwardFor),
    ("enc_algo", Rule::OneOf(ENC_ALGOS)),
    ("enc_serializer", Rule::OneOf(ENC_SERIALIZERS)),
];

const SUBSCRIBE_OPTIONS: &[(&str, Rule)] =
    &[("match", Rule::OneOf(MATCH_POLICIES)), ("get_retained", Rule::Bool), ("forward_for", Rule::ForwardFor)];

const EVENT_DETAILS: &[(&str, Rule)] = &[
    ("publisher", Rule::Id),
    ("publisher_authid", Rule::Str),
    ("publisher_authrole", Rule::Str),
    ("topic", Rule::Str),
    ("retained", Rule::Bool),
    ("transaction_hash", Rule::Str),
    ("x_acknowledged_delivery", Rule::Bool),
    ("forward_for", Rule::ForwardFor),
    ("enc_algo", Rule::OneOf(ENC_ALGOS)),
    ("enc_serializer", Rule::OneOf(ENC_SERIALIZERS)),
];

/// Checks the option and detail types of a decoded message. The error's text names the message,
/// dictionary and key (e.g. `PUBLISH.Options.acknowledge must be a boolean, got a string`), and
/// is meant for the ABORT that follows: every failure here is a protocol violation.
pub fn check(message: &Message) -> Result<(), DecodeError> {
    match message {
        Message::Publish { options, .. } => check_dict(options, "PUBLISH.Options", PUBLISH_OPTIONS),
        Message::Subscribe { options, .. } => check_dict(options, "SUBSCRIBE.Options", SUBSCRIBE_OPTIONS),
        Message::Event { details, .. } => check_dict(details, "EVENT.Details", EVENT_DETAILS),
        _ => Ok(()),
    }
}

fn check_dict(dict: &Dict, name: &str, rules: &[(&str, Rule)]) -> Result<(), DecodeError> {
    for (key, value) in &dict.0 {
        let Some((_, rule)) = rules.iter().find(|(k, _)| k == key) else {
            continue;
        };
        if let Err(expected) = check_value(*rule, value) {
            return Err(DecodeError(format!("{name}.{key} must be {expected}, got {}", value.describe())));
        }
    }
    Ok(())
}

/// `Err` holds what the value should have been, for the error message.
fn check_value(rule: Rule, value: &Value) -> Result<(), String> {
    let is_id = |v: &Value| matches!(v, Value::UInt(n) if *n <= MAX_ID);
    let all = |v: &Value, ok: &dyn Fn(&Value) -> bool| matches!(v, Value::List(items) if items.iter().all(ok));
    let ok = match rule {
        Rule::Bool => matches!(value, Value::Bool(_)),
        Rule::Str => matches!(value, Value::Str(_)),
        Rule::Id => is_id(value),
        Rule::Ids => all(value, &is_id),
        Rule::Strs => all(value, &|v| matches!(v, Value::Str(_))),
        Rule::OneOf(allowed) => matches!(value, Value::Str(s) if allowed.contains(&s.as_str())),
        Rule::ForwardFor => all(value, &|v| matches!(v, Value::Dict(hop) if forward_hop(hop))),
    };
    if ok {
        return Ok(());
    }
    Err(match rule {
        Rule::Bool => "a boolean".to_owned(),
        Rule::Str => "a string".to_owned(),
        Rule::Id => "an id (an integer from 0 to 2^53)".to_owned(),
        Rule::Ids => "a list of ids".to_owned(),
        Rule::Strs => "a list of strings".to_owned(),
        Rule::OneOf(allowed) => format!("one of {}", allowed.join(", ")),
        Rule::ForwardFor => "a list of {session, authid, authrole} dictionaries".to_owned(),
    })
}

/// One `forward_for` entry: `session` is required (it is what identifies the hop); `authid` and
/// `authrole` must be strings when present.
fn forward_hop(hop: &Dict) -> bool {
    matches!(hop.get("session"), Some(Value::UInt(n)) if *n <= MAX_ID)
        && ["authid", "authrole"].iter().all(|k| matches!(hop.get(k), None | Some(Value::Str(_))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Payload;

    fn publish(options: Dict) -> Message {
        Message::Publish { request: 1, options, topic: "com.example.t".into(), payload: Payload::Empty }
    }

    fn subscribe(options: Dict) -> Message {
        Message::Subscribe { request: 1, options, topic: "com.example.t".into() }
    }

    fn event(details: Dict) -> Message {
        Message::Event { subscription: 1, publication: 2, details, payload: Payload::Empty }
    }

    fn hop(session: impl Into<Value>) -> Value {
        Value::Dict(Dict::new().with("session", session).with("authid", "r1").with("authrole", "router"))
    }

    #[test]
    fn accepts_well_typed_and_unknown_keys() {
        let options = Dict::new()
            .with("acknowledge", true)
            .with("exclude", Value::List(vec![Value::UInt(1), Value::UInt(MAX_ID)]))
            .with("eligible_authrole", Value::List(vec![]))
            .with("forward_for", Value::List(vec![hop(7u64)]))
            .with("enc_algo", "cryptobox")
            .with("x_custom", Value::Null);
        check(&publish(options)).unwrap();
        check(&subscribe(Dict::new().with("match", "prefix"))).unwrap();
        check(&event(Dict::new().with("publisher", 5u64).with("retained", false))).unwrap();
        // Other message types carry no checked keys.
        let call = Message::Call {
            request: 1,
            options: Dict::new().with("acknowledge", "not checked here"),
            procedure: "p".into(),
            payload: Payload::Empty,
        };
        check(&call).unwrap();
    }

    #[test]
    fn names_the_key_and_the_expected_type() {
        let cases = [
            (publish(Dict::new().with("acknowledge", 1u64)), "PUBLISH.Options.acknowledge must be a boolean"),
            (
                publish(Dict::new().with("exclude", Value::List(vec![Value::Int(-1)]))),
                "PUBLISH.Options.exclude must be a list of ids",
            ),
            (
                publish(Dict::new().with("exclude", Value::List(vec![Value::UInt(MAX_ID + 1)]))),
                "PUBLISH.Options.exclude must be a list of ids",
            ),
            (publish(Dict::new().with("eligible_authid", "a")), "PUBLISH.Options.eligible_authid"),
            (publish(Dict::new().with("enc_serializer", "xml")), "PUBLISH.Options.enc_serializer must be one of"),
            (publish(Dict::new().with("forward_for", Value::List(vec![hop("s")]))), "PUBLISH.Options.forward_for"),
            (subscribe(Dict::new().with("match", "regex")), "SUBSCRIBE.Options.match must be one of exact"),
            (subscribe(Dict::new().with("get_retained", Value::Null)), "SUBSCRIBE.Options.get_retained"),
            (event(Dict::new().with("publisher", "x")), "EVENT.Details.publisher must be an id"),
            (event(Dict::new().with("topic", 1u64)), "EVENT.Details.topic must be a string"),
        ];
        for (message, expected) in cases {
            let error = check(&message).unwrap_err().0;
            assert!(error.starts_with(expected), "{error:?} does not start with {expected:?}");
        }
        let long = check(&event(Dict::new().with("retained", "x".repeat(1000)))).unwrap_err().0;
        assert!(long.len() < 100, "{long}");
    }
}
