//! `idle` mode: open `--sessions` joined sessions that then do nothing, and report the router's
//! resident memory growth per session (VmRSS from `/proc/<pid>/status` before opening and after).
//!
//! The router's memory can only be told apart from the clients' when it is another process: the
//! embedded router runs as a child process in this mode, and an external one needs --router-pid.
//! RSS is read once more after every session has said GOODBYE, to show what the router gives back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use roundhouse::client::Client;
use roundhouse::wire::{Message, Serializer};
use serde_json::{json, Value as Json};
use tokio::time::Instant;

use crate::cpu::vm_rss;
use crate::progress::{Counters, Progress};
use crate::report::{errors_line, round2, thousands};
use crate::wamp;

/// How long memory is left to settle before it is read.
const SETTLE: Duration = Duration::from_secs(1);
/// An opener gives up after this many failures in a row.
const MAX_FAILURES_IN_A_ROW: u32 = 50;

/// Everything an idle run needs.
pub struct IdleSettings {
    /// Router URL.
    pub url: String,
    /// What the router is.
    pub router: String,
    /// The router's process, if known.
    pub router_pid: Option<u32>,
    /// Realm.
    pub realm: String,
    /// Serializer.
    pub serializer: Serializer,
    /// Sessions to open.
    pub sessions: usize,
    /// Concurrent openers.
    pub openers: usize,
}

/// The outcome of an idle run.
pub struct IdleResult {
    router: String,
    wanted: usize,
    opened: usize,
    open_time: Duration,
    router_rss: Option<[u64; 3]>,
    loader_rss: [u64; 2],
    /// Sessions the router closed while they were idle.
    pub dropped: usize,
    /// Failed opens by cause.
    pub errors: BTreeMap<String, u64>,
}

/// Opens the sessions, measures, closes them.
pub async fn run(s: &IdleSettings) -> Result<IdleResult, String> {
    let rss = |pid: Option<u32>| pid.and_then(|p| vm_rss(&p.to_string()).ok());
    // One session first: an unreachable router is an error, not a count.
    let (mut tx, mut rx) = wamp::join(&s.url, &s.realm, s.serializer).await?.split();
    wamp::leave(&mut tx, &mut rx).await;
    tokio::time::sleep(SETTLE).await;
    let router_before = rss(s.router_pid);
    let loader_before = vm_rss("self").unwrap_or(0);

    let counters = Arc::new(Counters::default());
    let progress = Progress::start("idle".into(), "sessions", counters.clone(), Duration::ZERO, Duration::ZERO);
    let claimed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..s.openers.min(s.sessions))
        .map(|_| {
            let (url, realm, serializer) = (s.url.clone(), s.realm.clone(), s.serializer);
            let (claimed, counters, wanted) = (claimed.clone(), counters.clone(), s.sessions);
            tokio::spawn(async move {
                let mut clients = Vec::new();
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let mut in_a_row = 0;
                while claimed.fetch_add(1, Ordering::Relaxed) < wanted && in_a_row < MAX_FAILURES_IN_A_ROW {
                    match wamp::join(&url, &realm, serializer).await {
                        Ok(client) => {
                            clients.push(client);
                            counters.add(1, 0);
                            in_a_row = 0;
                        }
                        Err(cause) => {
                            *errors.entry(cause).or_default() += 1;
                            counters.add(0, 1);
                            in_a_row += 1;
                        }
                    }
                }
                (clients, errors)
            })
        })
        .collect();
    let mut clients: Vec<Client> = Vec::with_capacity(s.sessions);
    let mut errors = BTreeMap::new();
    for task in tasks {
        let (mut opened, failed) = task.await.map_err(|e| format!("an opener task failed: {e}"))?;
        clients.append(&mut opened);
        for (cause, n) in failed {
            *errors.entry(cause).or_default() += n;
        }
    }
    let open_time = started.elapsed();
    drop(progress);
    tokio::time::sleep(SETTLE).await;
    let router_open = rss(s.router_pid);
    let loader_open = vm_rss("self").unwrap_or(0);

    // A session the router closed has its GOODBYE, ABORT or close waiting to be read.
    let mut dropped = 0;
    for client in &mut clients {
        match client.rx.recv_forever().now_or_never() {
            None => {}
            Some(Ok(Message::Goodbye { .. } | Message::Abort { .. })) | Some(Err(_)) => dropped += 1,
            Some(Ok(_)) => {}
        }
    }
    let opened = clients.len();
    close_all(clients, s.openers).await;
    tokio::time::sleep(SETTLE).await;
    let router_closed = rss(s.router_pid);
    Ok(IdleResult {
        router: s.router.clone(),
        wanted: s.sessions,
        opened,
        open_time,
        router_rss: match (router_before, router_open, router_closed) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        },
        loader_rss: [loader_before, loader_open],
        dropped,
        errors,
    })
}

/// Says GOODBYE on every session, `concurrency` at a time.
async fn close_all(clients: Vec<Client>, concurrency: usize) {
    let concurrency = concurrency.max(1);
    let mut groups: Vec<Vec<Client>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (i, client) in clients.into_iter().enumerate() {
        groups[i % concurrency].push(client);
    }
    let tasks: Vec<_> = groups
        .into_iter()
        .map(|group| {
            tokio::spawn(async move {
                for client in group {
                    let (mut tx, mut rx) = client.split();
                    wamp::leave(&mut tx, &mut rx).await;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

impl IdleResult {
    fn per_session(&self, before: u64, after: u64) -> f64 {
        (after as f64 - before as f64) / self.opened.max(1) as f64
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "── idle · {} joined sessions held open", thousands(self.wanted as u64));
        let _ = writeln!(out, "  router        {}", self.router);
        let _ = writeln!(
            out,
            "  opened        {} sessions in {:.2} s ({} sessions/s)",
            thousands(self.opened as u64),
            self.open_time.as_secs_f64(),
            thousands((self.opened as f64 / self.open_time.as_secs_f64().max(1e-9)).round() as u64)
        );
        match self.router_rss {
            Some([before, open, closed]) => {
                let _ = writeln!(
                    out,
                    "  router RSS    {:.1} KiB per idle session  ({:.1} MiB before → {:.1} MiB with the sessions → {:.1} MiB after they closed)",
                    self.per_session(before, open) / 1024.0,
                    mib(before),
                    mib(open),
                    mib(closed)
                );
            }
            None => _ = writeln!(out, "  router RSS    unknown (pass --router-pid with --url)"),
        }
        let [before, open] = self.loader_rss;
        let _ = writeln!(
            out,
            "  loader RSS    {:.1} KiB per client session (for reference)",
            self.per_session(before, open) / 1024.0
        );
        let _ = writeln!(out, "  dropped       {} sessions closed by the router while idle", self.dropped);
        let _ = writeln!(out, "  errors        {}", errors_line(&self.errors));
        out
    }

    /// The `--json` line.
    pub fn json(&self) -> Json {
        let [loader_before, loader_open] = self.loader_rss;
        json!({
            "mode": "idle",
            "router": self.router,
            "sessions": self.wanted,
            "opened": self.opened,
            "open_seconds": round2(self.open_time.as_secs_f64()),
            "router_rss_before_bytes": self.router_rss.map(|r| r[0]),
            "router_rss_open_bytes": self.router_rss.map(|r| r[1]),
            "router_rss_closed_bytes": self.router_rss.map(|r| r[2]),
            "router_rss_per_session_bytes": self.router_rss.map(|r| round2(self.per_session(r[0], r[1]))),
            "loader_rss_per_session_bytes": round2(self.per_session(loader_before, loader_open)),
            "dropped": self.dropped,
            "errors": self.errors,
            "error_count": self.errors.values().sum::<u64>(),
        })
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
