//! The `wamp.2.json` serializer. What it accepts is RFC 8259 JSON, checked at ingress.
//!
//! Payload spans pass through to other JSON peers as the bytes the sender wrote, so "valid" here
//! means what every other peer's parser will accept, not merely what the router can read:
//!
//! - the whole frame is UTF-8 (checked once, up front, by [`super::format::utf8`]);
//! - numbers follow the grammar (no leading zeros, no bare `-`, digits after `.` and `e`) and are
//!   finite as doubles: `1e400` is refused, since serde_json and others reject it;
//! - strings hold no raw control characters, and `\u` escapes name Unicode scalar values: a high
//!   surrogate must be followed by a low one, and a lone surrogate of either kind is refused;
//! - nesting is at most `MAX_DEPTH` (256) deep, which bounds the parser's recursion.
//!
//! One parser walks the grammar, generic over what it makes of it (`Make`): `Skip` makes
//! nothing and serves the message envelope, where passthrough needs the exact byte span of `args`
//! and `kwargs`; `Build` makes [`Value`]s for `Details`/`Options` dictionaries and for payloads
//! transcoded to another serializer. Both read the same grammar, so a span the router forwards
//! is exactly a span it could have parsed.
//!
//! Reading values: integers become [`Value::UInt`] / [`Value::Int`] and an integer beyond 64 bits
//! is refused (it can be forwarded to JSON peers, not converted); `-0` becomes the float `-0.0`,
//! so its sign survives. A repeated key keeps its last value ([`Dict::from_entries`]). Binary
//! values travel as a string holding `"\u0000"` plus base64 (padding optional when reading); a
//! string that starts with `"\u0000"` but is not base64 is refused as a value. Envelope strings
//! (URIs, auth methods) are plain text: the binary convention is for values.

use std::io::Write as _;

use base64::Engine as _;
use bytes::Bytes;

use super::format::{check_entries, check_items, utf8, DecodeError, EnvelopeReader, Format, RawKind, Unrepresentable};
use super::value::{Dict, Value};

/// Nesting deeper than this is refused: it bounds the parser's recursion against hostile input.
const MAX_DEPTH: usize = 256;

/// How binary values are written: standard base64 with padding, as the WAMP spec shows.
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How binary values are read: padding optional and non-zero trailing bits tolerated, since
/// encoders differ on both and neither changes which bytes are meant.
const B64_LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The JSON [`Format`].
pub struct Json;

/// Reads the elements of one JSON-encoded WAMP message, left to right.
pub struct JsonReader {
    buf: Bytes,
    pos: usize,
    first: bool,
    done: bool,
}

impl JsonReader {
    /// Starts reading `frame`, which must be UTF-8 and hold a JSON array.
    pub fn new(frame: Bytes) -> Result<Self, DecodeError> {
        if utf8(&frame).is_none() {
            return Err(not_utf8(&frame));
        }
        let mut reader = JsonReader { buf: frame, pos: 0, first: true, done: false };
        reader.pos = skip_ws(&reader.buf, 0);
        if reader.buf.get(reader.pos) != Some(&b'[') {
            return Err(DecodeError::new("message is not a JSON array"));
        }
        reader.pos += 1;
        Ok(reader)
    }

    /// Moves to the start of the next element; `false` at the closing bracket.
    fn next_element(&mut self) -> Result<bool, DecodeError> {
        if self.done {
            return Ok(false);
        }
        self.pos = skip_ws(&self.buf, self.pos);
        match (self.first, self.buf.get(self.pos)) {
            (_, Some(b']')) => {
                self.pos += 1;
                self.done = true;
                return Ok(false);
            }
            (true, Some(_)) => {}
            (false, Some(b',')) => self.pos = skip_ws(&self.buf, self.pos + 1),
            _ => return Err(DecodeError::new("malformed JSON array")),
        }
        self.first = false;
        Ok(true)
    }

    /// Parses the next element with `M`.
    fn element<M: Make>(&mut self, make: M) -> Result<Option<M::Value>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        let mut parser = Parser { buf: &self.buf, pos: self.pos, make };
        let value = parser.value(0)?;
        self.pos = parser.pos;
        Ok(Some(value))
    }
}

impl EnvelopeReader for JsonReader {
    fn uint(&mut self) -> Result<Option<u64>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        let start = self.pos;
        if !matches!(self.buf.get(start), Some(b'0'..=b'9')) {
            return Err(DecodeError::new("expected a non-negative integer"));
        }
        let (end, integer) = number_end(&self.buf, start)?;
        if !integer {
            return Err(DecodeError::new("expected a non-negative integer"));
        }
        self.pos = end;
        let digits = &self.buf[start..end];
        digits
            .iter()
            .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .map(Some)
            .ok_or_else(|| DecodeError::new("integer out of range"))
    }

    /// Envelope strings (URIs, auth methods) are plain text: WAMP's `"\u0000"` binary
    /// convention is for values, so such a string reads back as what another serializer sent.
    fn string(&mut self) -> Result<Option<String>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        let start = self.pos;
        if self.buf.get(start) != Some(&b'"') {
            return Err(DecodeError::new("expected a string"));
        }
        let (end, escaped) = string_end(&self.buf, start)?;
        self.pos = end;
        Build.key(&self.buf[start + 1..end - 1], escaped).map(Some)
    }

    fn dict(&mut self) -> Result<Option<Dict>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        // `{}`, the common case on the hot path, needs no parser.
        if self.buf.get(self.pos..self.pos + 2) == Some(b"{}") {
            self.pos += 2;
            return Ok(Some(Dict::new()));
        }
        if self.buf.get(self.pos) != Some(&b'{') {
            return Err(DecodeError::new("expected a dictionary"));
        }
        let mut parser = Parser { buf: &self.buf, pos: self.pos, make: Build };
        let value = parser.value(0)?;
        self.pos = parser.pos;
        match value {
            Value::Dict(d) => Ok(Some(d)),
            _ => Err(DecodeError::new("expected a dictionary")),
        }
    }

    fn raw(&mut self, kind: RawKind) -> Result<Option<Bytes>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        let expected = match kind {
            RawKind::List => b'[',
            RawKind::Dict => b'{',
        };
        if self.buf.get(self.pos) != Some(&expected) {
            return Err(kind.mismatch());
        }
        let start = self.pos;
        let mut parser = Parser { buf: &self.buf, pos: start, make: Skip };
        parser.value(0)?;
        self.pos = parser.pos;
        Ok(Some(self.buf.slice(start..self.pos)))
    }

    fn value(&mut self) -> Result<Option<Value>, DecodeError> {
        self.element(Build)
    }

    fn end(&mut self) -> Result<(), DecodeError> {
        if self.next_element()? {
            return Err(DecodeError::new("too many elements for this message type"));
        }
        if skip_ws(&self.buf, self.pos) != self.buf.len() {
            return Err(DecodeError::new("trailing bytes after the message"));
        }
        Ok(())
    }
}

/// Parses one complete JSON value (a payload being transcoded, a test's sample). The same rules
/// as at ingress apply, UTF-8 included; whitespace around the value is allowed.
pub fn parse_value(span: &[u8]) -> Result<Value, DecodeError> {
    if utf8(span).is_none() {
        return Err(not_utf8(span));
    }
    let mut parser = Parser { buf: span, pos: skip_ws(span, 0), make: Build };
    let value = parser.value(0)?;
    if skip_ws(span, parser.pos) != span.len() {
        return Err(DecodeError::new("trailing bytes after the JSON value"));
    }
    Ok(value)
}

/// True when `span` is one complete JSON value by the ingress rules, without building it.
pub fn is_valid(span: &[u8]) -> bool {
    let mut parser = Parser { buf: span, pos: skip_ws(span, 0), make: Skip };
    utf8(span).is_some() && parser.value(0).is_ok() && skip_ws(span, parser.pos) == span.len()
}

fn not_utf8(bytes: &[u8]) -> DecodeError {
    let at = std::str::from_utf8(bytes).err().map_or(0, |e| e.valid_up_to());
    DecodeError(format!("JSON text is not UTF-8 (invalid byte at offset {at})"))
}

/// What the parser makes of the values it reads. The parser checks the grammar; a `Make` turns
/// checked pieces into its output, and may refuse what it cannot represent.
trait Make: Copy {
    /// A parsed value.
    type Value;
    /// A list being filled.
    type List;
    /// A dictionary being filled.
    type Entries;
    /// A dictionary key.
    type Key;

    fn literal(self, value: Value) -> Self::Value;
    /// `text` is a checked number; `integer` when it has no fraction and no exponent.
    fn number(self, text: &[u8], integer: bool) -> Result<Self::Value, DecodeError>;
    /// `body` is a checked string body, quotes removed; `escaped` when it holds a backslash.
    fn string(self, body: &[u8], escaped: bool) -> Result<Self::Value, DecodeError>;
    fn key(self, body: &[u8], escaped: bool) -> Result<Self::Key, DecodeError>;
    fn list(self) -> Self::List;
    fn push(self, list: &mut Self::List, value: Self::Value);
    fn end_list(self, list: Self::List) -> Self::Value;
    fn entries(self) -> Self::Entries;
    fn entry(self, entries: &mut Self::Entries, key: Self::Key, value: Self::Value);
    fn end_dict(self, entries: Self::Entries) -> Self::Value;
}

/// Checks the grammar and makes nothing.
#[derive(Clone, Copy)]
struct Skip;

impl Make for Skip {
    type Value = ();
    type List = ();
    type Entries = ();
    type Key = ();

    fn literal(self, _: Value) {}
    fn number(self, _: &[u8], _: bool) -> Result<(), DecodeError> {
        Ok(())
    }
    fn string(self, _: &[u8], _: bool) -> Result<(), DecodeError> {
        Ok(())
    }
    fn key(self, _: &[u8], _: bool) -> Result<(), DecodeError> {
        Ok(())
    }
    fn list(self) {}
    fn push(self, _: &mut (), _: ()) {}
    fn end_list(self, _: ()) {}
    fn entries(self) {}
    fn entry(self, _: &mut (), _: (), _: ()) {}
    fn end_dict(self, _: ()) {}
}

/// Makes [`Value`]s.
#[derive(Clone, Copy)]
struct Build;

impl Make for Build {
    type Value = Value;
    type List = Vec<Value>;
    type Entries = Vec<(String, Value)>;
    type Key = String;

    fn literal(self, value: Value) -> Value {
        value
    }

    fn number(self, text: &[u8], integer: bool) -> Result<Value, DecodeError> {
        let text = std::str::from_utf8(text).map_err(|_| DecodeError::new("invalid JSON number"))?;
        if integer && text != "-0" {
            let parsed = match text.strip_prefix('-') {
                Some(_) => text.parse::<i64>().map(Value::from).ok(),
                None => text.parse::<u64>().map(Value::UInt).ok(),
            };
            return parsed.ok_or_else(|| DecodeError(format!("integer {} does not fit in 64 bits", abbreviated(text))));
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(DecodeError(format!("number {} is out of range", abbreviated(text)))),
        }
    }

    fn string(self, body: &[u8], escaped: bool) -> Result<Value, DecodeError> {
        let text = self.key(body, escaped)?;
        let Some(encoded) = text.strip_prefix('\0') else { return Ok(Value::Str(text)) };
        B64_LENIENT.decode(encoded).map(Value::Bytes).map_err(|_| {
            DecodeError::new("a string starting with \\u0000 must be WAMP binary (base64 after the \\u0000)")
        })
    }

    fn key(self, body: &[u8], escaped: bool) -> Result<String, DecodeError> {
        let text = std::str::from_utf8(body).map_err(|_| DecodeError::new("JSON string is not UTF-8"))?;
        if escaped {
            unescape(text)
        } else {
            Ok(text.to_owned())
        }
    }

    fn list(self) -> Vec<Value> {
        Vec::new()
    }
    fn push(self, list: &mut Vec<Value>, value: Value) {
        list.push(value);
    }
    fn end_list(self, list: Vec<Value>) -> Value {
        Value::List(list)
    }
    fn entries(self) -> Vec<(String, Value)> {
        Vec::new()
    }
    fn entry(self, entries: &mut Vec<(String, Value)>, key: String, value: Value) {
        entries.push((key, value));
    }
    fn end_dict(self, entries: Vec<(String, Value)>) -> Value {
        Value::Dict(Dict::from_entries(entries))
    }
}

/// A number's text for an error message, cut short if long.
fn abbreviated(text: &str) -> String {
    match text.get(..24) {
        Some(head) if text.len() > 24 => format!("{head}... ({} digits)", text.len()),
        _ => text.to_owned(),
    }
}

/// A recursive-descent parser over `buf` from `pos`.
struct Parser<'a, M> {
    buf: &'a [u8],
    pos: usize,
    make: M,
}

impl<M: Make> Parser<'_, M> {
    /// Parses the value at the cursor and moves past it.
    fn value(&mut self, depth: usize) -> Result<M::Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::new("JSON nested too deeply"));
        }
        let (buf, pos) = (self.buf, self.pos);
        match buf.get(pos) {
            Some(b'"') => {
                let (end, escaped) = string_end(buf, pos)?;
                self.pos = end;
                self.make.string(&buf[pos + 1..end - 1], escaped)
            }
            Some(b'[') => self.list(depth),
            Some(b'{') => self.dict(depth),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => {
                let (end, integer) = number_end(buf, pos)?;
                self.pos = end;
                self.make.number(&buf[pos..end], integer)
            }
            _ => Err(DecodeError::new("invalid JSON value")),
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<M::Value, DecodeError> {
        if !self.buf[self.pos..].starts_with(word) {
            return Err(DecodeError::new("invalid JSON literal"));
        }
        self.pos += word.len();
        Ok(self.make.literal(value))
    }

    /// After an element: `true` if another follows (the comma is consumed), `false` at `close`.
    fn more(&mut self, close: u8) -> Result<bool, DecodeError> {
        self.pos = skip_ws(self.buf, self.pos);
        match self.buf.get(self.pos) {
            Some(b',') => {
                self.pos = skip_ws(self.buf, self.pos + 1);
                Ok(true)
            }
            Some(c) if *c == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(DecodeError::new("malformed JSON container")),
        }
    }

    /// Steps past the opening bracket; `true` if the container is empty (and consumed whole).
    fn open(&mut self, close: u8) -> bool {
        self.pos = skip_ws(self.buf, self.pos + 1);
        let empty = self.buf.get(self.pos) == Some(&close);
        if empty {
            self.pos += 1;
        }
        empty
    }

    fn list(&mut self, depth: usize) -> Result<M::Value, DecodeError> {
        let mut list = self.make.list();
        if !self.open(b']') {
            loop {
                let item = self.value(depth + 1)?;
                self.make.push(&mut list, item);
                if !self.more(b']')? {
                    break;
                }
            }
        }
        Ok(self.make.end_list(list))
    }

    fn dict(&mut self, depth: usize) -> Result<M::Value, DecodeError> {
        let mut entries = self.make.entries();
        if !self.open(b'}') {
            loop {
                let start = self.pos;
                if self.buf.get(start) != Some(&b'"') {
                    return Err(DecodeError::new("JSON object key must be a string"));
                }
                let (end, escaped) = string_end(self.buf, start)?;
                let key = self.make.key(&self.buf[start + 1..end - 1], escaped)?;
                self.pos = skip_ws(self.buf, end);
                if self.buf.get(self.pos) != Some(&b':') {
                    return Err(DecodeError::new("expected ':' in JSON object"));
                }
                self.pos = skip_ws(self.buf, self.pos + 1);
                let value = self.value(depth + 1)?;
                self.make.entry(&mut entries, key, value);
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        Ok(self.make.end_dict(entries))
    }
}

fn skip_ws(buf: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = buf.get(pos) {
        pos += 1;
    }
    pos
}

/// A number larger than this many decimal digits before the point (counting the exponent) may
/// overflow a double; such rare numbers are parsed to check. Doubles end near 1.8e308.
const SAFE_MAGNITUDE: i64 = 300;

/// Checks the number starting at `pos`; returns the offset past it and whether it is an integer
/// (no fraction, no exponent).
fn number_end(buf: &[u8], start: usize) -> Result<(usize, bool), DecodeError> {
    let digits = |mut p: usize| {
        let from = p;
        while let Some(b'0'..=b'9') = buf.get(p) {
            p += 1;
        }
        (p, p - from)
    };
    let mut pos = start + usize::from(buf.get(start) == Some(&b'-'));
    let (after_int, int_digits) = digits(pos);
    match int_digits {
        0 => return Err(DecodeError::new("invalid JSON number: a digit must follow '-'")),
        1 => {}
        _ if buf[pos] == b'0' => return Err(DecodeError::new("invalid JSON number: leading zero")),
        _ => {}
    }
    pos = after_int;
    let mut integer = true;
    if buf.get(pos) == Some(&b'.') {
        let (p, n) = digits(pos + 1);
        if n == 0 {
            return Err(DecodeError::new("invalid JSON number: a digit must follow '.'"));
        }
        pos = p;
        integer = false;
    }
    let mut exponent = 0i64;
    if let Some(b'e' | b'E') = buf.get(pos) {
        pos += 1;
        let negative = buf.get(pos) == Some(&b'-');
        if let Some(b'+' | b'-') = buf.get(pos) {
            pos += 1;
        }
        let (p, n) = digits(pos);
        if n == 0 {
            return Err(DecodeError::new("invalid JSON number: a digit must follow the exponent"));
        }
        // Saturates well below i64's range however many digits follow.
        let magnitude = buf[pos..p].iter().fold(0i64, |e, d| (e * 10 + i64::from(d - b'0')).min(1 << 40));
        exponent = if negative { -magnitude } else { magnitude };
        pos = p;
        integer = false;
    }
    if i64::try_from(int_digits).unwrap_or(i64::MAX).saturating_add(exponent) > SAFE_MAGNITUDE {
        let finite = std::str::from_utf8(&buf[start..pos]).ok().and_then(|t| t.parse::<f64>().ok());
        if !finite.is_some_and(f64::is_finite) {
            return Err(DecodeError::new("JSON number out of range (beyond a double's largest value)"));
        }
    }
    Ok((pos, integer))
}

/// Checks the string starting at `pos` (its opening quote); returns the offset past its closing
/// quote and whether it holds escapes. The bytes are UTF-8 already (the caller checked).
fn string_end(buf: &[u8], pos: usize) -> Result<(usize, bool), DecodeError> {
    let mut p = pos + 1;
    let mut escaped = false;
    loop {
        match buf.get(p) {
            Some(b'"') => return Ok((p + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                p = match buf.get(p + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => p + 2,
                    Some(b'u') => unicode_escape_end(buf, p)?,
                    _ => return Err(DecodeError::new("invalid escape in JSON string")),
                }
            }
            Some(c) if *c < 0x20 => return Err(DecodeError::new("control character in JSON string")),
            Some(_) => p += 1,
            None => return Err(DecodeError::new("unterminated JSON string")),
        }
    }
}

/// Checks the `\uXXXX` escape at `p` (and the low surrogate's escape after a high one); returns
/// the offset past it.
fn unicode_escape_end(buf: &[u8], p: usize) -> Result<usize, DecodeError> {
    let unit = |at: usize| -> Result<u32, DecodeError> {
        match buf.get(at..at + 2) {
            Some(b"\\u") => {}
            _ => return Err(DecodeError::new("unpaired surrogate in JSON string")),
        }
        hex4(buf.get(at + 2..at + 6)).ok_or_else(|| DecodeError::new("invalid \\u escape in JSON string"))
    };
    match unit(p)? {
        0xD800..=0xDBFF => match unit(p + 6) {
            Ok(0xDC00..=0xDFFF) => Ok(p + 12),
            _ => Err(DecodeError::new("unpaired surrogate in JSON string")),
        },
        0xDC00..=0xDFFF => Err(DecodeError::new("unpaired surrogate in JSON string")),
        _ => Ok(p + 6),
    }
}

/// The value of four hex digits.
fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let digits = digits.filter(|d| d.len() == 4)?;
    digits.iter().try_fold(0u32, |n, d| Some(n * 16 + char::from(*d).to_digit(16)?))
}

/// The text of a checked string body with its escapes resolved.
fn unescape(body: &str) -> Result<String, DecodeError> {
    let bad = || DecodeError::new("invalid escape in JSON string");
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = rest.as_bytes().get(at + 1).ok_or_else(bad)?;
        let mut used = 2;
        out.push(match escape {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = |from: usize| hex4(rest.as_bytes().get(from..from + 4)).ok_or_else(bad);
                let high = unit(at + 2)?;
                used = 6;
                let code = if (0xD800..0xDC00).contains(&high) {
                    used = 12;
                    0x10000 + ((high - 0xD800) << 10) + (unit(at + 8)? - 0xDC00)
                } else {
                    high
                };
                char::from_u32(code).ok_or_else(bad)?
            }
            other => char::from(*other),
        });
        rest = rest.get(at + used..).ok_or_else(bad)?;
    }
    out.push_str(rest);
    Ok(out)
}

impl Format for Json {
    fn begin(out: &mut Vec<u8>, _len: usize) {
        out.push(b'[');
    }

    fn separator(out: &mut Vec<u8>) {
        out.push(b',');
    }

    fn end(out: &mut Vec<u8>) {
        out.push(b']');
    }

    fn uint(out: &mut Vec<u8>, n: u64) {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        write_escaped(out, s);
    }

    fn value(out: &mut Vec<u8>, value: &Value) {
        match value {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Value::UInt(n) => Self::uint(out, *n),
            // `{:?}` always writes a decimal point or an exponent, so the float stays a float.
            Value::Float(f) if f.is_finite() => {
                let _ = write!(out, "{f:?}");
            }
            // Lossy stand-in; `check` refuses these where a peer must get the real value.
            Value::Float(_) => out.extend_from_slice(b"null"),
            Value::Str(s) => write_escaped(out, s),
            Value::Bytes(b) => {
                let mut s = String::with_capacity(1 + b.len() * 4 / 3 + 4);
                s.push('\0');
                B64.encode_string(b, &mut s);
                write_escaped(out, &s);
            }
            Value::List(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    Self::value(out, item);
                }
                out.push(b']');
            }
            Value::Dict(d) => Self::dict(out, d),
        }
    }

    fn dict(out: &mut Vec<u8>, dict: &Dict) {
        out.push(b'{');
        for (i, (k, v)) in dict.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_escaped(out, k);
            out.push(b':');
            Self::value(out, v);
        }
        out.push(b'}');
    }

    /// JSON has no NaN or infinity, and a string starting with U+0000 is how JSON carries binary:
    /// a JSON peer would read such a string (from a MessagePack or CBOR peer) as bytes.
    fn check(value: &Value) -> Result<(), Unrepresentable> {
        match value {
            Value::Float(f) if !f.is_finite() => {
                Err(Unrepresentable::new(format!("{}, which JSON cannot represent", value.describe())))
            }
            Value::Str(s) if s.starts_with('\0') => Err(Unrepresentable::new(format!(
                "a string starting with U+0000 ({}), which JSON peers read as binary",
                value.describe()
            ))),
            Value::List(items) => check_items::<Self>(items),
            Value::Dict(d) => check_entries::<Self>(d),
            _ => Ok(()),
        }
    }
}

fn write_escaped(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests;
