//! The JSON serializer's tests: the envelope reader, the ingress rules of RFC 8259, value reading
//! and writing.

use super::*;

fn reader(s: &str) -> JsonReader {
    JsonReader::new(Bytes::copy_from_slice(s.as_bytes())).unwrap()
}

/// Reads every element of `frame` as a value, then the end.
fn read_all(frame: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let mut r = JsonReader::new(Bytes::copy_from_slice(frame))?;
    let mut values = Vec::new();
    while let Some(v) = r.value()? {
        values.push(v);
    }
    r.end()?;
    Ok(values)
}

/// Reads `frame` as a CALL, keeping its payload raw, as the router does.
fn decode_call(frame: &[u8]) -> Result<crate::wire::Message, DecodeError> {
    crate::wire::Serializer::Json.decode(Bytes::copy_from_slice(frame))
}

#[test]
fn reads_envelope_and_raw_payload_spans() {
    let mut r = reader(r#" [48, 7, {"a": [1, {"b": null}]}, "com.x", [1, "two", 3.5e2], {"k": "v\"w"}] "#);
    assert_eq!(r.uint().unwrap(), Some(48));
    assert_eq!(r.uint().unwrap(), Some(7));
    let d = r.dict().unwrap().unwrap();
    assert_eq!(d.get("a"), Some(&Value::List(vec![Value::UInt(1), Value::Dict(Dict::new().with("b", Value::Null))])));
    assert_eq!(r.string().unwrap().as_deref(), Some("com.x"));
    assert_eq!(&r.raw(RawKind::List).unwrap().unwrap()[..], br#"[1, "two", 3.5e2]"#);
    assert_eq!(&r.raw(RawKind::Dict).unwrap().unwrap()[..], br#"{"k": "v\"w"}"#);
    assert_eq!(r.raw(RawKind::List).unwrap(), None);
    r.end().unwrap();
}

#[test]
fn rejects_malformed_input() {
    for bad in [r#"[1,"#, r#"[1 2]"#, r#"[01x]"#, r#"["a\q"]"#, r#"[[1,]]"#, r#"[{"a" 1}]"#, r#"[1] x"#, "[tru]"] {
        assert!(read_all(bad.as_bytes()).is_err(), "accepted {bad}");
    }
    assert!(JsonReader::new(Bytes::from_static(b"{}")).is_err());
}

/// The frames from the issue: both reached a WebSocket-JSON callee and broke its parser.
#[test]
fn the_issues_call_frames_are_refused_at_ingress() {
    assert!(decode_call(br#"[48,1,{},"com.example.echo",[1]]"#).is_ok());
    let error = decode_call(br#"[48,1,{},"com.example.echo",[01]]"#).unwrap_err();
    assert!(error.0.contains("leading zero"), "{error}");
    let mut frame = br#"[48,1,{},"com.example.echo",["x"]]"#.to_vec();
    let at = frame.iter().position(|b| *b == b'x').unwrap();
    frame[at] = 0xFF;
    let error = decode_call(&frame).unwrap_err();
    assert!(error.0.contains("not UTF-8"), "{error}");
}

#[test]
fn numbers_follow_the_grammar() {
    for good in ["0", "-0", "1", "-1", "10", "0.5", "-0.5", "1e5", "1E+5", "1e-5", "0e0", "1.25e-3", "1e308", "1e-400"]
    {
        assert!(is_valid(good.as_bytes()), "refused {good}");
        assert!(read_all(format!("[{good}]").as_bytes()).is_ok(), "refused [{good}]");
    }
    for bad in [
        "01", "-01", "00", "-", "-a", "+1", ".5", "1.", "1.e5", "1e", "1e+", "--1", "0x10", "1e400", "-1e400",
        "Infinity", "NaN",
    ] {
        assert!(!is_valid(bad.as_bytes()), "accepted {bad}");
        assert!(read_all(format!("[{bad}]").as_bytes()).is_err(), "accepted [{bad}]");
        assert!(read_all(format!("[48,1,{{}},\"p\",[{bad}]]").as_bytes()).is_err(), "accepted in a payload: {bad}");
    }
    // Large integers are JSON (forwarded as they are) but not 64-bit values.
    let huge = format!("1{}", "0".repeat(300));
    assert!(is_valid(huge.as_bytes()));
    assert!(!is_valid(format!("1{}", "0".repeat(400)).as_bytes()), "beyond a double's range");
    assert!(parse_value(huge.as_bytes()).unwrap_err().0.contains("does not fit in 64 bits"));
    // Digits that only look huge: the exponent brings them back.
    assert!(is_valid(format!("1{}e-300", "0".repeat(400)).as_bytes()));
    assert!(is_valid(format!("0.{}1e310", "0".repeat(20)).as_bytes()));
    // Leading zeros in envelope integers, too.
    assert!(reader("[048]").uint().is_err());
    assert!(reader("[-1]").uint().is_err());
    assert!(reader("[1.0]").uint().is_err());
    assert_eq!(reader("[0]").uint().unwrap(), Some(0));
    assert!(reader("[18446744073709551616]").uint().is_err());
}

#[test]
fn number_values_keep_their_kind() {
    for (text, value) in [
        ("0", Value::UInt(0)),
        ("18446744073709551615", Value::UInt(u64::MAX)),
        ("-9223372036854775808", Value::Int(i64::MIN)),
        ("-1", Value::Int(-1)),
        ("1.0", Value::Float(1.0)),
        ("1e2", Value::Float(100.0)),
        ("1e-400", Value::Float(0.0)),
    ] {
        assert_eq!(parse_value(text.as_bytes()).unwrap(), value, "{text}");
    }
    match parse_value(b"-0").unwrap() {
        Value::Float(f) => assert!(f == 0.0 && f.is_sign_negative()),
        other => panic!("-0 read as {other:?}"),
    }
    for big in ["18446744073709551616", "-9223372036854775809"] {
        assert!(parse_value(big.as_bytes()).unwrap_err().0.contains("does not fit in 64 bits"), "{big}");
    }
}

#[test]
fn strings_refuse_control_characters_bad_escapes_and_lone_surrogates() {
    for good in [r#""""#, r#""a\"b""#, r#""\/\b\f\n\r\t\\""#, r#""\u00e9""#, r#""\ud83d\ude00""#, r#""\uD83D\uDE00""#] {
        assert!(is_valid(good.as_bytes()), "refused {good}");
    }
    for bad in [
        "\"\u{1}\"",
        "\"a\nb\"",
        r#""\x41""#,
        r#""\u12""#,
        r#""\u12g4""#,
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#""\ud800\ud800""#,
        r#""\ud800x""#,
        r#""\ude00\ud83d""#,
        r#""abc"#,
    ] {
        assert!(!is_valid(bad.as_bytes()), "accepted {bad}");
        let frame = format!("[48,1,{{}},\"p\",[{bad}]]");
        assert!(decode_call(frame.as_bytes()).is_err(), "accepted in a payload: {bad}");
        let frame = format!("[48,1,{{}},\"p\",[],{{{bad}:1}}]");
        assert!(decode_call(frame.as_bytes()).is_err(), "accepted as a key: {bad}");
    }
}

#[test]
fn any_invalid_utf8_anywhere_in_the_frame_is_refused() {
    let good = r#"[48,1,{"k":"é"},"com.é",["é"],{"é":"é"}]"#.as_bytes();
    assert!(decode_call(good).is_ok());
    for (i, _) in good.iter().enumerate().filter(|(_, b)| **b >= 0x80) {
        for bad_byte in [0xFF, 0xC0, 0xF8] {
            let mut frame = good.to_vec();
            frame[i] = bad_byte;
            assert!(decode_call(&frame).is_err(), "accepted byte {bad_byte:#x} at {i}");
        }
    }
    // Overlong forms and encoded surrogates, inside a payload string.
    for bad in [&[0xC0u8, 0xAF][..], &[0xED, 0xA0, 0x80], &[0xF4, 0x90, 0x80, 0x80]] {
        let mut frame = br#"[48,1,{},"p",[""#.to_vec();
        frame.extend_from_slice(bad);
        frame.extend_from_slice(br#""]]"#);
        assert!(decode_call(&frame).is_err(), "accepted {bad:02x?}");
        assert!(parse_value(&frame[13..frame.len() - 1]).is_err());
    }
}

#[test]
fn refuses_deep_nesting_without_overflowing() {
    let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
    assert!(reader(&deep).value().is_err());
    assert!(reader(&deep).raw(RawKind::List).is_err());
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(parse_value(ok.as_bytes()).is_ok());
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
    assert_eq!(parse_value(br#""\ud83d\ude00\u00e9""#).unwrap(), Value::from("😀é"));
}

#[test]
fn binary_strings_must_hold_base64() {
    assert_eq!(parse_value(br#""\u0000AQID""#).unwrap(), Value::Bytes(vec![1, 2, 3]));
    // Padding is optional when reading.
    assert_eq!(parse_value(br#""\u0000AQ==""#).unwrap(), Value::Bytes(vec![1]));
    assert_eq!(parse_value(br#""\u0000AQ""#).unwrap(), Value::Bytes(vec![1]));
    assert_eq!(parse_value(br#""\u0000""#).unwrap(), Value::Bytes(vec![]));
    let error = parse_value(br#""\u0000not base64!""#).unwrap_err();
    assert!(error.0.contains("WAMP binary"), "{error}");
    // As a raw payload it is still JSON, and forwarded as such.
    assert!(decode_call(br#"[48,1,{},"p",["\u0000not base64!"]]"#).is_ok());
}

#[test]
fn repeated_keys_keep_the_last_value_in_linear_time() {
    assert_eq!(
        parse_value(br#"{"a":1,"b":2,"a":3}"#).unwrap(),
        Value::Dict(Dict::new().with("a", 3u64).with("b", 2u64))
    );
    // 400k copies of one key, in an Options dictionary and in a payload being parsed: this once
    // took seconds (quadratic). The bound is generous on purpose; the codec bench measures speed.
    let mut frame = br#"[48,1,{"#.to_vec();
    for _ in 0..400_000 {
        frame.extend_from_slice(br#""k":1,"#);
    }
    frame.extend_from_slice(br#""k":2},"p",[]]"#);
    let started = std::time::Instant::now();
    let crate::wire::Message::Call { options, .. } = decode_call(&frame).unwrap() else { panic!("not a CALL") };
    assert_eq!(options, Dict::new().with("k", 2u64));
    let span = &frame[6..frame.len() - 8];
    assert_eq!(parse_value(span).unwrap(), Value::Dict(Dict::new().with("k", 2u64)));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn unrepresentable_values_are_found_with_their_path() {
    assert_eq!(Json::check(&Value::List(vec![Value::Float(1.5), Value::from("x")])), Ok(()));
    let nan = Value::List(vec![Value::Null, Value::Dict(Dict::new().with("x", Value::Float(f64::NAN)))]);
    assert_eq!(Json::check(&nan).unwrap_err().to_string(), "at [1].x: NaN, which JSON cannot represent");
    let nul = Value::from("\0abc");
    assert!(Json::check(&nul).unwrap_err().to_string().contains("read as binary"));
}
