//! Test support: an in-process router on a loopback port and scripted callees.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roundhouse::client::{Client, ClientError};
use roundhouse::router::RouterShared;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};
use roundhouse::{Census, RealmConfig, Router, RouterConfig, RouterHandle};

pub mod nats;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub const REALM: &str = "realm1";

/// A router on 127.0.0.1 with an ephemeral port and test-friendly timeouts, with two session
/// workers whatever the machine, so sessions of a test run on different threads.
pub async fn router() -> RouterHandle {
    router_with(|_| {}).await
}

/// Like [`router`], with the config adjusted first.
pub async fn router_with(adjust: impl FnOnce(&mut RouterConfig)) -> RouterHandle {
    let mut config = RouterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        realms: vec![RealmConfig::named(REALM), RealmConfig::named("realm2")],
        handshake_timeout_ms: 2_000,
        shutdown_timeout_ms: 1_000,
        worker_threads: 2,
        ..RouterConfig::default()
    };
    adjust(&mut config);
    Router::start(config).await.expect("router starts")
}

/// Lets realm1's anonymous sessions use the meta API's admin procedures (kill, remove_callee,
/// remove_subscriber), which the default role does not grant.
pub fn grant_admin(config: &mut RouterConfig) {
    use roundhouse::auth::config::{Action, RuleConfig, RuleMatch};
    let realm = config.realms.iter_mut().find(|r| r.name == REALM).expect("realm1");
    let rule =
        RuleConfig { uri: "wamp.".into(), policy: RuleMatch::Prefix, allow: vec![Action::Call], disclose: vec![] };
    realm.roles[0].permissions.push(rule);
}

/// Waits (up to 5 s) until the router holds nothing: no session, call, invocation, timer,
/// registration or subscription. Every client must have been dropped or closed before.
pub async fn assert_empty(router: &RouterHandle) {
    wait_empty(|| router.census()).await;
}

/// [`assert_empty`] for a router that was shut down, whose handle [`RouterHandle::shutdown`]
/// consumed: `shared` is [`RouterHandle::shared`], kept from before.
pub async fn assert_empty_after_shutdown(shared: &RouterShared) {
    wait_empty(|| shared.census()).await;
}

async fn wait_empty(census_now: impl Fn() -> Census) {
    let mut census = census_now();
    for _ in 0..500 {
        if census.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        census = census_now();
    }
    panic!("the router is not empty after every client left: {census:?}");
}

/// Closes a client cleanly: GOODBYE, and the router's GOODBYE in answer.
pub async fn say_goodbye(client: Client) {
    match client.goodbye().await {
        Ok(Message::Goodbye { reason, .. }) => assert_eq!(reason, "wamp.close.goodbye_and_out"),
        other => panic!("expected the router's GOODBYE, got {other:?}"),
    }
}

/// A joined client of `realm1`.
pub async fn join(router: &RouterHandle, serializer: Serializer) -> Client {
    Client::join(&router.url(), REALM, serializer).await.expect("joins realm1")
}

pub fn rule(name: &str) -> Dict {
    Dict::new().with("invoke", name)
}

/// The first positional argument of a payload, as a string.
pub fn first_arg(payload: &Payload) -> String {
    let (args, _) = payload.to_values().expect("payload decodes");
    match args.first() {
        Some(Value::Str(s)) => s.clone(),
        other => panic!("expected a string argument, got {other:?}"),
    }
}

/// Sends a CALL without arguments and without waiting for its answer; returns its request id.
pub async fn send_call(client: &mut Client, procedure: &str) -> u64 {
    let request = client.request_id();
    let call = Message::Call { request, options: Dict::new(), procedure: procedure.into(), payload: Payload::Empty };
    client.send(&call).await.expect("CALL sent");
    request
}

/// Calls `procedure` `n` times in sequence; returns the name each callee answered with.
pub async fn call_names(caller: &mut Client, procedure: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        let payload = caller.call(procedure, vec![]).await.expect("call succeeds");
        names.push(first_arg(&payload));
    }
    names
}

/// Asserts `reply` is an ERROR for a request of type `kind` with URI `uri`.
pub fn assert_error(reply: &Message, kind: MessageType, uri: &str) {
    match reply {
        Message::Error { request_type, error, .. } => {
            assert_eq!(*request_type, kind as u64, "error answers {kind:?}: {reply:?}");
            assert_eq!(error, uri, "{reply:?}");
        }
        other => panic!("expected ERROR {uri}, got {other:?}"),
    }
}

/// Unwraps the router's unexpected reply from a client helper's error.
pub fn unexpected(result: Result<impl std::fmt::Debug, ClientError>) -> Message {
    match result {
        Err(ClientError::Unexpected(message)) => *message,
        other => panic!("expected an unexpected reply, got {other:?}"),
    }
}

/// How a scripted callee answers invocations.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// YIELD with the callee's name as the only argument.
    Name,
    /// YIELD the caller's arguments back unchanged.
    Echo,
    /// Never answer.
    Hold,
}

/// How a scripted callee leaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Leave {
    /// UNREGISTER, and wait for UNREGISTERED (the session stays).
    Unregister,
    /// GOODBYE, and wait for the router's GOODBYE.
    Goodbye,
    /// Drop the TCP connection without a word.
    Drop,
}

enum Command {
    Leave(Leave, oneshot::Sender<()>),
}

/// A callee session that registers one procedure and answers INVOCATIONs in its own task.
pub struct Callee {
    pub name: String,
    pub session: u64,
    pub registration: u64,
    /// Every INVOCATION received, in order.
    pub invocations: Arc<Mutex<Vec<Message>>>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Callee {
    /// Joins and registers `procedure` with `options`, answering per `behavior`.
    pub async fn start(
        router: &RouterHandle,
        serializer: Serializer,
        name: &str,
        procedure: &str,
        options: Dict,
        behavior: Behavior,
    ) -> Callee {
        let mut client = join(router, serializer).await;
        let session = client.session_id();
        let registration = client.register(procedure, options).await.expect("registers");
        let invocations = Arc::new(Mutex::new(Vec::new()));
        let (commands, rx) = mpsc::channel(4);
        let task = tokio::spawn(serve(client, name.to_owned(), behavior, invocations.clone(), rx, registration));
        Callee { name: name.to_owned(), session, registration, invocations, commands, task }
    }

    /// Leaves as told and waits until the router confirmed it (or the socket is gone).
    pub async fn leave(&self, how: Leave) {
        let (done, wait) = oneshot::channel();
        self.commands.send(Command::Leave(how, done)).await.expect("callee task alive");
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("leave confirmed").ok();
    }

    pub fn invocation_count(&self) -> usize {
        self.invocations.lock().len()
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn serve(
    client: Client,
    name: String,
    behavior: Behavior,
    invocations: Arc<Mutex<Vec<Message>>>,
    mut commands: mpsc::Receiver<Command>,
    registration: u64,
) {
    let (mut tx, mut rx) = client.split();
    let mut leaving: Option<(Leave, oneshot::Sender<()>)> = None;
    loop {
        let message = tokio::select! {
            command = commands.recv(), if leaving.is_none() => {
                let Some(Command::Leave(how, done)) = command else { return };
                match how {
                    Leave::Unregister => {
                        let request = tx.request_id();
                        tx.send(&Message::Unregister { request, registration }).await.unwrap();
                    }
                    Leave::Goodbye => {
                        let goodbye = Message::Goodbye { details: Dict::new(), reason: "wamp.close.close_realm".into() };
                        tx.send(&goodbye).await.unwrap();
                    }
                    Leave::Drop => {
                        drop(tx);
                        drop(rx);
                        let _ = done.send(());
                        return;
                    }
                }
                leaving = Some((how, done));
                continue;
            }
            message = rx.recv_forever() => message,
        };
        let Ok(message) = message else { return };
        match message {
            Message::Invocation { request, ref payload, .. } => {
                let answer = payload.clone();
                invocations.lock().push(message);
                let payload = match behavior {
                    Behavior::Hold => continue,
                    Behavior::Name => Payload::args(vec![Value::from(name.as_str())]),
                    Behavior::Echo => answer,
                };
                let _ = tx.send(&Message::Yield { request, options: Dict::new(), payload }).await;
            }
            Message::Unregistered { .. } | Message::Goodbye { .. } => {
                if let Some((how, done)) = leaving.take() {
                    let _ = done.send(());
                    if how == Leave::Goodbye {
                        return;
                    }
                    // Unregistered: any later INVOCATION would be a router bug; record it.
                    invocations
                        .lock()
                        .push(Message::Abort { details: Dict::new(), reason: "marker: UNREGISTERED received".into() });
                }
            }
            _ => {}
        }
    }
}

/// Asserts no INVOCATION followed the UNREGISTERED marker in a callee's record.
pub fn assert_nothing_after_unregistered(callee: &Callee) {
    let record = callee.invocations.lock();
    if let Some(marker) = record.iter().position(|m| matches!(m, Message::Abort { .. })) {
        let late = record[marker + 1..].iter().filter(|m| matches!(m, Message::Invocation { .. })).count();
        assert_eq!(late, 0, "{} got {late} INVOCATIONs after UNREGISTERED", callee.name);
    }
}

/// Every serializer, for tests that run over each.
pub const SERIALIZERS: [Serializer; 3] = [Serializer::Json, Serializer::MsgPack, Serializer::Cbor];

/// A realm named `name` with two ticket principals, "joe" (ticket "joe-ticket") and "ann"
/// ("ann-ticket"), in the role "user", and anonymous sessions: both may call and register under
/// `com.app.`.
pub fn ticket_realm(name: &str) -> RealmConfig {
    use roundhouse::auth::ticket;
    let joe = ticket::pbkdf2_phc(b"joe-ticket", 1000).unwrap();
    let ann = ticket::pbkdf2_phc(b"ann-ticket", 1000).unwrap();
    let text = format!(
        r#"
name = "{name}"
anonymous = true

[[principal]]
authid = "joe"
role = "user"
ticket = "{joe}"

[[principal]]
authid = "ann"
role = "user"
ticket = "{ann}"

[[role]]
name = "user"
permissions = [{{ uri = "com.app.", match = "prefix", allow = ["call", "register"] }}]

[[role]]
name = "anonymous"
permissions = [{{ uri = "com.app.", match = "prefix", allow = ["call", "register"] }}]
"#
    );
    toml::from_str(&text).expect("the test realm parses")
}
