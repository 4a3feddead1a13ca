//! Transports: how WAMP message frames travel. Each transport turns a connection into a stream of
//! [`crate::session::protocol::Inbound`] items and a sink of [`OutFrame`]s, and hands both to
//! [`crate::session::lifecycle::run`]; sessions never see the transport itself.

pub mod rawsocket;
pub mod websocket;

use bytes::Bytes;

/// What a session's writer hands its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// One encoded WAMP message.
    Message(Bytes),
    /// A transport-level PONG answering a PING (RawSocket; WebSocket answers pings itself).
    Pong(Bytes),
}
