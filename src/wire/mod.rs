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

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile input never panics a decoder: random bytes, and valid frames with bytes flipped,
    /// cut short or duplicated, for every serializer (a fixed seed keeps it repeatable).
    #[test]
    fn decoders_survive_mangled_frames() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let samples = [
            Message::Call {
                request: 7,
                options: Dict::new().with("receive_progress", true),
                procedure: "com.example.add".into(),
                payload: Payload::Values(
                    vec![Value::UInt(1), Value::from("two"), Value::Bytes(vec![3, 4]), Value::Float(0.5)],
                    Some(Dict::new().with("k", Value::List(vec![Value::Null, Value::Bool(true)]))),
                ),
            },
            Message::Hello { realm: "realm1".into(), details: Dict::new().with("roles", Dict::new()) },
            Message::Yield { request: 1, options: Dict::new(), payload: Payload::Empty },
        ];
        for serializer in Serializer::ALL {
            let frames: Vec<Vec<u8>> = samples
                .iter()
                .map(|m| {
                    let mut out = Vec::new();
                    serializer.encode(m, &mut out);
                    out
                })
                .collect();
            for round in 0..20_000 {
                let mut frame = frames[round % frames.len()].clone();
                match rng.u8(..4) {
                    0 => frame = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect(),
                    1 => {
                        for _ in 0..rng.usize(1..4) {
                            let at = rng.usize(..frame.len());
                            frame[at] = rng.u8(..);
                        }
                    }
                    2 => frame.truncate(rng.usize(..frame.len())),
                    _ => {
                        let at = rng.usize(..frame.len());
                        let copy = frame[at..].to_vec();
                        frame.extend_from_slice(&copy);
                    }
                }
                if let Ok(message) = serializer.decode(Bytes::from(frame)) {
                    // Whatever decodes must encode again, in every serializer.
                    for target in Serializer::ALL {
                        target.encode(&message, &mut Vec::new());
                    }
                }
            }
        }
    }
}
