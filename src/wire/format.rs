//! The two seams every serializer implements: reading a message envelope element by element, and
//! writing one. Message layouts are written once (in [`super::message`]) against these traits,
//! so adding a serializer means implementing them, not re-describing every message type.
//!
//! Also here: what every decoder shares (the UTF-8 check, the pre-allocation budget) and the two
//! error types of the wire, [`DecodeError`] for frames a peer sent and [`EncodeError`] for
//! messages that cannot be written in a peer's serializer.

use std::fmt;

use bytes::Bytes;

use super::message::MessageType;
use super::value::{Dict, Value};
use super::Serializer;

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

/// Why a message could not be encoded for a peer: one of its elements holds something the
/// peer's serializer cannot represent, or a payload received in another serializer could not be
/// read back into values. The text names the message, the element, both serializers and the
/// cause, and is fit for the `message` of the ERROR answering the call:
/// `INVOCATION Arguments|list received as wamp.2.cbor cannot be sent as wamp.2.json: at [0]: NaN,
/// which JSON cannot represent`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct EncodeError {
    /// The message being encoded.
    pub message: MessageType,
    /// The element that failed, in the spec's notation (`Arguments|list`, `Details|dict`, ...).
    pub element: &'static str,
    /// The serializer a raw payload element arrived in; `None` for values the router made.
    pub from: Option<Serializer>,
    /// The serializer the message was being encoded in.
    pub to: Serializer,
    /// What went wrong, where inside the element.
    pub reason: String,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.message, self.element)?;
        match self.from {
            Some(from) => write!(f, "received as {from} cannot be sent as {}", self.to)?,
            None => write!(f, "cannot be encoded as {}", self.to)?,
        }
        write!(f, ": {}", self.reason)
    }
}

/// A value a [`Format`] cannot write without changing its meaning, and where it sits inside the
/// element being written (`[2].name`; empty for the element itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Unrepresentable {
    /// The path from the element to the value, in `[index]` and `.key` steps.
    pub path: String,
    /// Why, naming the value: `NaN, which JSON cannot represent`.
    pub reason: String,
}

impl Unrepresentable {
    /// The value at the element itself cannot be written, because `reason`.
    pub fn new(reason: String) -> Self {
        Unrepresentable { path: String::new(), reason }
    }

    /// The same failure, seen from the container one level up that holds it under `step`.
    pub fn inside(mut self, step: PathStep<'_>) -> Self {
        let prefix = match step {
            PathStep::Index(i) => format!("[{i}]"),
            PathStep::Key(k) => format!(".{k}"),
        };
        self.path.insert_str(0, &prefix);
        self
    }
}

impl fmt::Display for Unrepresentable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "at {}: {}", self.path, self.reason)
        }
    }
}

/// Checks every item of a list with [`Format::check`], naming the failing one's position.
pub fn check_items<F: Format + ?Sized>(items: &[Value]) -> Result<(), Unrepresentable> {
    items.iter().enumerate().try_for_each(|(i, item)| F::check(item).map_err(|e| e.inside(PathStep::Index(i))))
}

/// Checks every value of a dictionary with [`Format::check`], naming the failing one's key.
pub fn check_entries<F: Format + ?Sized>(dict: &Dict) -> Result<(), Unrepresentable> {
    dict.0.iter().try_for_each(|(k, v)| F::check(v).map_err(|e| e.inside(PathStep::Key(k))))
}

/// One step into a container, for [`Unrepresentable::inside`].
#[derive(Debug, Clone, Copy)]
pub enum PathStep<'a> {
    /// A list position.
    Index(usize),
    /// A dictionary key.
    Key(&'a str),
}

/// `bytes` as text if they are UTF-8. Every decoder checks text through here: simdutf8's
/// validator is several times faster than the standard one on long or non-ASCII input.
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(bytes).ok()
}

/// At most this many elements are reserved for one container before they are read.
pub const MAX_RESERVE: usize = 4096;

/// How much room a binary decoder may reserve for containers before their elements arrive.
///
/// MessagePack and CBOR announce a container's length up front, and a peer can announce four
/// billion elements in five bytes, at every nesting level. Reserving from the announced length
/// would let a tiny frame make the decoder allocate gigabytes; reserving nothing costs a few
/// reallocations. So each container gets at most [`MAX_RESERVE`] elements, never more than the
/// bytes left (each element takes at least one), and all containers of one frame together no more
/// than one element per byte of the frame. Beyond that, vectors grow as elements really arrive.
#[derive(Debug, Clone, Copy)]
pub struct ReserveBudget {
    left: usize,
}

impl ReserveBudget {
    /// The budget for decoding a frame of `frame_len` bytes.
    pub fn new(frame_len: usize) -> Self {
        ReserveBudget { left: frame_len }
    }

    /// How many elements to reserve for a container announcing `declared` of them, with
    /// `bytes_left` bytes of input after its head; takes them from the budget.
    pub fn take(&mut self, declared: usize, bytes_left: usize) -> usize {
        let n = declared.min(bytes_left).min(MAX_RESERVE).min(self.left);
        self.left -= n;
        n
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
    /// Checks that [`Format::value`] can write `value` without changing its meaning. Where it
    /// cannot, `value` writes a stand-in (JSON writes a NaN as `null`); encoding for a peer calls
    /// this first and refuses instead. Every value is representable unless a format says otherwise.
    fn check(value: &Value) -> Result<(), Unrepresentable> {
        let _ = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_frame_and_the_per_container_cap() {
        let mut budget = ReserveBudget::new(10_000);
        assert_eq!(budget.take(u32::MAX as usize, 9_999), MAX_RESERVE);
        assert_eq!(budget.take(3, 9_000), 3);
        assert_eq!(budget.take(usize::MAX, 100), 100);
        // Every level of a deeply nested frame asks again; together they get the frame's length.
        let total: usize = (0..1000).map(|_| budget.take(usize::MAX, usize::MAX)).sum();
        assert_eq!(total, 10_000 - MAX_RESERVE - 3 - 100);
        assert_eq!(budget.take(1, 1), 0);
    }

    #[test]
    fn unrepresentable_paths_read_from_the_element_down() {
        let e = Unrepresentable::new("NaN, which JSON cannot represent".into())
            .inside(PathStep::Key("x"))
            .inside(PathStep::Index(2));
        assert_eq!(e.to_string(), "at [2].x: NaN, which JSON cannot represent");
    }
}
