//! RawSocket framing over arbitrarily chunked input: the frames read do not depend on how the
//! bytes were split, decoding never panics, and the buffer never runs far ahead of the bytes
//! that arrived. Input: one byte choosing the largest frame accepted, one seeding the chunk
//! sizes, then the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roundhouse::transport::rawsocket::{Codec, RawFrame, READ_AHEAD};
use tokio_util::codec::Decoder;

/// Frames read from `chunks` fed one after another, and whether reading ended in an error.
fn read(max_incoming: usize, chunks: &[&[u8]]) -> (Vec<RawFrame>, bool) {
    let mut codec = Codec { max_incoming };
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut arrived = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        arrived += chunk.len();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
        assert!(buf.capacity() <= 2 * (buf.len() + READ_AHEAD) + 64, "{} reserved for {arrived}", buf.capacity());
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[limit, seed], stream)) = data.split_first_chunk::<2>() else { return };
    let max_incoming = 1usize << (usize::from(limit) % 25);
    let whole = read(max_incoming, &[stream]);
    let mut chunks = Vec::new();
    let (mut rest, mut size) = (stream, usize::from(seed) + 1);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
        size = (size * 7 + 3) % 97 + 1;
    }
    assert_eq!(read(max_incoming, &chunks), whole, "chunking changed what was read");
});
