//! Transports: how WAMP message frames travel. Each transport turns a connection into a stream of
//! [`crate::session::protocol::Inbound`] items and a sink of [`OutFrame`]s, and hands both to
//! [`crate::session::lifecycle::run`]; sessions never see the transport itself.

pub mod gate;
pub mod rawsocket;
pub mod websocket;

use bytes::Bytes;

/// What a transport tells the session about its peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerLink {
    /// The serializer the peer speaks.
    pub serializer: crate::wire::Serializer,
    /// The largest message the peer accepts.
    pub max_outgoing: usize,
    /// The router may ping this peer (and close it when it stays silent): every WebSocket peer
    /// answers pings, but some RawSocket clients do not implement PING.
    pub pings: bool,
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
