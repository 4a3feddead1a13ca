//! WAMP over RawSocket (TCP), per the spec: a 4-octet handshake, then frames of a 4-octet header
//! (frame type: message, PING or PONG; 24-bit length) and the payload.
//!
//! Each side announces the largest message it accepts as `2^(9 + exponent)` bytes. Frames larger
//! than what we announced are a protocol violation; messages larger than what the peer announced
//! are never sent (see [`crate::session::writer`]). The handshake's error replies tell a client
//! why it was refused: 1 unsupported serializer, 2 unacceptable maximum length, 3 reserved bits
//! used, 4 connection limit reached.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

use super::gate::{FrameGate, Framing};
use super::{CloseCode, Connection, OutFrame, PeerLink, Socket};
use crate::router::RouterShared;
use crate::session::lifecycle;
use crate::session::protocol::Inbound;
use crate::wire::Serializer;

/// The first octet of every RawSocket handshake; it can never start an HTTP request.
pub const MAGIC: u8 = 0x7F;

/// The largest payload a frame header can express (24-bit length).
pub const MAX_FRAME: usize = (1 << 24) - 1;

/// How far beyond the bytes already buffered [`Codec`] reserves room while a frame arrives.
pub const READ_AHEAD: usize = 64 * 1024;

/// Handshake error codes, sent in the upper nibble of the reply's second octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HandshakeError {
    /// The serializer id is not one we speak.
    SerializerUnsupported = 1,
    /// The maximum message length is not acceptable.
    MaxLengthUnacceptable = 2,
    /// Reserved bits were set.
    ReservedBitsUsed = 3,
    /// The router has no room for another connection.
    MaxConnectionCountReached = 4,
}

impl HandshakeError {
    /// The 4 octets that refuse a handshake with this error.
    pub fn reply(self) -> [u8; 4] {
        [MAGIC, (self as u8) << 4, 0, 0]
    }
}

/// Why a client's 4 handshake octets were not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    /// The first octet is not [`MAGIC`]: this is no RawSocket client, so nothing is answered.
    NotRawSocket,
    /// A RawSocket client asked for something we refuse; answer with [`HandshakeError::reply`].
    Refused(HandshakeError),
}

/// A handshake we accept, and what it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The serializer the client asked for.
    pub serializer: Serializer,
    /// The largest message the client accepts, in bytes.
    pub peer_max: usize,
    /// The largest frame payload we accept from the client, in bytes.
    pub max_incoming: usize,
    /// Our 4 reply octets: our length exponent and the client's serializer.
    pub reply: [u8; 4],
}

/// Checks a client's 4 handshake octets, given the largest message we accept
/// (`max_message_size`). Pure: the caller reads the octets and writes the reply.
pub fn parse_handshake(octets: [u8; 4], max_message_size: usize) -> Result<Accepted, HandshakeRefusal> {
    if octets[0] != MAGIC {
        return Err(HandshakeRefusal::NotRawSocket);
    }
    if octets[2] != 0 || octets[3] != 0 {
        return Err(HandshakeRefusal::Refused(HandshakeError::ReservedBitsUsed));
    }
    let serializer =
        serializer_from_id(octets[1] & 0x0f).ok_or(HandshakeRefusal::Refused(HandshakeError::SerializerUnsupported))?;
    let our_max = max_message_size.min(MAX_FRAME);
    let our_exponent = length_exponent(our_max);
    Ok(Accepted {
        serializer,
        peer_max: announced_length(octets[1] >> 4),
        max_incoming: announced_length(our_exponent).max(our_max),
        reply: [MAGIC, (our_exponent << 4) | octets[1] & 0x0f, 0, 0],
    })
}

/// The serializer id of the handshake. Every serializer we speak has one; the `Option` keeps
/// room for one that RawSocket defines no id for.
pub fn serializer_id(serializer: Serializer) -> Option<u8> {
    match serializer {
        Serializer::Json => Some(1),
        Serializer::MsgPack => Some(2),
        Serializer::Cbor => Some(3),
    }
}

fn serializer_from_id(id: u8) -> Option<Serializer> {
    Serializer::ALL.into_iter().find(|s| serializer_id(*s) == Some(id))
}

/// The exponent announcing `max` bytes: the largest `n <= 15` with `2^(9 + n) <= max`, so we
/// never announce more than we accept.
pub fn length_exponent(max: usize) -> u8 {
    (0..=15u8).rev().find(|n| 1usize << (9 + n) <= max).unwrap_or(0)
}

/// Bytes a `length_exponent` announces, capped at what a frame header can carry.
pub fn announced_length(exponent: u8) -> usize {
    (1usize << (9 + usize::from(exponent & 0x0f))).min(MAX_FRAME)
}

/// Serves one connection (plain TCP or TLS) whose first octet is [`MAGIC`].
pub async fn serve<S: Socket>(router: Arc<RouterShared>, mut socket: S, connection: Connection) {
    let Connection { peer, deadline, mut prefix, tls } = connection;
    let mut hello = [0u8; 4];
    let start = prefix.len().min(4);
    hello[..start].copy_from_slice(&prefix[..start]);
    // What came after the handshake (a client that did not wait for its answer) goes to the frames.
    prefix.drain(..start);
    match tokio::time::timeout_at(deadline, socket.read_exact(&mut hello[start..])).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return tracing::debug!(%peer, %error, "RawSocket handshake failed"),
        Err(_) => {
            router.metrics.refused("rawsocket", "timeout");
            return tracing::info!(%peer, "RawSocket handshake timed out");
        }
    }
    let Accepted { serializer, peer_max, max_incoming, reply } =
        match parse_handshake(hello, router.config.max_message_size) {
            Ok(accepted) => accepted,
            Err(HandshakeRefusal::NotRawSocket) => return tracing::info!(%peer, "not a RawSocket handshake"),
            Err(HandshakeRefusal::Refused(error)) => {
                let reason = match error {
                    HandshakeError::SerializerUnsupported => "unsupported_serializer",
                    HandshakeError::ReservedBitsUsed => "reserved_bits",
                    HandshakeError::MaxLengthUnacceptable => "max_length",
                    HandshakeError::MaxConnectionCountReached => "max_connections",
                };
                router.metrics.refused("rawsocket", reason);
                let octets = format!("{:02x} {:02x} {:02x} {:02x}", hello[0], hello[1], hello[2], hello[3]);
                tracing::info!(%peer, error_code = error as u8, reason, octets, "RawSocket handshake refused");
                let _ = socket.write_all(&error.reply()).await;
                let _ = socket.flush().await;
                return;
            }
        };
    if socket.write_all(&reply).await.is_err() || socket.flush().await.is_err() {
        return;
    }
    tracing::debug!(%peer, serializer = serializer.subprotocol(), peer_max, "RawSocket connection open");
    let (read, write) = socket.into_halves();
    let read = FrameGate::with_prefix(read, Framing::RawSocket, max_incoming, router.config.message_timeout(), &prefix);
    drop(prefix);
    let frames = Frames { inner: FramedRead::new(read, Codec { max_incoming }) };
    let sink = FrameSink { inner: FramedWrite::new(write, Codec { max_incoming }) };
    let link = PeerLink {
        transport: super::Kind::RawSocket,
        peer,
        serializer,
        max_outgoing: peer_max,
        pings: router.config.rawsocket_keepalive,
        tls,
    };
    lifecycle::run(router, link, frames, sink).await;
}

/// A RawSocket frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    /// A WAMP message.
    Message(Bytes),
    /// PING, whose payload the PONG must echo.
    Ping(Bytes),
    /// PONG.
    Pong(Bytes),
}

/// Frames RawSocket messages (after the handshake). Used by the router and by our client.
///
/// A frame's header announces up to 16 MiB; its buffer grows as the bytes arrive, at most
/// [`READ_AHEAD`] beyond what is buffered, so a header alone costs next to nothing.
pub struct Codec {
    /// Largest payload accepted; larger frames are an error.
    pub max_incoming: usize,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer broke the framing rules.
    #[error("{0}")]
    Violation(String),
}

impl Decoder for Codec {
    type Item = RawFrame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let kind = src[0];
        let length = usize::from(src[1]) << 16 | usize::from(src[2]) << 8 | usize::from(src[3]);
        if kind & 0xf8 != 0 || kind > 2 {
            return Err(FrameError::Violation(format!("invalid RawSocket frame header octet {kind:#04x}")));
        }
        if length > self.max_incoming {
            return Err(FrameError::Violation(format!(
                "message of {length} bytes is larger than the {} announced",
                self.max_incoming
            )));
        }
        if src.len() < 4 + length {
            // Room for the next bytes, not for what the header promises: a peer that announces
            // 16 MiB and sends nothing more must not make us hold 16 MiB.
            src.reserve((4 + length - src.len()).min(READ_AHEAD));
            return Ok(None);
        }
        src.advance(4);
        let payload = src.split_to(length).freeze();
        Ok(Some(match kind {
            0 => RawFrame::Message(payload),
            1 => RawFrame::Ping(payload),
            _ => RawFrame::Pong(payload),
        }))
    }
}

impl Encoder<RawFrame> for Codec {
    type Error = io::Error;

    fn encode(&mut self, frame: RawFrame, dst: &mut BytesMut) -> io::Result<()> {
        let (kind, payload) = match frame {
            RawFrame::Message(p) => (0u8, p),
            RawFrame::Ping(p) => (1, p),
            RawFrame::Pong(p) => (2, p),
        };
        if payload.len() > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame longer than 2^24 - 1 bytes"));
        }
        dst.reserve(4 + payload.len());
        dst.put_u8(kind);
        dst.put_uint(payload.len() as u64, 3);
        dst.put_slice(&payload);
        Ok(())
    }
}

struct Frames<R> {
    inner: FramedRead<FrameGate<R>, Codec>,
}

impl<R: AsyncRead + Unpin> Stream for Frames<R> {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let item = match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
            None => return Poll::Ready(None),
            Some(Ok(RawFrame::Message(payload))) => Inbound::Frame(payload),
            Some(Ok(RawFrame::Ping(payload))) => Inbound::Ping(payload),
            Some(Ok(RawFrame::Pong(_))) => Inbound::Pong,
            Some(Err(FrameError::Violation(reason))) => Inbound::Violation { reason, code: CloseCode::Protocol },
            Some(Err(FrameError::Io(error))) if error.kind() == io::ErrorKind::TimedOut => {
                Inbound::Violation { reason: error.to_string(), code: CloseCode::Policy }
            }
            Some(Err(FrameError::Io(error))) => {
                tracing::debug!(%error, "RawSocket read failed");
                return Poll::Ready(None);
            }
        };
        Poll::Ready(Some(item))
    }
}

struct FrameSink<W> {
    inner: FramedWrite<W, Codec>,
}

impl<W: AsyncWrite + Unpin> Sink<OutFrame> for FrameSink<W> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: OutFrame) -> io::Result<()> {
        let frame = match frame {
            OutFrame::Message(payload) => RawFrame::Message(payload),
            OutFrame::Ping(payload) => RawFrame::Ping(payload),
            OutFrame::Pong(payload) => RawFrame::Pong(payload),
            // RawSocket has no close frame: closing the connection is the message.
            OutFrame::Close(_) => return Ok(()),
        };
        Pin::new(&mut self.inner).start_send(frame)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_never_announce_more_than_accepted() {
        assert_eq!(length_exponent(512), 0);
        assert_eq!(length_exponent(1023), 0);
        assert_eq!(length_exponent(1024), 1);
        assert_eq!(length_exponent(16 * 1024 * 1024), 15);
        assert_eq!(announced_length(15), MAX_FRAME);
        assert_eq!(announced_length(0), 512);
    }

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut codec = Codec { max_incoming: 8 };
        let mut buf = BytesMut::new();
        codec.encode(RawFrame::Message(Bytes::from_static(b"[1,2]")), &mut buf).unwrap();
        codec.encode(RawFrame::Ping(Bytes::from_static(b"hi")), &mut buf).unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 5]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(RawFrame::Message(Bytes::from_static(b"[1,2]"))));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(RawFrame::Ping(Bytes::from_static(b"hi"))));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        let mut big = BytesMut::from(&[0u8, 0, 0, 9][..]);
        assert!(matches!(codec.decode(&mut big), Err(FrameError::Violation(_))));
        let mut reserved = BytesMut::from(&[0x08u8, 0, 0, 1, 0][..]);
        assert!(matches!(codec.decode(&mut reserved), Err(FrameError::Violation(_))));
    }

    #[test]
    fn handshakes_are_accepted_or_refused_as_the_spec_says() {
        let max = 16 * 1024 * 1024;
        // JSON, client accepts 2^(9+15), capped at a frame's 2^24 - 1. We accept as much, but
        // can only announce 2^23: 2^24 would be more than a frame holds.
        let accepted = parse_handshake([MAGIC, 0xf1, 0, 0], max).unwrap();
        assert_eq!(accepted.serializer, Serializer::Json);
        assert_eq!(accepted.peer_max, MAX_FRAME);
        assert_eq!(accepted.max_incoming, MAX_FRAME);
        assert_eq!(accepted.reply, [MAGIC, 0xe1, 0, 0]);
        // MessagePack and CBOR; the client's exponent 0 is 512 bytes; ours follows our limit.
        let accepted = parse_handshake([MAGIC, 0x02, 0, 0], 64 * 1024).unwrap();
        assert_eq!((accepted.serializer, accepted.peer_max), (Serializer::MsgPack, 512));
        assert_eq!((accepted.max_incoming, accepted.reply), (64 * 1024, [MAGIC, 0x72, 0, 0]));
        assert_eq!(parse_handshake([MAGIC, 0x33, 0, 0], max).unwrap().serializer, Serializer::Cbor);
        // A limit between two powers of two: we announce less, and accept what we said we would.
        let accepted = parse_handshake([MAGIC, 0x01, 0, 0], 100_000).unwrap();
        assert_eq!((accepted.reply[1] >> 4, accepted.max_incoming), (7, 100_000));
        // Refusals.
        let refused = |octets| parse_handshake(octets, max).unwrap_err();
        assert_eq!(refused([0x47, 0x45, 0x54, 0x20]), HandshakeRefusal::NotRawSocket);
        for serializer in [0x00, 0x04, 0x0f] {
            let error = HandshakeRefusal::Refused(HandshakeError::SerializerUnsupported);
            assert_eq!(refused([MAGIC, 0xf0 | serializer, 0, 0]), error);
        }
        for reserved in [[MAGIC, 0xf1, 1, 0], [MAGIC, 0xf1, 0, 0x80]] {
            assert_eq!(refused(reserved), HandshakeRefusal::Refused(HandshakeError::ReservedBitsUsed));
        }
        assert_eq!(HandshakeError::SerializerUnsupported.reply(), [MAGIC, 0x10, 0, 0]);
        assert_eq!(HandshakeError::MaxConnectionCountReached.reply(), [MAGIC, 0x40, 0, 0]);
    }

    #[test]
    fn a_header_alone_reserves_a_bounded_chunk_and_the_buffer_grows_as_bytes_arrive() {
        let mut codec = Codec { max_incoming: MAX_FRAME };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0xff, 0xff, 0xff]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() <= 4 + READ_AHEAD + 64, "reserved {} bytes for a header", buf.capacity());
        // Feed the frame in pieces; the buffer never runs far ahead of what arrived (the factor 2
        // is BytesMut doubling its allocation when it grows).
        let mut sent = 0;
        while sent < MAX_FRAME {
            let chunk = (MAX_FRAME - sent).min(100_000);
            buf.extend_from_slice(&vec![b' '; chunk]);
            sent += chunk;
            if sent < MAX_FRAME {
                assert_eq!(codec.decode(&mut buf).unwrap(), None);
                assert!(buf.capacity() <= 2 * (4 + sent + READ_AHEAD), "{} for {sent}", buf.capacity());
            }
        }
        match codec.decode(&mut buf).unwrap() {
            Some(RawFrame::Message(payload)) => assert_eq!(payload.len(), MAX_FRAME),
            other => panic!("expected the whole frame, got {:?}", other.map(|_| "another frame")),
        }
    }
}
