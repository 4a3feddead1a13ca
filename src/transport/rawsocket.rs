//! WAMP over RawSocket (TCP), per the spec: a 4-octet handshake, then frames of a 4-octet header
//! (frame type: message, PING or PONG; 24-bit length) and the payload.
//!
//! Each side announces the largest message it accepts as `2^(9 + exponent)` bytes. Frames larger
//! than what we announced are a protocol violation; messages larger than what the peer announced
//! are never sent (see [`crate::session::writer`]). The handshake's error replies tell a client
//! why it was refused: 1 unsupported serializer, 2 unacceptable maximum length, 3 reserved bits
//! used, 4 connection limit reached.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

use super::gate::{FrameGate, Framing};
use super::{CloseCode, OutFrame, PeerLink};
use crate::router::RouterShared;
use crate::session::lifecycle;
use crate::session::protocol::Inbound;
use crate::wire::Serializer;

/// The first octet of every RawSocket handshake; it can never start an HTTP request.
pub const MAGIC: u8 = 0x7F;

/// The largest payload a frame header can express (24-bit length).
pub const MAX_FRAME: usize = (1 << 24) - 1;

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

/// Serves one TCP connection whose first octet is [`MAGIC`].
pub async fn serve(router: Arc<RouterShared>, mut tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let mut hello = [0u8; 4];
    match tokio::time::timeout(router.config.handshake_timeout(), tcp.read_exact(&mut hello)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return tracing::debug!(%peer, %error, "RawSocket handshake failed"),
        Err(_) => return tracing::info!(%peer, "RawSocket handshake timed out"),
    }
    let our_exponent = length_exponent(router.config.max_message_size.min(MAX_FRAME));
    let refusal = if hello[0] != MAGIC {
        return tracing::info!(%peer, "not a RawSocket handshake");
    } else if hello[2] != 0 || hello[3] != 0 {
        Err(HandshakeError::ReservedBitsUsed)
    } else {
        serializer_from_id(hello[1] & 0x0f).ok_or(HandshakeError::SerializerUnsupported)
    };
    let serializer = match refusal {
        Ok(serializer) => serializer,
        Err(error) => {
            tracing::info!(%peer, ?error, octets = ?hello, "RawSocket handshake refused");
            let _ = tcp.write_all(&[MAGIC, (error as u8) << 4, 0, 0]).await;
            return;
        }
    };
    let peer_max = announced_length(hello[1] >> 4);
    let accepted = (our_exponent << 4) | hello[1] & 0x0f;
    if tcp.write_all(&[MAGIC, accepted, 0, 0]).await.is_err() {
        return;
    }
    tracing::debug!(%peer, serializer = serializer.subprotocol(), peer_max, "RawSocket connection open");
    let (read, write) = tcp.into_split();
    let max_incoming = announced_length(our_exponent).max(router.config.max_message_size.min(MAX_FRAME));
    let read = FrameGate::new(read, Framing::RawSocket, max_incoming, router.config.message_timeout());
    let frames = Frames { inner: FramedRead::new(read, Codec { max_incoming }) };
    let sink = FrameSink { inner: FramedWrite::new(write, Codec { max_incoming }) };
    let link = PeerLink { serializer, max_outgoing: peer_max, pings: router.config.rawsocket_keepalive };
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
            src.reserve(4 + length - src.len());
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

struct Frames {
    inner: FramedRead<FrameGate<OwnedReadHalf>, Codec>,
}

impl Stream for Frames {
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

struct FrameSink {
    inner: FramedWrite<OwnedWriteHalf, Codec>,
}

impl Sink<OutFrame> for FrameSink {
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
}
