//! Transports: how WAMP message frames travel. Each transport turns a connection into a stream of
//! [`crate::session::protocol::Inbound`] frames and a sink of outgoing frames, and hands both to
//! [`crate::session::lifecycle::run`]; sessions never see the transport itself.

pub mod websocket;
