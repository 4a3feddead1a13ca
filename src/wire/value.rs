//! A serializer-neutral WAMP value: what `Details`/`Options` dictionaries hold and what payloads
//! become when they must be transcoded between serializers.
//!
//! The router parses dictionaries (it reads options from them) but never parses payloads unless
//! caller and callee speak different serializers; see [`crate::wire::payload`].
//!
//! This module also owns how a value is shown to a peer in an error text ([`Value::describe`]) and
//! what a dictionary with a repeated key means ([`Dict::from_entries`]: the last one wins).

use std::collections::hash_map::{Entry, HashMap};
use std::fmt::Write as _;

/// One WAMP value. Integers keep their sign class: non-negative integers decode as [`Value::UInt`],
/// negative ones as [`Value::Int`], so every serializer round-trips them the same way.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null`, MessagePack nil.
    Null,
    /// A boolean.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A floating point number.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Binary data (in JSON: a string holding `"\u0000"` followed by base64, per the WAMP spec).
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A dictionary with string keys.
    Dict(Dict),
}

impl Value {
    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a non-negative integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::UInt(n) => Some(*n),
            _ => None,
        }
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a dictionary, if it is one.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// A short description of the value for error texts a peer reads: `-1`, `2.5`, `"text"`,
    /// `null`, `a list of 3 items`. Never a Rust debug form, and never the whole of a large value:
    /// strings longer than [`DESCRIBED_CHARS`] characters and containers are summarised.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::UInt(n) => n.to_string(),
            Value::Float(f) if f.is_nan() => "NaN".to_owned(),
            Value::Float(f) if f.is_infinite() => if *f > 0.0 { "infinity" } else { "-infinity" }.to_owned(),
            // `{:?}` keeps the decimal point (`1.0`, not `1`), so a float never reads as an integer.
            Value::Float(f) => format!("{f:?}"),
            Value::Str(s) => match s.chars().count() {
                n if n <= DESCRIBED_CHARS => quoted(s),
                n => format!("a string of {n} characters"),
            },
            Value::Bytes(b) => plural(b.len(), "binary data of", "byte"),
            Value::List(items) => plural(items.len(), "a list of", "item"),
            Value::Dict(d) => plural(d.0.len(), "a dictionary of", "entry"),
        }
    }
}

/// Strings up to this many characters are quoted whole by [`Value::describe`].
pub const DESCRIBED_CHARS: usize = 40;

/// `"text"` with quotes, backslashes and control characters escaped as JSON would: a JSON
/// string literal (also how WAMP-CRA writes its challenge's strings).
pub(crate) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `a list of 1 item`, `a list of 3 items`.
fn plural(n: usize, what: &str, unit: &str) -> String {
    match (n, unit) {
        (1, _) => format!("{what} 1 {unit}"),
        (_, "entry") => format!("{what} {n} entries"),
        _ => format!("{what} {n} {unit}s"),
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::UInt(n)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        if n >= 0 {
            Value::UInt(n as u64)
        } else {
            Value::Int(n)
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Dict> for Value {
    fn from(d: Dict) -> Self {
        Value::Dict(d)
    }
}

impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}

/// A WAMP dictionary (`Details`, `Options`, kwargs). Kept as a small vector in wire order: the
/// dictionaries on the hot path hold zero to three keys, where a linear scan beats hashing.
///
/// Keys are unique. Decoders build dictionaries with [`Dict::from_entries`], which resolves a
/// repeated key in linear time; [`Dict::insert`] scans, so it is for the router's own few keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dict(pub Vec<(String, Value)>);

/// Up to this many entries, duplicates are looked for by comparing every pair: cheaper than
/// hashing for the small dictionaries WAMP messages carry.
const PAIRWISE_MAX: usize = 12;

impl Dict {
    /// An empty dictionary.
    pub const fn new() -> Self {
        Dict(Vec::new())
    }

    /// A dictionary of `entries` as decoded, in linear time. A key that occurs more than once
    /// keeps the position of its first occurrence and the value of its last, as JSON parsers
    /// commonly do (JavaScript's `JSON.parse`, Python's `json`, serde_json): the same meaning for
    /// every serializer, and the same as inserting the entries one by one.
    pub fn from_entries(entries: Vec<(String, Value)>) -> Self {
        let n = entries.len();
        if n <= PAIRWISE_MAX && !(1..n).any(|i| entries[..i].iter().any(|(k, _)| *k == entries[i].0)) {
            return Dict(entries);
        }
        // `last[i]`: for the first occurrence of a key, where its last occurrence is; `None` for
        // every later occurrence. The map's hasher is std's, randomly keyed per map: peers choose
        // these keys, so a fixed hash would let them pick colliding ones.
        let mut last: Vec<Option<usize>> = (0..n).map(Some).collect();
        let mut first_seen: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (i, (key, _)) in entries.iter().enumerate() {
            match first_seen.entry(key.as_str()) {
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
                Entry::Occupied(first) => {
                    last[*first.get()] = Some(i);
                    last[i] = None;
                }
            }
        }
        drop(first_seen);
        let mut slots: Vec<Option<(String, Value)>> = entries.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(last.iter().flatten().count());
        for (i, winner) in last.into_iter().enumerate() {
            let Some(winner) = winner else { continue };
            let Some((key, mut value)) = slots[i].take() else { continue };
            if winner != i {
                if let Some((_, later)) = slots[winner].take() {
                    value = later;
                }
            }
            out.push((key, value));
        }
        Dict(out)
    }

    /// The value under `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`, replacing an existing entry.
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// Builder form of [`Dict::insert`].
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// True when the dictionary has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_short_and_never_rust_debug_forms() {
        for (value, text) in [
            (Value::Int(-1), "-1"),
            (Value::UInt(7), "7"),
            (Value::Float(1.0), "1.0"),
            (Value::Float(f64::NAN), "NaN"),
            (Value::Float(f64::NEG_INFINITY), "-infinity"),
            (Value::Null, "null"),
            (Value::Bool(true), "true"),
            (Value::from("x"), "\"x\""),
            (Value::from("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#),
            (Value::from("é".repeat(41)), "a string of 41 characters"),
            (Value::Bytes(vec![1, 2]), "binary data of 2 bytes"),
            (Value::List(vec![Value::Null]), "a list of 1 item"),
            (Value::List(vec![]), "a list of 0 items"),
            (Value::Dict(Dict::new().with("a", 1u64).with("b", 2u64)), "a dictionary of 2 entries"),
        ] {
            assert_eq!(value.describe(), text);
        }
    }

    fn entries(keys: &[&str]) -> Vec<(String, Value)> {
        keys.iter().enumerate().map(|(i, k)| ((*k).to_owned(), Value::UInt(i as u64))).collect()
    }

    #[test]
    fn repeated_keys_keep_their_first_place_and_last_value() {
        for size in [3, PAIRWISE_MAX + 5] {
            let mut keys: Vec<String> = (0..size).map(|i| format!("k{i}")).collect();
            keys.insert(2, "k0".into());
            keys.push("k1".into());
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let dict = Dict::from_entries(entries(&keys));
            // The same as inserting one by one.
            let mut expected = Dict::new();
            for (k, v) in entries(&keys) {
                expected.insert(&k, v);
            }
            assert_eq!(dict, expected);
            assert_eq!(dict.0.len(), size);
            assert_eq!(dict.get("k0"), Some(&Value::UInt(2)));
            assert_eq!(dict.get("k1"), Some(&Value::UInt(keys.len() as u64 - 1)));
            assert_eq!(dict.0[0].0, "k0");
        }
        assert_eq!(Dict::from_entries(entries(&["a", "b"])), Dict::new().with("a", 0u64).with("b", 1u64));
    }

    #[test]
    fn many_repeated_keys_cost_linear_time() {
        // 400k copies of one key: pairwise or rehash-chasing code would take minutes, this takes
        // milliseconds. The bound is generous on purpose; `benches/codec.rs` measures the speed.
        let many = vec![("same".to_owned(), Value::Null); 400_000];
        let started = std::time::Instant::now();
        let dict = Dict::from_entries(many);
        assert_eq!(dict.0.len(), 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
