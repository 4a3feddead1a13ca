//! The RawSocket handshake check: never panics, and what it accepts it answers as the spec says.
//! Input: the client's 4 octets, then up to 8 bytes of our `max_message_size`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundhouse::transport::rawsocket::{parse_handshake, HandshakeRefusal, MAGIC, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let Some((octets, rest)) = data.split_first_chunk::<4>() else { return };
    let max = rest.iter().take(8).fold(0usize, |n, b| (n << 8) | usize::from(*b));
    match parse_handshake(*octets, max) {
        Ok(accepted) => {
            assert_eq!(octets[0], MAGIC);
            assert_eq!(accepted.reply[0], MAGIC);
            assert_eq!(accepted.reply[1] & 0x0f, octets[1] & 0x0f, "the client's serializer is echoed");
            assert_eq!(&accepted.reply[2..], &[0, 0]);
            assert!(accepted.peer_max >= 512 && accepted.peer_max <= MAX_FRAME);
            // We never announce more than we accept, nor accept more than a frame holds.
            let announced = 1usize << (9 + (accepted.reply[1] >> 4));
            assert!(announced.min(MAX_FRAME) <= accepted.max_incoming);
            assert!(accepted.max_incoming <= MAX_FRAME.max(512));
        }
        Err(HandshakeRefusal::NotRawSocket) => assert_ne!(octets[0], MAGIC),
        Err(HandshakeRefusal::Refused(error)) => assert_eq!(error.reply()[0], MAGIC),
    }
});
