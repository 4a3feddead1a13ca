//! Call payloads (`Arguments|list`, `ArgumentsKw|dict`) as the router carries them.
//!
//! A payload that arrived from a peer stays the exact bytes that peer sent, tagged with their
//! serializer. Forwarding to a peer of the same serializer copies those bytes into the outgoing
//! frame; only a peer of another serializer pays for a parse and re-encode (transcoding). Payloads
//! the router makes itself (error details) are values, encoded once per recipient.

use bytes::Bytes;

use super::value::{Dict, Value};
use super::Serializer;

/// The bytes of `args` and `kwargs` exactly as one peer encoded them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPayload {
    /// The serializer the bytes are in.
    pub serializer: Serializer,
    /// The encoded `Arguments|list`, if sent.
    pub args: Option<Bytes>,
    /// The encoded `ArgumentsKw|dict`, if sent.
    pub kwargs: Option<Bytes>,
}

/// The payload of a CALL, INVOCATION, YIELD, RESULT, ERROR, PUBLISH or EVENT.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Payload {
    /// No arguments at all.
    #[default]
    Empty,
    /// Bytes received from a peer, forwarded untouched where the serializer matches.
    Raw(RawPayload),
    /// Values made by the router.
    Values(Vec<Value>, Option<Dict>),
}

impl Payload {
    /// A payload of positional arguments made by the router.
    pub fn args(args: Vec<Value>) -> Self {
        Payload::Values(args, None)
    }

    /// How many message elements the payload occupies: 0, 1 (args) or 2 (args and kwargs).
    pub fn element_count(&self) -> usize {
        match self {
            Payload::Empty => 0,
            Payload::Raw(RawPayload { kwargs: Some(_), .. }) | Payload::Values(_, Some(_)) => 2,
            Payload::Raw(RawPayload { args: Some(_), .. }) | Payload::Values(..) => 1,
            Payload::Raw(_) => 0,
        }
    }

    /// The arguments as values, decoding raw bytes when needed (tests and diagnostics; the router
    /// itself never looks inside a payload).
    pub fn to_values(&self) -> Result<(Vec<Value>, Dict), super::DecodeError> {
        match self {
            Payload::Empty => Ok((Vec::new(), Dict::new())),
            Payload::Values(args, kwargs) => Ok((args.clone(), kwargs.clone().unwrap_or_default())),
            Payload::Raw(raw) => {
                let args = match &raw.args {
                    Some(b) => match raw.serializer.parse_value(b)? {
                        Value::List(l) => l,
                        _ => return Err(super::DecodeError::new("args is not a list")),
                    },
                    None => Vec::new(),
                };
                let kwargs = match &raw.kwargs {
                    Some(b) => match raw.serializer.parse_value(b)? {
                        Value::Dict(d) => d,
                        _ => return Err(super::DecodeError::new("kwargs is not a dictionary")),
                    },
                    None => Dict::new(),
                };
                Ok((args, kwargs))
            }
        }
    }
}
