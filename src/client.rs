//! A small WAMP client over WebSocket: the integration tests and the load generator use it to
//! talk to the router exactly as an outside peer would.
//!
//! It is deliberately low-level: it sends and receives [`Message`]s and offers a few request/reply
//! helpers, so tests can assert every message the router sends and also misbehave on purpose.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::wire::{DecodeError, Dict, Message, Payload, Serializer, Value};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What went wrong talking to the router.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Transport(#[from] tungstenite::Error),
    /// Nothing arrived in time.
    #[error("timed out waiting for the router")]
    Timeout,
    /// The router closed the connection.
    #[error("connection closed")]
    Closed,
    /// The router sent something we cannot decode.
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    /// The router answered with something other than what the request expects (ERROR, ABORT...).
    #[error("unexpected reply: {0:?}")]
    Unexpected(Box<Message>),
}

/// Sends messages to the router.
pub struct Sender {
    sink: SplitSink<Ws, WsMessage>,
    serializer: Serializer,
    next_request: u64,
}

/// Receives messages from the router.
pub struct Receiver {
    stream: SplitStream<Ws>,
    serializer: Serializer,
    timeout: Duration,
}

/// A WAMP client connection.
pub struct Client {
    /// The sending half.
    pub tx: Sender,
    /// The receiving half.
    pub rx: Receiver,
    session: u64,
}

impl Client {
    /// Opens a WebSocket to `url` offering one serializer; no HELLO yet.
    pub async fn connect(url: &str, serializer: Serializer) -> Result<Self, ClientError> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(serializer.subprotocol()),
        );
        let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        let (sink, stream) = ws.split();
        Ok(Client {
            tx: Sender {
                sink,
                serializer,
                next_request: 0,
            },
            rx: Receiver {
                stream,
                serializer,
                timeout: Duration::from_secs(5),
            },
            session: 0,
        })
    }

    /// Connects and joins `realm` as caller, callee, publisher and subscriber.
    pub async fn join(url: &str, realm: &str, serializer: Serializer) -> Result<Self, ClientError> {
        let mut client = Self::connect(url, serializer).await?;
        client.hello(realm).await?;
        Ok(client)
    }

    /// Sends HELLO and waits for WELCOME; returns the session id.
    pub async fn hello(&mut self, realm: &str) -> Result<u64, ClientError> {
        let role = || Value::Dict(Dict::new().with("features", Dict::new()));
        let roles = ["caller", "callee", "publisher", "subscriber"]
            .iter()
            .fold(Dict::new(), |d, r| d.with(r, role()));
        self.send(&Message::Hello {
            realm: realm.to_owned(),
            details: Dict::new().with("roles", roles),
        })
        .await?;
        match self.recv().await? {
            Message::Welcome { session, .. } => {
                self.session = session;
                Ok(session)
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// The session id from WELCOME (0 before it).
    pub fn session_id(&self) -> u64 {
        self.session
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &Message) -> Result<(), ClientError> {
        self.tx.send(message).await
    }

    /// Receives the next message.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        self.rx.recv().await
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> u64 {
        self.tx.request_id()
    }

    /// REGISTER; returns the registration id, or the router's reply if it was not REGISTERED.
    pub async fn register(&mut self, procedure: &str, options: Dict) -> Result<u64, ClientError> {
        let request = self.request_id();
        self.send(&Message::Register {
            request,
            options,
            procedure: procedure.to_owned(),
        })
        .await?;
        match self.recv().await? {
            Message::Registered {
                request: r,
                registration,
            } if r == request => Ok(registration),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// UNREGISTER; `Ok` on UNREGISTERED.
    pub async fn unregister(&mut self, registration: u64) -> Result<(), ClientError> {
        let request = self.request_id();
        self.send(&Message::Unregister { request, registration }).await?;
        match self.recv().await? {
            Message::Unregistered { request: r, .. } if r == request => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// CALL and wait for its RESULT (any other reply, such as ERROR, is `Unexpected`).
    pub async fn call(&mut self, procedure: &str, args: Vec<Value>) -> Result<Payload, ClientError> {
        let request = self.request_id();
        let payload = if args.is_empty() {
            Payload::Empty
        } else {
            Payload::args(args)
        };
        self.send(&Message::Call {
            request,
            options: Dict::new(),
            procedure: procedure.to_owned(),
            payload,
        })
        .await?;
        match self.recv().await? {
            Message::Result {
                request: r, payload, ..
            } if r == request => Ok(payload),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Sends GOODBYE and waits for the router's GOODBYE.
    pub async fn goodbye(mut self) -> Result<Message, ClientError> {
        self.send(&Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.close_realm".into(),
        })
        .await?;
        self.recv().await
    }

    /// Splits into independent halves (e.g. a sending task and a receiving task).
    pub fn split(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }
}

impl Sender {
    /// Sends one message.
    pub async fn send(&mut self, message: &Message) -> Result<(), ClientError> {
        self.feed(message).await?;
        Ok(self.sink.flush().await?)
    }

    /// Queues one message without flushing (for batching; call [`Sender::flush`]).
    pub async fn feed(&mut self, message: &Message) -> Result<(), ClientError> {
        let mut frame = Vec::with_capacity(64);
        self.serializer.encode(message, &mut frame);
        let frame = if self.serializer.is_binary() {
            WsMessage::Binary(Bytes::from(frame))
        } else {
            WsMessage::Text(Utf8Bytes::try_from(frame).map_err(|_| ClientError::Closed)?)
        };
        Ok(self.sink.feed(frame).await?)
    }

    /// Flushes queued messages.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.sink.flush().await?)
    }

    /// Sends a raw WebSocket message (to test how the router handles bad input).
    pub async fn send_raw(&mut self, frame: WsMessage) -> Result<(), ClientError> {
        Ok(self.sink.send(frame).await?)
    }

    /// Closes the connection without GOODBYE.
    pub async fn close(&mut self) {
        let _ = self.sink.close().await;
    }

    /// A fresh request id (sequential, as the spec asks of session-scope ids).
    pub fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }
}

impl Receiver {
    /// Receives the next message, waiting at most the receive timeout (5 s by default).
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.recv_forever()).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// Receives the next message, however long it takes.
    pub async fn recv_forever(&mut self) -> Result<Message, ClientError> {
        loop {
            let frame = match self.stream.next().await {
                None | Some(Ok(WsMessage::Close(_))) => return Err(ClientError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(WsMessage::Text(t))) => Bytes::from(t),
                Some(Ok(WsMessage::Binary(b))) => b,
                Some(Ok(_)) => continue,
            };
            return Ok(self.serializer.decode(frame)?);
        }
    }

    /// Changes how long [`Receiver::recv`] waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }
}

/// Answers every INVOCATION the client receives with a YIELD of the same payload, until the
/// connection closes. Writes are flushed once per burst of invocations already received.
pub async fn echo_invocations(client: Client) {
    let (mut tx, mut rx) = client.split();
    while let Ok(message) = rx.recv_forever().await {
        if let Message::Invocation { request, payload, .. } = message {
            if tx
                .send(&Message::Yield {
                    request,
                    options: Dict::new(),
                    payload,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
