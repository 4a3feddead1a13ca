//! Tests across serializers: hostile frames, and what transcoding does when a payload cannot be
//! carried faithfully from one serializer to another.

use super::*;

/// Hostile input never panics a decoder: random bytes, and valid frames with bytes flipped,
/// cut short or duplicated, for every serializer (a fixed seed keeps it repeatable).
#[test]
fn decoders_survive_mangled_frames() {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let samples = [
        Message::Call {
            request: 7,
            options: Dict::new().with("receive_progress", true),
            procedure: "com.example.add".into(),
            payload: Payload::Values(
                vec![Value::UInt(1), Value::from("two"), Value::Bytes(vec![3, 4]), Value::Float(0.5)],
                Some(Dict::new().with("k", Value::List(vec![Value::Null, Value::Bool(true)]))),
            ),
        },
        Message::Hello { realm: "realm1".into(), details: Dict::new().with("roles", Dict::new()) },
        Message::Yield { request: 1, options: Dict::new(), payload: Payload::Empty },
    ];
    for serializer in Serializer::ALL {
        let frames: Vec<Vec<u8>> = samples
            .iter()
            .map(|m| {
                let mut out = Vec::new();
                serializer.try_encode(m, &mut out).unwrap();
                out
            })
            .collect();
        for round in 0..20_000 {
            let mut frame = frames[round % frames.len()].clone();
            match rng.u8(..4) {
                0 => frame = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect(),
                1 => {
                    for _ in 0..rng.usize(1..4) {
                        let at = rng.usize(..frame.len());
                        frame[at] = rng.u8(..);
                    }
                }
                2 => frame.truncate(rng.usize(..frame.len())),
                _ => {
                    let at = rng.usize(..frame.len());
                    let copy = frame[at..].to_vec();
                    frame.extend_from_slice(&copy);
                }
            }
            if let Ok(message) = serializer.decode(Bytes::from(frame)) {
                // Whatever decodes must encode again in its own serializer, and either encode or
                // fail cleanly in the others.
                serializer.try_encode(&message, &mut Vec::new()).unwrap();
                for target in Serializer::ALL {
                    let _ = target.try_encode(&message, &mut Vec::new());
                }
            }
        }
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Decodes a YIELD `[70, 1, {}, args]` (or with kwargs) whose payload elements are given encoded.
fn yield_frame(serializer: Serializer, args: &[u8], kwargs: Option<&[u8]>) -> Message {
    let frame = match serializer {
        Serializer::Json => {
            let mut f = b"[70,1,{},".to_vec();
            f.extend_from_slice(args);
            if let Some(k) = kwargs {
                f.push(b',');
                f.extend_from_slice(k);
            }
            f.push(b']');
            f
        }
        Serializer::MsgPack | Serializer::Cbor => {
            // Four or five elements: a fixarray head (CBOR: a short array head).
            let base = if serializer == Serializer::MsgPack { 0x90 } else { 0x80 };
            let empty_map = if serializer == Serializer::MsgPack { 0x80 } else { 0xa0 };
            let mut f = vec![base | if kwargs.is_some() { 5 } else { 4 }, 70, 1, empty_map];
            if serializer == Serializer::Cbor {
                f[1] = 0x18;
                f.insert(2, 70);
            }
            f.extend_from_slice(args);
            f.extend_from_slice(kwargs.unwrap_or_default());
            f
        }
    };
    serializer.decode(Bytes::from(frame.clone())).unwrap_or_else(|e| panic!("{frame:02x?} is valid: {e}"))
}

/// `message` (received in `from`) must pass through unchanged in `from`, and fail in `to` with
/// an error naming the element and containing `why`.
fn refused(message: &Message, from: Serializer, to: Serializer, element: &str, why: &str) {
    let mut out = Vec::new();
    from.try_encode(message, &mut out).expect("passthrough in the same serializer never fails");
    let mut out = b"kept".to_vec();
    let error = to.try_encode(message, &mut out).expect_err("must not transcode");
    assert_eq!(out, b"kept", "a failed encode leaves the buffer as it was");
    assert_eq!((error.element, error.from, error.to), (element, Some(from), to), "{error}");
    assert!(error.reason.contains(why), "{error}");
    assert!(!error.to_string().contains("Some("), "{error}");
}

#[test]
fn json_payloads_that_other_serializers_cannot_carry() {
    let json = Serializer::Json;
    for (args, why) in [
        ("[18446744073709551616]", "does not fit in 64 bits"),
        ("[-9223372036854775809]", "does not fit in 64 bits"),
        ("[1, [2, 123456789012345678901234567890]]", "does not fit in 64 bits"),
        (r#"["\u0000not base64!"]"#, "WAMP binary"),
    ] {
        let message = yield_frame(json, args.as_bytes(), None);
        for to in [Serializer::MsgPack, Serializer::Cbor] {
            refused(&message, json, to, "Arguments|list", why);
        }
    }
    let message = yield_frame(json, b"[]", Some(br#"{"big": 18446744073709551616}"#));
    refused(&message, json, Serializer::Cbor, "ArgumentsKw|dict", "does not fit in 64 bits");
    // What does carry: the extremes of 64 bits, large and tiny floats, binary.
    let message =
        yield_frame(json, br#"[18446744073709551615, -9223372036854775808, 1e300, 1e-400, -0, "\u0000AQID"]"#, None);
    for to in [Serializer::MsgPack, Serializer::Cbor] {
        let mut out = Vec::new();
        to.try_encode(&message, &mut out).unwrap();
        let Message::Yield { payload, .. } = to.decode(Bytes::from(out)).unwrap() else { panic!() };
        let (args, _) = payload.to_values().unwrap();
        assert_eq!(args[0], Value::UInt(u64::MAX));
        assert_eq!(args[1], Value::Int(i64::MIN));
        assert_eq!(args[5], Value::Bytes(vec![1, 2, 3]));
    }
}

#[test]
fn binary_payloads_that_json_cannot_carry() {
    let msgpack = Serializer::MsgPack;
    let cbor = Serializer::Cbor;
    let nan64 = [&[0xcb][..], &f64::NAN.to_bits().to_be_bytes()].concat();
    let inf32 = [&[0xca][..], &f32::INFINITY.to_bits().to_be_bytes()].concat();
    let nul_string = hex("a4 00 61 62 63");
    for (element, why) in [(&nan64, "NaN"), (&inf32, "infinity"), (&nul_string, "read as binary")] {
        let args = [&[0x92, 0x01][..], element].concat();
        let message = yield_frame(msgpack, &args, None);
        refused(&message, msgpack, Serializer::Json, "Arguments|list", why);
        // The other binary serializer carries all of them.
        cbor.try_encode(&message, &mut Vec::new()).unwrap();
    }
    let message = yield_frame(msgpack, &[0x90], Some(&[&hex("81 a1 6b 91")[..], &nan64].concat()));
    let error = Serializer::Json.try_encode(&message, &mut Vec::new()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "YIELD ArgumentsKw|dict received as wamp.2.msgpack cannot be sent as wamp.2.json: \
         at .k[0]: NaN, which JSON cannot represent"
    );
    // CBOR: NaN and infinity as half floats, a string starting with U+0000.
    for (element, why) in
        [(hex("f9 7e 00"), "NaN"), (hex("f9 fc 00"), "-infinity"), (hex("62 00 41"), "read as binary")]
    {
        let args = [&[0x81][..], &element].concat();
        let message = yield_frame(cbor, &args, None);
        refused(&message, cbor, Serializer::Json, "Arguments|list", why);
        msgpack.try_encode(&message, &mut Vec::new()).unwrap();
    }
    // CBOR integers below i64::MIN are CBOR (forwarded to CBOR peers) but no 64-bit value.
    let message = yield_frame(cbor, &hex("81 3b 8000000000000000"), None);
    for to in [Serializer::Json, msgpack] {
        refused(&message, cbor, to, "Arguments|list", "below the 64-bit range");
    }
    let mut out = Vec::new();
    cbor.try_encode(&message, &mut out).unwrap();
    assert!(out.ends_with(&hex("81 3b 8000000000000000")));
    // Binary data itself travels everywhere (as base64 in JSON).
    let message = yield_frame(msgpack, &hex("91 c4 03 01 02 03"), None);
    let mut out = Vec::new();
    Serializer::Json.try_encode(&message, &mut out).unwrap();
    assert_eq!(out, br#"[70,1,{},["\u0000AQID"]]"#);
}

#[test]
fn values_made_by_the_router_are_checked_too() {
    let message = Message::Error {
        request_type: 48,
        request: 1,
        details: Dict::new().with("x", Value::Float(f64::INFINITY)),
        error: "wamp.error.runtime_error".into(),
        payload: Payload::args(vec![Value::Float(f64::NAN)]),
    };
    let error = Serializer::Json.try_encode(&message, &mut Vec::new()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "ERROR Details|dict cannot be encoded as wamp.2.json: at .x: infinity, which JSON cannot represent"
    );
    let message =
        Message::Result { request: 1, details: Dict::new(), payload: Payload::args(vec![Value::Float(f64::NAN)]) };
    let error = Serializer::Json.try_encode(&message, &mut Vec::new()).unwrap_err();
    assert_eq!((error.element, error.from), ("Arguments|list", None));
    assert!(error.to_string().starts_with("RESULT Arguments|list cannot be encoded as wamp.2.json: at [0]: NaN"));
    Serializer::MsgPack.try_encode(&message, &mut Vec::new()).unwrap();
}

#[test]
fn the_legacy_encode_still_sends_an_empty_element_in_place_of_one_that_cannot_transcode() {
    let message = yield_frame(Serializer::Json, b"[18446744073709551616]", Some(br#"{"a":1}"#));
    let mut out = Vec::new();
    Serializer::MsgPack.encode(&message, &mut out);
    let Message::Yield { payload, .. } = Serializer::MsgPack.decode(Bytes::from(out)).unwrap() else { panic!() };
    assert_eq!(payload.to_values().unwrap(), (vec![], Dict::new().with("a", 1u64)));
}

/// The fuzz targets' property (fuzz/src/lib.rs): what decodes encodes again in its own
/// serializer, stably, and in every other one either fails cleanly or decodes there.
fn reencodes_everywhere(serializer: Serializer, frame: &[u8]) {
    let Ok(message) = serializer.decode(Bytes::copy_from_slice(frame)) else { return };
    let mut own = Vec::new();
    serializer.try_encode(&message, &mut own).unwrap();
    let again = serializer.decode(Bytes::from(own.clone())).unwrap();
    let mut twice = Vec::new();
    serializer.try_encode(&again, &mut twice).unwrap();
    assert_eq!(twice, own);
    for target in Serializer::ALL {
        let mut out = Vec::new();
        if target.try_encode(&message, &mut out).is_ok() {
            if let Err(e) = target.decode(Bytes::from(out.clone())) {
                panic!("{target} output {:?} does not decode: {e}", String::from_utf8_lossy(&out));
            }
        }
    }
}

/// Inputs the fuzz targets found, kept as regressions.
#[test]
fn fuzz_regressions() {
    for (serializer, frame) in [
        // An ABORT reason starting with U+0000, from CBOR: JSON wrote "\u0000amp.error...", and
        // read it back as WAMP binary with bad base64. Envelope strings are plain text now.
        (Serializer::Cbor, hex("8303a0781a00616d702e6572726f722e73797374656d5f73687574646f776e")),
        // The same with a CHALLENGE's AuthMethod, from MessagePack.
        (Serializer::MsgPack, hex("9304a70000017063726180")),
    ] {
        reencodes_everywhere(serializer, &frame);
    }
}
