//! Whatever our JSON scanner accepts (a whole frame, each raw payload span), serde_json accepts
//! and reads to the same value; see [`roundhouse_fuzz::compare_frame`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roundhouse_fuzz::compare_frame(data));
