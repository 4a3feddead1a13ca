//! `wamp.2.json` frames: decoding never panics, and what decodes encodes again in every
//! serializer (or fails with an `EncodeError`), see [`roundhouse_fuzz::decode_and_reencode`].
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundhouse::wire::Serializer;

fuzz_target!(|data: &[u8]| roundhouse_fuzz::decode_and_reencode(Serializer::Json, data));
