//! A small WAMP client over WebSocket: the integration tests and the load generator use it to
//! talk to the router exactly as an outside peer would.
//!
//! It is deliberately low-level: it sends and receives [`Message`]s and offers a few request/reply
//! helpers, so tests can assert every message the router sends and also misbehave on purpose.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::either::Either;

use crate::transport::rawsocket::{self, RawFrame};
use crate::wire::{DecodeError, Dict, Message, Payload, Serializer, Value};

/// The WebSocket library the client speaks through, for tests that send raw frames.
pub use tokio_tungstenite::tungstenite;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A RawSocket connection's halves: plain TCP or TLS.
type TlsTcp = tokio_rustls::client::TlsStream<TcpStream>;
type RawRead = Either<OwnedReadHalf, tokio::io::ReadHalf<TlsTcp>>;
type RawWrite = Either<OwnedWriteHalf, tokio::io::WriteHalf<TlsTcp>>;

/// The TLS client configuration [`Client::connect_tls`] takes.
pub use rustls::ClientConfig as TlsClientConfig;

/// [`tls_config`] trusting the CA certificates of a PEM file; the error names the file.
pub fn tls_config_from_pem(ca_file: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let roots = rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    if roots.is_empty() {
        return Err(format!("{}: no certificate in the file", ca_file.display()));
    }
    tls_config(roots, None).map_err(|e| format!("{}: {e}", ca_file.display()))
}

/// A TLS client config (ring provider) that trusts `roots` and, with `identity`, presents that
/// certificate chain and key (for listeners that ask for client certificates).
pub fn tls_config(
    roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    identity: Option<(Vec<rustls_pki_types::CertificateDer<'static>>, rustls_pki_types::PrivateKeyDer<'static>)>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root)?;
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store);
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(std::sync::Arc::new(config))
}

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
    /// A message to send cannot be encoded in the session's serializer.
    #[error("unencodable message: {0}")]
    Encode(#[from] crate::wire::EncodeError),
    /// The router answered with something other than what the request expects (ERROR, ABORT...).
    #[error("unexpected reply: {0:?}")]
    Unexpected(Box<Message>),
    /// The RawSocket handshake was refused with this error code (1-4, see the spec).
    #[error("RawSocket handshake refused with error {0}")]
    Refused(u8),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// The sending half of a transport.
enum Outgoing {
    WebSocket(SplitSink<Ws, WsMessage>),
    RawSocket(FramedWrite<RawWrite, rawsocket::Codec>),
}

/// The receiving half of a transport.
enum Incoming {
    WebSocket(SplitStream<Ws>),
    RawSocket(FramedRead<RawRead, rawsocket::Codec>),
}

/// Sends messages to the router.
pub struct Sender {
    sink: Outgoing,
    serializer: Serializer,
    next_request: u64,
}

/// Receives messages from the router.
pub struct Receiver {
    stream: Incoming,
    serializer: Serializer,
    timeout: Duration,
    close_code: Option<u16>,
}

/// A WAMP client connection.
pub struct Client {
    /// The sending half.
    pub tx: Sender,
    /// The receiving half.
    pub rx: Receiver,
    session: u64,
    /// `WELCOME.Details.agent`: the router's name and version, when it says.
    agent: Option<String>,
}

impl Client {
    /// Opens a WebSocket to `url` offering one serializer; no HELLO yet.
    pub async fn connect(url: &str, serializer: Serializer) -> Result<Self, ClientError> {
        Self::connect_with(url, serializer, None).await
    }

    /// Opens a WebSocket to a `wss://` URL through `tls`; no HELLO yet.
    pub async fn connect_tls(
        url: &str,
        serializer: Serializer,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(url, serializer, Some(Connector::Rustls(tls))).await
    }

    async fn connect_with(url: &str, serializer: Serializer, tls: Option<Connector>) -> Result<Self, ClientError> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert(http::header::SEC_WEBSOCKET_PROTOCOL, http::HeaderValue::from_static(serializer.subprotocol()));
        // A small read buffer (it grows for large frames) keeps thousands of test sessions cheap.
        let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None).read_buffer_size(16 * 1024);
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, tls).await?;
        let (sink, stream) = ws.split();
        Ok(Self::from_halves(Outgoing::WebSocket(sink), Incoming::WebSocket(stream), serializer))
    }

    /// Opens a RawSocket connection to `addr`, announcing that we accept messages up to
    /// `2^(9 + max_exponent)` bytes; no HELLO yet.
    pub async fn connect_rawsocket(
        addr: SocketAddr,
        serializer: Serializer,
        max_exponent: u8,
    ) -> Result<Self, ClientError> {
        Self::rawsocket_over(TcpStream::connect(addr).await?, serializer, max_exponent).await
    }

    /// Speaks RawSocket over a TCP connection made by the caller (e.g. with a small receive
    /// buffer, to play a peer that reads slowly); no HELLO yet.
    pub async fn rawsocket_over(
        mut tcp: TcpStream,
        serializer: Serializer,
        max_exponent: u8,
    ) -> Result<Self, ClientError> {
        tcp.set_nodelay(true)?;
        let max_incoming = rawsocket_handshake(&mut tcp, serializer, max_exponent).await?;
        let (read, write) = tcp.into_split();
        Ok(Self::rawsocket_halves(Either::Left(read), Either::Left(write), serializer, max_incoming))
    }

    /// Opens RawSocket over TLS to `addr` through `tls`, checking the router's certificate for
    /// `server_name` (a DNS name or an IP address); no HELLO yet.
    pub async fn connect_rawsocket_tls(
        addr: SocketAddr,
        server_name: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
        serializer: Serializer,
        max_exponent: u8,
    ) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
        let max_incoming = rawsocket_handshake(&mut stream, serializer, max_exponent).await?;
        let (read, write) = tokio::io::split(stream);
        Ok(Self::rawsocket_halves(Either::Right(read), Either::Right(write), serializer, max_incoming))
    }

    fn rawsocket_halves(read: RawRead, write: RawWrite, serializer: Serializer, max_incoming: usize) -> Self {
        let sink = Outgoing::RawSocket(FramedWrite::new(write, rawsocket::Codec { max_incoming }));
        let stream = Incoming::RawSocket(FramedRead::new(read, rawsocket::Codec { max_incoming }));
        Self::from_halves(sink, stream, serializer)
    }

    fn from_halves(sink: Outgoing, stream: Incoming, serializer: Serializer) -> Self {
        Client {
            tx: Sender { sink, serializer, next_request: 0 },
            rx: Receiver { stream, serializer, timeout: Duration::from_secs(5), close_code: None },
            session: 0,
            agent: None,
        }
    }

    /// Connects and joins `realm` as caller, callee, publisher and subscriber.
    pub async fn join(url: &str, realm: &str, serializer: Serializer) -> Result<Self, ClientError> {
        let mut client = Self::connect(url, serializer).await?;
        client.hello(realm).await?;
        Ok(client)
    }

    /// Sends HELLO and waits for WELCOME; returns the session id.
    pub async fn hello(&mut self, realm: &str) -> Result<u64, ClientError> {
        self.hello_with_features(realm, &[]).await
    }

    /// Sends HELLO announcing every role, with `features` (e.g. `call_canceling`) announced for
    /// the callee and caller roles, and waits for WELCOME.
    pub async fn hello_with_features(&mut self, realm: &str, features: &[&str]) -> Result<u64, ClientError> {
        self.send(&Message::Hello { realm: realm.to_owned(), details: Dict::new().with("roles", roles(features)) })
            .await?;
        match self.recv().await? {
            Message::Welcome { session, details } => {
                self.session = session;
                self.agent = details.get("agent").and_then(Value::as_str).map(str::to_owned);
                Ok(session)
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Connects and joins `realm` authenticated with `credentials`.
    pub async fn join_as(
        url: &str,
        realm: &str,
        serializer: Serializer,
        credentials: &Credentials,
    ) -> Result<Self, ClientError> {
        let mut client = Self::connect(url, serializer).await?;
        client.hello_as(realm, credentials).await?;
        Ok(client)
    }

    /// Sends HELLO offering the method of `credentials`, answers its CHALLENGE, and waits for
    /// WELCOME; returns the session id.
    pub async fn hello_as(&mut self, realm: &str, credentials: &Credentials) -> Result<u64, ClientError> {
        let mut details = Dict::new().with("roles", roles(&[]));
        let (method, authid) = match credentials {
            Credentials::Anonymous => ("anonymous", None),
            Credentials::Ticket { authid, .. } => ("ticket", Some(authid.as_str())),
            Credentials::Wampcra { authid, .. } => ("wampcra", Some(authid.as_str())),
            Credentials::Cryptosign { authid, private_key } => {
                let key = ed25519_dalek::SigningKey::from_bytes(private_key);
                details.insert("authextra", Dict::new().with("pubkey", hex::encode(key.verifying_key().to_bytes())));
                ("cryptosign", authid.as_deref())
            }
            Credentials::WampScram { authid, .. } => {
                details.insert("authextra", Dict::new().with("nonce", scram_nonce()));
                ("wamp-scram", Some(authid.as_str()))
            }
        };
        let authextra = details.get("authextra").and_then(Value::as_dict).cloned().unwrap_or_default();
        details.insert("authmethods", Value::List(vec![Value::from(method)]));
        if let Some(authid) = authid {
            details.insert("authid", authid);
        }
        self.send(&Message::Hello { realm: realm.to_owned(), details }).await?;
        loop {
            match self.recv().await? {
                Message::Welcome { session, details } => {
                    self.session = session;
                    self.agent = details.get("agent").and_then(Value::as_str).map(str::to_owned);
                    return Ok(session);
                }
                Message::Challenge { extra, .. } => {
                    let (signature, extra) = credentials.answer(&extra, &authextra);
                    self.send(&Message::Authenticate { signature, extra }).await?;
                }
                other => return Err(ClientError::Unexpected(Box::new(other))),
            }
        }
    }

    /// The router's `WELCOME.Details.agent` (its name and version), if it sent one.
    pub fn router_agent(&self) -> Option<&str> {
        self.agent.as_deref()
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
        self.send(&Message::Register { request, options, procedure: procedure.to_owned() }).await?;
        match self.recv().await? {
            Message::Registered { request: r, registration } if r == request => Ok(registration),
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

    /// SUBSCRIBE; returns the subscription id from SUBSCRIBED.
    pub async fn subscribe(&mut self, topic: &str, options: Dict) -> Result<u64, ClientError> {
        let request = self.request_id();
        self.send(&Message::Subscribe { request, options, topic: topic.to_owned() }).await?;
        match self.recv().await? {
            Message::Subscribed { request: r, subscription } if r == request => Ok(subscription),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// CALL and wait for its RESULT (any other reply, such as ERROR, is `Unexpected`).
    pub async fn call(&mut self, procedure: &str, args: Vec<Value>) -> Result<Payload, ClientError> {
        let request = self.request_id();
        let payload = if args.is_empty() { Payload::Empty } else { Payload::args(args) };
        self.send(&Message::Call { request, options: Dict::new(), procedure: procedure.to_owned(), payload }).await?;
        match self.recv().await? {
            Message::Result { request: r, payload, .. } if r == request => Ok(payload),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Sends GOODBYE and waits for the router's GOODBYE.
    pub async fn goodbye(mut self) -> Result<Message, ClientError> {
        self.send(&Message::Goodbye { details: Dict::new(), reason: "wamp.close.close_realm".into() }).await?;
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
        self.flush().await
    }

    /// Queues one message without flushing (for batching; call [`Sender::flush`]).
    pub async fn feed(&mut self, message: &Message) -> Result<(), ClientError> {
        let mut frame = Vec::with_capacity(64);
        self.serializer.try_encode(message, &mut frame)?;
        let frame = Bytes::from(frame);
        match &mut self.sink {
            Outgoing::WebSocket(sink) if self.serializer.is_binary() => Ok(sink.feed(WsMessage::Binary(frame)).await?),
            Outgoing::WebSocket(sink) => {
                let text = Utf8Bytes::try_from(frame).map_err(|_| ClientError::Closed)?;
                Ok(sink.feed(WsMessage::Text(text)).await?)
            }
            Outgoing::RawSocket(sink) => Ok(sink.feed(RawFrame::Message(frame)).await?),
        }
    }

    /// Flushes queued messages.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        match &mut self.sink {
            Outgoing::WebSocket(sink) => Ok(sink.flush().await?),
            Outgoing::RawSocket(sink) => Ok(sink.flush().await?),
        }
    }

    /// Sends a raw WebSocket message (to test how the router handles bad input).
    pub async fn send_raw(&mut self, frame: WsMessage) -> Result<(), ClientError> {
        match &mut self.sink {
            Outgoing::WebSocket(sink) => Ok(sink.send(frame).await?),
            Outgoing::RawSocket(_) => Err(ClientError::Closed),
        }
    }

    /// Sends a raw RawSocket frame (to test how the router handles bad input and PINGs).
    pub async fn send_raw_frame(&mut self, frame: RawFrame) -> Result<(), ClientError> {
        match &mut self.sink {
            Outgoing::RawSocket(sink) => Ok(sink.send(frame).await?),
            Outgoing::WebSocket(_) => Err(ClientError::Closed),
        }
    }

    /// Closes the connection without GOODBYE.
    pub async fn close(&mut self) {
        let _ = match &mut self.sink {
            Outgoing::WebSocket(sink) => sink.close().await.map_err(ClientError::from),
            Outgoing::RawSocket(sink) => sink.close().await.map_err(ClientError::from),
        };
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
        Ok(self.serializer.decode(self.next_frame().await?)?)
    }

    /// The next transport frame holding a WAMP message. RawSocket PINGs and PONGs are skipped
    /// without an answer: the router pings RawSocket peers only with `rawsocket_keepalive`, and a
    /// test that turns it on answers them itself (WebSocket pings are answered by tungstenite).
    pub async fn next_frame(&mut self) -> Result<Bytes, ClientError> {
        loop {
            match &mut self.stream {
                Incoming::WebSocket(stream) => match stream.next().await {
                    Some(Ok(WsMessage::Close(frame))) => {
                        self.close_code = frame.map(|f| f.code.into());
                        return Err(ClientError::Closed);
                    }
                    None => return Err(ClientError::Closed),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(WsMessage::Text(t))) => return Ok(Bytes::from(t)),
                    Some(Ok(WsMessage::Binary(b))) => return Ok(b),
                    Some(Ok(_)) => continue,
                },
                Incoming::RawSocket(stream) => match stream.next().await {
                    None => return Err(ClientError::Closed),
                    Some(Err(rawsocket::FrameError::Io(e))) => return Err(e.into()),
                    Some(Err(rawsocket::FrameError::Violation(_))) => return Err(ClientError::Closed),
                    Some(Ok(RawFrame::Message(frame))) => return Ok(frame),
                    Some(Ok(_)) => continue,
                },
            }
        }
    }

    /// The next raw RawSocket frame of any type (PONGs included), for transport tests.
    pub async fn next_raw_frame(&mut self) -> Result<RawFrame, ClientError> {
        match &mut self.stream {
            Incoming::RawSocket(stream) => match tokio::time::timeout(self.timeout, stream.next()).await {
                Err(_) => Err(ClientError::Timeout),
                Ok(None) => Err(ClientError::Closed),
                Ok(Some(Err(rawsocket::FrameError::Io(e)))) => Err(e.into()),
                Ok(Some(Err(rawsocket::FrameError::Violation(_)))) => Err(ClientError::Closed),
                Ok(Some(Ok(frame))) => Ok(frame),
            },
            Incoming::WebSocket(_) => Err(ClientError::Closed),
        }
    }

    /// The status of the WebSocket close frame the router sent, once one arrived.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Changes how long [`Receiver::recv`] waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }
}

/// `HELLO.Details.roles`: every role, with `features` announced for the caller and callee.
fn roles(features: &[&str]) -> Dict {
    let announced = features.iter().fold(Dict::new(), |d, f| d.with(f, true));
    let role = |name: &str| {
        let features = if name == "callee" || name == "caller" { announced.clone() } else { Dict::new() };
        Value::Dict(Dict::new().with("features", features))
    };
    ["caller", "callee", "publisher", "subscriber"].iter().fold(Dict::new(), |d, r| d.with(r, role(r)))
}

/// How a client authenticates ([`Client::join_as`]).
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `anonymous`.
    Anonymous,
    /// `ticket`.
    Ticket {
        /// The principal.
        authid: String,
        /// Its ticket.
        ticket: String,
    },
    /// `wampcra`, plain or salted (as the CHALLENGE says).
    Wampcra {
        /// The principal.
        authid: String,
        /// Its secret.
        secret: String,
    },
    /// `cryptosign`, answering with the 96-byte form.
    Cryptosign {
        /// The principal, or `None` to let the router find it by key.
        authid: Option<String>,
        /// The Ed25519 private key.
        private_key: [u8; 32],
    },
    /// `wamp-scram` (the spec's dialect), with the KDF the CHALLENGE names.
    WampScram {
        /// The principal.
        authid: String,
        /// Its password.
        password: String,
    },
}

/// The client nonce `wamp-scram` logins send (fresh per login: base64 of 16 random bytes).
fn scram_nonce() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(fastrand::u128(..).to_le_bytes())
}

impl Credentials {
    /// AUTHENTICATE's signature (and extra) for a CHALLENGE's extra; `hello` is the HELLO's
    /// `authextra`.
    fn answer(&self, extra: &Dict, hello: &Dict) -> (String, Dict) {
        let text = |key: &str| extra.get(key).and_then(Value::as_str).unwrap_or_default();
        if let Credentials::WampScram { authid, password } = self {
            let client_nonce = hello.get("nonce").and_then(Value::as_str).unwrap_or_default();
            let proof = crate::auth::scram::client_proof(password.as_bytes(), authid, client_nonce, extra);
            let reply = Dict::new().with("nonce", text("nonce")).with("channel_binding", Value::Null);
            return (proof.unwrap_or_default(), reply);
        }
        let signature = match self {
            Credentials::Anonymous => String::new(),
            Credentials::Ticket { ticket, .. } => ticket.clone(),
            Credentials::Wampcra { secret, .. } => {
                let number = |key: &str| extra.get(key).and_then(Value::as_u64);
                let key = match (extra.get("salt").and_then(Value::as_str), number("iterations"), number("keylen")) {
                    (Some(salt), Some(iterations), Some(keylen)) => {
                        crate::auth::wampcra::derive_key(secret.as_bytes(), salt, iterations as u32, keylen as usize)
                    }
                    _ => secret.clone(),
                };
                crate::auth::wampcra::sign(key.as_bytes(), text("challenge"))
            }
            Credentials::Cryptosign { private_key, .. } => {
                use ed25519_dalek::Signer;
                let challenge = hex::decode(text("challenge")).unwrap_or_default();
                let signature = ed25519_dalek::SigningKey::from_bytes(private_key).sign(&challenge);
                format!("{}{}", hex::encode(signature.to_bytes()), hex::encode(&challenge))
            }
            Credentials::WampScram { .. } => String::new(),
        };
        (signature, Dict::new())
    }
}

/// The client's side of the RawSocket handshake; returns the largest message it accepts.
async fn rawsocket_handshake<S>(socket: &mut S, serializer: Serializer, max_exponent: u8) -> Result<usize, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let id = rawsocket::serializer_id(serializer).ok_or(ClientError::Refused(1))?;
    socket.write_all(&[rawsocket::MAGIC, (max_exponent << 4) | id, 0, 0]).await?;
    socket.flush().await?;
    let mut reply = [0u8; 4];
    socket.read_exact(&mut reply).await?;
    if reply[0] != rawsocket::MAGIC || reply[1] & 0x0f != id {
        return Err(ClientError::Refused(reply[1] >> 4));
    }
    Ok(rawsocket::announced_length(max_exponent))
}

/// Answers every INVOCATION the client receives with a YIELD of the same payload, until the
/// connection closes. Writes are flushed once per burst of invocations already received.
pub async fn echo_invocations(client: Client) {
    let (mut tx, mut rx) = client.split();
    while let Ok(message) = rx.recv_forever().await {
        if let Message::Invocation { request, payload, .. } = message {
            if tx.send(&Message::Yield { request, options: Dict::new(), payload }).await.is_err() {
                return;
            }
        }
    }
}
