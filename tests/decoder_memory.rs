//! What hostile MessagePack and CBOR frames make the decoders allocate. Containers announce
//! their length up front, up to four billion elements in five bytes, at every nesting level; a
//! decoder that reserved room from announced lengths allocated hundreds of megabytes for a frame
//! of a few kilobytes. Every allocation of this test binary is counted, so it holds one test.

use std::alloc::System;

use bytes::Bytes;
use roundhouse::wire::Serializer;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// `levels` nested containers (heads from `head`), each announcing 2^32 - 1 entries, then
/// `padding` bytes of small integers that are not enough for any of them.
fn nested(head: &[u8], levels: usize, padding: usize) -> Vec<u8> {
    let mut frame = head.repeat(levels);
    frame.resize(frame.len() + padding, 0x01);
    frame
}

/// Bytes allocated while `decode` runs (and fails).
fn allocated(decode: impl FnOnce() -> bool) -> usize {
    let region = Region::new(GLOBAL);
    assert!(!decode(), "the hostile frame must be refused");
    region.change().bytes_allocated
}

#[test]
fn announced_lengths_do_not_make_the_decoders_allocate() {
    let (levels, padding) = (200, 16 * 1024);
    let cases = [
        // MessagePack array32 and map32 (map keys must be strings: a key head opens each level).
        (Serializer::MsgPack, nested(&[0xdd, 0xff, 0xff, 0xff, 0xff], levels, padding)),
        (Serializer::MsgPack, nested(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'k'], levels, padding)),
        // CBOR arrays and maps with 32-bit lengths.
        (Serializer::Cbor, nested(&[0x9a, 0xff, 0xff, 0xff, 0xff], levels, padding)),
        (Serializer::Cbor, nested(&[0xba, 0xff, 0xff, 0xff, 0xff, 0x61, b'k'], levels, padding)),
    ];
    for (serializer, value) in cases {
        let frame_len = value.len();
        // As a payload being transcoded, and as the Options of a CALL (which the router reads).
        let spent = allocated(|| serializer.parse_value(&value).is_ok());
        let mut call = match serializer {
            Serializer::MsgPack => vec![0x95, 0x30, 0x01],
            _ => vec![0x85, 0x18, 0x30, 0x01],
        };
        call.extend_from_slice(&value);
        let call = Bytes::from(call);
        let spent_in_call = allocated(|| serializer.decode(call).is_ok());
        // At most one element per byte of the frame is reserved in all (a list element is 32
        // bytes, a dictionary entry 56), plus what the decoder really holds: well under 4 MiB.
        // Reserving from announced lengths took over 100 MiB here.
        for bytes in [spent, spent_in_call] {
            assert!(bytes < 4 << 20, "{serializer}: {bytes} bytes allocated for a {frame_len}-byte frame");
        }
    }
}
