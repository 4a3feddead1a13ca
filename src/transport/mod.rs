//! Transports: how WAMP message frames travel. Each transport turns a connection into a stream of
//! [`crate::session::protocol::Inbound`] items and a sink of [`OutFrame`]s, and hands both to
//! [`crate::session::lifecycle::run`]; sessions never see the transport itself. A connection the
//! router has no room for is refused here, in its transport's words ([`refuse`]).

pub mod gate;
pub mod listener;
pub mod origin;
pub mod rawsocket;
pub mod tls;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A connection as the router hands it to a transport.
pub struct Connection {
    /// The peer's address.
    pub peer: SocketAddr,
    /// When the transport's handshake (and TLS's before it) must be done.
    pub deadline: Instant,
    /// The first octets of the stream, when the router already read them to tell RawSocket from
    /// WebSocket by the first (on a listener serving both): the transport takes them before
    /// reading the socket. Read rather than peeked, so an upgrade request that came in one
    /// segment costs one `recvfrom`, not two; inside TLS, where nothing can be peeked, one octet.
    pub prefix: Vec<u8>,
    /// Set when the connection is TLS: its verified client certificate, if any.
    pub tls: Option<Arc<tls::TlsPeer>>,
}

/// A byte stream a transport runs over: plain TCP or TLS. Each kind splits into halves its own
/// way, so plain TCP keeps its lock-free halves.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The reading half.
    type ReadHalf: AsyncRead + Unpin + Send + 'static;
    /// The writing half.
    type WriteHalf: AsyncWrite + Unpin + Send + 'static;
    /// Splits the stream for a reader and a writer task.
    fn into_halves(self) -> (Self::ReadHalf, Self::WriteHalf);
}

impl Socket for TcpStream {
    type ReadHalf = tokio::net::tcp::OwnedReadHalf;
    type WriteHalf = tokio::net::tcp::OwnedWriteHalf;

    fn into_halves(self) -> (Self::ReadHalf, Self::WriteHalf) {
        self.into_split()
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    type ReadHalf = tokio::io::ReadHalf<Self>;
    type WriteHalf = tokio::io::WriteHalf<Self>;

    fn into_halves(self) -> (Self::ReadHalf, Self::WriteHalf) {
        tokio::io::split(self)
    }
}

/// Which transport a session came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// WAMP over WebSocket.
    WebSocket = 0,
    /// WAMP over RawSocket (TCP).
    RawSocket = 1,
}

impl Kind {
    /// Both transports.
    pub const ALL: [Kind; 2] = [Kind::WebSocket, Kind::RawSocket];

    /// The name logs and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WebSocket => "websocket",
            Kind::RawSocket => "rawsocket",
        }
    }
}

/// What a transport tells the session about its peer.
#[derive(Debug, Clone)]
pub struct PeerLink {
    /// The transport.
    pub transport: Kind,
    /// The peer's address.
    pub peer: std::net::SocketAddr,
    /// The serializer the peer speaks.
    pub serializer: crate::wire::Serializer,
    /// The largest message the peer accepts.
    pub max_outgoing: usize,
    /// The router may ping this peer (and close it when it stays silent): every WebSocket peer
    /// answers pings, but some RawSocket clients do not implement PING.
    pub pings: bool,
    /// Set when the connection is TLS: its verified client certificate, if any.
    pub tls: Option<Arc<tls::TlsPeer>>,
}

/// What a session's writer hands its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// One encoded WAMP message.
    Message(Bytes),
    /// A transport-level PING (keepalive): a live peer answers with a PONG.
    Ping(Bytes),
    /// A transport-level PONG answering a RawSocket PING (WebSocket answers pings itself).
    Pong(Bytes),
    /// The session ends: a WebSocket sends a close frame with this status; RawSocket has none.
    Close(CloseCode),
}

/// Why a connection closes, as a WebSocket close status (RFC 6455, section 7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the session ended normally (GOODBYE, or an ABORT the peer caused by asking).
    Normal,
    /// 1001: the router is going away (shutdown).
    Away,
    /// 1002: the peer broke the WAMP or WebSocket protocol.
    Protocol,
    /// 1003: a frame of a type this session does not take (text on a binary serializer, ...).
    Unsupported,
    /// 1007: a text frame that is not UTF-8.
    InvalidData,
    /// 1008: the session was closed by policy (a slow consumer, an idle peer, killed).
    Policy,
    /// 1009: a message larger than this router accepts.
    TooBig,
}

impl CloseCode {
    /// The numeric status.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::Away => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidData => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
        }
    }
}

/// Refuses a connection the router has no room for, in the words of its transport: RawSocket
/// handshake error 4, or HTTP 503 with `Retry-After`.
/// `rawsocket_only` is set for a RawSocket-only listener; on the main port the first octet tells.
pub async fn refuse(mut tcp: tokio::net::TcpStream, rawsocket_only: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = [0u8; 1];
    let rawsocket = rawsocket_only || matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == rawsocket::MAGIC);
    if rawsocket {
        let mut hello = [0u8; 4];
        if tcp.read_exact(&mut hello).await.is_ok() {
            let _ = tcp.write_all(&rawsocket::HandshakeError::MaxConnectionCountReached.reply()).await;
        }
        return;
    }
    let body = "the router is at its connection limit; retry later\n";
    answer_http(tcp, "503 Service Unavailable", "Retry-After: 1\r\n", body).await;
}

/// Answers an HTTP request with `status` (e.g. `"400 Bad Request"`), `headers` (each ending in
/// CRLF) and a plain-text `body`, and closes. The request head is read first (bounded), so the
/// client sees the response rather than a reset.
pub async fn answer_http(mut tcp: tokio::net::TcpStream, status: &str, headers: &str, body: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(response.as_bytes()).await;
    let _ = tcp.shutdown().await;
}
