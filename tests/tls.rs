//! TLS listeners, through real sockets with certificates made at test time: wss:// and RawSocket
//! over TLS, refusals (untrusted certificate, plain text on a TLS port, client certificates), the
//! client certificate reaching the session, the Origin allowlist, and reload of certificates.

mod common;
mod pki;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_empty, router_with, say_goodbye, REALM};
use pki::{presenting, trusting, Ca, Dir};
use roundhouse::client::{tungstenite, Client, ClientError};
use roundhouse::reload::ReloadHook;
use roundhouse::transport::listener::ListenerConfig;
use roundhouse::transport::tls::ClientAuth;
use roundhouse::wire::{Dict, Serializer, Value};
use roundhouse::{RouterConfig, RouterHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TLS listener serving both transports, added to the router as `[[listener]]` (index 1).
fn tls_listener(tls: roundhouse::transport::tls::TlsConfig) -> ListenerConfig {
    ListenerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        websocket: true,
        rawsocket: true,
        tls: Some(tls),
        allowed_origins: Vec::new(),
    }
}

fn wss_url(router: &RouterHandle, listener: usize) -> String {
    format!("wss://{}/ws", router.listener_addrs()[listener])
}

/// Registers `procedure` on `callee`, calls it from `caller`, and checks the answer; the callee
/// then leaves.
async fn echo_between(mut callee: Client, caller: &mut Client, procedure: &str) {
    callee.register(procedure, Dict::new()).await.unwrap();
    let serving = tokio::spawn(roundhouse::client::echo_invocations(callee));
    let result = caller.call(procedure, vec![Value::Str("over TLS".into())]).await.unwrap();
    assert_eq!(common::first_arg(&result), "over TLS");
    serving.abort();
}

#[tokio::test]
async fn wss_and_rawsocket_over_tls_carry_calls_on_one_port_and_on_a_rawsocket_only_port() {
    let (ca, dir) = (Ca::new("test CA"), Dir::temp());
    let tls = dir.server_tls(&ca.server());
    let router = router_with(|c| {
        c.tls = Some(tls.clone());
        c.extra_listeners.push(ListenerConfig { websocket: false, ..tls_listener(tls) });
    })
    .await;
    assert!(router.url().starts_with("wss://"), "{}", router.url());
    let addrs = router.listener_addrs();
    for serializer in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
        // A wss:// callee; RawSocket-over-TLS callers on the WebSocket port (told apart inside
        // TLS) and on the RawSocket-only port.
        for (n, addr) in [addrs[0], addrs[1]].into_iter().enumerate() {
            let mut caller =
                Client::connect_rawsocket_tls(addr, "127.0.0.1", trusting(&ca), serializer, 15).await.unwrap();
            caller.hello(REALM).await.unwrap();
            let mut callee = Client::connect_tls(&router.url(), serializer, trusting(&ca)).await.unwrap();
            callee.hello(REALM).await.unwrap();
            echo_between(callee, &mut caller, &format!("com.example.echo.{serializer:?}.{n}")).await;
            say_goodbye(caller).await;
        }
    }
    assert_empty(&router).await;
    router.shutdown().await;
}

#[tokio::test]
async fn untrusted_certificates_and_plain_text_are_refused_and_others_go_on() {
    let (ca, dir) = (Ca::new("test CA"), Dir::temp());
    let router = router_with(|c| c.extra_listeners.push(tls_listener(dir.server_tls(&ca.server())))).await;
    let (url, addr) = (wss_url(&router, 1), router.listener_addrs()[1]);
    let stranger = Ca::new("some other CA");
    let mut healthy = Client::connect_tls(&url, Serializer::Json, trusting(&ca)).await.unwrap();
    healthy.hello(REALM).await.unwrap();

    assert!(Client::connect_tls(&url, Serializer::Json, trusting(&stranger)).await.is_err());
    assert!(Client::connect_rawsocket_tls(addr, "127.0.0.1", trusting(&stranger), Serializer::Json, 15).await.is_err());
    // A certificate for another name.
    assert!(Client::connect_rawsocket_tls(addr, "elsewhere.example", trusting(&ca), Serializer::Json, 15)
        .await
        .is_err());
    // Plain WebSocket to the TLS port: HTTP 400 saying so. Plain RawSocket: closed.
    match Client::connect(&format!("ws://{addr}/ws"), Serializer::Json).await {
        Err(ClientError::Transport(tungstenite::Error::Http(response))) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {:?}", other.map(|_| "a connection")),
    }
    assert!(Client::connect_rawsocket(addr, Serializer::Json, 15).await.is_err());

    // The router serves everybody else as before, on both listeners.
    healthy.register("com.example.still_here", Dict::new()).await.unwrap();
    let plain = Client::join(&router.url(), REALM, Serializer::Json).await.unwrap();
    let mut again = Client::connect_tls(&url, Serializer::Json, trusting(&ca)).await.unwrap();
    again.hello(REALM).await.unwrap();
    for client in [healthy, plain, again] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
    router.shutdown().await;
}

#[tokio::test]
async fn a_tls_handshake_counts_against_the_handshake_deadline() {
    let (ca, dir) = (Ca::new("test CA"), Dir::temp());
    let router = router_with(|c| {
        c.handshake_timeout_ms = 300;
        c.extra_listeners.push(tls_listener(dir.server_tls(&ca.server())));
    })
    .await;
    let addr = router.listener_addrs()[1];
    // Silent, and a ClientHello that starts and stalls: both closed at the deadline.
    for opening in [&[][..], &[0x16, 0x03, 0x01, 0x02, 0x00][..]] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(opening).await.unwrap();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "closed after the deadline: {closed:?}");
    }
    assert_empty(&router).await;
    router.shutdown().await;
}

#[tokio::test]
async fn required_client_certificates_are_checked_and_reach_the_session() {
    let (ca, clients, dir) = (Ca::new("test CA"), Ca::new("clients CA"), Dir::temp());
    let tls = dir.mtls(&ca.server(), &clients, ClientAuth::Required);
    let router = router_with(|c| c.extra_listeners.push(tls_listener(tls))).await;
    let (url, addr) = (wss_url(&router, 1), router.listener_addrs()[1]);

    // No certificate, and one from a CA the listener does not trust: refused.
    let forged = Ca::new("clients CA").issue("alice", &[]);
    for config in [trusting(&ca), presenting(&ca, &forged)] {
        assert!(join_with(&url, config.clone()).await.is_err());
        let raw = Client::connect_rawsocket_tls(addr, "127.0.0.1", config, Serializer::Json, 15).await;
        assert!(raw.is_err() || raw.unwrap().hello(REALM).await.is_err());
    }

    let alice = clients.issue("alice", &[]);
    let mut client = join_with(&url, presenting(&ca, &alice)).await.unwrap();
    let session = router.shared().sessions.get(&client.session_id()).map(|s| s.clone()).unwrap();
    let cert = session.client_cert().expect("the verified certificate reaches the session");
    assert_eq!(cert.subject_cn.as_deref(), Some("alice"));
    assert_eq!(&cert.fingerprint_sha256[..], ring::digest::digest(&ring::digest::SHA256, &alice.der).as_ref());
    drop(session);

    let mut raw =
        Client::connect_rawsocket_tls(addr, "127.0.0.1", presenting(&ca, &alice), Serializer::Cbor, 15).await.unwrap();
    raw.hello(REALM).await.unwrap();
    let session = router.shared().sessions.get(&raw.session_id()).map(|s| s.clone()).unwrap();
    assert_eq!(session.client_cert().and_then(|c| c.subject_cn.clone()).as_deref(), Some("alice"));
    drop(session);
    client.register("com.example.mtls", Dict::new()).await.unwrap();
    say_goodbye(client).await;
    say_goodbye(raw).await;
    assert_empty(&router).await;
    router.shutdown().await;
}

#[tokio::test]
async fn optional_client_certificates_may_be_left_out() {
    let (ca, clients, dir) = (Ca::new("test CA"), Ca::new("clients CA"), Dir::temp());
    let tls = dir.mtls(&ca.server(), &clients, ClientAuth::Optional);
    let router = router_with(|c| c.extra_listeners.push(tls_listener(tls))).await;
    let url = wss_url(&router, 1);
    let anonymous = join_with(&url, trusting(&ca)).await.unwrap();
    let bob = join_with(&url, presenting(&ca, &clients.issue("bob", &[]))).await.unwrap();
    let cert_of = |client: &Client| {
        router
            .shared()
            .sessions
            .get(&client.session_id())
            .and_then(|s| s.client_cert().and_then(|c| c.subject_cn.clone()))
    };
    assert_eq!(cert_of(&anonymous), None);
    assert_eq!(cert_of(&bob).as_deref(), Some("bob"));
    // A certificate from another CA is still refused: optional is not unchecked.
    let forged = Ca::new("clients CA").issue("bob", &[]);
    assert!(join_with(&url, presenting(&ca, &forged)).await.is_err());
    say_goodbye(anonymous).await;
    say_goodbye(bob).await;
    assert_empty(&router).await;
    router.shutdown().await;
}

/// A WebSocket handshake with `origin`; the HTTP status of a refusal, or 101.
async fn handshake_status(url: &str, origin: Option<&str>) -> u16 {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", "wamp.2.json".parse().unwrap());
    if let Some(origin) = origin {
        headers.insert("Origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, response)) => {
            let _ = ws.close(None).await;
            response.status().as_u16()
        }
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(error) => panic!("handshake failed: {error}"),
    }
}

#[tokio::test]
async fn origins_are_checked_per_listener() {
    let router = router_with(|c| {
        c.extra_listeners.push(ListenerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            websocket: true,
            rawsocket: false,
            tls: None,
            allowed_origins: vec!["https://app.example.com".into(), "https://*.example.org".into()],
        })
    })
    .await;
    // The default on a loopback listener: no Origin, and loopback origins.
    let url = router.url();
    assert_eq!(handshake_status(&url, None).await, 101);
    assert_eq!(handshake_status(&url, Some("http://localhost:3000")).await, 101);
    assert_eq!(handshake_status(&url, Some("http://127.0.0.1:8080")).await, 101);
    assert_eq!(handshake_status(&url, Some("https://evil.example")).await, 403);
    assert_eq!(handshake_status(&url, Some("https://app.example.com")).await, 403);
    // A listener with a list: exactly what it names.
    let listed = format!("ws://{}/ws", router.listener_addrs()[1]);
    assert_eq!(handshake_status(&listed, None).await, 101);
    assert_eq!(handshake_status(&listed, Some("https://app.example.com")).await, 101);
    assert_eq!(handshake_status(&listed, Some("https://eu.example.org")).await, 101);
    assert_eq!(handshake_status(&listed, Some("http://localhost:3000")).await, 403);
    assert_eq!(handshake_status(&listed, Some("https://example.org")).await, 403);
    // Refused handshakes leave nothing behind, and the router serves on.
    say_goodbye(common::join(&router, Serializer::Json).await).await;
    assert_empty(&router).await;
    router.shutdown().await;
}

/// Counts the reloads it is told about, and refuses a config with a realm named "refuse.me".
#[derive(Default)]
struct Hook {
    applied: AtomicUsize,
}

impl ReloadHook for Hook {
    fn check(&self, new: &RouterConfig) -> Result<(), String> {
        match new.realms.iter().any(|r| r.name == "refuse.me") {
            true => Err("realm refuse.me is refused by the hook".into()),
            false => Ok(()),
        }
    }

    fn apply(&self, _: &RouterConfig) {
        self.applied.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_reload_serves_new_certificates_and_origins_to_new_connections_only() {
    let (old_ca, new_ca, dir) = (Ca::new("old CA"), Ca::new("new CA"), Dir::temp());
    let tls = dir.server_tls(&old_ca.server());
    let mut config = RouterConfig::default();
    let router = router_with(|c| {
        c.extra_listeners.push(tls_listener(tls.clone()));
        config = c.clone();
    })
    .await;
    let hook = Arc::new(Hook::default());
    router.on_reload(hook.clone());
    let url = wss_url(&router, 1);
    let mut before = join_with(&url, trusting(&old_ca)).await.unwrap();

    // The certificate files are replaced (same paths) and the origins change.
    dir.server_tls(&new_ca.server());
    config.extra_listeners[0].allowed_origins = vec!["https://app.example.com".into()];
    config.max_connections = 5; // needs a restart: reported, not applied
    let report = router.reload(config.clone()).unwrap();
    assert_eq!(report.needs_restart, ["max_connections"]);
    let listeners = report.applied.iter().filter(|part| part.starts_with("listener")).count();
    assert_eq!(listeners, 2, "{:?}", report.applied);
    assert_eq!(hook.applied.load(Ordering::SeqCst), 1);
    assert!(join_with(&url, trusting(&old_ca)).await.is_err(), "new connections get the new certificate");
    let after = join_with(&url, trusting(&new_ca)).await.unwrap();
    before.register("com.example.kept", Dict::new()).await.expect("an open session keeps its connection");

    // A certificate that does not load, or a hook that refuses: nothing changes.
    let mut broken = config.clone();
    broken.extra_listeners[0].tls.as_mut().unwrap().key = dir.path().join("missing.key");
    assert!(router.reload(broken).is_err());
    let mut refused = config.clone();
    refused.realms.push(roundhouse::RealmConfig::named("refuse.me"));
    dir.server_tls(&old_ca.server());
    assert!(router.reload(refused).unwrap_err().to_string().contains("refused by the hook"));
    assert_eq!(hook.applied.load(Ordering::SeqCst), 1);
    let still = join_with(&url, trusting(&new_ca)).await.unwrap();

    for client in [before, after, still] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
    router.shutdown().await;
}

/// Opens wss:// with `tls` and joins the test realm.
async fn join_with(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Client, ClientError> {
    let mut client = Client::connect_tls(url, Serializer::Json, tls).await?;
    client.hello(REALM).await?;
    Ok(client)
}

// ---------------------------------------------------------------------------------------------
// The `tls` authentication method and methods offered over TLS only

const SECURE: &str = "secure";

/// A realm without anonymous sessions: `alice` by certificate CN, `bob` by fingerprint (his
/// certificate's CN is listed for nobody), and `joe` with a ticket offered over TLS only.
fn secure_realm(bob_fingerprint: &str) -> roundhouse::RealmConfig {
    let joe = roundhouse::auth::ticket::pbkdf2_phc(b"joe's ticket", 1000).unwrap();
    let text = format!(
        r#"
name = "{SECURE}"
anonymous = false
require_tls = ["ticket"]

[[principal]]
authid = "alice"
role = "device"
tls_cn = "alice"

[[principal]]
authid = "bob"
role = "device"
tls_fingerprint = "{bob_fingerprint}"

[[principal]]
authid = "joe"
role = "device"
ticket = "{joe}"

[[role]]
name = "device"
permissions = [{{ uri = "com.device.", match = "prefix", allow = ["call", "register"] }}]
"#
    );
    toml::from_str(&text).unwrap()
}

/// Sends HELLO to the secure realm offering `methods` (as `authid`) and returns the reply.
async fn hello_secure(client: &mut Client, methods: &[&str], authid: Option<&str>) -> roundhouse::wire::Message {
    use roundhouse::wire::Message;
    let roles = ["caller", "callee"].iter().fold(Dict::new(), |d, r| d.with(r, Dict::new()));
    let mut details = Dict::new()
        .with("roles", roles)
        .with("authmethods", Value::List(methods.iter().map(|m| Value::from(*m)).collect()));
    if let Some(authid) = authid {
        details.insert("authid", authid);
    }
    client.send(&Message::Hello { realm: SECURE.into(), details }).await.unwrap();
    client.recv().await.unwrap()
}

fn welcomed_as(reply: &roundhouse::wire::Message) -> (String, String, String) {
    match reply {
        roundhouse::wire::Message::Welcome { details, .. } => {
            let field = |k: &str| details.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            (field("authid"), field("authrole"), field("authmethod"))
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

fn aborted_with(reply: &roundhouse::wire::Message) -> String {
    match reply {
        roundhouse::wire::Message::Abort { reason, details } => {
            assert!(details.get("message").and_then(Value::as_str).is_some_and(|m| !m.is_empty()), "a reason");
            reason.clone()
        }
        other => panic!("expected ABORT, got {other:?}"),
    }
}

#[tokio::test]
async fn a_verified_client_certificate_logs_in_with_the_tls_method() {
    let (ca, clients, dir) = (Ca::new("test CA"), Ca::new("clients CA"), Dir::temp());
    let bob = clients.issue("bob's laptop", &[]);
    let fingerprint = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bob.der).as_ref());
    // With colons, as openssl prints it.
    let fingerprint =
        fingerprint.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":");
    let tls = dir.mtls(&ca.server(), &clients, ClientAuth::Optional);
    let router = router_with(|c| {
        c.realms.push(secure_realm(&fingerprint));
        c.extra_listeners.push(tls_listener(tls));
    })
    .await;
    let (url, addr) = (wss_url(&router, 1), router.listener_addrs()[1]);

    // By CN over wss, and by fingerprint over RawSocket-TLS: WELCOME at once, no CHALLENGE.
    let mut alice =
        Client::connect_tls(&url, Serializer::Json, presenting(&ca, &clients.issue("alice", &[]))).await.unwrap();
    let reply = hello_secure(&mut alice, &["tls"], None).await;
    assert_eq!(welcomed_as(&reply), ("alice".into(), "device".into(), "tls".into()));
    alice.register("com.device.alice", Dict::new()).await.unwrap();
    let mut bob_client =
        Client::connect_rawsocket_tls(addr, "127.0.0.1", presenting(&ca, &bob), Serializer::Cbor, 15).await.unwrap();
    let reply = hello_secure(&mut bob_client, &["tls"], Some("bob")).await;
    assert_eq!(welcomed_as(&reply), ("bob".into(), "device".into(), "tls".into()));

    // Unknown certificate, no certificate, a certificate claiming another authid, plain TCP.
    let mut carol =
        Client::connect_tls(&url, Serializer::Json, presenting(&ca, &clients.issue("carol", &[]))).await.unwrap();
    assert_eq!(aborted_with(&hello_secure(&mut carol, &["tls"], None).await), "wamp.error.no_such_principal");
    let mut nobody = Client::connect_tls(&url, Serializer::Json, trusting(&ca)).await.unwrap();
    assert_eq!(aborted_with(&hello_secure(&mut nobody, &["tls"], None).await), "wamp.error.no_such_principal");
    let mut claims =
        Client::connect_tls(&url, Serializer::Json, presenting(&ca, &clients.issue("alice", &[]))).await.unwrap();
    assert_eq!(
        aborted_with(&hello_secure(&mut claims, &["tls"], Some("bob")).await),
        "wamp.error.authentication_denied"
    );
    let mut plain = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    assert_eq!(aborted_with(&hello_secure(&mut plain, &["tls"], None).await), "wamp.error.no_matching_auth_method");

    // The refusals disturbed nobody.
    let mut caller = Client::connect_tls(&url, Serializer::Json, presenting(&ca, &bob)).await.unwrap();
    welcomed_as(&hello_secure(&mut caller, &["tls"], None).await);
    let alice_serves = tokio::spawn(roundhouse::client::echo_invocations(alice));
    let result = caller.call("com.device.alice", vec![Value::from("hi")]).await.unwrap();
    assert_eq!(common::first_arg(&result), "hi");
    alice_serves.abort();
    for client in [bob_client, caller] {
        say_goodbye(client).await;
    }
    drop((carol, nobody, claims, plain));
    assert_empty(&router).await;
    router.shutdown().await;
}

#[tokio::test]
async fn a_ticket_required_over_tls_is_refused_on_plain_tcp_and_taken_over_tls() {
    let (ca, dir) = (Ca::new("test CA"), Dir::temp());
    let router = router_with(|c| {
        c.realms.push(secure_realm(&"00".repeat(32)));
        c.extra_listeners.push(tls_listener(dir.server_tls(&ca.server())));
    })
    .await;
    let login = |mut client: Client| async move {
        let reply = hello_secure(&mut client, &["ticket"], Some("joe")).await;
        if !matches!(reply, roundhouse::wire::Message::Challenge { .. }) {
            return (client, reply);
        }
        let answer = roundhouse::wire::Message::Authenticate { signature: "joe's ticket".into(), extra: Dict::new() };
        client.send(&answer).await.unwrap();
        let reply = client.recv().await.unwrap();
        (client, reply)
    };
    let (plain, reply) = login(Client::connect(&router.url(), Serializer::Json).await.unwrap()).await;
    assert_eq!(aborted_with(&reply), "wamp.error.no_matching_auth_method");
    let (secure, reply) =
        login(Client::connect_tls(&wss_url(&router, 1), Serializer::Json, trusting(&ca)).await.unwrap()).await;
    assert_eq!(welcomed_as(&reply), ("joe".into(), "device".into(), "ticket".into()));
    say_goodbye(secure).await;
    drop(plain);
    assert_empty(&router).await;
    router.shutdown().await;
}

#[tokio::test]
async fn a_cryptosign_login_bound_to_its_tls_connection_cannot_be_replayed_on_another() {
    use ed25519_dalek::{Signer, SigningKey};
    use roundhouse::wire::Message;
    let (ca, dir) = (Ca::new("test CA"), Dir::temp());
    let key = SigningKey::from_bytes(&[5; 32]);
    let mut realm = secure_realm(&"00".repeat(32));
    let mut signer: roundhouse::auth::config::PrincipalConfig =
        toml::from_str("authid = \"signer\"\nrole = \"device\"").unwrap();
    signer.cryptosign = vec![hex::encode(key.verifying_key().to_bytes())];
    realm.principals.push(signer);
    let router = router_with(|c| {
        c.realms.push(realm);
        c.extra_listeners.push(tls_listener(dir.server_tls(&ca.server())));
    })
    .await;
    let url = wss_url(&router, 1);
    // HELLO asking for tls-exporter; the CHALLENGE's bytes, and the connection's binding as the
    // router computed it (the client's side of TLS computes the same bytes).
    let start = |binding: &'static str| {
        let (router, url, ca, key) = (&router, url.clone(), &ca, &key);
        async move {
            let mut client = Client::connect_tls(&url, Serializer::Json, trusting(ca)).await.unwrap();
            let roles = ["caller"].iter().fold(Dict::new(), |d, r| d.with(r, Dict::new()));
            let extra = Dict::new()
                .with("pubkey", hex::encode(key.verifying_key().to_bytes()))
                .with("channel_binding", binding);
            let details = Dict::new()
                .with("roles", roles)
                .with("authmethods", Value::List(vec![Value::from("cryptosign")]))
                .with("authextra", extra);
            client.send(&Message::Hello { realm: SECURE.into(), details }).await.unwrap();
            let Message::Challenge { extra, .. } = client.recv().await.unwrap() else { panic!("CHALLENGE expected") };
            let challenge = hex::decode(extra.get("challenge").and_then(Value::as_str).unwrap()).unwrap();
            let exporters: Vec<[u8; 32]> = router
                .shared()
                .sessions
                .iter()
                .filter(|s| s.identity().is_none())
                .filter_map(|s| s.tls().and_then(|t| t.channel_binding))
                .collect();
            (client, extra.get("channel_binding").cloned(), challenge, exporters)
        }
    };
    let signature = |challenge: &[u8], binding: &[u8; 32]| {
        let message: Vec<u8> = challenge.iter().zip(binding.iter()).map(|(c, b)| c ^ b).collect();
        hex::encode(key.sign(&message).to_bytes())
    };

    let (mut first, kind, challenge, exporters) = start("tls-exporter").await;
    assert_eq!(kind, Some(Value::from("tls-exporter")));
    let [exporter] = exporters[..] else { panic!("one unjoined TLS session: {exporters:?}") };
    let bound = signature(&challenge, &exporter);
    // The bare challenge's signature is refused on a bound login.
    let (mut bare, _, challenge2, exporters2) = start("tls-exporter").await;
    let other = *exporters2.iter().find(|e| **e != exporter).expect("every connection has its own binding");
    let unbound = hex::encode(key.sign(&challenge2).to_bytes());
    bare.send(&Message::Authenticate { signature: unbound, extra: Dict::new() }).await.unwrap();
    assert_eq!(aborted_with(&bare.recv().await.unwrap()), "wamp.error.authentication_denied");
    // A signature bound to another connection is refused.
    let (mut replay, _, challenge3, _) = start("tls-exporter").await;
    let relayed = signature(&challenge3, &other);
    replay.send(&Message::Authenticate { signature: relayed, extra: Dict::new() }).await.unwrap();
    assert_eq!(aborted_with(&replay.recv().await.unwrap()), "wamp.error.authentication_denied");
    // The right binding: WELCOME.
    first.send(&Message::Authenticate { signature: bound, extra: Dict::new() }).await.unwrap();
    assert_eq!(welcomed_as(&first.recv().await.unwrap()), ("signer".into(), "device".into(), "cryptosign".into()));
    // A binding the router does not offer, or none asked: unbound, as before.
    let (unbound_client, kind, _, _) = start("tls-unique").await;
    assert_eq!(kind, Some(Value::Null));
    say_goodbye(first).await;
    drop((bare, replay, unbound_client));
    assert_empty(&router).await;
    router.shutdown().await;
}
