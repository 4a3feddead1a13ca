//! The WAMP conformance vectors (wamp-proto `testsuite/`, copied to `../shared/wamp-testsuite`, see
//! its NOTICE.md) run against our serializers, validator and router.
//!
//! Single-message vectors, for every serializer we implement:
//! - every listed byte variant decodes to the sample's `expected_attributes`;
//! - the decoded message, encoded in each serializer we implement (the one it came from and the
//!   others, which exercises payload transcoding), is byte for byte one of that serializer's
//!   listed variants;
//! - `wmsg` samples (a message as a plain list), encoded in each serializer, are rejected by decode
//!   or [`validate::check`] exactly when they carry `expected_error`, with a reason containing its
//!   `contains` text.
//!
//! Multi-session vectors are replayed against an in-process router, once per serializer.
//!
//! Serializers we do not implement (ubjson, flatbuffers, ...) are counted as skipped. Features we
//! do not implement are listed as known gaps: the test checks they still fail, so that whoever
//! implements one is told to turn its gap into real checks. Run with `--nocapture` to see the
//! summary.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::cbor::Cbor;
use roundhouse::wire::json::Json;
use roundhouse::wire::msgpack::MsgPack;
use roundhouse::wire::{validate, Dict, Format, Message, Payload, Serializer, Value};
use serde_json::{Map, Value as JsonValue};

/// Message types the vectors cover that the router does not implement, with what they are.
const UNSUPPORTED_TYPES: &[(u64, &str)] = &[(337, "EVENT_RECEIVED (provisional acknowledged-delivery message)")];

fn suite_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/wamp-testsuite");
    assert!(
        dir.join("singlemessage").is_dir(),
        "the WAMP conformance vectors are missing: expected them in {} (copy wamp-proto's testsuite/ \
         folder there, see its NOTICE.md)",
        dir.display()
    );
    dir
}

/// Every `.json` vector file under the suite, sorted, but the schema.
fn vector_files() -> Vec<(String, JsonValue)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") && !path.ends_with("SCHEMA.json") {
                out.push(path);
            }
        }
    }
    let root = suite_dir();
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let name = path.strip_prefix(&root).expect("under the suite").display().to_string();
            (name, json)
        })
        .collect()
}

/// The vectors' name for a serializer: `json`, `msgpack`, `cbor`.
fn vector_key(serializer: Serializer) -> &'static str {
    serializer.subprotocol().trim_start_matches("wamp.2.")
}

fn encode_value(serializer: Serializer, value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match serializer {
        Serializer::Json => Json::value(&mut out, value),
        Serializer::MsgPack => MsgPack::value(&mut out, value),
        Serializer::Cbor => Cbor::value(&mut out, value),
    }
    out
}

fn encode(serializer: Serializer, message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    serializer.encode(message, &mut out);
    out
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit()), "bad hex {s:?}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// Bytes for display: text for JSON, hex otherwise.
fn show(serializer: Serializer, bytes: &[u8]) -> String {
    match serializer {
        Serializer::Json => String::from_utf8_lossy(bytes).into_owned(),
        _ => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// The bytes of one listed variant: `bytes_hex` when present, else `bytes`, else `bytes_base64`.
/// Where several are present they must agree.
fn variant_bytes(variant: &JsonValue, context: &str) -> Vec<u8> {
    let from_hex = variant.get("bytes_hex").and_then(JsonValue::as_str).map(hex);
    let from_text = variant.get("bytes").and_then(JsonValue::as_str).map(|s| s.as_bytes().to_vec());
    let from_b64 = variant.get("bytes_base64").and_then(JsonValue::as_str).map(|s| {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_else(|e| panic!("{context}: bad base64: {e}"))
    });
    let all: Vec<_> = [from_hex, from_text, from_b64].into_iter().flatten().collect();
    assert!(!all.is_empty(), "{context}: variant has no bytes");
    assert!(all.windows(2).all(|w| w[0] == w[1]), "{context}: the variant's representations disagree");
    all.into_iter().next().expect("one representation")
}

fn from_json(v: &JsonValue) -> Value {
    match v {
        JsonValue::Null => Value::Null,
        JsonValue::Bool(b) => Value::Bool(*b),
        JsonValue::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::UInt(u),
            (None, Some(i)) => Value::Int(i),
            _ => Value::Float(n.as_f64().expect("a number")),
        },
        JsonValue::String(s) => Value::Str(s.clone()),
        JsonValue::Array(items) => Value::List(items.iter().map(from_json).collect()),
        JsonValue::Object(map) => Value::Dict(Dict(map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())),
    }
}

/// Sorts dictionary keys at every level: dictionary order carries no meaning in WAMP.
fn normalized(v: &Value) -> Value {
    match v {
        Value::List(items) => Value::List(items.iter().map(normalized).collect()),
        Value::Dict(d) => {
            let mut entries: Vec<_> = d.0.iter().map(|(k, v)| (k.clone(), normalized(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Dict(Dict(entries))
        }
        other => other.clone(),
    }
}

/// A message's fields under the vectors' attribute names (and the aliases the vectors use).
/// Payload messages get `args`, `kwargs` (null when absent) and `payload` (always null: we have no
/// transparent payload mode).
fn attributes(message: &Message) -> BTreeMap<&'static str, Value> {
    let mut a: BTreeMap<&'static str, Value> = BTreeMap::new();
    a.insert("message_type", Value::UInt(message.message_type() as u64));
    let dict = |d: &Dict| Value::Dict(d.clone());
    let payload = |a: &mut BTreeMap<&'static str, Value>, p: &Payload| {
        let (args, kwargs) = p.to_values().unwrap_or_else(|e| panic!("payload of {message:?} does not parse: {e}"));
        let n = p.element_count();
        a.insert("args", if n >= 1 { Value::List(args) } else { Value::Null });
        a.insert("kwargs", if n >= 2 { Value::Dict(kwargs) } else { Value::Null });
        a.insert("payload", Value::Null);
    };
    match message {
        Message::Hello { realm, details } => {
            a.insert("realm", Value::from(realm.as_str()));
            a.insert("details", dict(details));
            a.insert("roles", details.get("roles").cloned().unwrap_or(Value::Null));
        }
        Message::Welcome { session, details } => {
            a.insert("session_id", Value::UInt(*session));
            a.insert("details", dict(details));
            a.insert("roles", details.get("roles").cloned().unwrap_or(Value::Null));
        }
        Message::Abort { details, reason } | Message::Goodbye { details, reason } => {
            a.insert("details", dict(details));
            a.insert("reason", Value::from(reason.as_str()));
        }
        Message::Challenge { auth_method, extra } => {
            a.insert("method", Value::from(auth_method.as_str()));
            a.insert("extra", dict(extra));
        }
        Message::Authenticate { signature, extra } => {
            a.insert("signature", Value::from(signature.as_str()));
            a.insert("extra", dict(extra));
        }
        Message::Error { request_type, request, details, error, payload: p } => {
            a.insert("request_type", Value::UInt(*request_type));
            a.insert("request_id", Value::UInt(*request));
            a.insert("details", dict(details));
            a.insert("error", Value::from(error.as_str()));
            payload(&mut a, p);
        }
        Message::Publish { request, options, topic, payload: p } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("options", dict(options));
            a.insert("topic", Value::from(topic.as_str()));
            payload(&mut a, p);
        }
        Message::Published { request, publication } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("publication_id", Value::UInt(*publication));
        }
        Message::Subscribe { request, options, topic } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("options", dict(options));
            a.insert("topic", Value::from(topic.as_str()));
        }
        Message::Subscribed { request, subscription } | Message::Unsubscribe { request, subscription } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("subscription_id", Value::UInt(*subscription));
        }
        Message::Unsubscribed { request, details } | Message::Unregistered { request, details } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("details", details.as_ref().map_or(Value::Null, dict));
        }
        Message::Event { subscription, publication, details, payload: p } => {
            for key in ["subscription", "subscription_id"] {
                a.insert(key, Value::UInt(*subscription));
            }
            for key in ["publication", "publication_id"] {
                a.insert(key, Value::UInt(*publication));
            }
            a.insert("details", dict(details));
            payload(&mut a, p);
        }
        Message::Call { request, options, procedure, payload: p } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("options", dict(options));
            a.insert("procedure", Value::from(procedure.as_str()));
            payload(&mut a, p);
        }
        Message::Cancel { request, options } | Message::Interrupt { request, options } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("options", dict(options));
        }
        Message::Yield { request, options, payload: p } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("options", dict(options));
            payload(&mut a, p);
        }
        Message::Result { request, details, payload: p } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("details", dict(details));
            payload(&mut a, p);
        }
        Message::Register { request, options, procedure } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("options", dict(options));
            a.insert("procedure", Value::from(procedure.as_str()));
        }
        Message::Registered { request, registration } | Message::Unregister { request, registration } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("registration_id", Value::UInt(*registration));
        }
        Message::Invocation { request, registration, details, payload: p } => {
            a.insert("request_id", Value::UInt(*request));
            a.insert("registration_id", Value::UInt(*registration));
            a.insert("details", dict(details));
            payload(&mut a, p);
        }
    }
    a
}

/// Asserts `message` has every expected attribute, and no payload the sample does not list.
fn assert_attributes(message: &Message, expected: &Map<String, JsonValue>, context: &str) {
    let actual = attributes(message);
    for (key, want) in expected {
        let Some(got) = actual.get(key.as_str()) else {
            panic!("{context}: attribute {key:?} has no counterpart in {message:?} (known: {:?})", actual.keys());
        };
        assert_eq!(normalized(got), normalized(&from_json(want)), "{context}: attribute {key}");
    }
    for key in ["args", "kwargs", "payload"] {
        if let Some(got) = actual.get(key).filter(|_| !expected.contains_key(key)) {
            assert_eq!(*got, Value::Null, "{context}: {key} is not in the sample, so must be absent");
        }
    }
}

/// Where a message type's `Arguments|list` sits in its array, for the types that have one.
fn arguments_index(message_type: u64) -> Option<usize> {
    match message_type {
        8 => Some(5),
        16 | 36 | 48 | 68 => Some(4),
        50 | 70 => Some(3),
        _ => None,
    }
}

#[derive(Default)]
struct Tally {
    files: usize,
    samples: usize,
    decoded: usize,
    encoded: usize,
    validated: usize,
    skipped: BTreeMap<String, usize>,
    gaps: Vec<String>,
}

impl Tally {
    fn gap(&mut self, what: String) {
        if !self.gaps.contains(&what) {
            self.gaps.push(what);
        }
    }
}

/// A serialization sample: decode every variant, re-encode in every serializer.
fn check_serialization_sample(sample: &JsonValue, context: &str, tally: &mut Tally) {
    let serializers = sample["serializers"].as_object().unwrap_or_else(|| panic!("{context}: no serializers"));
    let expected = sample["expected_attributes"].as_object().unwrap_or_else(|| panic!("{context}: no attributes"));
    let message_type = expected["message_type"].as_u64().expect("message_type");
    for (key, variants) in serializers {
        if !Serializer::ALL.iter().any(|s| vector_key(*s) == key) {
            *tally.skipped.entry(key.clone()).or_default() += variants.as_array().map_or(0, Vec::len);
        }
    }
    let variants_of = |s: Serializer| -> Vec<Vec<u8>> {
        serializers.get(vector_key(s)).and_then(JsonValue::as_array).map_or(Vec::new(), |vs| {
            vs.iter().enumerate().map(|(i, v)| variant_bytes(v, &format!("{context} {}[{i}]", vector_key(s)))).collect()
        })
    };
    let transparent = expected.get("payload").is_some_and(|p| !p.is_null());
    let unsupported = UNSUPPORTED_TYPES.iter().find(|(code, _)| *code == message_type);
    for source in Serializer::ALL {
        for (i, bytes) in variants_of(source).into_iter().enumerate() {
            let context = format!("{context} {}[{i}] {}", vector_key(source), show(source, &bytes));
            let decoded = source.decode(Bytes::from(bytes));
            if let Some((_, what)) = unsupported {
                let error = decoded.expect_err(&format!("{context}: now decodes; replace its known gap with checks"));
                assert!(error.0.contains("unknown message type"), "{context}: {error}");
                tally.gap(format!("message type {message_type}, {what}: not implemented"));
                continue;
            }
            if transparent {
                let error = decoded.expect_err(&format!("{context}: now decodes; replace its known gap with checks"));
                assert!(error.0.contains("Arguments must be a list"), "{context}: {error}");
                tally.gap("payload transparency (E2EE `payload` in place of args): not implemented".into());
                continue;
            }
            let message = decoded.unwrap_or_else(|e| panic!("{context}: does not decode: {e}"));
            assert_attributes(&message, expected, &context);
            if let Err(e) = validate::check(&message) {
                panic!("{context}: valid sample refused by validate::check: {e}");
            }
            tally.decoded += 1;
            for target in Serializer::ALL {
                let listed = variants_of(target);
                if listed.is_empty() {
                    continue;
                }
                let ours = encode(target, &message);
                assert!(
                    listed.contains(&ours),
                    "{context}: encoding as {} gives\n  {}\nwhich is none of the listed variants:\n  {}",
                    vector_key(target),
                    show(target, &ours),
                    listed.iter().map(|b| show(target, b)).collect::<Vec<_>>().join("\n  ")
                );
                tally.encoded += 1;
            }
        }
    }
}

/// A validation sample: the plain-list message, in each serializer, must be accepted or refused.
fn check_validation_sample(sample: &JsonValue, context: &str, tally: &mut Tally) {
    let wmsg = sample["wmsg"].as_array().unwrap_or_else(|| panic!("{context}: wmsg is not a list"));
    let expected_error = sample.get("expected_error").filter(|e| !e.is_null());
    let contains = expected_error.and_then(|e| e.get("contains")).and_then(JsonValue::as_str).unwrap_or("");
    let message_type = wmsg.first().and_then(JsonValue::as_u64).expect("wmsg starts with a type");
    let mut elements: Vec<Value> = wmsg.iter().map(from_json).collect();
    for serializer in Serializer::ALL {
        let context = format!("{context} ({})", vector_key(serializer));
        // A non-list where Arguments belong is a transparent payload, which we do not decode: check
        // that it is still refused, then check the rest of the message without it.
        if let Some(at) = arguments_index(message_type).filter(|at| elements.len() > *at) {
            if !matches!(elements[at], Value::List(_)) {
                let frame = encode_value(serializer, &Value::List(elements.clone()));
                let error = serializer.decode(Bytes::from(frame)).expect_err(&format!(
                    "{context}: a transparent payload now decodes; replace its known gap with checks"
                ));
                assert!(error.0.contains("Arguments must be a list"), "{context}: {error}");
                tally.gap("payload transparency (E2EE `payload` in place of args): not implemented".into());
                elements.truncate(at);
            }
        }
        let frame = encode_value(serializer, &Value::List(elements.clone()));
        let result = serializer.decode(Bytes::from(frame)).and_then(|m| validate::check(&m).map(|()| m));
        match (result, expected_error) {
            (Ok(_), None) => {}
            (Err(e), None) => panic!("{context}: valid message refused: {e}"),
            (Ok(m), Some(_)) => panic!("{context}: accepted {m:?}; expected a protocol violation about {contains:?}"),
            (Err(e), Some(_)) => {
                assert!(
                    e.0.contains(contains),
                    "{context}: refused, but the reason {:?} does not mention {contains:?}",
                    e.0
                )
            }
        }
        tally.validated += 1;
    }
}

#[test]
fn single_message_vectors() {
    let mut tally = Tally::default();
    for (name, file) in vector_files() {
        if file.get("sequence").is_some() {
            continue;
        }
        let samples = file["samples"].as_array().unwrap_or_else(|| panic!("{name}: neither samples nor sequence"));
        tally.files += 1;
        for (i, sample) in samples.iter().enumerate() {
            let description = sample["description"].as_str().unwrap_or("");
            let context = format!("{name} sample {i} ({description})");
            tally.samples += 1;
            if sample.get("wmsg").is_some() {
                check_validation_sample(sample, &context, &mut tally);
            } else {
                check_serialization_sample(sample, &context, &mut tally);
            }
        }
    }
    assert!(tally.files > 0 && tally.decoded > 0 && tally.validated > 0, "no vectors were checked");
    let skipped: Vec<_> = tally.skipped.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "conformance: {} files, {} samples; checked {} decodes, {} encodes, {} validations; \
         skipped (serializers not implemented): {}; known gaps: {}",
        tally.files,
        tally.samples,
        tally.decoded,
        tally.encoded,
        tally.validated,
        if skipped.is_empty() { "none".into() } else { skipped.join(", ") },
        tally.gaps.len()
    );
    for gap in &tally.gaps {
        println!("conformance: known gap: {gap}");
    }
}

/// The router-assigned ids seen so far, by kind and the placeholder the vector uses.
type Bindings = HashMap<(&'static str, u64), u64>;

/// The kind of router-assigned id an attribute holds, if it holds one.
fn assigned_id_kind(attribute: &str) -> Option<&'static str> {
    match attribute {
        "subscription" | "subscription_id" => Some("subscription"),
        "publication" | "publication_id" => Some("publication"),
        "registration" | "registration_id" => Some("registration"),
        "session" | "session_id" => Some("session"),
        _ => None,
    }
}

/// Builds a message a client sends from a step's attributes. Router-assigned ids are replaced by
/// what the router actually assigned.
fn client_message(attrs: &Map<String, JsonValue>, bindings: &Bindings, context: &str) -> Message {
    let int = |key: &str| -> u64 {
        let placeholder = attrs.get(key).and_then(JsonValue::as_u64);
        let placeholder = placeholder.unwrap_or_else(|| panic!("{context}: no integer {key}"));
        match assigned_id_kind(key) {
            Some(kind) => *bindings
                .get(&(kind, placeholder))
                .unwrap_or_else(|| panic!("{context}: {key} {placeholder} was never assigned by the router")),
            None => placeholder,
        }
    };
    let string = |key: &str| attrs.get(key).and_then(JsonValue::as_str).expect(key).to_owned();
    let dict = |key: &str| match attrs.get(key).map(from_json) {
        None => Dict::new(),
        Some(Value::Dict(d)) => d,
        Some(other) => panic!("{context}: {key} is not a dictionary: {other:?}"),
    };
    let payload = || match (attrs.get("args").map(from_json), attrs.get("kwargs").map(from_json)) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Payload::Empty,
        (Some(Value::List(args)), None | Some(Value::Null)) => Payload::Values(args, None),
        (args, Some(Value::Dict(kwargs))) => match args {
            Some(Value::List(args)) => Payload::Values(args, Some(kwargs)),
            _ => Payload::Values(Vec::new(), Some(kwargs)),
        },
        other => panic!("{context}: unusable args/kwargs {other:?}"),
    };
    let kind = attrs.get("type").and_then(JsonValue::as_str).expect("type");
    match kind {
        "SUBSCRIBE" => {
            Message::Subscribe { request: int("request_id"), options: dict("options"), topic: string("topic") }
        }
        "UNSUBSCRIBE" => Message::Unsubscribe { request: int("request_id"), subscription: int("subscription_id") },
        "PUBLISH" => Message::Publish {
            request: int("request_id"),
            options: dict("options"),
            topic: string("topic"),
            payload: payload(),
        },
        "REGISTER" => {
            Message::Register { request: int("request_id"), options: dict("options"), procedure: string("procedure") }
        }
        "UNREGISTER" => Message::Unregister { request: int("request_id"), registration: int("registration_id") },
        "CALL" => Message::Call {
            request: int("request_id"),
            options: dict("options"),
            procedure: string("procedure"),
            payload: payload(),
        },
        "YIELD" => Message::Yield { request: int("request_id"), options: dict("options"), payload: payload() },
        other => panic!("{context}: the conformance test cannot send {other} yet; extend client_message"),
    }
}

/// Asserts a message the router sent matches a step: the type, and every attribute, binding
/// router-assigned ids on first sight and holding them to it afterwards.
fn assert_router_message(message: &Message, attrs: &Map<String, JsonValue>, bindings: &mut Bindings, context: &str) {
    let kind = attrs.get("type").and_then(JsonValue::as_str).expect("type");
    assert_eq!(format!("{:?}", message.message_type()).to_uppercase(), kind, "{context}: got {message:?}");
    let actual = attributes(message);
    for (key, want) in attrs.iter().filter(|(k, _)| *k != "type") {
        let got = actual.get(key.as_str()).unwrap_or_else(|| panic!("{context}: no attribute {key} in {message:?}"));
        match (assigned_id_kind(key), want.as_u64(), got) {
            (Some(kind), Some(placeholder), Value::UInt(id)) => {
                let bound = *bindings.entry((kind, placeholder)).or_insert(*id);
                assert_eq!(*id, bound, "{context}: {key} differs from the {kind} id seen before");
            }
            _ => assert_eq!(normalized(got), normalized(&from_json(want)), "{context}: attribute {key}"),
        }
    }
}

/// Replays one multi-session vector against a fresh router, every session speaking `serializer`.
async fn replay(name: &str, vector: &JsonValue, serializer: Serializer) -> usize {
    let router = common::router().await;
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    for session in vector["sessions"].as_array().expect("sessions") {
        let id = session["session_id"].as_str().expect("session_id");
        let realm = session.get("realm").and_then(JsonValue::as_str).unwrap_or(common::REALM);
        let client = Client::join(&router.url(), realm, serializer).await.expect("joins");
        clients.insert(id.to_owned(), client);
    }
    let mut bindings = Bindings::new();
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    let steps = vector["sequence"].as_array().expect("sequence");
    for step in steps {
        let context = format!("{name} step {} ({}, {})", step["step"], step["description"], vector_key(serializer));
        let attrs = step["message"].as_object().expect("message");
        let (from, to) = (step["from"].as_str().expect("from"), step["to"].as_str().expect("to"));
        if to == "router" {
            let message = client_message(attrs, &bindings, &context);
            // What the router will decode must also pass the validator.
            let frame = encode(serializer, &message);
            let decoded = serializer.decode(Bytes::from(frame)).unwrap_or_else(|e| panic!("{context}: {e}"));
            validate::check(&decoded).unwrap_or_else(|e| panic!("{context}: {e}"));
            let client = clients.get_mut(from).unwrap_or_else(|| panic!("{context}: no session {from}"));
            client.send(&message).await.unwrap_or_else(|e| panic!("{context}: send: {e:?}"));
        } else {
            assert_eq!(from, "router", "{context}: only session-router steps are supported");
            let client = clients.get_mut(to).unwrap_or_else(|| panic!("{context}: no session {to}"));
            let message = client.recv().await.unwrap_or_else(|e| panic!("{context}: nothing received: {e:?}"));
            assert_router_message(&message, attrs, &mut bindings, &context);
            if matches!(message, Message::Event { .. }) {
                *events.entry(to.to_owned()).or_default() += 1;
            }
        }
    }
    // Nothing beyond the sequence may arrive.
    for (id, client) in &mut clients {
        client.rx.set_timeout(Duration::from_millis(200));
        match client.recv().await {
            Err(ClientError::Timeout) => {}
            other => panic!("{name} ({}): {id} got more than the sequence: {other:?}", vector_key(serializer)),
        }
    }
    let outcome = vector.get("expected_outcome").and_then(JsonValue::as_object);
    if let Some(count) = outcome.and_then(|o| o.get("event_count")).and_then(JsonValue::as_u64) {
        assert_eq!(events.values().sum::<usize>() as u64, count, "{name}: event_count");
    }
    if let Some(recipients) = outcome.and_then(|o| o.get("event_recipients")).and_then(JsonValue::as_array) {
        let want: Vec<&str> = recipients.iter().filter_map(JsonValue::as_str).collect();
        assert_eq!(events.keys().map(String::as_str).collect::<Vec<_>>(), want, "{name}: event_recipients");
    }
    for (_, client) in clients {
        common::say_goodbye(client).await;
    }
    common::assert_empty(&router).await;
    steps.len()
}

#[tokio::test]
async fn multi_session_vectors() {
    let mut files = 0;
    let mut steps = 0;
    for (name, vector) in vector_files() {
        if vector.get("sequence").is_none() {
            continue;
        }
        files += 1;
        for serializer in Serializer::ALL {
            steps += replay(&name, &vector, serializer).await;
        }
    }
    assert!(files > 0, "no multi-session vectors found");
    println!(
        "conformance: {files} multi-session files replayed against the router, {steps} steps over {} serializers",
        Serializer::ALL.len()
    );
}
