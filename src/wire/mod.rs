//! The wire: WAMP messages and the serializers that turn them into frames and back.
//!
//! Nothing here knows about routing; the session layer decodes a frame into a [`Message`], hands
//! it on, and encodes whatever it is asked to send.

pub mod cbor;
pub mod format;
pub mod json;
pub mod message;
pub mod msgpack;
pub mod payload;
pub mod uri;
pub mod validate;
pub mod value;

use bytes::Bytes;

pub use format::{DecodeError, EnvelopeReader, Format};
pub use message::{Message, MessageType};
pub use payload::{Payload, RawPayload};
pub use value::{Dict, Value};

/// A WAMP serializer, chosen per session by WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Serializer {
    /// `wamp.2.json`, carried in text frames.
    Json,
    /// `wamp.2.msgpack`, carried in binary frames.
    MsgPack,
    /// `wamp.2.cbor`, carried in binary frames.
    Cbor,
}

impl Serializer {
    /// Every serializer this router speaks, in order of preference.
    pub const ALL: [Serializer; 3] = [Serializer::Json, Serializer::MsgPack, Serializer::Cbor];

    /// The WebSocket subprotocol name.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Serializer::Json => "wamp.2.json",
            Serializer::MsgPack => "wamp.2.msgpack",
            Serializer::Cbor => "wamp.2.cbor",
        }
    }

    /// The serializer for a WebSocket subprotocol name, if we speak it.
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.subprotocol() == name)
    }

    /// True when frames of this serializer are WebSocket binary frames.
    pub fn is_binary(self) -> bool {
        matches!(self, Serializer::MsgPack | Serializer::Cbor)
    }

    /// Decodes one frame into a message.
    pub fn decode(self, frame: Bytes) -> Result<Message, DecodeError> {
        match self {
            Serializer::Json => message::decode(&mut json::JsonReader::new(frame)?, self),
            Serializer::MsgPack => message::decode(&mut msgpack::MsgPackReader::new(frame)?, self),
            Serializer::Cbor => message::decode(&mut cbor::CborReader::new(frame)?, self),
        }
    }

    /// Encodes `message`, appending the frame's bytes to `out`.
    pub fn encode(self, message: &Message, out: &mut Vec<u8>) {
        match self {
            Serializer::Json => message::encode::<json::Json>(message, self, out),
            Serializer::MsgPack => message::encode::<msgpack::MsgPack>(message, self, out),
            Serializer::Cbor => message::encode::<cbor::Cbor>(message, self, out),
        }
    }

    /// Parses one complete value encoded in this serializer.
    pub fn parse_value(self, bytes: &[u8]) -> Result<Value, DecodeError> {
        match self {
            Serializer::Json => json::parse_value(bytes),
            Serializer::MsgPack => msgpack::parse_value(bytes),
            Serializer::Cbor => cbor::parse_value(bytes),
        }
    }
}
