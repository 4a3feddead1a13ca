//! The `wamp.2.cbor` serializer (CBOR, RFC 8949): a hand-written reader that can both build values
//! and step over them (to keep payload spans as bytes), and a writer for the types WAMP uses.
//!
//! What is accepted, and why:
//! - Definite and indefinite lengths for strings, arrays and maps, since RFC 8949 lets an encoder
//!   pick either. Indefinite strings must be made of definite chunks of the same kind, and each
//!   text chunk must be UTF-8 on its own (a chunk may not split a character).
//! - Integers in any width, half, single and double floats, `undefined` (read as null: WAMP has
//!   no such value, and JavaScript encoders emit it).
//! - Tag 55799 ("self-described CBOR") is skipped wherever it appears: it carries no meaning.
//!   Every other tag is refused. WAMP defines none and [`Value`] has nowhere to keep one, and
//!   dropping a tag silently would change meaning (tag 2 over a byte string is a bignum, not
//!   bytes).
//! - Only text strings as dictionary keys, as in every WAMP serializer. A repeated key keeps its
//!   last value ([`Dict::from_entries`]), as in JSON and MessagePack.
//! - Negative integers down to -2^64, as CBOR allows, in payloads forwarded to CBOR peers; only
//!   reading one into a [`Value`] (a dictionary, or transcoding to another serializer) refuses
//!   those below `i64::MIN`.
//!
//! Building reserves room for containers only within a [`ReserveBudget`], never from an announced
//! length alone.
//!
//! What is written: definite lengths in their shortest form, integers in their shortest form,
//! byte strings for [`Value::Bytes`], and finite floats as doubles (non-finite ones as the
//! canonical half-float). This is what autobahn-python (cbor2) sends, so the conformance
//! vectors match byte for byte.

use bytes::Bytes;

use super::format::{utf8, DecodeError, EnvelopeReader, Format, RawKind, ReserveBudget};
use super::value::{Dict, Value};

/// Nesting deeper than this is refused: it bounds recursion against hostile input.
const MAX_DEPTH: usize = 256;

/// The "self-described CBOR" tag, which marks data as CBOR and means nothing else.
const SELF_DESCRIBED: u64 = 55_799;

/// The byte that ends an indefinite-length item.
const BREAK: u8 = 0xff;

const UINT: u8 = 0;
const NEGINT: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
const SIMPLE: u8 = 7;

/// The CBOR [`Format`].
pub struct Cbor;

/// Reads the elements of one CBOR-encoded WAMP message.
pub struct CborReader {
    buf: Bytes,
    pos: usize,
    budget: ReserveBudget,
    /// Elements left in a definite-length message array; `None` for an indefinite one.
    remaining: Option<usize>,
    /// An indefinite-length message array's break has been read.
    done: bool,
}

impl CborReader {
    /// Starts reading `frame`, which must hold a CBOR array.
    pub fn new(frame: Bytes) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(&frame);
        let remaining = match cursor.item()? {
            Item::Array(Len::Definite(n)) => Some(n),
            Item::Array(Len::Indefinite) => None,
            _ => return Err(DecodeError::new("message is not a CBOR array")),
        };
        let (pos, budget) = (cursor.pos, cursor.budget);
        Ok(CborReader { buf: frame, pos, budget, remaining, done: false })
    }

    /// A cursor on the next element, or `None` when the message array has ended.
    fn next(&mut self) -> Option<Cursor<'_>> {
        match &mut self.remaining {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None if self.done => return None,
            None if self.buf.get(self.pos) == Some(&BREAK) => {
                self.pos += 1;
                self.done = true;
                return None;
            }
            // Running out of bytes here surfaces as "truncated" when the element is read.
            None => {}
        }
        Some(Cursor { buf: &self.buf, pos: self.pos, budget: self.budget })
    }

    /// Reads the next element with `read`, moving past it; `None` once the array has ended.
    fn element<T>(
        &mut self,
        read: impl FnOnce(&mut Cursor<'_>) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        let Some(mut cursor) = self.next() else { return Ok(None) };
        let value = read(&mut cursor)?;
        (self.pos, self.budget) = (cursor.pos, cursor.budget);
        Ok(Some(value))
    }
}

impl EnvelopeReader for CborReader {
    fn uint(&mut self) -> Result<Option<u64>, DecodeError> {
        self.element(|c| match c.item()? {
            Item::UInt(n) => Ok(n),
            _ => Err(DecodeError::new("expected a non-negative integer")),
        })
    }

    fn string(&mut self) -> Result<Option<String>, DecodeError> {
        self.element(|c| match c.item()? {
            Item::Text(len) => c.text(len),
            _ => Err(DecodeError::new("expected a string")),
        })
    }

    fn dict(&mut self) -> Result<Option<Dict>, DecodeError> {
        self.element(|c| match c.value(0)? {
            Value::Dict(d) => Ok(d),
            _ => Err(DecodeError::new("expected a dictionary")),
        })
    }

    fn raw(&mut self, kind: RawKind) -> Result<Option<Bytes>, DecodeError> {
        let span = self.element(|c| {
            let start = c.pos;
            let ok = matches!((kind, c.item()?), (RawKind::List, Item::Array(_)) | (RawKind::Dict, Item::Map(_)));
            if !ok {
                return Err(kind.mismatch());
            }
            c.pos = start;
            c.skip(0)?;
            Ok(start..c.pos)
        })?;
        Ok(span.map(|span| self.buf.slice(span)))
    }

    fn value(&mut self) -> Result<Option<Value>, DecodeError> {
        self.element(|c| c.value(0))
    }

    fn end(&mut self) -> Result<(), DecodeError> {
        match self.remaining {
            Some(0) => {}
            Some(_) => return Err(DecodeError::new("too many elements for this message type")),
            None if self.done => {}
            None => match self.buf.get(self.pos) {
                Some(&BREAK) => {
                    self.pos += 1;
                    self.done = true;
                }
                Some(_) => return Err(DecodeError::new("too many elements for this message type")),
                None => return Err(DecodeError::new("truncated CBOR data: indefinite-length array without break")),
            },
        }
        if self.pos != self.buf.len() {
            return Err(DecodeError::new("trailing bytes after the message"));
        }
        Ok(())
    }
}

/// Parses one complete CBOR value (a payload being transcoded).
pub fn parse_value(span: &[u8]) -> Result<Value, DecodeError> {
    let mut c = Cursor::new(span);
    let v = c.value(0)?;
    if c.pos != span.len() {
        return Err(DecodeError::new("trailing bytes after CBOR value"));
    }
    Ok(v)
}

/// A string's or container's length as announced by its head.
#[derive(Clone, Copy)]
enum Len {
    Definite(usize),
    /// Chunks or elements follow until a break byte.
    Indefinite,
}

/// One data item's head, tags already dealt with; strings and containers carry their length.
enum Item {
    UInt(u64),
    /// The head's argument `n`; the value is `-1 - n`.
    NegInt(u64),
    Bytes(Len),
    Text(Len),
    Array(Len),
    Map(Len),
    Bool(bool),
    Null,
    Float(f64),
    /// The end of an indefinite-length item; only valid where the caller expects one.
    Break,
}

/// The three parts of an initial byte and its following argument bytes.
struct Head {
    major: u8,
    info: u8,
    /// The argument (for major type 7 with `info` 25..=27, the float's bits); 0 when `info` is 31.
    arg: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    budget: ReserveBudget,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0, budget: ReserveBudget::new(buf.len()) }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| DecodeError::new("truncated CBOR data"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn head(&mut self) -> Result<Head, DecodeError> {
        let initial = self.take(1)?[0];
        let (major, info) = (initial >> 5, initial & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24 => self.be(1)?,
            25 => self.be(2)?,
            26 => self.be(4)?,
            27 => self.be(8)?,
            28..=30 => return Err(DecodeError::new("malformed CBOR: reserved additional information")),
            _ => 0,
        };
        Ok(Head { major, info, arg })
    }

    /// Reads the next item's head, skipping self-described tags and refusing every other tag.
    fn item(&mut self) -> Result<Item, DecodeError> {
        loop {
            let head = self.head()?;
            let indefinite = head.info == 31;
            let len = || -> Result<Len, DecodeError> {
                if indefinite {
                    return Ok(Len::Indefinite);
                }
                usize::try_from(head.arg).map(Len::Definite).map_err(|_| DecodeError::new("CBOR length out of range"))
            };
            return Ok(match head.major {
                UINT | NEGINT | TAG if indefinite => {
                    return Err(DecodeError::new("malformed CBOR: indefinite length on a number or tag"))
                }
                UINT => Item::UInt(head.arg),
                NEGINT => Item::NegInt(head.arg),
                BYTES => Item::Bytes(len()?),
                TEXT => Item::Text(len()?),
                ARRAY => Item::Array(len()?),
                MAP => Item::Map(len()?),
                TAG if head.arg == SELF_DESCRIBED => continue,
                TAG => return Err(DecodeError(format!("unsupported CBOR tag {}", head.arg))),
                _ => match head.info {
                    20 => Item::Bool(false),
                    21 => Item::Bool(true),
                    22 | 23 => Item::Null,
                    25 => Item::Float(half(head.arg as u16)),
                    26 => Item::Float(f64::from(f32::from_bits(head.arg as u32))),
                    27 => Item::Float(f64::from_bits(head.arg)),
                    31 => Item::Break,
                    _ => return Err(DecodeError::new("unsupported CBOR simple value")),
                },
            });
        }
    }

    /// Reads the body of a byte or text string of kind `major`, calling `chunk` on each piece.
    fn string_chunks(&mut self, major: u8, len: Len, mut chunk: impl FnMut(&'a [u8])) -> Result<(), DecodeError> {
        if let Len::Definite(n) = len {
            chunk(self.take(n)?);
            return Ok(());
        }
        loop {
            // Chunks are bare definite-length strings of the same kind: no tags, no nesting.
            let head = self.head()?;
            if head.major == SIMPLE && head.info == 31 {
                return Ok(());
            }
            if head.major != major || head.info == 31 {
                return Err(DecodeError::new("malformed CBOR: bad chunk in indefinite-length string"));
            }
            let n = usize::try_from(head.arg).map_err(|_| DecodeError::new("CBOR length out of range"))?;
            chunk(self.take(n)?);
        }
    }

    fn bytes(&mut self, len: Len) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        self.string_chunks(BYTES, len, |c| out.extend_from_slice(c))?;
        Ok(out)
    }

    fn text(&mut self, len: Len) -> Result<String, DecodeError> {
        let mut out = String::new();
        let mut valid = true;
        self.string_chunks(TEXT, len, |c| match utf8(c) {
            Some(s) => out.push_str(s),
            None => valid = false,
        })?;
        if !valid {
            return Err(DecodeError::new("CBOR text string is not UTF-8"));
        }
        Ok(out)
    }

    /// Validates a string body without keeping it.
    fn skip_string(&mut self, major: u8, len: Len) -> Result<(), DecodeError> {
        let mut valid = true;
        self.string_chunks(major, len, |c| valid &= major != TEXT || utf8(c).is_some())?;
        if !valid {
            return Err(DecodeError::new("CBOR text string is not UTF-8"));
        }
        Ok(())
    }

    /// Steps through a container's entries: `entry` is called once per element (array) or per
    /// key-value pair (map), until the announced count or the break.
    fn entries(
        &mut self,
        len: Len,
        mut entry: impl FnMut(&mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        match len {
            Len::Definite(n) => {
                for _ in 0..n {
                    entry(self)?;
                }
            }
            Len::Indefinite => loop {
                if self.buf.get(self.pos) == Some(&BREAK) {
                    self.pos += 1;
                    break;
                }
                entry(self)?;
            },
        }
        Ok(())
    }

    /// A dictionary key: a text string, definite or not.
    fn key(&mut self) -> Result<String, DecodeError> {
        match self.item()? {
            Item::Text(len) => self.text(len),
            _ => Err(DecodeError::new("dictionary keys must be strings")),
        }
    }

    /// Room to reserve for a container of `len` entries.
    fn reserve(&mut self, len: Len) -> usize {
        match len {
            Len::Definite(n) => self.budget.take(n, self.buf.len() - self.pos),
            Len::Indefinite => 0,
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::new("CBOR nested too deeply"));
        }
        Ok(match self.item()? {
            Item::UInt(n) => Value::UInt(n),
            Item::NegInt(n) => Value::Int(negative(n)?),
            Item::Bytes(len) => Value::Bytes(self.bytes(len)?),
            Item::Text(len) => Value::Str(self.text(len)?),
            Item::Array(len) => {
                let mut items = Vec::with_capacity(self.reserve(len));
                self.entries(len, |c| {
                    items.push(c.value(depth + 1)?);
                    Ok(())
                })?;
                Value::List(items)
            }
            Item::Map(len) => {
                let mut entries = Vec::with_capacity(self.reserve(len));
                self.entries(len, |c| {
                    let key = c.key()?;
                    entries.push((key, c.value(depth + 1)?));
                    Ok(())
                })?;
                Value::Dict(Dict::from_entries(entries))
            }
            Item::Bool(b) => Value::Bool(b),
            Item::Null => Value::Null,
            Item::Float(f) => Value::Float(f),
            Item::Break => return Err(DecodeError::new("malformed CBOR: unexpected break")),
        })
    }

    /// Validates and steps over one value without building it.
    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::new("CBOR nested too deeply"));
        }
        match self.item()? {
            Item::Bytes(len) => self.skip_string(BYTES, len)?,
            Item::Text(len) => self.skip_string(TEXT, len)?,
            Item::Array(len) => self.entries(len, |c| c.skip(depth + 1))?,
            Item::Map(len) => self.entries(len, |c| {
                match c.item()? {
                    Item::Text(len) => c.skip_string(TEXT, len)?,
                    _ => return Err(DecodeError::new("dictionary keys must be strings")),
                }
                c.skip(depth + 1)
            })?,
            Item::Break => return Err(DecodeError::new("malformed CBOR: unexpected break")),
            Item::UInt(_) | Item::NegInt(_) | Item::Bool(_) | Item::Null | Item::Float(_) => {}
        }
        Ok(())
    }
}

/// The value `-1 - n` of a CBOR negative integer, if an `i64` can hold it.
fn negative(n: u64) -> Result<i64, DecodeError> {
    i64::try_from(n)
        .map(|n| -1 - n)
        .map_err(|_| DecodeError(format!("CBOR negative integer -{} is below the 64-bit range", u128::from(n) + 1)))
}

/// Widens an IEEE 754 half-precision float.
fn half(bits: u16) -> f64 {
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    let magnitude = match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (mantissa + 1024.0) * 2f64.powi(exponent - 25),
    };
    if bits & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Writes a head in its shortest form.
fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

impl Format for Cbor {
    fn begin(out: &mut Vec<u8>, len: usize) {
        write_head(out, ARRAY, len as u64);
    }

    fn separator(_out: &mut Vec<u8>) {}

    fn end(_out: &mut Vec<u8>) {}

    fn uint(out: &mut Vec<u8>, n: u64) {
        write_head(out, UINT, n);
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        write_head(out, TEXT, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }

    fn value(out: &mut Vec<u8>, value: &Value) {
        match value {
            Value::Null => out.push(0xf6),
            Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Value::UInt(n) => write_head(out, UINT, *n),
            Value::Int(n) if *n >= 0 => write_head(out, UINT, *n as u64),
            // For a negative n, -1 - n is its bitwise complement.
            Value::Int(n) => write_head(out, NEGINT, !*n as u64),
            Value::Float(f) if f.is_nan() => out.extend_from_slice(&[0xf9, 0x7e, 0x00]),
            Value::Float(f) if f.is_infinite() => {
                out.extend_from_slice(&[0xf9, if *f > 0.0 { 0x7c } else { 0xfc }, 0x00]);
            }
            Value::Float(f) => {
                out.push(0xfb);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Value::Str(s) => Self::string(out, s),
            Value::Bytes(b) => {
                write_head(out, BYTES, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::List(items) => {
                write_head(out, ARRAY, items.len() as u64);
                for item in items {
                    Self::value(out, item);
                }
            }
            Value::Dict(d) => Self::dict(out, d),
        }
    }

    fn dict(out: &mut Vec<u8>, dict: &Dict) {
        write_head(out, MAP, dict.0.len() as u64);
        for (k, v) in &dict.0 {
            Self::string(out, k);
            Self::value(out, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn encoded(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        Cbor::value(&mut out, v);
        out
    }

    #[test]
    fn values_round_trip() {
        let v = Value::List(vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::UInt(0),
            Value::UInt(23),
            Value::UInt(24),
            Value::UInt(200),
            Value::UInt(70_000),
            Value::UInt(1 << 53),
            Value::UInt(u64::MAX),
            Value::Int(-1),
            Value::Int(-24),
            Value::Int(-25),
            Value::Int(-100_000),
            Value::Int(i64::MIN),
            Value::Float(2.5),
            Value::Float(-0.1),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::Str(String::new()),
            Value::Str("é😀".into()),
            Value::Str("y".repeat(300)),
            Value::Bytes(vec![]),
            Value::Bytes(vec![0, 1, 2, 255]),
            Value::List(vec![]),
            Value::Dict(Dict::new()),
            Value::Dict(Dict::new().with("a", Value::List(vec![Value::UInt(1); 30])).with("b", Value::Null)),
        ]);
        assert_eq!(parse_value(&encoded(&v)).unwrap(), v);
        match parse_value(&encoded(&Value::Float(f64::NAN))).unwrap() {
            Value::Float(f) => assert!(f.is_nan()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encodes_shortest_forms() {
        // Examples from RFC 8949, appendix A.
        for (v, h) in [
            (Value::UInt(0), "00"),
            (Value::UInt(23), "17"),
            (Value::UInt(24), "1818"),
            (Value::UInt(255), "18ff"),
            (Value::UInt(256), "190100"),
            (Value::UInt(1000), "1903e8"),
            (Value::UInt(65_535), "19ffff"),
            (Value::UInt(65_536), "1a00010000"),
            (Value::UInt(0xffff_ffff), "1affffffff"),
            (Value::UInt(0x1_0000_0000), "1b0000000100000000"),
            (Value::UInt(1_000_000), "1a000f4240"),
            (Value::UInt(1_000_000_000_000), "1b000000e8d4a51000"),
            (Value::UInt(u64::MAX), "1bffffffffffffffff"),
            (Value::Int(-1), "20"),
            (Value::Int(-100), "3863"),
            (Value::Int(-1000), "3903e7"),
            (Value::Int(i64::MIN), "3b7fffffffffffffff"),
            (Value::Float(1.1), "fb3ff199999999999a"),
            (Value::Float(f64::INFINITY), "f97c00"),
            (Value::Float(f64::NAN), "f97e00"),
            (Value::Bool(false), "f4"),
            (Value::Null, "f6"),
            (Value::Bytes(vec![1, 2, 3, 4]), "4401020304"),
            (Value::from("IETF"), "6449455446"),
            (Value::from("\u{6c34}"), "63e6b0b4"),
            (Value::List(vec![Value::UInt(1); 23]), &format!("97{}", "01".repeat(23))),
            (Value::List(vec![Value::UInt(1); 24]), &format!("9818{}", "01".repeat(24))),
            (Value::from("a".repeat(23).as_str()), &format!("77{}", "61".repeat(23))),
            (Value::Bytes(vec![0; 300]), &format!("59012c{}", "00".repeat(300))),
            (Value::Dict(Dict::new().with("a", 1u64).with("b", Value::List(vec![]))), "a26161016162 80"),
        ] {
            assert_eq!(encoded(&v), hex(&h.replace(' ', "")), "{v:?}");
        }
    }

    #[test]
    fn decodes_every_width_and_float_size() {
        for (h, v) in [
            ("1b0000000000000017", Value::UInt(23)),
            ("3b7fffffffffffffff", Value::Int(i64::MIN)),
            ("f90000", Value::Float(0.0)),
            ("f93c00", Value::Float(1.0)),
            ("f97bff", Value::Float(65504.0)),
            ("f90001", Value::Float(5.960464477539063e-8)),
            ("f9c400", Value::Float(-4.0)),
            ("fa47c35000", Value::Float(100000.0)),
            ("fb3ff199999999999a", Value::Float(1.1)),
            ("f9fc00", Value::Float(f64::NEG_INFINITY)),
            ("f7", Value::Null),
            ("d9d9f71863", Value::UInt(99)),
        ] {
            assert_eq!(parse_value(&hex(h)).unwrap(), v, "{h}");
        }
        assert!(parse_value(&hex("3b8000000000000000")).is_err(), "below i64::MIN must be refused");
    }

    #[test]
    fn decodes_indefinite_lengths() {
        let cases = [
            ("5f42010243030405ff", Value::Bytes(vec![1, 2, 3, 4, 5])),
            ("7f657374726561646d696e67ff", Value::from("streaming")),
            ("7fff", Value::from("")),
            ("9f018202039f0405ffff", {
                let inner = Value::List(vec![Value::UInt(4), Value::UInt(5)]);
                Value::List(vec![Value::UInt(1), Value::List(vec![Value::UInt(2), Value::UInt(3)]), inner])
            }),
            (
                "bf61610161629f0203ffff",
                Value::Dict(Dict::new().with("a", 1u64).with("b", Value::List(vec![Value::UInt(2), Value::UInt(3)]))),
            ),
            ("bf7f6161ff01ff", Value::Dict(Dict::new().with("a", 1u64))),
        ];
        for (h, v) in cases {
            assert_eq!(parse_value(&hex(h)).unwrap(), v, "{h}");
        }
    }

    #[test]
    fn reads_an_indefinite_message_array_and_keeps_payload_spans() {
        // [48, 7, {}, "p", [_ 1, 2], {"k": h'00'}] with an indefinite outer array and args list.
        let frame = hex("9f1830 07 a0 6170 9f0102ff a1616b4100 ff".replace(' ', "").as_str());
        let mut r = CborReader::new(Bytes::from(frame)).unwrap();
        assert_eq!(r.uint().unwrap(), Some(48));
        assert_eq!(r.uint().unwrap(), Some(7));
        assert_eq!(r.dict().unwrap(), Some(Dict::new()));
        assert_eq!(r.string().unwrap().as_deref(), Some("p"));
        assert_eq!(&r.raw(RawKind::List).unwrap().unwrap()[..], &hex("9f0102ff")[..]);
        assert_eq!(&r.raw(RawKind::Dict).unwrap().unwrap()[..], &hex("a1616b4100")[..]);
        assert_eq!(r.raw(RawKind::List).unwrap(), None);
        r.end().unwrap();
    }

    #[test]
    fn message_envelope_errors() {
        assert!(CborReader::new(Bytes::from_static(&[0xa0])).is_err());
        // Indefinite message array without a break.
        let mut r = CborReader::new(Bytes::from_static(&[0x9f, 0x01])).unwrap();
        assert_eq!(r.uint().unwrap(), Some(1));
        assert!(r.end().is_err());
        // Trailing bytes and leftover elements.
        let mut r = CborReader::new(Bytes::from_static(&[0x81, 0x01, 0x00])).unwrap();
        assert_eq!(r.uint().unwrap(), Some(1));
        assert!(r.end().is_err());
        let mut r = CborReader::new(Bytes::from_static(&[0x82, 0x01, 0x02])).unwrap();
        assert_eq!(r.uint().unwrap(), Some(1));
        assert!(r.end().is_err());
        // A negative where an id belongs, a list where a string belongs.
        let mut r = CborReader::new(Bytes::from_static(&[0x82, 0x20, 0x80])).unwrap();
        assert!(r.uint().is_err());
        let mut r = CborReader::new(Bytes::from_static(&[0x82, 0x80, 0x80])).unwrap();
        assert!(r.string().is_err());
        let mut r = CborReader::new(Bytes::from_static(&[0x82, 0x80, 0x80])).unwrap();
        assert!(r.raw(RawKind::Dict).is_err());
    }

    #[test]
    fn truncated_and_hostile_input_is_refused() {
        let bad: &[&[u8]] = &[
            &[],
            &[0x18],
            &[0x1b, 0, 0, 0],
            &[0x62, b'a'],
            // Declared lengths far beyond the input, up to u64::MAX.
            &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
            &[0x7a, 0x00, 0x10, 0x00, 0x00, b'a'],
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
            &[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x61, b'a', 0x00],
            // Indefinite items without their break.
            &[0x9f, 0x01, 0x02],
            &[0xbf, 0x61, b'a', 0x01],
            &[0x5f, 0x41, 0x00],
            &[0x7f],
            // Break where a value belongs, odd map, break as a map value.
            &[0xff],
            &[0x81, 0xff],
            &[0xbf, 0x61, b'a', 0xff],
            // Bad chunks: wrong kind, nested indefinite, tagged.
            &[0x5f, 0x61, b'a', 0xff],
            &[0x7f, 0x7f, 0xff, 0xff],
            &[0x7f, 0xd9, 0xd9, 0xf7, 0x61, b'a', 0xff],
            // Indefinite numbers, reserved additional information, a tag before a break.
            &[0x1f],
            &[0x3f],
            &[0xdf, 0x00],
            &[0x1c],
            &[0xfd],
            &[0x9f, 0xd9, 0xd9, 0xf7, 0xff],
            // Non-string keys, bad UTF-8 (also split across chunks), unknown tags and simple values.
            &[0xa1, 0x01, 0x02],
            &[0xa1, 0x41, b'a', 0x02],
            &[0x62, 0xc3, 0x28],
            &[0x7f, 0x61, 0xc3, 0x61, 0xa9, 0xff],
            &[0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0],
            &[0xc2, 0x41, 0x01],
            &[0xd8, 0x18, 0x41, 0x01],
            &[0xf0],
            &[0xf8, 0x20],
            &[0xf8, 0x10],
            // Trailing bytes.
            &[0x01, 0x02],
        ];
        for b in bad {
            assert!(parse_value(b).is_err(), "accepted {b:02x?}");
            // The span validator must agree with the parser.
            let mut c = Cursor::new(b);
            let skipped = c.skip(0).is_ok() && c.pos == b.len();
            assert!(!skipped, "skip accepted {b:02x?}");
        }
        assert_eq!(parse_value(&[0x7f, 0x62, 0xc3, 0xa9, 0xff]).unwrap(), Value::from("é"));
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing() {
        for opener in [0x81u8, 0x9f, 0xa1] {
            let mut deep = Vec::new();
            for _ in 0..100_000 {
                deep.push(opener);
                if opener == 0xa1 {
                    deep.extend_from_slice(&[0x61, b'k']);
                }
            }
            deep.push(0x00);
            assert!(parse_value(&deep).is_err());
            assert!(Cursor::new(&deep).skip(0).is_err());
        }
        let mut ok = vec![0x81; MAX_DEPTH];
        ok.push(0x00);
        assert!(parse_value(&ok).is_ok());
    }

    #[test]
    fn many_self_described_tags_are_only_skipped() {
        let mut b = [0xd9, 0xd9, 0xf7].repeat(10_000);
        b.push(0x01);
        assert_eq!(parse_value(&b).unwrap(), Value::UInt(1));
    }

    #[test]
    fn repeated_keys_keep_the_last_value_in_linear_time() {
        let dict = hex(&"a3 6161 01 6162 02 6161 03".replace(' ', ""));
        assert_eq!(parse_value(&dict).unwrap(), Value::Dict(Dict::new().with("a", 3u64).with("b", 2u64)));
        // 400k copies of one key, definite and indefinite.
        for head in [hex("ba00061a80"), hex("bf")] {
            let mut many = head.clone();
            for _ in 0..400_000 {
                many.extend_from_slice(&[0x61, b'k', 0x01]);
            }
            if head == [0xbf] {
                many.push(BREAK);
            }
            assert_eq!(parse_value(&many).unwrap(), Value::Dict(Dict::new().with("k", 1u64)));
        }
    }

    #[test]
    fn integers_below_i64_min_pass_in_payloads_but_are_no_values() {
        // [48, 1, {}, "p", [-2^64]]
        let frame = hex(&"85 1830 01 a0 6170 81 3bffffffffffffffff".replace(' ', ""));
        let message = crate::wire::Serializer::Cbor.decode(Bytes::from(frame)).unwrap();
        let crate::wire::Message::Call { payload, .. } = message else { panic!("not a CALL") };
        let error = payload.to_values().unwrap_err();
        assert_eq!(error.0, "CBOR negative integer -18446744073709551616 is below the 64-bit range");
        // In Options, which the router reads, it is refused.
        let frame = hex(&"85 1830 01 a1 616b 3bffffffffffffffff 6170 80".replace(' ', ""));
        assert!(crate::wire::Serializer::Cbor.decode(Bytes::from(frame)).is_err());
    }
}
