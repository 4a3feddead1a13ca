//! The gate between a connection's socket and its frame decoder: a large frame is passed on only
//! once all of its bytes have arrived, and a frame that has started must finish within a deadline.
//!
//! A frame decoder learns a frame's length from its header and, reasonably for a trusted peer,
//! reserves that much memory at once (tungstenite does; so did our RawSocket codec). From a
//! hostile peer, a 4–14 byte header announcing 16 MiB and no body after it would pin megabytes
//! per connection, with no end. The gate reads the byte stream itself, recognises frame headers
//! (WebSocket or RawSocket), and holds a large frame back in its own buffer, which grows only as
//! bytes arrive, until the frame is complete. Small frames and everything else stream through.
//! A frame larger than the decoder accepts is passed on at once, so the decoder refuses it at its
//! header as before.
//!
//! A frame whose first byte has arrived must be complete within `message_timeout`; otherwise the
//! read fails with [`std::io::ErrorKind::TimedOut`] and the session ends. Silence between frames
//! is not the gate's business (see the idle timeout in [`crate::session::protocol`]).
//!
//! While nothing is held, the socket is read straight into the decoder's buffer and only scanned,
//! so the common case costs no copy and an idle connection no buffer; the gate's own buffer exists
//! only while it holds a frame back (or the few bytes of a header cut by a read).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Frames at most this large stream through; larger ones are held until complete.
const STREAMED: u64 = 64 * 1024;

/// Room made in the gate's buffer before each read while it holds a frame back; the buffer grows
/// only as bytes arrive.
const READ_CHUNK: usize = 4 * 1024;

/// The framing of the bytes behind the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// An HTTP upgrade request, then WebSocket frames (RFC 6455).
    WebSocket,
    /// RawSocket frames (after the 4-octet handshake): a 4-octet header with a 24-bit length.
    RawSocket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// In the HTTP request head, `matched` octets into its final CRLF CRLF.
    Http { matched: usize },
    /// At a frame boundary.
    Header,
    /// Inside the body of a streamed frame.
    Body { remaining: u64 },
}

/// A socket behind the gate.
pub struct FrameGate<S> {
    inner: S,
    framing: Framing,
    /// Largest frame the decoder accepts; larger headers go through at once to be refused.
    max_frame: u64,
    timeout: Duration,
    /// Bytes held back: a frame not yet whole (or a header cut by a read), then whatever followed.
    buf: BytesMut,
    /// `buf[..released]` may be passed on; the rest, if any, starts at a frame header.
    released: usize,
    scan: Scan,
    /// When the frame in progress must be complete.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> FrameGate<S> {
    /// Puts `inner` behind a gate for `framing`; `max_frame` is the largest frame the decoder
    /// accepts and `timeout` the time a started frame has to arrive.
    pub fn new(inner: S, framing: Framing, max_frame: usize, timeout: Duration) -> Self {
        let scan = match framing {
            Framing::WebSocket => Scan::Http { matched: 0 },
            Framing::RawSocket => Scan::Header,
        };
        FrameGate {
            inner,
            framing,
            max_frame: max_frame as u64,
            timeout,
            buf: BytesMut::new(),
            released: 0,
            scan,
            deadline: None,
        }
    }

    /// Like [`FrameGate::new`], for a socket whose first octets (`prefix`) were already read
    /// from it: the gate hands them on first.
    pub fn with_prefix(inner: S, framing: Framing, max_frame: usize, timeout: Duration, prefix: &[u8]) -> Self {
        let mut gate = Self::new(inner, framing, max_frame, timeout);
        if !prefix.is_empty() {
            gate.released = gate.scan(prefix);
            gate.buf.extend_from_slice(prefix);
        }
        gate
    }

    /// The socket behind the gate.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Walks `bytes` from the scanner's state and returns how many of them may be passed on; the
    /// rest, if any, is a frame that must be held back (its header is incomplete, or it is large
    /// and not yet whole), and the scanner stays at its header.
    fn scan(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            match self.scan {
                Scan::Http { matched } => {
                    const END: &[u8] = b"\r\n\r\n";
                    let byte = bytes[at];
                    at += 1;
                    let matched = if byte == END[matched] { matched + 1 } else { usize::from(byte == END[0]) };
                    self.scan = if matched == END.len() { Scan::Header } else { Scan::Http { matched } };
                }
                Scan::Header => {
                    let Some((header, length)) = self.header(&bytes[at..]) else { return at };
                    let available = (bytes.len() - at - header) as u64;
                    if length <= STREAMED || length > self.max_frame {
                        at += header;
                        self.scan = if length == 0 { Scan::Header } else { Scan::Body { remaining: length } };
                    } else if available >= length {
                        at += header + length as usize;
                    } else {
                        return at; // a large frame: held until its last byte is here
                    }
                }
                Scan::Body { remaining } => {
                    let n = remaining.min((bytes.len() - at) as u64);
                    at += n as usize;
                    self.scan = if n == remaining { Scan::Header } else { Scan::Body { remaining: remaining - n } };
                }
            }
        }
        at
    }

    /// The header length and frame length of the frame starting `bytes`, once its header is
    /// complete.
    fn header(&self, bytes: &[u8]) -> Option<(usize, u64)> {
        match self.framing {
            Framing::RawSocket => {
                let h = bytes.get(..4)?;
                Some((4, u64::from(h[1]) << 16 | u64::from(h[2]) << 8 | u64::from(h[3])))
            }
            Framing::WebSocket => {
                let (b1, masked) = (*bytes.get(1)?, bytes[1] & 0x80 != 0);
                let mask = if masked { 4 } else { 0 };
                let (extended, length) = match b1 & 0x7f {
                    126 => (2, u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?))),
                    127 => (8, u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)),
                    short => (0, u64::from(short)),
                };
                let header = 2 + extended + mask;
                (bytes.len() >= header).then_some((header, length))
            }
        }
    }

    /// True while a frame has started and not ended.
    fn in_frame(&self) -> bool {
        match self.scan {
            Scan::Body { .. } => true,
            Scan::Header => self.buf.len() > self.released,
            Scan::Http { .. } => false,
        }
    }

    /// Nothing more can be read now: pending, unless a frame in progress has run out of time.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.in_frame() {
            self.deadline = None;
            return Poll::Pending;
        }
        let timeout = self.timeout;
        let deadline =
            self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("a frame did not arrive whole within {} ms", timeout.as_millis()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The frame in progress (if any) ended: its deadline goes.
    fn progressed(&mut self) {
        if !self.in_frame() {
            self.deadline = None;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGate<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let gate = &mut *self;
        loop {
            if gate.released > 0 {
                let n = gate.released.min(out.remaining());
                out.put_slice(&gate.buf[..n]);
                gate.buf.advance(n);
                gate.released -= n;
                if gate.buf.is_empty() {
                    // Back to reading straight into the decoder's buffer: give ours back.
                    gate.buf = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if gate.buf.is_empty() {
                // Nothing held: read straight into the decoder's buffer, keep back what must wait.
                let before = out.filled().len();
                match Pin::new(&mut gate.inner).poll_read(cx, out) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return gate.pending(cx),
                }
                let read = &out.filled()[before..];
                if read.is_empty() {
                    return Poll::Ready(Ok(())); // the peer is done
                }
                let passed = gate.scan(read);
                if passed < read.len() {
                    gate.buf.extend_from_slice(&read[passed..]);
                    out.set_filled(before + passed);
                }
                gate.progressed();
                if passed > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // Holding a frame back: read into the gate's buffer, which grows with the bytes.
            gate.buf.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut gate.inner), cx, &mut gate.buf) {
                Poll::Ready(Ok(0)) => {
                    // The peer is done: pass on what is left, so the decoder sees a cut-off frame.
                    gate.released = gate.buf.len();
                }
                Poll::Ready(Ok(_)) => {
                    let held = std::mem::take(&mut gate.buf);
                    gate.released = gate.scan(&held);
                    gate.buf = held;
                    gate.progressed();
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return gate.pending(cx),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGate<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ws_header(length: u64) -> Vec<u8> {
        let mut h = vec![0x82];
        match length {
            0..=125 => h.push(0x80 | length as u8),
            126..=0xffff => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&length.to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    #[tokio::test]
    async fn small_frames_stream_and_large_ones_wait_for_their_body() {
        let (mut peer, socket) = tokio::io::duplex(1 << 20);
        let mut gate = FrameGate::new(socket, Framing::WebSocket, 1 << 24, Duration::from_secs(5));
        peer.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut small = ws_header(3);
        small.extend_from_slice(b"abc");
        peer.write_all(&small).await.unwrap();
        let mut head = vec![0; 29 + small.len()];
        gate.read_exact(&mut head).await.unwrap();
        assert!(head.ends_with(b"abc"));

        let big = 200_000u64;
        peer.write_all(&ws_header(big)).await.unwrap();
        peer.write_all(&vec![7; 100_000]).await.unwrap();
        let mut one = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), gate.read(&mut one)).await;
        assert!(early.is_err(), "nothing of a large frame passes before its last byte");
        assert!(gate.buf.capacity() < 200_000, "the buffer grows with the bytes, not the header");
        assert!(gate.buf.len() >= 100_000, "the large frame is held by the gate");
        peer.write_all(&vec![7; 100_000]).await.unwrap();
        let mut frame = vec![0; 14 + big as usize];
        gate.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame[14..], vec![7; big as usize][..]);
    }

    #[tokio::test]
    async fn a_frame_that_stalls_times_out_and_silence_does_not() {
        // Real time (no paused clock: tokio's test-util would give the tests a build of their
        // own), with a short message timeout.
        let (mut peer, socket) = tokio::io::duplex(1 << 16);
        let mut gate = FrameGate::new(socket, Framing::RawSocket, 1 << 24, Duration::from_millis(200));
        peer.write_all(&[0, 0, 0, 2, b'h', b'i']).await.unwrap();
        let mut frame = [0u8; 6];
        gate.read_exact(&mut frame).await.unwrap();
        // Silence between frames is fine ...
        let quiet = tokio::time::timeout(Duration::from_millis(500), gate.read(&mut frame)).await;
        assert!(quiet.is_err());
        // ... a header announcing 16 MiB with nothing after it is not.
        peer.write_all(&[0, 0xff, 0xff, 0xff]).await.unwrap();
        let error = gate.read(&mut frame).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_prefix_already_read_comes_first() {
        let (mut peer, socket) = tokio::io::duplex(1 << 16);
        let mut gate = FrameGate::with_prefix(socket, Framing::WebSocket, 1 << 24, Duration::from_secs(5), b"G");
        peer.write_all(b"ET /ws HTTP/1.1\r\n\r\n").await.unwrap();
        let mut head = [0u8; 20];
        gate.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"GET /ws HTTP/1.1\r\n\r\n");
        let mut raw =
            FrameGate::with_prefix(tokio::io::empty(), Framing::RawSocket, 1024, Duration::from_secs(5), &[0]);
        let mut octet = [9u8; 1];
        raw.read_exact(&mut octet).await.unwrap();
        assert_eq!(octet, [0]);
    }

    #[tokio::test]
    async fn oversized_headers_pass_so_the_decoder_refuses_them() {
        let (mut peer, socket) = tokio::io::duplex(1 << 16);
        let mut gate = FrameGate::new(socket, Framing::RawSocket, 1024, Duration::from_secs(5));
        peer.write_all(&[0, 0x10, 0, 0]).await.unwrap();
        let mut header = [0u8; 4];
        gate.read_exact(&mut header).await.unwrap();
        assert_eq!(header, [0, 0x10, 0, 0]);
    }
}
