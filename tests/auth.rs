//! Authentication and authorization through real sockets: every method's success, every refusal
//! path with its spec URI (and nothing else disturbed), permissions per action, disclosure, the
//! admin meta procedures under the default config, and a security reload.

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::{Signer, SigningKey};
use roundhouse::auth::{ticket, wampcra};
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};
use roundhouse::{RealmConfig, RouterHandle};

const AUTH: &str = "auth";
const SIGNER_KEY: [u8; 32] = [7; 32];
const OTHER_KEY: [u8; 32] = [9; 32];

/// The realm under test: principals for each method, a `user` role with a deny subtree, an
/// `admin` role granted the meta API.
fn auth_realm() -> RealmConfig {
    let joe = ticket::pbkdf2_phc(b"secret!!!", 1000).unwrap();
    let root = ticket::pbkdf2_phc(b"rootpw", 1000).unwrap();
    let salted = wampcra::derive_key(b"saltypw", "salt123", 1000, 32);
    let signer = hex::encode(SigningKey::from_bytes(&SIGNER_KEY).verifying_key().to_bytes());
    let text = format!(
        r#"
name = "{AUTH}"
anonymous = false

[[principal]]
authid = "joe"
role = "user"
ticket = "{joe}"

[[principal]]
authid = "cra"
role = "user"
wampcra = {{ secret = "L3L1YUE8Txlw" }}

[[principal]]
authid = "salty"
role = "user"
wampcra = {{ derived_key = "{salted}", salt = "salt123", iterations = 1000, keylen = 32 }}

[[principal]]
authid = "signer"
role = "user"
cryptosign = ["{signer}"]

[[principal]]
authid = "root"
role = "admin"
ticket = "{root}"

[[role]]
name = "user"
permissions = [
  {{ uri = "com.app.", match = "prefix", allow = ["call", "register", "publish", "subscribe"] }},
  {{ uri = "com.app.secret.", match = "prefix", allow = [] }},
  {{ uri = "com.app.calls_only", allow = ["call"] }},
  {{ uri = "com.app.disclosed", allow = ["call", "register"], disclose = ["caller"] }},
]

[[role]]
name = "admin"
permissions = [
  {{ uri = "", match = "prefix", allow = ["call", "register", "publish", "subscribe"] }},
  {{ uri = "wamp.", match = "prefix", allow = ["call"] }},
]
"#
    );
    toml::from_str(&text).expect("the test realm parses")
}

async fn auth_router() -> RouterHandle {
    router_with(|c| c.realms.push(auth_realm())).await
}

fn roles() -> Dict {
    ["caller", "callee", "publisher", "subscriber"].iter().fold(Dict::new(), |d, r| d.with(r, Dict::new()))
}

/// Opens a connection and sends HELLO for `realm` offering `methods` as `authid`.
async fn hello(router: &RouterHandle, realm: &str, methods: &[&str], authid: Option<&str>, extra: Dict) -> Client {
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    let mut details = Dict::new()
        .with("roles", roles())
        .with("authmethods", Value::List(methods.iter().map(|m| Value::from(*m)).collect()))
        .with("authextra", extra);
    if let Some(authid) = authid {
        details.insert("authid", authid);
    }
    client.send(&Message::Hello { realm: realm.into(), details }).await.unwrap();
    client
}

async fn challenge(client: &mut Client, method: &str) -> Dict {
    match client.recv().await.unwrap() {
        Message::Challenge { auth_method, extra } => {
            assert_eq!(auth_method, method);
            extra
        }
        other => panic!("expected CHALLENGE, got {other:?}"),
    }
}

async fn authenticate(client: &mut Client, signature: &str) -> Message {
    client.send(&Message::Authenticate { signature: signature.into(), extra: Dict::new() }).await.unwrap();
    client.recv().await.unwrap()
}

/// Asserts WELCOME with this identity; returns the session id.
fn assert_welcome(reply: &Message, authid: &str, authrole: &str, authmethod: &str) -> u64 {
    match reply {
        Message::Welcome { details, session } => {
            let field = |k: &str| details.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            assert_eq!(field("authid"), authid);
            assert_eq!(field("authrole"), authrole);
            assert_eq!(field("authmethod"), authmethod);
            assert_eq!(field("authprovider"), "static");
            *session
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

fn assert_abort(reply: &Message, uri: &str) {
    match reply {
        Message::Abort { reason, details } => {
            assert_eq!(reason, uri, "{details:?}");
            assert!(details.get("message").and_then(Value::as_str).is_some_and(|m| !m.is_empty()), "a reason");
        }
        other => panic!("expected ABORT {uri}, got {other:?}"),
    }
}

async fn ticket_login(router: &RouterHandle, authid: &str, ticket: &str) -> (Client, Message) {
    let mut client = hello(router, AUTH, &["ticket"], Some(authid), Dict::new()).await;
    challenge(&mut client, "ticket").await;
    let reply = authenticate(&mut client, ticket).await;
    (client, reply)
}

/// A session of `signer` signed in with cryptosign, answering in the 96-byte form.
async fn signer(router: &RouterHandle) -> Client {
    signer_with_id(router).await.0
}

async fn signer_with_id(router: &RouterHandle) -> (Client, u64) {
    let key = SigningKey::from_bytes(&SIGNER_KEY);
    let extra = Dict::new().with("pubkey", hex::encode(key.verifying_key().to_bytes()));
    let mut client = hello(router, AUTH, &["cryptosign"], None, extra).await;
    let extra = challenge(&mut client, "cryptosign").await;
    let bytes = hex::decode(extra.get("challenge").and_then(Value::as_str).unwrap()).unwrap();
    let signature = format!("{}{}", hex::encode(key.sign(&bytes).to_bytes()), hex::encode(&bytes));
    let id = assert_welcome(&authenticate(&mut client, &signature).await, "signer", "user", "cryptosign");
    (client, id)
}

/// A joined `user` session that checks the realm still serves it: a call round trip.
async fn still_serves(bystander: &mut Client) {
    let payload = bystander.call("com.app.echo", vec![Value::from("ping")]).await.expect("the bystander's call");
    assert_eq!(first_arg(&payload), "ping");
}

/// A caller, and a callee of `com.app.echo` answering in its own task (abort it to end it).
async fn bystander(router: &RouterHandle) -> (Client, tokio::task::JoinHandle<()>) {
    let mut callee = signer(router).await;
    callee.register("com.app.echo", Dict::new()).await.unwrap();
    let task = tokio::spawn(roundhouse::client::echo_invocations(callee));
    let (caller, reply) = ticket_login(router, "joe", "secret!!!").await;
    assert_welcome(&reply, "joe", "user", "ticket");
    (caller, task)
}

#[tokio::test]
async fn each_method_welcomes_its_principal() {
    let router = auth_router().await;
    let (joe, reply) = ticket_login(&router, "joe", "secret!!!").await;
    assert_welcome(&reply, "joe", "user", "ticket");

    let mut cra = hello(&router, AUTH, &["wampcra"], Some("cra"), Dict::new()).await;
    let extra = challenge(&mut cra, "wampcra").await;
    let text = extra.get("challenge").and_then(Value::as_str).unwrap().to_owned();
    let fields: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(fields["authid"], "cra");
    assert_eq!(fields["authmethod"], "wampcra");
    assert!(extra.get("salt").is_none());
    assert_welcome(&authenticate(&mut cra, &wampcra::sign(b"L3L1YUE8Txlw", &text)).await, "cra", "user", "wampcra");

    let mut salty = hello(&router, AUTH, &["wampcra"], Some("salty"), Dict::new()).await;
    let extra = challenge(&mut salty, "wampcra").await;
    let text = extra.get("challenge").and_then(Value::as_str).unwrap();
    let salt = extra.get("salt").and_then(Value::as_str).unwrap();
    let iterations = extra.get("iterations").and_then(Value::as_u64).unwrap() as u32;
    let keylen = extra.get("keylen").and_then(Value::as_u64).unwrap() as usize;
    let key = wampcra::derive_key(b"saltypw", salt, iterations, keylen);
    assert_welcome(&authenticate(&mut salty, &wampcra::sign(key.as_bytes(), text)).await, "salty", "user", "wampcra");

    let signed96 = signer(&router).await;
    // The 64-byte form (Autobahn|JS), with the authid named.
    let key = SigningKey::from_bytes(&SIGNER_KEY);
    let extra = Dict::new().with("pubkey", hex::encode(key.verifying_key().to_bytes()));
    let mut signed64 = hello(&router, AUTH, &["cryptosign"], Some("signer"), extra).await;
    let extra = challenge(&mut signed64, "cryptosign").await;
    assert_eq!(extra.get("channel_binding"), Some(&Value::Null));
    let bytes = hex::decode(extra.get("challenge").and_then(Value::as_str).unwrap()).unwrap();
    let reply = authenticate(&mut signed64, &hex::encode(key.sign(&bytes).to_bytes())).await;
    assert_welcome(&reply, "signer", "user", "cryptosign");

    // The method is the first offered one the principal has, in the client's order.
    let mut both = hello(&router, AUTH, &["cryptosign", "wampcra", "ticket"], Some("joe"), Dict::new()).await;
    challenge(&mut both, "ticket").await;
    drop(both);

    // /metrics counts the joined sessions by the method each authenticated with.
    let text = roundhouse::metrics::exposition::render(router.shared());
    for (method, n) in [("ticket", 1), ("wampcra", 2), ("cryptosign", 2)] {
        let series = format!(
            "roundhouse_sessions{{realm=\"{AUTH}\",transport=\"websocket\",serializer=\"json\",authmethod=\"{method}\"}} {n}"
        );
        assert!(text.lines().any(|line| line == series), "no line {series} in\n{text}");
    }

    for client in [joe, cra, salty, signed96, signed64] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn every_refusal_aborts_with_the_specs_uri_and_disturbs_nobody() {
    let router = router_with(|c| {
        c.realms.push(auth_realm());
        c.handshake_timeout_ms = 1_000;
    })
    .await;
    let (mut witness, echo) = bystander(&router).await;

    let (_, reply) = ticket_login(&router, "joe", "wrong").await;
    assert_abort(&reply, "wamp.error.authentication_denied");

    let mut unknown = hello(&router, AUTH, &["ticket"], Some("nobody"), Dict::new()).await;
    assert_abort(&unknown.recv().await.unwrap(), "wamp.error.no_such_principal");

    let mut anonymous = hello(&router, AUTH, &["anonymous"], None, Dict::new()).await;
    assert_abort(&anonymous.recv().await.unwrap(), "wamp.error.no_matching_auth_method");
    let mut scram = hello(&router, AUTH, &["wamp-scram"], Some("joe"), Dict::new()).await;
    assert_abort(&scram.recv().await.unwrap(), "wamp.error.no_matching_auth_method");

    let mut cra = hello(&router, AUTH, &["wampcra"], Some("cra"), Dict::new()).await;
    let text = challenge(&mut cra, "wampcra").await.get("challenge").and_then(Value::as_str).unwrap().to_owned();
    let reply = authenticate(&mut cra, &wampcra::sign(b"not the secret", &text)).await;
    assert_abort(&reply, "wamp.error.authentication_denied");

    // cryptosign: another key's signature, a signature replayed from an earlier challenge, a
    // truncated one, and a 96-byte answer whose signed message is not the challenge.
    let key = SigningKey::from_bytes(&SIGNER_KEY);
    let pubkey = Dict::new().with("pubkey", hex::encode(key.verifying_key().to_bytes()));
    let mut first = None;
    for attempt in ["other key", "replayed", "truncated", "wrong message"] {
        let mut client = hello(&router, AUTH, &["cryptosign"], None, pubkey.clone()).await;
        let extra = challenge(&mut client, "cryptosign").await;
        let bytes = hex::decode(extra.get("challenge").and_then(Value::as_str).unwrap()).unwrap();
        let good = format!("{}{}", hex::encode(key.sign(&bytes).to_bytes()), hex::encode(&bytes));
        let signature = match attempt {
            "other key" => hex::encode(SigningKey::from_bytes(&OTHER_KEY).sign(&bytes).to_bytes()),
            "replayed" => first.clone().unwrap(),
            "truncated" => good[..120].to_owned(),
            _ => format!("{}{}", &good[..128], "00".repeat(32)),
        };
        first.get_or_insert(good);
        assert_abort(&authenticate(&mut client, &signature).await, "wamp.error.authentication_denied");
    }
    let other = SigningKey::from_bytes(&OTHER_KEY);
    let stranger = Dict::new().with("pubkey", hex::encode(other.verifying_key().to_bytes()));
    let mut client = hello(&router, AUTH, &["cryptosign"], None, stranger).await;
    assert_abort(&client.recv().await.unwrap(), "wamp.error.no_such_principal");

    // AUTHENTICATE without a CHALLENGE: before HELLO, and after an anonymous WELCOME.
    let mut early = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    assert_abort(&authenticate(&mut early, "x").await, "wamp.error.protocol_violation");
    let mut late = join(&router, Serializer::Json).await;
    assert_abort(&authenticate(&mut late, "x").await, "wamp.error.protocol_violation");

    // A CHALLENGE never answered: closed at the handshake deadline.
    let mut silent = hello(&router, AUTH, &["ticket"], Some("joe"), Dict::new()).await;
    challenge(&mut silent, "ticket").await;
    silent.rx.set_timeout(Duration::from_secs(5));
    assert_abort(&silent.recv().await.unwrap(), "wamp.error.authentication_failed");

    still_serves(&mut witness).await;
    say_goodbye(witness).await;
    echo.abort();
    drop((unknown, anonymous, scram, cra, client, early, late, silent));
    assert_empty(&router).await;
}

#[tokio::test]
async fn each_action_is_authorized_by_the_most_specific_rule() {
    let router = auth_router().await;
    let (mut user, _) = ticket_login(&router, "joe", "secret!!!").await;
    let mut callee = signer(&router).await;

    let denied =
        |result: Result<u64, ClientError>, kind| assert_error(&unexpected(result), kind, "wamp.error.not_authorized");
    denied(callee.register("org.other.p", Dict::new()).await, MessageType::Register);
    denied(callee.register("com.app.secret.p", Dict::new()).await, MessageType::Register);
    denied(callee.register("com.app.calls_only", Dict::new()).await, MessageType::Register);
    denied(user.subscribe("com.app.secret.t", Dict::new()).await, MessageType::Subscribe);
    let reply = unexpected(user.call("com.app.secret.q", vec![]).await);
    assert_error(&reply, MessageType::Call, "wamp.error.not_authorized");
    let request = user.request_id();
    let options = Dict::new().with("acknowledge", true);
    user.send(&Message::Publish { request, options, topic: "org.other.t".into(), payload: Payload::Empty })
        .await
        .unwrap();
    assert_error(&user.recv().await.unwrap(), MessageType::Publish, "wamp.error.not_authorized");

    // What the rules allow still works, and the role's disclose rule names the caller.
    callee.register("com.app.disclosed", Dict::new()).await.unwrap();
    let request = user.request_id();
    let call =
        Message::Call { request, options: Dict::new(), procedure: "com.app.disclosed".into(), payload: Payload::Empty };
    user.send(&call).await.unwrap();
    match callee.recv().await.unwrap() {
        Message::Invocation { request: invocation, details, .. } => {
            assert_eq!(details.get("caller_authid").and_then(Value::as_str), Some("joe"));
            assert_eq!(details.get("caller_authrole").and_then(Value::as_str), Some("user"));
            assert!(details.get("caller").is_some());
            callee
                .send(&Message::Yield { request: invocation, options: Dict::new(), payload: Payload::Empty })
                .await
                .unwrap();
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(user.recv().await.unwrap(), Message::Result { request: r, .. } if r == request));
    user.subscribe("com.app.news", Dict::new()).await.unwrap();
    let reply = unexpected(user.call("wamp.session.kill_all", vec![]).await);
    assert_error(&reply, MessageType::Call, "wamp.error.not_authorized");

    say_goodbye(user).await;
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn by_default_an_anonymous_session_cannot_kill_or_remove_anyone() {
    let router = router().await;
    let mut victim = join(&router, Serializer::Json).await;
    let registration = victim.register("com.example.p", Dict::new()).await.unwrap();
    let subscription = victim.subscribe("com.example.t", Dict::new()).await.unwrap();
    let mut anonymous = join(&router, Serializer::Json).await;
    let id = Value::UInt(victim.session_id());
    let attempts = [
        ("wamp.session.kill", vec![id.clone()]),
        ("wamp.session.kill_by_authid", vec![Value::from(format!("anonymous-{}", victim.session_id()))]),
        ("wamp.session.kill_by_authrole", vec![Value::from("anonymous")]),
        ("wamp.session.kill_all", vec![]),
        ("wamp.registration.remove_callee", vec![Value::UInt(registration), id.clone()]),
        ("wamp.subscription.remove_subscriber", vec![Value::UInt(subscription), id.clone()]),
    ];
    for (procedure, args) in attempts {
        let reply = unexpected(anonymous.call(procedure, args).await);
        assert_error(&reply, MessageType::Call, "wamp.error.not_authorized");
    }
    // The meta API's reads stay open, and the victim is untouched.
    assert!(anonymous.call("wamp.session.list", vec![]).await.is_ok());
    let callee = tokio::spawn(async move {
        match victim.recv().await.unwrap() {
            Message::Invocation { request, .. } => {
                let answer = Message::Yield { request, options: Dict::new(), payload: Payload::Empty };
                victim.send(&answer).await.unwrap();
            }
            other => panic!("{other:?}"),
        }
        victim
    });
    anonymous.call("com.example.p", vec![]).await.expect("the victim still serves its procedure");
    let victim = callee.await.unwrap();
    say_goodbye(victim).await;
    say_goodbye(anonymous).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn an_admin_principal_kills_and_removes() {
    let router = auth_router().await;
    let (mut admin, reply) = ticket_login(&router, "root", "rootpw").await;
    assert_welcome(&reply, "root", "admin", "ticket");
    let (mut victim, id) = signer_with_id(&router).await;
    let subscription = victim.subscribe("com.app.t", Dict::new()).await.unwrap();
    admin.call("wamp.subscription.remove_subscriber", vec![Value::UInt(subscription), Value::UInt(id)]).await.unwrap();
    let kill = admin.call("wamp.session.kill_by_authid", vec![Value::from("signer")]).await.unwrap();
    assert_eq!(kill.to_values().unwrap().0, vec![Value::UInt(1)]);
    assert!(matches!(victim.recv().await.unwrap(), Message::Goodbye { reason, .. } if reason == "wamp.close.killed"));
    drop(victim);
    say_goodbye(admin).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_reload_closes_the_sessions_whose_principal_is_gone() {
    let router = auth_router().await;
    let (mut joe, _) = ticket_login(&router, "joe", "secret!!!").await;
    let mut signer_session = signer(&router).await;
    let mut next = router.shared().config.clone();
    next.realms.retain(|r| r.name != "realm2");
    let auth = next.realms.iter_mut().find(|r| r.name == AUTH).unwrap();
    auth.principals.retain(|p| p.authid != "joe");
    let mut broken = next.clone();
    broken.realms[1].principals[0].role = "nobody".into();
    assert!(roundhouse::auth::apply_config(router.shared(), &broken).is_err(), "an invalid config changes nothing");
    let (probe, reply) = ticket_login(&router, "joe", "secret!!!").await;
    assert_welcome(&reply, "joe", "user", "ticket");
    say_goodbye(probe).await;

    let applied = roundhouse::auth::apply_config(router.shared(), &next).unwrap();
    let removed: Vec<_> = applied.removed.iter().map(|s| s.identity().unwrap().authid.clone()).collect();
    assert_eq!(removed, ["joe"]);
    assert_eq!(applied.needs_restart.len(), 1, "realm2 is gone only after a restart: {:?}", applied.needs_restart);
    applied.close_removed();
    drop(applied);
    assert!(matches!(joe.recv().await.unwrap(), Message::Goodbye { reason, .. } if reason == "wamp.close.close_realm"));
    let mut again = hello(&router, AUTH, &["ticket"], Some("joe"), Dict::new()).await;
    assert_abort(&again.recv().await.unwrap(), "wamp.error.no_such_principal");
    drop(again);
    still_serves_registration(&mut signer_session).await;
    drop(joe);
    say_goodbye(signer_session).await;
    assert_empty(&router).await;
}

/// The session can still register (it kept its role through the reload).
async fn still_serves_registration(client: &mut Client) {
    let id = client.register("com.app.after_reload", Dict::new()).await.expect("REGISTER after the reload");
    client.unregister(id).await.unwrap();
}

#[test]
fn the_readme_example_config_loads() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("```toml\n# roundhouse-secure.toml").expect("README has the security example");
    let text = &readme[start + 8..];
    let text = &text[..text.find("```").unwrap()];
    let config: roundhouse::RouterConfig = toml::from_str(text).expect("the example parses");
    config.validate().expect("the example is valid");
    assert!(config.realms.iter().any(|r| !r.principals.is_empty()));
}
