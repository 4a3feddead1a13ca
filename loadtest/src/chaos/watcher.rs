//! The router's own word on who has left: a session subscribed to `wamp.session.on_leave`, which
//! the router publishes once it has taken a session out of every registration. A callee that
//! drops its connection or freezes asks to be told when it is gone: until then calls may still be
//! routed to it (and end canceled), and if it never comes the router kept a dead peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roundhouse::wire::{Dict, Message, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use super::ledger::Ledger;
use super::peer::{Endpoints, Peer, Transport};

/// Who is waiting to hear that a session left.
#[derive(Default)]
pub struct Watcher {
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

impl Watcher {
    /// Tells the receiver when session `session` has left. Ask before the departure begins.
    pub fn expect(&self, session: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("watcher lock").insert(session, tx);
        rx
    }

    fn left(&self, session: u64) {
        if let Some(tx) = self.waiting.lock().expect("watcher lock").remove(&session) {
            let _ = tx.send(());
        }
    }
}

/// A running watcher and what stops it.
pub struct Watching {
    /// Whom to ask.
    pub watcher: Arc<Watcher>,
    done: CancellationToken,
    task: JoinHandle<()>,
}

impl Watching {
    /// Joins and subscribes; a failure is a violation, and nobody will be told (callees then wait
    /// out the grace period).
    pub async fn start(endpoints: &Endpoints, ledger: Arc<Ledger>, grace: Duration) -> Watching {
        let watcher = Arc::new(Watcher::default());
        let done = CancellationToken::new();
        let peer = match subscribed(endpoints, grace).await {
            Ok(peer) => Some(peer),
            Err(e) => {
                ledger.violation("on_leave watcher", e);
                None
            }
        };
        let task = tokio::spawn(watch(peer, watcher.clone(), ledger, done.clone(), grace));
        Watching { watcher, done, task }
    }

    /// Stops watching and leaves.
    pub async fn stop(self) {
        self.done.cancel();
        let _ = self.task.await;
    }
}

async fn subscribed(endpoints: &Endpoints, grace: Duration) -> Result<Peer, String> {
    let mut peer = Peer::join(endpoints, Transport::ALL[1], &[], grace).await?;
    let request = peer.tx.request_id();
    let subscribe = Message::Subscribe { request, options: Dict::new(), topic: "wamp.session.on_leave".into() };
    peer.send(&subscribe).await.map_err(|e| format!("SUBSCRIBE: {}", crate::wamp::describe(&e)))?;
    match timeout_at(Instant::now() + grace, peer.recv()).await {
        Ok(Ok(Message::Subscribed { request: r, .. })) if r == request => Ok(peer),
        other => Err(format!("SUBSCRIBE wamp.session.on_leave: {other:?}")),
    }
}

async fn watch(
    peer: Option<Peer>,
    watcher: Arc<Watcher>,
    ledger: Arc<Ledger>,
    done: CancellationToken,
    grace: Duration,
) {
    let Some(mut peer) = peer else { return done.cancelled().await };
    loop {
        let message = tokio::select! {
            message = peer.recv() => message,
            _ = done.cancelled() => break,
        };
        match message {
            Ok(Message::Event { payload, .. }) => {
                match payload.to_values().ok().and_then(|(args, _)| args.first().and_then(Value::as_u64)) {
                    Some(session) => watcher.left(session),
                    None => ledger.violation("on_leave watcher", "an on_leave event without a session id"),
                }
            }
            Ok(other) => return ledger.violation("on_leave watcher", format!("unexpected {:?}", other.message_type())),
            Err(e) => {
                return ledger.violation("on_leave watcher", format!("lost its session: {}", crate::wamp::describe(&e)))
            }
        }
    }
    if let Err(e) = peer.leave(grace, |_| {}).await {
        ledger.violation("on_leave watcher", format!("could not leave: {e}"));
    }
}
