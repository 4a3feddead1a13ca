//! Sessions of the chaos actors: the six transports (WebSocket or RawSocket, each with JSON,
//! MessagePack or CBOR), joining with announced features, and receiving that answers the router's
//! RawSocket PINGs (the library client skips them, and the router closes a peer that never
//! answers one for its idle timeout).

use std::net::SocketAddr;
use std::time::Duration;

use roundhouse::client::{Client, ClientError, Receiver, Sender};
use roundhouse::transport::rawsocket::RawFrame;
use roundhouse::wire::{Dict, Message, Serializer};
use tokio::time::{timeout, timeout_at, Instant};

/// How a session reaches the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// WebSocket at the router's URL.
    WebSocket,
    /// RawSocket on the same port.
    RawSocket,
}

/// A carrier and a serializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    /// WebSocket or RawSocket.
    pub carrier: Carrier,
    /// The serializer.
    pub serializer: Serializer,
}

impl Transport {
    /// Every combination.
    pub const ALL: [Transport; 6] = [
        Transport { carrier: Carrier::WebSocket, serializer: Serializer::Json },
        Transport { carrier: Carrier::WebSocket, serializer: Serializer::MsgPack },
        Transport { carrier: Carrier::WebSocket, serializer: Serializer::Cbor },
        Transport { carrier: Carrier::RawSocket, serializer: Serializer::Json },
        Transport { carrier: Carrier::RawSocket, serializer: Serializer::MsgPack },
        Transport { carrier: Carrier::RawSocket, serializer: Serializer::Cbor },
    ];

    /// One at random.
    pub fn random(rng: &mut fastrand::Rng) -> Transport {
        Transport::ALL[rng.usize(..Transport::ALL.len())]
    }

    /// E.g. `ws/json`, `raw/cbor`.
    pub fn name(self) -> String {
        let carrier = match self.carrier {
            Carrier::WebSocket => "ws",
            Carrier::RawSocket => "raw",
        };
        let serializer = match self.serializer {
            Serializer::Json => "json",
            Serializer::MsgPack => "msgpack",
            Serializer::Cbor => "cbor",
        };
        format!("{carrier}/{serializer}")
    }
}

/// Where the router is.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Its WebSocket URL.
    pub url: String,
    /// The host and port of that URL, where RawSocket is served too.
    pub addr: SocketAddr,
    /// The HTTP path of the WebSocket endpoint.
    pub path: String,
    /// The realm every session joins.
    pub realm: String,
}

impl Endpoints {
    /// Resolves the address of `url` (`ws://host:port/path`).
    pub async fn resolve(url: &str, realm: &str) -> Result<Endpoints, String> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| format!("chaos mode needs a ws:// URL, got {url}"))?;
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let addr = tokio::net::lookup_host(host)
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(Endpoints { url: url.to_owned(), addr, path: path.to_owned(), realm: realm.to_owned() })
    }
}

/// Nothing a chaos session waits for takes a day; `Receiver`'s own timeout is set to this so that
/// only the actors' own deadlines apply.
const FOREVER: Duration = Duration::from_secs(86_400);

/// A joined session.
pub struct Peer {
    /// The sending half.
    pub tx: Sender,
    rx: Receiver,
    transport: Transport,
    /// The session id from WELCOME (0 for a connection that did not join).
    pub session: u64,
}

/// Opens a connection without joining, within `within`.
pub async fn connect(endpoints: &Endpoints, transport: Transport, within: Duration) -> Result<Client, String> {
    let connecting = async {
        match transport.carrier {
            Carrier::WebSocket => Client::connect(&endpoints.url, transport.serializer).await,
            Carrier::RawSocket => Client::connect_rawsocket(endpoints.addr, transport.serializer, 15).await,
        }
    };
    match timeout(within, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("cannot connect over {}: {}", transport.name(), crate::wamp::describe(&e))),
        Err(_) => Err(format!("cannot connect over {} within {within:?}", transport.name())),
    }
}

impl Peer {
    /// Connects and joins, announcing `features` for the caller and callee roles, within `within`.
    pub async fn join(
        endpoints: &Endpoints,
        transport: Transport,
        features: &[&str],
        within: Duration,
    ) -> Result<Peer, String> {
        let deadline = Instant::now() + within;
        let mut client = connect(endpoints, transport, within).await?;
        client.rx.set_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        let session = client
            .hello_with_features(&endpoints.realm, features)
            .await
            .map_err(|e| format!("HELLO over {} was not welcomed: {}", transport.name(), crate::wamp::describe(&e)))?;
        let mut peer = Peer::from_client(client, transport);
        peer.session = session;
        Ok(peer)
    }

    /// A connection opened some other way (joined or not).
    pub fn from_client(client: Client, transport: Transport) -> Peer {
        let (tx, mut rx) = client.split();
        rx.set_timeout(FOREVER);
        Peer { tx, rx, transport, session: 0 }
    }

    /// The transport's name.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The next WAMP message, however long it takes; RawSocket PINGs are answered on the way.
    /// Cancel-safe: dropping the future loses no message.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        if self.transport.carrier == Carrier::WebSocket {
            // tungstenite answers pings itself while it reads.
            return self.rx.recv_forever().await;
        }
        loop {
            match self.rx.next_raw_frame().await? {
                RawFrame::Message(frame) => return Ok(self.transport.serializer.decode(frame)?),
                RawFrame::Ping(payload) => self.tx.send_raw_frame(RawFrame::Pong(payload)).await?,
                RawFrame::Pong(_) => {}
            }
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &Message) -> Result<(), ClientError> {
        self.tx.send(message).await
    }

    /// Says GOODBYE and waits, up to `within`, for the router's GOODBYE and for the connection to
    /// close. Messages that arrive meanwhile are handed to `late`. `Err` says what went wrong.
    pub async fn leave(mut self, within: Duration, mut late: impl FnMut(Message)) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let goodbye = Message::Goodbye { details: Dict::new(), reason: "wamp.close.close_realm".into() };
        self.tx
            .send(&goodbye)
            .await
            .map_err(|e| format!("GOODBYE could not be sent: {}", crate::wamp::describe(&e)))?;
        let mut answered = false;
        loop {
            match timeout_at(deadline, self.recv()).await {
                Err(_) if answered => break,
                Err(_) => return Err(format!("no GOODBYE from the router within {within:?}")),
                Ok(Ok(Message::Goodbye { .. })) if !answered => {
                    answered = true;
                    self.tx.close().await;
                }
                Ok(Ok(message)) => late(message),
                Ok(Err(_)) if answered => break,
                Ok(Err(e)) => {
                    return Err(format!("connection lost before the router's GOODBYE: {}", crate::wamp::describe(&e)))
                }
            }
        }
        Ok(())
    }

    /// Drops the connection without a word.
    pub fn drop_connection(self) {}

    /// Splits off the halves, e.g. for a peer that stops reading.
    pub fn into_halves(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }
}
