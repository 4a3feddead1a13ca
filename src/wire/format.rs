//! The two seams every serializer implements: reading a message envelope element by element, and
//! writing one. Message layouts are written once (in [`super::message`]) against these traits,
//! so adding a serializer means implementing them, not re-describing every message type.

use bytes::Bytes;

use super::value::{Dict, Value};

/// Why a frame could not be decoded; the text goes to the peer in the ABORT's `message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    /// A decode error with a human-readable reason.
    pub fn new(reason: &str) -> Self {
        DecodeError(reason.to_owned())
    }
}

/// Which container a raw payload element must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// `Arguments|list`
    List,
    /// `ArgumentsKw|dict`
    Dict,
}

impl RawKind {
    /// The error for a payload element of the wrong type.
    pub fn mismatch(self) -> DecodeError {
        DecodeError::new(match self {
            RawKind::List => "Arguments must be a list",
            RawKind::Dict => "ArgumentsKw must be a dictionary",
        })
    }
}

/// Reads the elements of one message array in order. Each method consumes the next element and
/// returns `Ok(None)` when the array has ended, or an error when the element has the wrong type.
pub trait EnvelopeReader {
    /// A non-negative integer (message type, ids).
    fn uint(&mut self) -> Result<Option<u64>, DecodeError>;
    /// A string (URIs, realm names).
    fn string(&mut self) -> Result<Option<String>, DecodeError>;
    /// A dictionary, fully parsed.
    fn dict(&mut self) -> Result<Option<Dict>, DecodeError>;
    /// A list or dictionary kept as its encoded bytes (validated, not parsed).
    fn raw(&mut self, kind: RawKind) -> Result<Option<Bytes>, DecodeError>;
    /// Any value, fully parsed.
    fn value(&mut self) -> Result<Option<Value>, DecodeError>;
    /// Asserts the array has no further elements and nothing follows it.
    fn end(&mut self) -> Result<(), DecodeError>;
}

/// Writes message arrays and values in one serializer.
pub trait Format {
    /// Opens a message array of `len` elements.
    fn begin(out: &mut Vec<u8>, len: usize);
    /// Goes between two elements.
    fn separator(out: &mut Vec<u8>);
    /// Closes the message array.
    fn end(out: &mut Vec<u8>);
    /// A non-negative integer.
    fn uint(out: &mut Vec<u8>, n: u64);
    /// A string.
    fn string(out: &mut Vec<u8>, s: &str);
    /// Any value.
    fn value(out: &mut Vec<u8>, value: &Value);
    /// A dictionary.
    fn dict(out: &mut Vec<u8>, dict: &Dict);
}
