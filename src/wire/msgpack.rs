//! The `wamp.2.msgpack` serializer: a hand-written reader that can both build values and step over
//! them (to keep payload spans as bytes), and a writer for the handful of types WAMP uses.
//! Extension types are refused: WAMP defines none.
//!
//! Both reading paths check the same things: strings are UTF-8, dictionary keys are strings,
//! nesting is bounded. Building reserves room for containers only within a [`ReserveBudget`], and
//! a repeated dictionary key keeps its last value ([`Dict::from_entries`]), as in JSON.

use bytes::Bytes;

use super::format::{utf8, DecodeError, EnvelopeReader, Format, RawKind, ReserveBudget};
use super::value::{Dict, Value};

/// Nesting deeper than this is refused: it bounds recursion against hostile input.
const MAX_DEPTH: usize = 256;

/// The MessagePack [`Format`].
pub struct MsgPack;

/// Reads the elements of one MessagePack-encoded WAMP message.
pub struct MsgPackReader {
    buf: Bytes,
    pos: usize,
    remaining: usize,
    budget: ReserveBudget,
}

impl MsgPackReader {
    /// Starts reading `frame`, which must hold a MessagePack array.
    pub fn new(frame: Bytes) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(&frame);
        let remaining = match cursor.header()? {
            Header::Array(n) => n,
            _ => return Err(DecodeError::new("message is not a MessagePack array")),
        };
        let (pos, budget) = (cursor.pos, cursor.budget);
        Ok(MsgPackReader { buf: frame, pos, remaining, budget })
    }

    fn next(&mut self) -> Option<Cursor<'_>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
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

impl EnvelopeReader for MsgPackReader {
    fn uint(&mut self) -> Result<Option<u64>, DecodeError> {
        self.element(|c| match c.header()? {
            Header::UInt(n) => Ok(n),
            _ => Err(DecodeError::new("expected a non-negative integer")),
        })
    }

    fn string(&mut self) -> Result<Option<String>, DecodeError> {
        self.element(|c| match c.header()? {
            Header::Str(n) => Ok(c.str(n)?.to_owned()),
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
            let ok = matches!((kind, c.header()?), (RawKind::List, Header::Array(_)) | (RawKind::Dict, Header::Map(_)));
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
        if self.remaining != 0 {
            return Err(DecodeError::new("too many elements for this message type"));
        }
        if self.pos != self.buf.len() {
            return Err(DecodeError::new("trailing bytes after the message"));
        }
        Ok(())
    }
}

/// Parses one complete MessagePack value (a payload being transcoded).
pub fn parse_value(span: &[u8]) -> Result<Value, DecodeError> {
    let mut c = Cursor::new(span);
    let v = c.value(0)?;
    if c.pos != span.len() {
        return Err(DecodeError::new("trailing bytes after MessagePack value"));
    }
    Ok(v)
}

/// What a MessagePack marker announces; containers and strings carry their length.
enum Header {
    Nil,
    Bool(bool),
    UInt(u64),
    Int(i64),
    Float(f64),
    Str(usize),
    Bin(usize),
    Array(usize),
    Map(usize),
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

    /// Room to reserve for a container announcing `n` elements.
    fn reserve(&mut self, n: usize) -> usize {
        self.budget.take(n, self.buf.len() - self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| DecodeError::new("truncated MessagePack data"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn header(&mut self) -> Result<Header, DecodeError> {
        let m = self.take(1)?[0];
        Ok(match m {
            0x00..=0x7f => Header::UInt(u64::from(m)),
            0x80..=0x8f => Header::Map(usize::from(m & 0x0f)),
            0x90..=0x9f => Header::Array(usize::from(m & 0x0f)),
            0xa0..=0xbf => Header::Str(usize::from(m & 0x1f)),
            0xc0 => Header::Nil,
            0xc2 => Header::Bool(false),
            0xc3 => Header::Bool(true),
            0xc4 => Header::Bin(self.be(1)? as usize),
            0xc5 => Header::Bin(self.be(2)? as usize),
            0xc6 => Header::Bin(self.be(4)? as usize),
            0xca => Header::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Header::Float(f64::from_bits(self.be(8)?)),
            0xcc => Header::UInt(self.be(1)?),
            0xcd => Header::UInt(self.be(2)?),
            0xce => Header::UInt(self.be(4)?),
            0xcf => Header::UInt(self.be(8)?),
            0xd0 => signed(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => signed(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => signed(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => signed(self.be(8)? as i64),
            0xd9 => Header::Str(self.be(1)? as usize),
            0xda => Header::Str(self.be(2)? as usize),
            0xdb => Header::Str(self.be(4)? as usize),
            0xdc => Header::Array(self.be(2)? as usize),
            0xdd => Header::Array(self.be(4)? as usize),
            0xde => Header::Map(self.be(2)? as usize),
            0xdf => Header::Map(self.be(4)? as usize),
            0xe0..=0xff => Header::Int(i64::from(m as i8)),
            _ => return Err(DecodeError::new("unsupported MessagePack type (extension)")),
        })
    }

    fn str(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        utf8(self.take(n)?).ok_or_else(|| DecodeError::new("MessagePack string is not UTF-8"))
    }

    /// A dictionary key, which must be a string.
    fn key(&mut self) -> Result<&'a str, DecodeError> {
        match self.header()? {
            Header::Str(len) => self.str(len),
            _ => Err(DecodeError::new("dictionary keys must be strings")),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::new("MessagePack nested too deeply"));
        }
        Ok(match self.header()? {
            Header::Nil => Value::Null,
            Header::Bool(b) => Value::Bool(b),
            Header::UInt(n) => Value::UInt(n),
            Header::Int(n) => Value::from(n),
            Header::Float(f) => Value::Float(f),
            Header::Str(n) => Value::Str(self.str(n)?.to_owned()),
            Header::Bin(n) => Value::Bytes(self.take(n)?.to_vec()),
            Header::Array(n) => {
                let mut items = Vec::with_capacity(self.reserve(n));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::List(items)
            }
            Header::Map(n) => {
                let mut entries = Vec::with_capacity(self.reserve(n));
                for _ in 0..n {
                    let key = self.key()?.to_owned();
                    entries.push((key, self.value(depth + 1)?));
                }
                Value::Dict(Dict::from_entries(entries))
            }
        })
    }

    /// Validates and steps over one value without building it.
    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::new("MessagePack nested too deeply"));
        }
        match self.header()? {
            Header::Str(n) => {
                self.str(n)?;
            }
            Header::Bin(n) => {
                self.take(n)?;
            }
            Header::Array(n) => {
                for _ in 0..n {
                    self.skip(depth + 1)?;
                }
            }
            Header::Map(n) => {
                for _ in 0..n {
                    self.key()?;
                    self.skip(depth + 1)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn signed(n: i64) -> Header {
    if n >= 0 {
        Header::UInt(n as u64)
    } else {
        Header::Int(n)
    }
}

fn write_len(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, m8: Option<u8>, m16: u8, m32: u8) {
    match (fix, m8) {
        (Some((base, max)), _) if len <= max => out.push(base | len as u8),
        (_, Some(m)) if len <= 0xff => out.extend_from_slice(&[m, len as u8]),
        _ if len <= 0xffff => {
            out.push(m16);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(m32);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

impl Format for MsgPack {
    fn begin(out: &mut Vec<u8>, len: usize) {
        write_len(out, len, Some((0x90, 15)), None, 0xdc, 0xdd);
    }

    fn separator(_out: &mut Vec<u8>) {}

    fn end(_out: &mut Vec<u8>) {}

    fn uint(out: &mut Vec<u8>, n: u64) {
        match n {
            0..=0x7f => out.push(n as u8),
            0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
            0x100..=0xffff => {
                out.push(0xcd);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(0xce);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
            _ => {
                out.push(0xcf);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        write_len(out, s.len(), Some((0xa0, 31)), Some(0xd9), 0xda, 0xdb);
        out.extend_from_slice(s.as_bytes());
    }

    fn value(out: &mut Vec<u8>, value: &Value) {
        match value {
            Value::Null => out.push(0xc0),
            Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Value::UInt(n) => Self::uint(out, *n),
            Value::Int(n) if *n >= -32 => out.push(*n as i8 as u8),
            Value::Int(n) => {
                out.push(0xd3);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Value::Float(f) => {
                out.push(0xcb);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Value::Str(s) => Self::string(out, s),
            Value::Bytes(b) => {
                write_len(out, b.len(), None, Some(0xc4), 0xc5, 0xc6);
                out.extend_from_slice(b);
            }
            Value::List(items) => {
                write_len(out, items.len(), Some((0x90, 15)), None, 0xdc, 0xdd);
                for item in items {
                    Self::value(out, item);
                }
            }
            Value::Dict(d) => Self::dict(out, d),
        }
    }

    fn dict(out: &mut Vec<u8>, dict: &Dict) {
        write_len(out, dict.0.len(), Some((0x80, 15)), None, 0xde, 0xdf);
        for (k, v) in &dict.0 {
            Self::string(out, k);
            Self::value(out, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let v = Value::List(vec![
            Value::Null,
            Value::Bool(true),
            Value::UInt(0),
            Value::UInt(200),
            Value::UInt(70_000),
            Value::UInt(1 << 53),
            Value::Int(-1),
            Value::Int(-100),
            Value::Int(i64::MIN),
            Value::Float(2.5),
            Value::Str("x".repeat(40)),
            Value::Str("y".repeat(300)),
            Value::Bytes(vec![1, 2, 3]),
            Value::Dict(Dict::new().with("a", Value::List(vec![Value::UInt(1); 20]))),
        ]);
        let mut out = Vec::new();
        MsgPack::value(&mut out, &v);
        assert_eq!(parse_value(&out).unwrap(), v);
    }

    #[test]
    fn truncated_and_hostile_input_is_refused() {
        assert!(parse_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_value(&[0xdb, 0x00, 0x00, 0x10, 0x00, b'a']).is_err());
        assert!(parse_value(&[0xd4, 0x01, 0x02]).is_err());
        assert!(parse_value(&[0x91; 100_000]).is_err());
        assert!(MsgPackReader::new(Bytes::from_static(&[0x80])).is_err());
    }

    /// A CALL `[48, 1, options, "p", args]` with the given encoded options and args.
    fn call(options: &[u8], args: &[u8]) -> Bytes {
        let mut frame = vec![0x95, 0x30, 0x01];
        frame.extend_from_slice(options);
        frame.extend_from_slice(&[0xa1, b'p']);
        frame.extend_from_slice(args);
        Bytes::from(frame)
    }

    fn decode(frame: Bytes) -> Result<crate::wire::Message, DecodeError> {
        crate::wire::Serializer::MsgPack.decode(frame)
    }

    #[test]
    fn strings_must_be_utf8_where_built_and_where_skipped() {
        assert!(decode(call(&[0x80], &[0x91, 0xa1, b'x'])).is_ok());
        for bad in [&[0xffu8][..], &[0xc3, 0x28], &[0xed, 0xa0, 0x80], &[0xc0, 0xaf]] {
            let mut string = vec![0xa0 | bad.len() as u8];
            string.extend_from_slice(bad);
            // In a payload (skipped, kept as bytes), as a payload key, in Options (built).
            let args = [&[0x91][..], &string].concat();
            assert!(decode(call(&[0x80], &args)).is_err(), "payload string {bad:02x?}");
            let with_kwargs = |key: &[u8]| {
                let frame = [&[0x96, 0x30, 0x01, 0x80, 0xa1, b'p', 0x91, 0x01, 0x81][..], key, &[0x01]].concat();
                decode(Bytes::from(frame))
            };
            assert!(with_kwargs(&[0xa1, b'k']).is_ok());
            assert!(with_kwargs(&string).is_err(), "payload key {bad:02x?}");
            let options = [&[0x81, 0xa1, b'k'][..], &string].concat();
            assert!(decode(call(&options, &[0x90])).is_err(), "option value {bad:02x?}");
            assert!(parse_value(&string).is_err());
            let mut c = Cursor::new(&string);
            assert!(c.skip(0).is_err());
        }
    }

    #[test]
    fn dictionary_keys_must_be_strings_where_built_and_where_skipped() {
        for key in [&[0x01u8][..], &[0xc4, 0x01, b'k'], &[0xc0], &[0x90]] {
            let dict = [&[0x81][..], key, &[0x01]].concat();
            assert!(parse_value(&dict).is_err(), "key {key:02x?}");
            assert!(Cursor::new(&dict).skip(0).is_err(), "key {key:02x?}");
            assert!(decode(call(&dict, &[0x90])).is_err());
        }
    }

    #[test]
    fn repeated_keys_keep_the_last_value() {
        let dict = [0x83, 0xa1, b'a', 0x01, 0xa1, b'b', 0x02, 0xa1, b'a', 0x03];
        assert_eq!(parse_value(&dict).unwrap(), Value::Dict(Dict::new().with("a", 3u64).with("b", 2u64)));
        // 400k copies of one key: linear, where a quadratic scan would take minutes.
        let mut many = vec![0xdf, 0x00, 0x06, 0x1a, 0x80];
        for _ in 0..400_000 {
            many.extend_from_slice(&[0xa1, b'k', 0x01]);
        }
        assert_eq!(parse_value(&many).unwrap(), Value::Dict(Dict::new().with("k", 1u64)));
    }
}
