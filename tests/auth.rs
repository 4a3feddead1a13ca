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

/// Asserts WELCOME with this identity from the config; returns the session id.
fn assert_welcome(reply: &Message, authid: &str, authrole: &str, authmethod: &str) -> u64 {
    assert_welcome_by(reply, authid, authrole, authmethod, "static")
}

/// Asserts WELCOME with this identity from `authprovider`; returns the session id.
fn assert_welcome_by(reply: &Message, authid: &str, authrole: &str, authmethod: &str, authprovider: &str) -> u64 {
    match reply {
        Message::Welcome { details, session } => {
            let field = |k: &str| details.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            assert_eq!(field("authid"), authid, "{details:?}");
            assert_eq!(field("authrole"), authrole);
            assert_eq!(field("authmethod"), authmethod);
            assert_eq!(field("authprovider"), authprovider);
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

// ---------------------------------------------------------------------------------------------
// The dynamic authenticator

const BACKEND: &str = "auth.backend";
const AUTHENTICATOR: &str = "com.auth.authenticate";
const SCRAM_PASSWORD: &[u8] = b"scram pencil";

/// The test realm, asking `com.auth.authenticate` in realm `auth.backend` for principals it does
/// not list; the backend realm admits anonymous sessions, which may register anything.
fn dynamic_router_config(c: &mut roundhouse::RouterConfig) {
    let mut realm = auth_realm();
    realm.authenticator = Some(roundhouse::auth::config::AuthenticatorConfig {
        procedure: AUTHENTICATOR.into(),
        realm: Some(BACKEND.into()),
        methods: roundhouse::auth::config::DYNAMIC_METHODS.iter().map(|m| (*m).to_owned()).collect(),
    });
    c.realms.push(realm);
    c.realms.push(RealmConfig::named(BACKEND));
}

/// What the authenticator was asked: (realm, authid, authmethod, details).
type Asked = std::sync::Arc<parking_lot::Mutex<Vec<(String, Value, String, Dict)>>>;

/// How the test authenticator answers an authid.
fn principal_for(authid: Option<&str>, authmethod: &str, details: &Dict) -> Result<Value, &'static str> {
    let signer = hex::encode(SigningKey::from_bytes(&OTHER_KEY).verifying_key().to_bytes());
    let user = |d: Dict| Ok(Value::Dict(d.with("role", "user")));
    match (authid, authmethod) {
        (Some("dyn-joe"), "ticket") => {
            if details.get("ticket").and_then(Value::as_str) == Some("dyn-ticket") {
                user(Dict::new().with("authextra", Dict::new().with("from", "db")))
            } else {
                Err("wamp.error.authentication_denied")
            }
        }
        (Some("dyn-cra"), "wampcra") => user(Dict::new().with("secret", "dyn-cra-secret")),
        (Some("dyn-salty"), "wampcra") => user(
            Dict::new()
                .with("derived_key", wampcra::derive_key(b"dyn-salty-pw", "pepper", 1000, 32))
                .with("salt", "pepper")
                .with("iterations", 1000u64)
                .with("keylen", 32u64),
        ),
        (None, "cryptosign") => user(Dict::new().with("authid", "dyn-signer").with("pubkey", signer)),
        (Some("dyn-scram"), "wamp-scram") => {
            let c = roundhouse::auth::scram::derive(
                SCRAM_PASSWORD,
                b"0123456789abcdef",
                roundhouse::auth::scram::Kdf::Pbkdf2,
                1000,
            )
            .unwrap();
            user(
                Dict::new()
                    .with("kdf", c.kdf)
                    .with("salt", c.salt)
                    .with("iterations", u64::from(c.iterations))
                    .with("stored_key", c.stored_key)
                    .with("server_key", c.server_key),
            )
        }
        (Some("renamed"), "ticket") => Ok(Value::Dict(Dict::new().with("role", "admin").with("authid", "db-user-7"))),
        (Some("bad-role"), _) => Ok(Value::Dict(Dict::new().with("role", "no-such-role"))),
        (Some("malformed"), _) => Ok(Value::UInt(42)),
        (Some("no-key"), "wampcra") => user(Dict::new()),
        (Some("refused"), _) => Ok(Value::Dict(Dict::new().with("role", "user").with("allow", false))),
        (Some("db-down"), _) => Err("com.example.database_unavailable"),
        _ => Err("wamp.error.no_such_principal"),
    }
}

/// Joins the backend realm, registers the authenticator and answers each INVOCATION with
/// [`principal_for`]; `hold` authids get no answer at all. Records what it was asked.
async fn start_authenticator(
    router: &RouterHandle,
    hold: &'static [&'static str],
) -> (Asked, tokio::task::JoinHandle<()>) {
    let client = Client::join(&router.url(), BACKEND, Serializer::MsgPack).await.unwrap();
    serve_authenticator(client, hold).await
}

/// Registers the authenticator on `client` and serves it (see [`start_authenticator`]).
async fn serve_authenticator(
    mut client: Client,
    hold: &'static [&'static str],
) -> (Asked, tokio::task::JoinHandle<()>) {
    client.register(AUTHENTICATOR, Dict::new()).await.unwrap();
    let asked: Asked = Default::default();
    let record = asked.clone();
    let task = tokio::spawn(async move {
        let (mut tx, mut rx) = client.split();
        while let Ok(message) = rx.recv_forever().await {
            let Message::Invocation { request, payload, .. } = message else { continue };
            let (args, _) = payload.to_values().unwrap();
            let [Value::Str(realm), authid, Value::Str(method), Value::Dict(details)] = &args[..] else {
                panic!("the authenticator is called with (realm, authid, authmethod, details): {args:?}")
            };
            record.lock().push((realm.clone(), authid.clone(), method.clone(), details.clone()));
            if authid.as_str().is_some_and(|a| hold.contains(&a)) {
                continue;
            }
            let answer = match principal_for(authid.as_str(), method, details) {
                Ok(value) => Message::Yield { request, options: Dict::new(), payload: Payload::args(vec![value]) },
                Err(error) => Message::Error {
                    request_type: MessageType::Invocation as u64,
                    request,
                    details: Dict::new(),
                    error: error.into(),
                    payload: Payload::args(vec![Value::from("said by the authenticator")]),
                },
            };
            if tx.send(&answer).await.is_err() {
                return;
            }
        }
    });
    (asked, task)
}

#[tokio::test]
async fn a_dynamic_authenticator_supplies_principals_for_every_method() {
    let router = router_with(dynamic_router_config).await;
    let (asked, authenticator) = start_authenticator(&router, &[]).await;

    // ticket: the authenticator checks the ticket itself, and may add authextra.
    let (dyn_joe, reply) = ticket_login(&router, "dyn-joe", "dyn-ticket").await;
    let session = assert_welcome_by(&reply, "dyn-joe", "user", "ticket", "dynamic");
    let Message::Welcome { details, .. } = &reply else { unreachable!() };
    assert_eq!(details.get("authextra"), Some(&Value::Dict(Dict::new().with("from", "db"))));
    {
        let asked = asked.lock();
        let (realm, authid, method, details) = asked.last().unwrap();
        assert_eq!((realm.as_str(), authid.as_str(), method.as_str()), (AUTH, Some("dyn-joe"), "ticket"));
        assert_eq!(details.get("ticket").and_then(Value::as_str), Some("dyn-ticket"));
        assert_eq!(details.get("authmethod").and_then(Value::as_str), Some("ticket"));
        assert_eq!(details.get("session").and_then(Value::as_u64), Some(session));
        let transport = details.get("transport").and_then(Value::as_dict).unwrap();
        assert_eq!(transport.get("type").and_then(Value::as_str), Some("websocket"));
        assert_eq!(transport.get("tls").and_then(Value::as_bool), Some(false));
        assert!(transport.get("peer").and_then(Value::as_str).is_some_and(|p| p.starts_with("127.0.0.1:")));
    }
    let (_, reply) = ticket_login(&router, "dyn-joe", "wrong").await;
    assert_abort(&reply, "wamp.error.authentication_denied");

    // The authenticator may rename the principal.
    let (renamed, reply) = ticket_login(&router, "renamed", "anything").await;
    assert_welcome_by(&reply, "db-user-7", "admin", "ticket", "dynamic");

    // wampcra, plain and salted: the authenticator returns the secret or the derived key.
    let mut cra = hello(&router, AUTH, &["wampcra"], Some("dyn-cra"), Dict::new()).await;
    let text = challenge(&mut cra, "wampcra").await.get("challenge").and_then(Value::as_str).unwrap().to_owned();
    let fields: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(fields["authprovider"], "dynamic");
    let reply = authenticate(&mut cra, &wampcra::sign(b"dyn-cra-secret", &text)).await;
    assert_welcome_by(&reply, "dyn-cra", "user", "wampcra", "dynamic");
    let mut salty = hello(&router, AUTH, &["wampcra"], Some("dyn-salty"), Dict::new()).await;
    let extra = challenge(&mut salty, "wampcra").await;
    assert_eq!(extra.get("salt").and_then(Value::as_str), Some("pepper"));
    let key = wampcra::derive_key(b"dyn-salty-pw", "pepper", 1000, 32);
    let reply = authenticate(
        &mut salty,
        &wampcra::sign(key.as_bytes(), extra.get("challenge").and_then(Value::as_str).unwrap()),
    )
    .await;
    assert_welcome_by(&reply, "dyn-salty", "user", "wampcra", "dynamic");

    // cryptosign without an authid: the authenticator names the principal and its key.
    let key = SigningKey::from_bytes(&OTHER_KEY);
    let mut signed = hello(
        &router,
        AUTH,
        &["cryptosign"],
        None,
        Dict::new().with("pubkey", hex::encode(key.verifying_key().to_bytes())),
    )
    .await;
    let extra = challenge(&mut signed, "cryptosign").await;
    let bytes = hex::decode(extra.get("challenge").and_then(Value::as_str).unwrap()).unwrap();
    let reply = authenticate(&mut signed, &hex::encode(key.sign(&bytes).to_bytes())).await;
    assert_welcome_by(&reply, "dyn-signer", "user", "cryptosign", "dynamic");
    // A key the authenticator's principal does not hold.
    let stranger = SigningKey::from_bytes(&[3; 32]);
    let mut client = hello(
        &router,
        AUTH,
        &["cryptosign"],
        None,
        Dict::new().with("pubkey", hex::encode(stranger.verifying_key().to_bytes())),
    )
    .await;
    assert_abort(&client.recv().await.unwrap(), "wamp.error.no_such_principal");

    // wamp-scram with the stored keys the authenticator returns; the verifier proves the router.
    let (scram, verifier) = scram_login(&router, "dyn-scram", SCRAM_PASSWORD).await;
    assert_welcome_by(&scram.1, "dyn-scram", "user", "wamp-scram", "dynamic");
    assert!(verifier.is_some_and(|v| !v.is_empty()));

    // Principals in the config are found first: the authenticator is not asked about them.
    let before = asked.lock().len();
    let (joe, reply) = ticket_login(&router, "joe", "secret!!!").await;
    assert_welcome(&reply, "joe", "user", "ticket");
    assert_eq!(asked.lock().len(), before);

    let (dyn_joe_again, _) = ticket_login(&router, "dyn-joe", "dyn-ticket").await;
    for client in [dyn_joe, renamed, cra, salty, signed, scram.0, joe, dyn_joe_again] {
        say_goodbye(client).await;
    }
    drop(client);
    authenticator.abort();
    assert_empty(&router).await;
}

/// Logs in with wamp-scram (PBKDF2 or Argon2id, as the CHALLENGE says): the client and WELCOME
/// (or ABORT), and WELCOME's verifier.
async fn scram_login(router: &RouterHandle, authid: &str, password: &[u8]) -> ((Client, Message), Option<String>) {
    let client_nonce = "Y2xpZW50LW5vbmNlLTEyMw==";
    let mut client = hello(router, AUTH, &["wamp-scram"], Some(authid), Dict::new().with("nonce", client_nonce)).await;
    let extra = challenge(&mut client, "wamp-scram").await;
    let nonce = extra.get("nonce").and_then(Value::as_str).unwrap().to_owned();
    assert!(nonce.starts_with(client_nonce) && nonce.len() > client_nonce.len());
    let proof = roundhouse::auth::scram::client_proof(password, authid, client_nonce, &extra).unwrap();
    let extra = Dict::new().with("nonce", nonce.as_str()).with("channel_binding", Value::Null);
    client.send(&Message::Authenticate { signature: proof, extra }).await.unwrap();
    let reply = client.recv().await.unwrap();
    let verifier = match &reply {
        Message::Welcome { details, .. } => details
            .get("authextra")
            .and_then(Value::as_dict)
            .and_then(|e| e.get("verifier"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    ((client, reply), verifier)
}

#[tokio::test]
async fn every_dynamic_refusal_aborts_with_its_uri_and_disturbs_nobody() {
    let router = router_with(|c| {
        dynamic_router_config(c);
        c.handshake_timeout_ms = 1_500;
    })
    .await;
    let (mut witness, echo) = bystander(&router).await;

    // Nobody registered the authenticator yet.
    let (_, reply) = ticket_login(&router, "dyn-joe", "dyn-ticket").await;
    assert_abort(&reply, "wamp.error.authentication_failed");
    let mut cra = hello(&router, AUTH, &["wampcra"], Some("dyn-cra"), Dict::new()).await;
    assert_abort(&cra.recv().await.unwrap(), "wamp.error.authentication_failed");

    let (_, authenticator) = start_authenticator(&router, &["silent"]).await;
    for (authid, uri) in [
        ("ghost", "wamp.error.no_such_principal"),
        ("refused", "wamp.error.authentication_denied"),
        ("bad-role", "wamp.error.authentication_failed"),
        ("malformed", "wamp.error.authentication_failed"),
        ("db-down", "wamp.error.authentication_failed"),
        ("no-key", "wamp.error.authentication_failed"),
    ] {
        let mut client = hello(&router, AUTH, &["wampcra"], Some(authid), Dict::new()).await;
        let reply = client.recv().await.unwrap();
        assert_abort(&reply, uri);
        if authid == "ghost" {
            let Message::Abort { details, .. } = &reply else { unreachable!() };
            assert_eq!(details.get("message").and_then(Value::as_str), Some("said by the authenticator"));
        }
    }
    // An authenticator that never answers: ABORT at the handshake deadline, no sooner.
    let started = std::time::Instant::now();
    let mut silent = hello(&router, AUTH, &["wampcra"], Some("silent"), Dict::new()).await;
    silent.rx.set_timeout(Duration::from_secs(5));
    assert_abort(&silent.recv().await.unwrap(), "wamp.error.authentication_failed");
    assert!(started.elapsed() >= Duration::from_millis(1_000), "{:?}", started.elapsed());

    still_serves(&mut witness).await;
    authenticator.abort();
    say_goodbye(witness).await;
    echo.abort();
    drop((cra, silent));
    assert_empty(&router).await;
}

/// A session of `root` (role `admin`, which may register anything) in the test realm.
async fn root(router: &RouterHandle) -> Client {
    let (client, reply) = ticket_login(router, "root", "rootpw").await;
    assert_welcome(&reply, "root", "admin", "ticket");
    client
}

#[tokio::test]
async fn an_authenticator_leaving_mid_handshake_fails_the_login_at_once() {
    // The authenticator lives in the realm it answers for; only a role allowed to register its
    // URI can provide it.
    let router = router_with(|c| {
        dynamic_router_config(c);
        let realm = c.realms.iter_mut().find(|r| r.name == AUTH).unwrap();
        realm.authenticator.as_mut().unwrap().realm = None;
        c.handshake_timeout_ms = 10_000;
    })
    .await;
    let (mut witness, echo) = bystander(&router).await;
    let refused = witness.register(AUTHENTICATOR, Dict::new()).await;
    assert!(
        matches!(&refused, Err(ClientError::Unexpected(m)) if matches!(&**m, Message::Error { error, .. } if error == "wamp.error.not_authorized")),
        "role user may not register the authenticator: {refused:?}"
    );
    let (asked, authenticator) = serve_authenticator(root(&router).await, &["dyn-joe"]).await;
    let mut waiting = hello(&router, AUTH, &["ticket"], Some("dyn-joe"), Dict::new()).await;
    challenge(&mut waiting, "ticket").await;
    waiting.send(&Message::Authenticate { signature: "dyn-ticket".into(), extra: Dict::new() }).await.unwrap();
    let asked_in_time = tokio::time::timeout(Duration::from_secs(5), async {
        while asked.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    asked_in_time.await.expect("the router asks the authenticator");
    let started = std::time::Instant::now();
    authenticator.abort(); // its connection drops with the INVOCATION unanswered
    let reply = waiting.recv().await.unwrap();
    assert_abort(&reply, "wamp.error.authentication_failed");
    let Message::Abort { details, .. } = &reply else { unreachable!() };
    assert!(details.get("message").and_then(Value::as_str).unwrap().contains("left"), "{details:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "not at the deadline: {:?}", started.elapsed());

    // A new authenticator takes over; the witness never noticed.
    let (_, authenticator) = serve_authenticator(root(&router).await, &[]).await;
    let (dyn_joe, reply) = ticket_login(&router, "dyn-joe", "dyn-ticket").await;
    assert_welcome_by(&reply, "dyn-joe", "user", "ticket", "dynamic");
    still_serves(&mut witness).await;
    for client in [dyn_joe, witness] {
        say_goodbye(client).await;
    }
    authenticator.abort();
    echo.abort();
    drop(waiting);
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_reload_keeps_dynamic_sessions_while_the_realm_still_asks_its_authenticator() {
    let router = router_with(dynamic_router_config).await;
    let (_, authenticator) = start_authenticator(&router, &[]).await;
    let (mut dyn_joe, reply) = ticket_login(&router, "dyn-joe", "dyn-ticket").await;
    assert_welcome_by(&reply, "dyn-joe", "user", "ticket", "dynamic");
    let mut next = router.shared().config.clone();
    let applied = roundhouse::auth::apply_config(router.shared(), &next).unwrap();
    assert!(applied.removed.is_empty());
    // The authenticator no longer answers for ticket: its ticket sessions are closed.
    let realm = next.realms.iter_mut().find(|r| r.name == AUTH).unwrap();
    realm.authenticator.as_mut().unwrap().methods = vec!["wampcra".into()];
    let applied = roundhouse::auth::apply_config(router.shared(), &next).unwrap();
    let removed: Vec<_> = applied.removed.iter().map(|s| s.identity().unwrap().authid.clone()).collect();
    assert_eq!(removed, ["dyn-joe"]);
    applied.close_removed();
    drop(applied);
    assert!(
        matches!(dyn_joe.recv().await.unwrap(), Message::Goodbye { reason, .. } if reason == "wamp.close.close_realm")
    );
    let mut again = hello(&router, AUTH, &["ticket"], Some("dyn-joe"), Dict::new()).await;
    assert_abort(&again.recv().await.unwrap(), "wamp.error.no_such_principal");
    // An authenticator in a realm the config does not have is refused, and nothing changes.
    let realm = next.realms.iter_mut().find(|r| r.name == AUTH).unwrap();
    realm.authenticator.as_mut().unwrap().realm = Some("no.such.realm".into());
    assert!(roundhouse::auth::apply_config(router.shared(), &next).is_err());
    authenticator.abort();
    drop((dyn_joe, again));
    assert_empty(&router).await;
}

// ---------------------------------------------------------------------------------------------
// wamp-scram and require_tls

/// The test realm with a static SCRAM principal (PBKDF2 and Argon2id) and ticket over TLS only.
fn scram_realm(require_tls: &[&str]) -> RealmConfig {
    use roundhouse::auth::scram::{derive, Kdf};
    let mut realm = auth_realm();
    let principals = [
        ("scram-pbkdf2", derive(SCRAM_PASSWORD, b"pbkdf2 salt 16by", Kdf::Pbkdf2, 1000).unwrap()),
        ("scram-argon", derive(SCRAM_PASSWORD, b"argon salt 16byt", Kdf::Argon2id13 { memory: 256 }, 2).unwrap()),
    ];
    for (authid, credential) in principals {
        let mut principal: roundhouse::auth::config::PrincipalConfig =
            toml::from_str(&format!("authid = \"{authid}\"\nrole = \"user\"")).unwrap();
        principal.scram = Some(credential);
        realm.principals.push(principal);
    }
    realm.require_tls = require_tls.iter().map(|m| (*m).to_owned()).collect();
    realm
}

#[tokio::test]
async fn wamp_scram_logs_in_with_stored_keys_and_refuses_a_wrong_password() {
    let router = router_with(|c| c.realms.push(scram_realm(&[]))).await;
    let mut welcomed = Vec::new();
    for authid in ["scram-pbkdf2", "scram-argon"] {
        let ((client, reply), verifier) = scram_login(&router, authid, SCRAM_PASSWORD).await;
        assert_welcome(&reply, authid, "user", "wamp-scram");
        assert!(verifier.is_some());
        welcomed.push(client);
        let ((_, reply), _) = scram_login(&router, authid, b"not the password").await;
        assert_abort(&reply, "wamp.error.authentication_denied");
    }
    // A nonce that is not the CHALLENGE's, and a HELLO without a nonce.
    let mut client =
        hello(&router, AUTH, &["wamp-scram"], Some("scram-pbkdf2"), Dict::new().with("nonce", "bm9uY2U=")).await;
    let extra = challenge(&mut client, "wamp-scram").await;
    let proof = roundhouse::auth::scram::client_proof(SCRAM_PASSWORD, "scram-pbkdf2", "bm9uY2U=", &extra).unwrap();
    client
        .send(&Message::Authenticate { signature: proof, extra: Dict::new().with("nonce", "bm9uY2U=") })
        .await
        .unwrap();
    assert_abort(&client.recv().await.unwrap(), "wamp.error.authentication_denied");
    let mut bare = hello(&router, AUTH, &["wamp-scram"], Some("scram-pbkdf2"), Dict::new()).await;
    assert_abort(&bare.recv().await.unwrap(), "wamp.error.authentication_failed");
    for client in welcomed {
        say_goodbye(client).await;
    }
    drop((client, bare));
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_method_required_over_tls_is_not_offered_over_plain_tcp() {
    let router = router_with(|c| c.realms.push(scram_realm(&["ticket"]))).await;
    // ticket only: nothing else matches.
    let mut client = hello(&router, AUTH, &["ticket"], Some("joe"), Dict::new()).await;
    let reply = client.recv().await.unwrap();
    assert_abort(&reply, "wamp.error.no_matching_auth_method");
    let Message::Abort { details, .. } = &reply else { unreachable!() };
    assert!(details.get("message").and_then(Value::as_str).unwrap().contains("ticket only over TLS"), "{details:?}");
    // ticket, then wampcra: the next method is taken.
    let mut cra = hello(&router, AUTH, &["ticket", "wampcra"], Some("cra"), Dict::new()).await;
    let text = challenge(&mut cra, "wampcra").await.get("challenge").and_then(Value::as_str).unwrap().to_owned();
    assert_welcome(&authenticate(&mut cra, &wampcra::sign(b"L3L1YUE8Txlw", &text)).await, "cra", "user", "wampcra");
    say_goodbye(cra).await;
    drop(client);
    assert_empty(&router).await;
}
