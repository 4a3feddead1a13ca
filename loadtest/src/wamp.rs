//! Session helpers shared by the modes: joining with a readable error, leaving politely, and the
//! pre-encoded call payload.

use std::time::Duration;

use bytes::Bytes;
use roundhouse::client::{Client, ClientError, Receiver, Sender};
use roundhouse::wire::{Dict, Message, Payload, Serializer, Value};
use tokio::time::{timeout_at, Instant};

/// How long leaving (GOODBYE and WebSocket close) may take before the connection is just dropped.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a `wss://` URL's certificate is checked against (`--ca-file`).
static TLS: std::sync::OnceLock<std::sync::Arc<roundhouse::client::TlsClientConfig>> = std::sync::OnceLock::new();

/// Trusts the CA certificates in the PEM file `ca_file` for `wss://` URLs.
pub fn trust(ca_file: &std::path::Path) -> Result<(), String> {
    let config = roundhouse::client::tls_config_from_pem(ca_file)?;
    TLS.set(config).map_err(|_| "the CA is set once".to_owned())
}

/// Connects and joins `realm`, describing a failure. `rs://HOST:PORT` is RawSocket, `wss://` is
/// WebSocket over TLS (checked against `--ca-file`), anything else a WebSocket URL.
pub async fn join(url: &str, realm: &str, serializer: Serializer) -> Result<Client, String> {
    let tls = TLS.get().filter(|_| url.starts_with("wss://"));
    let joined = match (url.strip_prefix("rs://"), tls) {
        (Some(address), _) => join_rawsocket(address, realm, serializer).await,
        (None, Some(tls)) => match Client::connect_tls(url, serializer, tls.clone()).await {
            Ok(mut client) => client.hello(realm).await.map(|_| client),
            Err(error) => Err(error),
        },
        (None, None) => Client::join(url, realm, serializer).await,
    };
    joined.map_err(|e| format!("cannot join realm '{realm}' at {url}: {}", describe(&e)))
}

/// Connects and joins `realm` with `credentials`.
pub async fn join_as(
    url: &str,
    realm: &str,
    serializer: Serializer,
    credentials: &roundhouse::client::Credentials,
) -> Result<Client, String> {
    Client::join_as(url, realm, serializer, credentials)
        .await
        .map_err(|e| format!("cannot join realm '{realm}' at {url}: {}", describe(&e)))
}

async fn join_rawsocket(address: &str, realm: &str, serializer: Serializer) -> Result<Client, ClientError> {
    let address = address.trim_end_matches('/');
    let resolved = tokio::net::lookup_host(address).await?.next().ok_or_else(|| {
        ClientError::Io(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{address} resolves to no address")))
    })?;
    // Announce the largest length RawSocket can: the router's limit is what counts.
    let mut client = Client::connect_rawsocket(resolved, serializer, 15).await?;
    client.hello(realm).await?;
    Ok(client)
}

/// The URL to reach a router at over `transport`: a ws:// URL becomes rs://HOST:PORT for RawSocket
/// (Roundhouse serves both on one port).
pub fn transport_url(url: &str, rawsocket: bool) -> String {
    match url.strip_prefix("ws://") {
        Some(rest) if rawsocket => format!("rs://{}", rest.split('/').next().unwrap_or(rest)),
        _ => url.to_owned(),
    }
}

/// Says GOODBYE, waits for the router's GOODBYE, then closes the WebSocket and waits for the router
/// to close the connection. Returns whether the router answered the GOODBYE.
pub async fn leave(tx: &mut Sender, rx: &mut Receiver) -> bool {
    let deadline = Instant::now() + LEAVE_TIMEOUT;
    let goodbye = Message::Goodbye { details: Dict::new(), reason: "wamp.close.close_realm".into() };
    let mut answered = false;
    if tx.send(&goodbye).await.is_ok() {
        while let Ok(Ok(message)) = timeout_at(deadline, rx.recv_forever()).await {
            if matches!(message, Message::Goodbye { .. }) {
                answered = true;
                break;
            }
        }
    }
    tx.close().await;
    // Read until the router closes too, so neither side is left with unread data (which would
    // turn the close into a reset).
    while let Ok(Ok(_)) = timeout_at(deadline, rx.recv_forever()).await {}
    answered
}

/// A short description of a client error: the router's ERROR or ABORT reason when it sent one.
pub fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Unexpected(message) => match message.as_ref() {
            Message::Abort { reason, details } => match details.get("message").and_then(Value::as_str) {
                Some(text) => format!("ABORT {reason}: {text}"),
                None => format!("ABORT {reason}"),
            },
            Message::Error { error, payload, .. } => match payload.to_values() {
                Ok((args, _)) if !args.is_empty() => format!("ERROR {error} {args:?}"),
                _ => format!("ERROR {error}"),
            },
            other => format!("unexpected {:?}", other.message_type()),
        },
        ClientError::Transport(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// The CALL payload, one binary argument of `size` bytes, encoded once in `serializer` so each call
/// only copies its bytes; also the argument list a RESULT should echo.
pub fn call_payload(serializer: Serializer, size: usize) -> (Payload, Vec<Value>) {
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let args = vec![Value::Bytes(data)];
    let message =
        Message::Call { request: 1, options: Dict::new(), procedure: "x".into(), payload: Payload::args(args.clone()) };
    let mut frame = Vec::new();
    let decoded = match serializer.try_encode(&message, &mut frame) {
        Ok(()) => serializer.decode(Bytes::from(frame)).ok(),
        Err(_) => None,
    };
    match decoded {
        Some(Message::Call { payload, .. }) => (payload, args),
        // Cannot happen (the library reads back what it writes); the unencoded payload still works.
        _ => (Payload::args(args.clone()), args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn joins_over_rawsocket_and_websocket_and_names_the_router() {
        let config = roundhouse::RouterConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
        let router = roundhouse::Router::start(config).await.unwrap();
        let rs = transport_url(&router.url(), true);
        assert_eq!(rs, format!("rs://{}", router.local_addr()));
        for (url, serializer) in [(rs.as_str(), Serializer::Cbor), (router.url().as_str(), Serializer::MsgPack)] {
            let client = join(url, "realm1", serializer).await.unwrap();
            assert!(client.router_agent().unwrap().starts_with("roundhouse-"));
            let (mut tx, mut rx) = client.split();
            assert!(leave(&mut tx, &mut rx).await);
        }
        assert!(join("rs://127.0.0.1:1", "realm1", Serializer::Json).await.is_err());
        router.shutdown().await;
    }

    #[test]
    fn payload_is_pre_encoded_and_decodes_to_its_bytes() {
        for serializer in Serializer::ALL {
            let (payload, args) = call_payload(serializer, 100);
            assert!(matches!(payload, Payload::Raw(_)), "{serializer:?}");
            assert_eq!(payload.to_values().unwrap().0, args);
        }
    }
}
