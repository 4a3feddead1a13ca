//! The `wamp.2.json` serializer.
//!
//! Decoding is split in two on purpose. The envelope (the message array, its integers and URIs)
//! is walked by a small validating scanner of ours, because passthrough needs the exact byte span
//! of `args` and `kwargs` and simd-json cannot report spans. Values that must really be built —
//! `Details`/`Options` dictionaries and payloads being transcoded to another serializer — are
//! parsed by simd-json. Binary values travel as a string holding `"\u0000"` plus base64.

use base64::Engine as _;
use bytes::Bytes;

use super::format::{DecodeError, EnvelopeReader, Format, RawKind};
use super::value::{Dict, Value};

/// Nesting deeper than this is refused: it bounds the scanner's recursion against hostile input.
const MAX_DEPTH: usize = 256;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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
    /// Starts reading `frame`, which must hold a JSON array.
    pub fn new(frame: Bytes) -> Result<Self, DecodeError> {
        let mut reader = JsonReader { buf: frame, pos: 0, first: true, done: false };
        reader.skip_ws();
        if reader.peek() != Some(b'[') {
            return Err(DecodeError::new("message is not a JSON array"));
        }
        reader.pos += 1;
        Ok(reader)
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Moves to the start of the next element; `false` at the closing bracket.
    fn next_element(&mut self) -> Result<bool, DecodeError> {
        if self.done {
            return Ok(false);
        }
        self.skip_ws();
        match (self.first, self.peek()) {
            (_, Some(b']')) => {
                self.pos += 1;
                self.done = true;
                return Ok(false);
            }
            (true, Some(_)) => {}
            (false, Some(b',')) => {
                self.pos += 1;
                self.skip_ws();
            }
            _ => return Err(DecodeError::new("malformed JSON array")),
        }
        self.first = false;
        Ok(true)
    }

    /// Validates and steps over the value at the cursor, returning its span.
    fn skip_element(&mut self) -> Result<(usize, usize), DecodeError> {
        let start = self.pos;
        self.pos = skip_value(&self.buf, self.pos, 0)?;
        Ok((start, self.pos))
    }
}

impl EnvelopeReader for JsonReader {
    fn uint(&mut self) -> Result<Option<u64>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        let digits = &self.buf[start..self.pos];
        match self.peek() {
            Some(b'.' | b'e' | b'E' | b'-' | b'+') => return Err(DecodeError::new("expected a non-negative integer")),
            _ if digits.is_empty() => return Err(DecodeError::new("expected an integer")),
            _ => {}
        }
        let text = std::str::from_utf8(digits).map_err(|_| DecodeError::new("bad integer"))?;
        text.parse().map(Some).map_err(|_| DecodeError::new("integer out of range"))
    }

    fn string(&mut self) -> Result<Option<String>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        if self.peek() != Some(b'"') {
            return Err(DecodeError::new("expected a string"));
        }
        let (s, end) = parse_string(&self.buf, self.pos)?;
        self.pos = end;
        Ok(Some(s))
    }

    fn dict(&mut self) -> Result<Option<Dict>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        if self.peek() != Some(b'{') {
            return Err(DecodeError::new("expected a dictionary"));
        }
        let (start, end) = self.skip_element()?;
        parse_dict(&self.buf[start..end]).map(Some)
    }

    fn raw(&mut self, kind: RawKind) -> Result<Option<Bytes>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        let expected = match kind {
            RawKind::List => b'[',
            RawKind::Dict => b'{',
        };
        if self.peek() != Some(expected) {
            return Err(kind.mismatch());
        }
        let (start, end) = self.skip_element()?;
        Ok(Some(self.buf.slice(start..end)))
    }

    fn value(&mut self) -> Result<Option<Value>, DecodeError> {
        if !self.next_element()? {
            return Ok(None);
        }
        let (start, end) = self.skip_element()?;
        parse_value(&self.buf[start..end]).map(Some)
    }

    fn end(&mut self) -> Result<(), DecodeError> {
        if self.next_element()? {
            return Err(DecodeError::new("too many elements for this message type"));
        }
        self.skip_ws();
        if self.pos != self.buf.len() {
            return Err(DecodeError::new("trailing bytes after the message"));
        }
        Ok(())
    }
}

/// Validates the JSON value starting at `pos` and returns the offset just past it.
fn skip_value(buf: &[u8], mut pos: usize, depth: usize) -> Result<usize, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new("JSON nested too deeply"));
    }
    match buf.get(pos) {
        Some(b'"') => parse_string_span(buf, pos),
        Some(b'{') | Some(b'[') => {
            let close = if buf[pos] == b'{' { b'}' } else { b']' };
            let is_object = close == b'}';
            pos = skip_ws(buf, pos + 1);
            if buf.get(pos) == Some(&close) {
                return Ok(pos + 1);
            }
            loop {
                if is_object {
                    if buf.get(pos) != Some(&b'"') {
                        return Err(DecodeError::new("JSON object key must be a string"));
                    }
                    pos = skip_ws(buf, parse_string_span(buf, pos)?);
                    if buf.get(pos) != Some(&b':') {
                        return Err(DecodeError::new("expected ':' in JSON object"));
                    }
                    pos = skip_ws(buf, pos + 1);
                }
                pos = skip_ws(buf, skip_value(buf, pos, depth + 1)?);
                match buf.get(pos) {
                    Some(b',') => pos = skip_ws(buf, pos + 1),
                    Some(c) if *c == close => return Ok(pos + 1),
                    _ => return Err(DecodeError::new("malformed JSON container")),
                }
            }
        }
        Some(b't') => literal(buf, pos, b"true"),
        Some(b'f') => literal(buf, pos, b"false"),
        Some(b'n') => literal(buf, pos, b"null"),
        Some(b'-' | b'0'..=b'9') => skip_number(buf, pos),
        _ => Err(DecodeError::new("invalid JSON value")),
    }
}

fn skip_ws(buf: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = buf.get(pos) {
        pos += 1;
    }
    pos
}

fn literal(buf: &[u8], pos: usize, word: &[u8]) -> Result<usize, DecodeError> {
    if buf[pos..].starts_with(word) {
        Ok(pos + word.len())
    } else {
        Err(DecodeError::new("invalid JSON literal"))
    }
}

fn skip_number(buf: &[u8], mut pos: usize) -> Result<usize, DecodeError> {
    let digits = |buf: &[u8], mut p: usize| {
        let start = p;
        while let Some(b'0'..=b'9') = buf.get(p) {
            p += 1;
        }
        (p, p > start)
    };
    if buf.get(pos) == Some(&b'-') {
        pos += 1;
    }
    let (p, any) = digits(buf, pos);
    if !any {
        return Err(DecodeError::new("invalid JSON number"));
    }
    pos = p;
    if buf.get(pos) == Some(&b'.') {
        let (p, any) = digits(buf, pos + 1);
        if !any {
            return Err(DecodeError::new("invalid JSON number"));
        }
        pos = p;
    }
    if let Some(b'e' | b'E') = buf.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = buf.get(pos) {
            pos += 1;
        }
        let (p, any) = digits(buf, pos);
        if !any {
            return Err(DecodeError::new("invalid JSON number"));
        }
        pos = p;
    }
    Ok(pos)
}

/// Validates the string starting at `pos` (the opening quote) and returns the offset past it.
fn parse_string_span(buf: &[u8], pos: usize) -> Result<usize, DecodeError> {
    let mut p = pos + 1;
    loop {
        match buf.get(p) {
            Some(b'"') => return Ok(p + 1),
            Some(b'\\') => match buf.get(p + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => p += 2,
                Some(b'u') if buf.len() >= p + 6 && buf[p + 2..p + 6].iter().all(u8::is_ascii_hexdigit) => p += 6,
                _ => return Err(DecodeError::new("invalid escape in JSON string")),
            },
            Some(c) if *c < 0x20 => return Err(DecodeError::new("control character in JSON string")),
            Some(_) => p += 1,
            None => return Err(DecodeError::new("unterminated JSON string")),
        }
    }
}

/// Parses the string starting at `pos`, returning it unescaped and the offset past it.
fn parse_string(buf: &[u8], pos: usize) -> Result<(String, usize), DecodeError> {
    let end = parse_string_span(buf, pos)?;
    let body = &buf[pos + 1..end - 1];
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::new("JSON string is not UTF-8"))?;
    if !body.contains(&b'\\') {
        return Ok((text.to_owned(), end));
    }
    let mut out = String::with_capacity(body.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hi = hex4(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if chars.next() != Some('\\') || chars.next() != Some('u') {
                        return Err(DecodeError::new("unpaired surrogate in JSON string"));
                    }
                    let lo = hex4(&mut chars)?;
                    0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    hi
                };
                out.push(char::from_u32(code).ok_or_else(|| DecodeError::new("invalid \\u escape"))?);
            }
            Some(c) => out.push(c),
            None => return Err(DecodeError::new("invalid escape in JSON string")),
        }
    }
    Ok((out, end))
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Result<u32, DecodeError> {
    let mut n = 0;
    for _ in 0..4 {
        let d = chars.next().and_then(|c| c.to_digit(16));
        n = n * 16 + d.ok_or_else(|| DecodeError::new("invalid \\u escape"))?;
    }
    Ok(n)
}

/// Parses a dictionary span; `{}` (the common case on the hot path) skips the parser entirely.
fn parse_dict(span: &[u8]) -> Result<Dict, DecodeError> {
    if span == b"{}" {
        return Ok(Dict::new());
    }
    match parse_value(span)? {
        Value::Dict(d) => Ok(d),
        _ => Err(DecodeError::new("expected a dictionary")),
    }
}

/// Parses one complete JSON value with simd-json.
pub fn parse_value(span: &[u8]) -> Result<Value, DecodeError> {
    let mut scratch = span.to_vec();
    let parsed =
        simd_json::to_borrowed_value(&mut scratch).map_err(|e| DecodeError::new(&format!("invalid JSON: {e}")))?;
    Ok(from_simd(parsed))
}

fn from_simd(v: simd_json::BorrowedValue<'_>) -> Value {
    use simd_json::{BorrowedValue as B, StaticNode as S};
    match v {
        B::Static(S::Null) => Value::Null,
        B::Static(S::Bool(b)) => Value::Bool(b),
        B::Static(S::I64(n)) => Value::from(n),
        B::Static(S::U64(n)) => Value::UInt(n),
        B::Static(S::F64(f)) => Value::Float(f),
        B::String(s) => match s.strip_prefix('\0').map(|b64| B64.decode(b64)) {
            Some(Ok(bytes)) => Value::Bytes(bytes),
            _ => Value::Str(s.into_owned()),
        },
        B::Array(items) => Value::List(items.into_iter().map(from_simd).collect()),
        B::Object(map) => Value::Dict(Dict(map.into_iter().map(|(k, v)| (k.into_owned(), from_simd(v))).collect())),
    }
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
            Value::Float(f) if f.is_finite() => out.extend_from_slice(format!("{f:?}").as_bytes()),
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
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(s: &str) -> JsonReader {
        JsonReader::new(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    #[test]
    fn reads_envelope_and_raw_payload_spans() {
        let mut r = reader(r#" [48, 7, {"a": [1, {"b": null}]}, "com.x", [1, "two", 3.5e2], {"k": "v\"w"}] "#);
        assert_eq!(r.uint().unwrap(), Some(48));
        assert_eq!(r.uint().unwrap(), Some(7));
        let d = r.dict().unwrap().unwrap();
        assert_eq!(
            d.get("a"),
            Some(&Value::List(vec![Value::UInt(1), Value::Dict(Dict::new().with("b", Value::Null))]))
        );
        assert_eq!(r.string().unwrap().as_deref(), Some("com.x"));
        assert_eq!(&r.raw(RawKind::List).unwrap().unwrap()[..], br#"[1, "two", 3.5e2]"#);
        assert_eq!(&r.raw(RawKind::Dict).unwrap().unwrap()[..], br#"{"k": "v\"w"}"#);
        assert_eq!(r.raw(RawKind::List).unwrap(), None);
        r.end().unwrap();
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [r#"[1,"#, r#"[1 2]"#, r#"[01x]"#, r#"["a\q"]"#, r#"[[1,]]"#, r#"[{"a" 1}]"#, r#"[1] x"#, "[tru]"] {
            let mut r = reader(bad);
            let result = (|| {
                while r.value()?.is_some() {}
                r.end()
            })();
            assert!(result.is_err(), "accepted {bad}");
        }
        assert!(JsonReader::new(Bytes::from_static(b"{}")).is_err());
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing() {
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert!(reader(&deep).value().is_err());
    }

    #[test]
    fn strings_round_trip_with_escapes_and_binary() {
        let v = Value::List(vec![
            Value::from("quote\" back\\ nl\n ctl\u{1} é 😀"),
            Value::Bytes(vec![0, 1, 2, 255]),
            Value::Float(1.0),
            Value::from(-5i64),
        ]);
        let mut out = Vec::new();
        Json::value(&mut out, &v);
        assert_eq!(parse_value(&out).unwrap(), v);
        let (s, _) = parse_string(br#""\ud83d\ude00\u00e9""#, 0).unwrap();
        assert_eq!(s, "😀é");
    }
}
