//! What the fuzz targets check, shared between them. Each function panics when a property fails,
//! which libFuzzer reports as a crash with the input that caused it.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use roundhouse::wire::json;
use roundhouse::wire::{Message, Serializer, Value};

/// Decodes `data` in `serializer`; what decodes must encode again:
/// - in its own serializer, always, and the result must decode and re-encode to the same bytes;
/// - in every other serializer, or fail with an `EncodeError`; what encodes must decode there.
pub fn decode_and_reencode(serializer: Serializer, data: &[u8]) {
    let message = match serializer.decode(Bytes::copy_from_slice(data)) {
        Ok(message) => message,
        Err(error) => return assert_readable(&error.0),
    };
    let own = encoded(serializer, &message).expect("a decoded message encodes in its own serializer");
    let again = serializer.decode(Bytes::from(own.clone())).expect("our own encoding decodes");
    assert_eq!(encoded(serializer, &again).as_ref(), Ok(&own), "re-encoding is stable");
    for target in Serializer::ALL {
        if let Ok(frame) = encoded(target, &message) {
            let decoded = target.decode(Bytes::from(frame.clone()));
            let decoded = decoded.unwrap_or_else(|e| panic!("{target} output does not decode ({e}): {frame:02x?}"));
            assert_eq!(decoded.message_type(), message.message_type());
        }
    }
}

fn encoded(serializer: Serializer, message: &Message) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    serializer.try_encode(message, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decode errors go to peers in ABORTs: no Rust debug forms. (They quote no peer text, only
/// numbers, so a match here is ours.)
fn assert_readable(text: &str) {
    for form in ["Some(", "None", "Int(", "Str(", "Float(", "Dict(", "List(", "Bytes(", "Error {", "Utf8Error"] {
        assert!(!text.contains(form), "a Rust debug form in an error text: {text}");
    }
}

/// A value as both parsers should read it: numbers by kind and exact value, dictionaries as
/// sorted maps (repeated keys already resolved, last wins), WAMP binary as bytes.
#[derive(Debug, PartialEq)]
pub enum Canon {
    Null,
    Bool(bool),
    Int(i128),
    /// The float's bits: `-0.0` and `0.0` differ, as they do on the wire.
    Float(u64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Canon>),
    Map(BTreeMap<String, Canon>),
}

/// Ours, in the common form.
pub fn canon(value: &Value) -> Canon {
    match value {
        Value::Null => Canon::Null,
        Value::Bool(b) => Canon::Bool(*b),
        Value::Int(n) => Canon::Int(i128::from(*n)),
        Value::UInt(n) => Canon::Int(i128::from(*n)),
        Value::Float(f) => Canon::Float(f.to_bits()),
        Value::Str(s) => Canon::Str(s.clone()),
        Value::Bytes(b) => Canon::Bytes(b.clone()),
        Value::List(items) => Canon::List(items.iter().map(canon).collect()),
        Value::Dict(d) => {
            let map: BTreeMap<_, _> = d.0.iter().map(|(k, v)| (k.clone(), canon(v))).collect();
            assert_eq!(map.len(), d.0.len(), "a Dict holds a key twice");
            Canon::Map(map)
        }
    }
}

/// Why serde_json's reading of a value cannot be put in the common form (and ours must have
/// refused it as a value too).
#[derive(Debug)]
pub enum NoCanon {
    /// An integer beyond 64 bits (serde_json falls back to a float).
    BigInteger,
    /// A string starting with U+0000 that is not base64.
    NotBinary,
}

const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// serde_json's, in the common form. `text` is the span it was read from: whether a number was
/// written as an integer is not kept by serde_json when it overflows, so it is found again there.
pub fn canon_serde(value: &serde_json::Value) -> Result<Canon, NoCanon> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => Canon::Null,
        J::Bool(b) => Canon::Bool(*b),
        J::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Canon::Int(i128::from(u)),
            (_, Some(i), _) => Canon::Int(i128::from(i)),
            (_, _, Some(f)) => Canon::Float(f.to_bits()),
            _ => unreachable!("a serde_json number is u64, i64 or f64"),
        },
        J::String(s) => match s.strip_prefix('\0') {
            Some(b64) => Canon::Bytes(LENIENT.decode(b64).map_err(|_| NoCanon::NotBinary)?),
            None => Canon::Str(s.clone()),
        },
        J::Array(items) => Canon::List(items.iter().map(canon_serde).collect::<Result<_, _>>()?),
        J::Object(map) => {
            Canon::Map(map.iter().map(|(k, v)| Ok((k.clone(), canon_serde(v)?))).collect::<Result<_, _>>()?)
        }
    })
}

/// Parses with serde_json, without its default depth limit (ours is the one that counts).
pub fn serde_parse(span: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    use serde::Deserialize as _;
    let mut de = serde_json::Deserializer::from_slice(span);
    de.disable_recursion_limit();
    let value = serde_json::Value::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Nesting depth of a JSON text, counting brackets outside strings (ours refuses beyond 257).
pub fn depth(span: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in span {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, ..) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                max = max.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The differential check on one JSON value: whatever our scanner accepts, serde_json accepts
/// and reads to the same value as our parser (or both find it no 64-bit value / no binary).
/// And the other way: what serde_json accepts, we accept, unless it is nested deeper than we
/// allow or holds a number beyond a double's range.
pub fn compare_value(span: &[u8]) {
    let ours_valid = json::is_valid(span);
    let ours = json::parse_value(span);
    let theirs = serde_parse(span);
    if ours.is_ok() {
        assert!(ours_valid, "the parser accepted what the scanner refuses: {:?}", String::from_utf8_lossy(span));
    }
    if !ours_valid {
        if let Ok(value) = &theirs {
            // serde_json is more lenient only in depth (we bound it) and never otherwise.
            assert!(
                depth(span) > 257,
                "serde_json accepts what we refuse: {:?} ({value:?})",
                String::from_utf8_lossy(span)
            );
        }
        return;
    }
    let theirs = theirs.unwrap_or_else(|e| {
        panic!("our scanner accepts, serde_json refuses ({e}): {:?}", String::from_utf8_lossy(span))
    });
    match (ours, canon_serde(&theirs)) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(canon(&ours), theirs, "different values for {:?}", String::from_utf8_lossy(span))
        }
        (Err(e), Err(NoCanon::BigInteger | NoCanon::NotBinary)) => {
            assert!(e.0.contains("64 bits") || e.0.contains("WAMP binary"), "{e}")
        }
        (Err(e), Ok(theirs)) => {
            // serde_json reads integers beyond 64 bits as floats; we refuse them as values.
            assert!(e.0.contains("does not fit in 64 bits"), "we refuse ({e}) what serde_json reads as {theirs:?}");
        }
        (Ok(ours), Err(why)) => panic!("we read {ours:?} where serde_json's value is {why:?}"),
    }
}

/// The differential check on a whole frame: if it decodes as a WAMP message, the frame and each
/// raw payload span pass [`compare_value`]; and every frame is compared as a JSON value.
pub fn compare_frame(data: &[u8]) {
    compare_value(data);
    let Ok(message) = Serializer::Json.decode(Bytes::copy_from_slice(data)) else { return };
    assert!(serde_parse(data).is_ok(), "a message serde_json refuses: {:?}", String::from_utf8_lossy(data));
    if let Some(roundhouse::wire::Payload::Raw(raw)) = message.payload() {
        for span in raw.args.iter().chain(&raw.kwargs) {
            compare_value(span);
        }
    }
}
