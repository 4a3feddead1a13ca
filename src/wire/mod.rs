//! The wire: WAMP messages and the serializers that turn them into frames and back.
//!
//! Nothing here knows about routing; the session layer decodes a frame into a [`Message`], hands
//! it on, and encodes whatever it is asked to send.
//!
//! The wire is where the router stops trusting: whatever a decoder accepts is valid in its
//! serializer (JSON is RFC 8259 JSON, MessagePack and CBOR strings are UTF-8, dictionary keys are
//! strings), costs work linear in the frame's size, and reserves memory only for bytes that
//! arrived. Raw payloads that pass these checks are forwarded untouched to peers of the same
//! serializer; [`Serializer::try_encode`] transcodes them for the others, or says why it cannot.

pub mod cbor;
pub mod format;
pub mod json;
pub mod message;
pub mod msgpack;
pub mod payload;
pub mod uri;
pub mod validate;
pub mod value;

use std::fmt;

use bytes::Bytes;

pub use format::{DecodeError, EncodeError, EnvelopeReader, Format};
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
    ///
    /// Fails, leaving `out` as it was, when an element cannot be written faithfully in this
    /// serializer: a payload received in another serializer that does not parse back into values
    /// (a JSON integer beyond 64 bits, a CBOR integer below `i64::MIN`, a JSON string holding
    /// `"\u0000"` and no base64), or a value this serializer cannot represent (NaN or infinity in
    /// JSON, a string starting with U+0000 in JSON). Payloads in this serializer pass through as
    /// bytes and never fail. The error names the message, the element and both serializers.
    pub fn try_encode(self, message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.encode_with(message, message::Fidelity::Exact, out)
    }

    /// Encodes `message`, appending the frame's bytes to `out`, and never fails.
    ///
    /// Deprecated for use inside the router: use [`Serializer::try_encode`], and answer a call
    /// whose payload cannot be transcoded with an ERROR. This calls `try_encode`; where that fails
    /// it logs a warning and falls back to the old lossy encoding (an empty payload element in
    /// place of one that does not transcode, `null` for a NaN in JSON), so the peer receives data
    /// the sender never sent. Kept until every caller has moved.
    pub fn encode(self, message: &Message, out: &mut Vec<u8>) {
        if let Err(error) = self.try_encode(message, out) {
            tracing::warn!(%error, "message cannot be encoded faithfully; sending a lossy stand-in");
            // Lossy encoding cannot fail.
            let _ = self.encode_with(message, message::Fidelity::Lossy, out);
        }
    }

    fn encode_with(self, message: &Message, fidelity: message::Fidelity, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Serializer::Json => message::encode::<json::Json>(message, self, fidelity, out),
            Serializer::MsgPack => message::encode::<msgpack::MsgPack>(message, self, fidelity, out),
            Serializer::Cbor => message::encode::<cbor::Cbor>(message, self, fidelity, out),
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

/// Shows the WebSocket subprotocol name (`wamp.2.json`), as error texts name serializers.
impl fmt::Display for Serializer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subprotocol())
    }
}

#[cfg(test)]
mod tests;
