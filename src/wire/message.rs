//! WAMP messages with typed fields, and their layout on the wire.
//!
//! Each layout is written once here, against [`EnvelopeReader`] and [`Format`], and serves every
//! serializer. Decoding checks arity and element types; URI syntax and what a message may do in a
//! session's current state are the session's business.
//!
//! Encoding never changes what a message says: a payload that arrived in another serializer is
//! parsed and re-encoded (transcoded), and where that cannot be done faithfully (a value the target
//! cannot represent, a payload that does not parse) encoding fails with an [`EncodeError`] naming
//! the element. Only the legacy [`super::Serializer::encode`] still falls back to an empty payload.

use std::fmt;

use super::format::{check_entries, check_items, DecodeError, EncodeError, EnvelopeReader, Format, RawKind};
use super::payload::{Payload, RawPayload};
use super::value::{Dict, Value};
use super::Serializer;

/// The largest id a WAMP peer may use: 2^53, so ids survive JavaScript's doubles.
pub const MAX_ID: u64 = 1 << 53;

/// WAMP message type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// HELLO
    Hello = 1,
    /// WELCOME
    Welcome = 2,
    /// ABORT
    Abort = 3,
    /// CHALLENGE
    Challenge = 4,
    /// AUTHENTICATE
    Authenticate = 5,
    /// GOODBYE
    Goodbye = 6,
    /// ERROR
    Error = 8,
    /// PUBLISH
    Publish = 16,
    /// PUBLISHED
    Published = 17,
    /// SUBSCRIBE
    Subscribe = 32,
    /// SUBSCRIBED
    Subscribed = 33,
    /// UNSUBSCRIBE
    Unsubscribe = 34,
    /// UNSUBSCRIBED
    Unsubscribed = 35,
    /// EVENT
    Event = 36,
    /// CALL
    Call = 48,
    /// CANCEL
    Cancel = 49,
    /// RESULT
    Result = 50,
    /// REGISTER
    Register = 64,
    /// REGISTERED
    Registered = 65,
    /// UNREGISTER
    Unregister = 66,
    /// UNREGISTERED
    Unregistered = 67,
    /// INVOCATION
    Invocation = 68,
    /// INTERRUPT
    Interrupt = 69,
    /// YIELD
    Yield = 70,
}

impl MessageType {
    /// The spec's name for the type, as error texts show it: `CALL`, `INVOCATION`.
    pub fn name(self) -> &'static str {
        use MessageType as T;
        match self {
            T::Hello => "HELLO",
            T::Welcome => "WELCOME",
            T::Abort => "ABORT",
            T::Challenge => "CHALLENGE",
            T::Authenticate => "AUTHENTICATE",
            T::Goodbye => "GOODBYE",
            T::Error => "ERROR",
            T::Publish => "PUBLISH",
            T::Published => "PUBLISHED",
            T::Subscribe => "SUBSCRIBE",
            T::Subscribed => "SUBSCRIBED",
            T::Unsubscribe => "UNSUBSCRIBE",
            T::Unsubscribed => "UNSUBSCRIBED",
            T::Event => "EVENT",
            T::Call => "CALL",
            T::Cancel => "CANCEL",
            T::Result => "RESULT",
            T::Register => "REGISTER",
            T::Registered => "REGISTERED",
            T::Unregister => "UNREGISTER",
            T::Unregistered => "UNREGISTERED",
            T::Invocation => "INVOCATION",
            T::Interrupt => "INTERRUPT",
            T::Yield => "YIELD",
        }
    }
}

/// Shows the spec's name ([`MessageType::name`]).
impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One WAMP message. Field names follow the spec's element names.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // the fields are the spec's element names
pub enum Message {
    Hello { realm: String, details: Dict },
    Welcome { session: u64, details: Dict },
    Abort { details: Dict, reason: String },
    Challenge { auth_method: String, extra: Dict },
    Authenticate { signature: String, extra: Dict },
    Goodbye { details: Dict, reason: String },
    Error { request_type: u64, request: u64, details: Dict, error: String, payload: Payload },
    Publish { request: u64, options: Dict, topic: String, payload: Payload },
    Published { request: u64, publication: u64 },
    Subscribe { request: u64, options: Dict, topic: String },
    Subscribed { request: u64, subscription: u64 },
    Unsubscribe { request: u64, subscription: u64 },
    Unsubscribed { request: u64, details: Option<Dict> },
    Event { subscription: u64, publication: u64, details: Dict, payload: Payload },
    Call { request: u64, options: Dict, procedure: String, payload: Payload },
    Cancel { request: u64, options: Dict },
    Result { request: u64, details: Dict, payload: Payload },
    Register { request: u64, options: Dict, procedure: String },
    Registered { request: u64, registration: u64 },
    Unregister { request: u64, registration: u64 },
    Unregistered { request: u64, details: Option<Dict> },
    Invocation { request: u64, registration: u64, details: Dict, payload: Payload },
    Interrupt { request: u64, options: Dict },
    Yield { request: u64, options: Dict, payload: Payload },
}

impl Message {
    /// The message's type code.
    pub fn message_type(&self) -> MessageType {
        use MessageType as T;
        match self {
            Message::Hello { .. } => T::Hello,
            Message::Welcome { .. } => T::Welcome,
            Message::Abort { .. } => T::Abort,
            Message::Challenge { .. } => T::Challenge,
            Message::Authenticate { .. } => T::Authenticate,
            Message::Goodbye { .. } => T::Goodbye,
            Message::Error { .. } => T::Error,
            Message::Publish { .. } => T::Publish,
            Message::Published { .. } => T::Published,
            Message::Subscribe { .. } => T::Subscribe,
            Message::Subscribed { .. } => T::Subscribed,
            Message::Unsubscribe { .. } => T::Unsubscribe,
            Message::Unsubscribed { .. } => T::Unsubscribed,
            Message::Event { .. } => T::Event,
            Message::Call { .. } => T::Call,
            Message::Cancel { .. } => T::Cancel,
            Message::Result { .. } => T::Result,
            Message::Register { .. } => T::Register,
            Message::Registered { .. } => T::Registered,
            Message::Unregister { .. } => T::Unregister,
            Message::Unregistered { .. } => T::Unregistered,
            Message::Invocation { .. } => T::Invocation,
            Message::Interrupt { .. } => T::Interrupt,
            Message::Yield { .. } => T::Yield,
        }
    }

    /// The message's payload, for the types that carry one.
    pub fn payload(&self) -> Option<&Payload> {
        match self {
            Message::Error { payload, .. }
            | Message::Publish { payload, .. }
            | Message::Event { payload, .. }
            | Message::Call { payload, .. }
            | Message::Result { payload, .. }
            | Message::Invocation { payload, .. }
            | Message::Yield { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// The message's payload, mutably, for the types that carry one.
    pub fn payload_mut(&mut self) -> Option<&mut Payload> {
        match self {
            Message::Error { payload, .. }
            | Message::Publish { payload, .. }
            | Message::Event { payload, .. }
            | Message::Call { payload, .. }
            | Message::Result { payload, .. }
            | Message::Invocation { payload, .. }
            | Message::Yield { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// An ERROR answering a request of type `request_type`.
    pub fn error(request_type: MessageType, request: u64, error: &str, payload: Payload) -> Message {
        Message::Error {
            request_type: request_type as u64,
            request,
            details: Dict::new(),
            error: error.to_owned(),
            payload,
        }
    }
}

/// Decodes one message; `serializer` tags the payload bytes it keeps.
pub fn decode<R: EnvelopeReader>(r: &mut R, serializer: Serializer) -> Result<Message, DecodeError> {
    let ty = need(r.uint(), "message type")?;
    let msg = match ty {
        1 => Message::Hello { realm: need(r.string(), "Realm|uri")?, details: need(r.dict(), "Details|dict")? },
        2 => Message::Welcome { session: id(r, "Session|id")?, details: need(r.dict(), "Details|dict")? },
        3 => Message::Abort { details: need(r.dict(), "Details|dict")?, reason: need(r.string(), "Reason|uri")? },
        4 => Message::Challenge {
            auth_method: need(r.string(), "AuthMethod|string")?,
            extra: need(r.dict(), "Extra|dict")?,
        },
        5 => Message::Authenticate {
            signature: need(r.string(), "Signature|string")?,
            extra: need(r.dict(), "Extra|dict")?,
        },
        6 => Message::Goodbye { details: need(r.dict(), "Details|dict")?, reason: need(r.string(), "Reason|uri")? },
        8 => Message::Error {
            request_type: need(r.uint(), "REQUEST.Type|int")?,
            request: id(r, "REQUEST.Request|id")?,
            details: need(r.dict(), "Details|dict")?,
            error: need(r.string(), "Error|uri")?,
            payload: payload(r, serializer)?,
        },
        16 => Message::Publish {
            request: id(r, "Request|id")?,
            options: need(r.dict(), "Options|dict")?,
            topic: need(r.string(), "Topic|uri")?,
            payload: payload(r, serializer)?,
        },
        17 => Message::Published { request: id(r, "Request|id")?, publication: id(r, "Publication|id")? },
        32 => Message::Subscribe {
            request: id(r, "Request|id")?,
            options: need(r.dict(), "Options|dict")?,
            topic: need(r.string(), "Topic|uri")?,
        },
        33 => Message::Subscribed { request: id(r, "Request|id")?, subscription: id(r, "Subscription|id")? },
        34 => Message::Unsubscribe { request: id(r, "Request|id")?, subscription: id(r, "Subscription|id")? },
        35 => Message::Unsubscribed { request: id(r, "Request|id")?, details: r.dict()? },
        36 => Message::Event {
            subscription: id(r, "Subscription|id")?,
            publication: id(r, "Publication|id")?,
            details: need(r.dict(), "Details|dict")?,
            payload: payload(r, serializer)?,
        },
        48 => Message::Call {
            request: id(r, "Request|id")?,
            options: need(r.dict(), "Options|dict")?,
            procedure: need(r.string(), "Procedure|uri")?,
            payload: payload(r, serializer)?,
        },
        49 => Message::Cancel { request: id(r, "Request|id")?, options: need(r.dict(), "Options|dict")? },
        50 => Message::Result {
            request: id(r, "Request|id")?,
            details: need(r.dict(), "Details|dict")?,
            payload: payload(r, serializer)?,
        },
        64 => Message::Register {
            request: id(r, "Request|id")?,
            options: need(r.dict(), "Options|dict")?,
            procedure: need(r.string(), "Procedure|uri")?,
        },
        65 => Message::Registered { request: id(r, "Request|id")?, registration: id(r, "Registration|id")? },
        66 => Message::Unregister { request: id(r, "Request|id")?, registration: id(r, "Registration|id")? },
        67 => Message::Unregistered { request: id(r, "Request|id")?, details: r.dict()? },
        68 => Message::Invocation {
            request: id(r, "Request|id")?,
            registration: id(r, "Registration|id")?,
            details: need(r.dict(), "Details|dict")?,
            payload: payload(r, serializer)?,
        },
        69 => Message::Interrupt { request: id(r, "Request|id")?, options: need(r.dict(), "Options|dict")? },
        70 => Message::Yield {
            request: id(r, "Request|id")?,
            options: need(r.dict(), "Options|dict")?,
            payload: payload(r, serializer)?,
        },
        other => return Err(DecodeError(format!("unknown message type {other}"))),
    };
    r.end()?;
    Ok(msg)
}

fn need<T>(element: Result<Option<T>, DecodeError>, name: &str) -> Result<T, DecodeError> {
    match element {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(DecodeError(format!("message too short: missing {name}"))),
        Err(e) => Err(DecodeError(format!("{name}: {}", e.0))),
    }
}

fn id<R: EnvelopeReader>(r: &mut R, name: &str) -> Result<u64, DecodeError> {
    let n = need(r.uint(), name)?;
    if n > MAX_ID {
        return Err(DecodeError(format!("{name} {n} is larger than 2^53")));
    }
    Ok(n)
}

fn payload<R: EnvelopeReader>(r: &mut R, serializer: Serializer) -> Result<Payload, DecodeError> {
    let Some(args) = r.raw(RawKind::List)? else {
        return Ok(Payload::Empty);
    };
    let kwargs = r.raw(RawKind::Dict)?;
    Ok(Payload::Raw(RawPayload { serializer, args: Some(args), kwargs }))
}

/// How [`encode`] treats an element it cannot write faithfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fidelity {
    /// Fail with an [`EncodeError`].
    Exact,
    /// Write a stand-in: an empty list or dictionary for a payload element that does not
    /// transcode, the format's lossy form for an unrepresentable value (JSON: NaN as `null`). Only
    /// for [`super::Serializer::encode`], until its callers have moved to `try_encode`.
    Lossy,
}

/// Writes the elements of one message, putting separators between them.
struct Elements<'a, F: Format> {
    out: &'a mut Vec<u8>,
    first: bool,
    message: MessageType,
    target: Serializer,
    fidelity: Fidelity,
    _format: std::marker::PhantomData<F>,
}

impl<F: Format> Elements<'_, F> {
    fn next(&mut self) -> &mut Vec<u8> {
        if !self.first {
            F::separator(self.out);
        }
        self.first = false;
        self.out
    }

    fn uint(&mut self, n: u64) -> &mut Self {
        F::uint(self.next(), n);
        self
    }

    fn string(&mut self, s: &str) -> &mut Self {
        F::string(self.next(), s);
        self
    }

    fn dict(&mut self, d: &Dict, element: &'static str) -> Result<&mut Self, EncodeError> {
        self.checked(element, None, || check_entries::<F>(d).map_err(|e| e.to_string()))?;
        F::dict(self.next(), d);
        Ok(self)
    }

    /// Runs `check` unless encoding is lossy; its failure becomes an [`EncodeError`] for `element`.
    fn checked(
        &self,
        element: &'static str,
        from: Option<Serializer>,
        check: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), EncodeError> {
        if self.fidelity == Fidelity::Lossy {
            return Ok(());
        }
        check().map_err(|reason| EncodeError { message: self.message, element, from, to: self.target, reason })
    }

    fn payload(&mut self, payload: &Payload) -> Result<(), EncodeError> {
        let target = self.target;
        match payload {
            Payload::Empty => {}
            Payload::Raw(raw) if raw.serializer == target => {
                match &raw.args {
                    Some(args) => self.next().extend_from_slice(args),
                    None => F::value(self.next(), &Value::List(Vec::new())),
                }
                if let Some(kwargs) = &raw.kwargs {
                    self.next().extend_from_slice(kwargs);
                }
            }
            Payload::Raw(raw) => {
                self.transcoded(raw.serializer, raw.args.as_deref(), ARGS)?;
                if let Some(kwargs) = &raw.kwargs {
                    self.transcoded(raw.serializer, Some(kwargs), KWARGS)?;
                }
            }
            Payload::Values(args, kwargs) => {
                self.checked(ARGS, None, || check_items::<F>(args).map_err(|e| e.to_string()))?;
                let out = self.next();
                F::begin(out, args.len());
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        F::separator(out);
                    }
                    F::value(out, arg);
                }
                F::end(out);
                if let Some(kwargs) = kwargs {
                    self.dict(kwargs, KWARGS)?;
                }
            }
        }
        Ok(())
    }

    /// Re-encodes a payload element received in serializer `from`. Lossy encoding replaces an
    /// element that does not parse by an empty one, as the router always did; exact encoding
    /// fails.
    fn transcoded(&mut self, from: Serializer, bytes: Option<&[u8]>, element: &'static str) -> Result<(), EncodeError> {
        let empty = || if element == ARGS { Value::List(Vec::new()) } else { Value::Dict(Dict::new()) };
        let parsed = match bytes {
            Some(bytes) => from.parse_value(bytes).map_err(|e| e.0),
            None => Ok(empty()),
        };
        let value = match parsed {
            Ok(value) => {
                // Lossy encoding writes the value with the format's stand-ins.
                self.checked(element, Some(from), || F::check(&value).map_err(|e| e.to_string()))?;
                value
            }
            Err(reason) => {
                self.checked(element, Some(from), || Err(reason))?;
                empty()
            }
        };
        F::value(self.next(), &value);
        Ok(())
    }
}

const ARGS: &str = "Arguments|list";
const KWARGS: &str = "ArgumentsKw|dict";

/// Encodes `msg` in format `F` (whose serializer is `target`), appending to `out`. With
/// [`Fidelity::Exact`], an element that cannot be written faithfully fails the whole message and
/// `out` is left as it was.
pub fn encode<F: Format>(
    msg: &Message,
    target: Serializer,
    fidelity: Fidelity,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = write::<F>(msg, target, fidelity, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write<F: Format>(
    msg: &Message,
    target: Serializer,
    fidelity: Fidelity,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let fixed = match msg {
        Message::Unsubscribed { details, .. } | Message::Unregistered { details, .. } => {
            2 + usize::from(details.is_some())
        }
        Message::Error { .. } => 5,
        Message::Publish { .. }
        | Message::Subscribe { .. }
        | Message::Event { .. }
        | Message::Call { .. }
        | Message::Register { .. }
        | Message::Invocation { .. } => 4,
        _ => 3,
    };
    F::begin(out, fixed + msg.payload().map_or(0, |p| p.element_count()));
    let message = msg.message_type();
    let mut w = Elements::<F> { out, first: true, message, target, fidelity, _format: std::marker::PhantomData };
    w.uint(message as u64);
    match msg {
        Message::Hello { realm, details } => {
            w.string(realm).dict(details, "Details|dict")?;
        }
        Message::Welcome { session, details } => {
            w.uint(*session).dict(details, "Details|dict")?;
        }
        Message::Abort { details, reason } | Message::Goodbye { details, reason } => {
            w.dict(details, "Details|dict")?.string(reason);
        }
        Message::Challenge { auth_method, extra } => {
            w.string(auth_method).dict(extra, "Extra|dict")?;
        }
        Message::Authenticate { signature, extra } => {
            w.string(signature).dict(extra, "Extra|dict")?;
        }
        Message::Error { request_type, request, details, error, payload } => {
            w.uint(*request_type).uint(*request).dict(details, "Details|dict")?.string(error).payload(payload)?;
        }
        Message::Publish { request, options, topic, payload } => {
            w.uint(*request).dict(options, "Options|dict")?.string(topic).payload(payload)?;
        }
        Message::Published { request, publication } => {
            w.uint(*request).uint(*publication);
        }
        Message::Subscribe { request, options, topic } => {
            w.uint(*request).dict(options, "Options|dict")?.string(topic);
        }
        Message::Subscribed { request, subscription } => {
            w.uint(*request).uint(*subscription);
        }
        Message::Unsubscribe { request, subscription } => {
            w.uint(*request).uint(*subscription);
        }
        Message::Unsubscribed { request, details } | Message::Unregistered { request, details } => {
            w.uint(*request);
            if let Some(d) = details {
                w.dict(d, "Details|dict")?;
            }
        }
        Message::Event { subscription, publication, details, payload } => {
            w.uint(*subscription).uint(*publication).dict(details, "Details|dict")?.payload(payload)?;
        }
        Message::Call { request, options, procedure, payload } => {
            w.uint(*request).dict(options, "Options|dict")?.string(procedure).payload(payload)?;
        }
        Message::Cancel { request, options } | Message::Interrupt { request, options } => {
            w.uint(*request).dict(options, "Options|dict")?;
        }
        Message::Result { request, details, payload } => {
            w.uint(*request).dict(details, "Details|dict")?.payload(payload)?;
        }
        Message::Register { request, options, procedure } => {
            w.uint(*request).dict(options, "Options|dict")?.string(procedure);
        }
        Message::Registered { request, registration } => {
            w.uint(*request).uint(*registration);
        }
        Message::Unregister { request, registration } => {
            w.uint(*request).uint(*registration);
        }
        Message::Invocation { request, registration, details, payload } => {
            w.uint(*request).uint(*registration).dict(details, "Details|dict")?.payload(payload)?;
        }
        Message::Yield { request, options, payload } => {
            w.uint(*request).dict(options, "Options|dict")?.payload(payload)?;
        }
    }
    F::end(w.out);
    Ok(())
}
