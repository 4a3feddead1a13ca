//! `/api/status`: what the status page shows, kept light however large the router is.
//!
//! Lists are top-N: the N busiest registrations (by calls per second, then calls served) and the
//! N busiest sessions, with totals beside them, and a substring filter on procedure URIs. So the
//! answer stays a few kilobytes with 10,000 sessions and 100,000 registrations; building it reads
//! each session's tables once.
//!
//! A sampler wakes once a second and records, per realm, the calls ended so far and the latency
//! buckets; the last minute of those gives the charts (calls/s, p50, p99 per second) and the
//! minute's percentiles.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::metrics::histogram;
use crate::router::RouterShared;

/// Samples kept: one a second, a minute and one more (to diff against).
const SAMPLES: usize = 61;

/// What a request asks for.
#[derive(Debug, Clone)]
pub struct Query {
    /// Registrations shown (default 25, at most 500).
    pub top: usize,
    /// Sessions shown (default 25, at most 500).
    pub sessions: usize,
    /// Only registrations whose URI contains this.
    pub filter: String,
}

impl Query {
    /// Reads `top`, `sessions` and `q` from a query string.
    pub fn parse(query: &str) -> Self {
        let mut parsed = Query { top: 25, sessions: 25, filter: String::new() };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "top" => parsed.top = value.parse().unwrap_or(25).min(500),
                "sessions" => parsed.sessions = value.parse().unwrap_or(25).min(500),
                "q" => parsed.filter = percent_decode(value),
                _ => {}
            }
        }
        parsed
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Calls served per (realm index, registration id).
type Served = HashMap<(usize, u64), u64>;

/// One second's sample of one realm.
struct Sample {
    calls: u64,
    latency: Vec<u64>,
}

/// The status page's state: the router, the sampler's ring, and the last request's
/// per-registration totals (for calls per second).
pub struct StatusState {
    router: Arc<RouterShared>,
    /// Per realm (sorted by name), the last [`SAMPLES`] seconds.
    ring: Mutex<Vec<(String, VecDeque<Sample>)>>,
    previous: Mutex<(Instant, Served)>,
}

impl StatusState {
    /// State for `router`, with no samples yet.
    pub fn new(router: Arc<RouterShared>) -> Self {
        let mut names: Vec<String> = router.realms.keys().cloned().collect();
        names.sort();
        let ring = names.into_iter().map(|n| (n, VecDeque::with_capacity(SAMPLES))).collect();
        StatusState { router, ring: Mutex::new(ring), previous: Mutex::new((Instant::now(), HashMap::new())) }
    }

    /// The router shown.
    pub fn router(&self) -> &Arc<RouterShared> {
        &self.router
    }

    fn take_sample(&self) {
        let mut ring = self.ring.lock();
        for (name, samples) in ring.iter_mut() {
            let Some(realm) = self.router.realms.get(name) else { continue };
            if samples.len() == SAMPLES {
                samples.pop_front();
            }
            samples.push_back(Sample { calls: realm.metrics.calls_total(), latency: realm.metrics.latency_merged() });
        }
    }

    /// The JSON the status page polls.
    pub fn status(&self, query: &Query) -> Value {
        let router = &self.router;
        let mut realms: Vec<_> = router.realms.values().cloned().collect();
        realms.sort_by(|a, b| a.name.cmp(&b.name));

        // The last minute, router-wide and per realm.
        let ring = self.ring.lock();
        let depth = ring.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        let mut series_calls = Vec::new();
        let mut series_p50 = Vec::new();
        let mut series_p99 = Vec::new();
        for i in 1..depth {
            let mut calls = 0u64;
            let mut buckets = vec![0u64; histogram::WIDTH];
            for (_, samples) in ring.iter() {
                if samples.len() != depth {
                    continue;
                }
                calls += samples[i].calls.saturating_sub(samples[i - 1].calls);
                for (b, (now, before)) in buckets.iter_mut().zip(samples[i].latency.iter().zip(&samples[i - 1].latency))
                {
                    *b += now.saturating_sub(*before);
                }
            }
            series_calls.push(calls);
            series_p50.push(histogram::quantile(&buckets, 0.5).map(|ns| round1(ns / 1e3)));
            series_p99.push(histogram::quantile(&buckets, 0.99).map(|ns| round1(ns / 1e3)));
        }
        let minute = |name: &str| -> (f64, Option<f64>, Option<f64>) {
            let Some((_, samples)) = ring.iter().find(|(n, _)| n == name) else { return (0.0, None, None) };
            let (Some(first), Some(last)) = (samples.front(), samples.back()) else { return (0.0, None, None) };
            let buckets: Vec<u64> =
                last.latency.iter().zip(&first.latency).map(|(a, b)| a.saturating_sub(*b)).collect();
            let recent = samples.len().saturating_sub(2);
            let per_second = last.calls.saturating_sub(samples[recent].calls) as f64;
            (
                per_second,
                histogram::quantile(&buckets, 0.5).map(|ns| round1(ns / 1e3)),
                histogram::quantile(&buckets, 0.99).map(|ns| round1(ns / 1e3)),
            )
        };

        // Sessions and what their callees serve, read once per session.
        let mut served: HashMap<(usize, u64), (u64, u64)> = HashMap::new();
        let mut members: HashMap<(usize, u64), Vec<Value>> = HashMap::new();
        let mut sessions = Vec::new();
        let mut realm_rows = Vec::new();
        for (r, realm) in realms.iter().enumerate() {
            let (mut in_flight, mut queued) = (0usize, 0usize);
            for session in realm.sessions.iter() {
                let (q, running) = session.calls.stages();
                in_flight += q + running;
                queued += q;
                let serving = session.invocations.serving();
                let mut session_served = 0u64;
                let mut session_serving = 0u64;
                for (registration, s) in &serving {
                    let entry = served.entry((r, *registration)).or_default();
                    entry.0 += s.served;
                    entry.1 += s.in_flight;
                    session_served += s.served;
                    session_serving += s.in_flight;
                    members.entry((r, *registration)).or_default().push(json!({
                        "session": session.id,
                        "served": s.served,
                        "in_flight": s.in_flight,
                    }));
                }
                let identity = session.identity();
                sessions.push((
                    session_served + (q + running) as u64,
                    json!({
                        "id": session.id,
                        "realm": realm.name,
                        "transport": session.transport().as_str(),
                        "serializer": session.serializer.subprotocol(),
                        "peer": session.peer().map(|p| p.to_string()),
                        "authid": identity.map(|i| i.authid.as_str()),
                        "authrole": identity.map(|i| i.authrole.as_str()),
                        "calls_in_flight": q + running,
                        "serving": session_serving,
                        "served": session_served,
                        "queued_bytes": session.outbox().queued_bytes(),
                    }),
                ));
            }
            let (calls_per_sec, p50, p99) = minute(&realm.name);
            realm_rows.push(json!({
                "name": realm.name,
                "sessions": realm.sessions.len(),
                "registrations": realm.dealer.registration_count(),
                "subscriptions": realm.broker.subscription_count(),
                "calls_total": realm.metrics.calls_total(),
                "calls_per_sec": calls_per_sec,
                "p50_us": p50,
                "p99_us": p99,
                "calls_in_flight": in_flight,
                "calls_queued": queued,
            }));
        }
        drop(ring);

        // Registrations: rates against the previous request, then the top N.
        let now = Instant::now();
        let mut previous = self.previous.lock();
        let elapsed = now.duration_since(previous.0).as_secs_f64().max(0.001);
        let mut rows: Vec<(f64, u64, usize, u64)> = served
            .iter()
            .map(|(&(r, id), &(calls, _))| {
                let before = previous.1.get(&(r, id)).copied().unwrap_or(calls);
                (calls.saturating_sub(before) as f64 / elapsed, calls, r, id)
            })
            .collect();
        previous.0 = now;
        previous.1 = served.iter().map(|(k, v)| (*k, v.0)).collect();
        drop(previous);
        let filter = query.filter.as_str();
        let mut total_registrations = 0usize;
        for realm in &realms {
            total_registrations += realm.dealer.registration_count();
        }
        rows.retain(|(_, _, r, id)| {
            filter.is_empty() || realms[*r].dealer.get(*id).is_some_and(|(reg, _)| reg.uri.contains(filter))
        });
        rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.3.cmp(&b.3)));
        // Registrations that served nothing yet fill the list when fewer are busy.
        if rows.len() < query.top {
            'fill: for (r, realm) in realms.iter().enumerate() {
                let mut idle = Vec::new();
                realm.dealer.registry().for_each(|reg| {
                    if idle.len() < query.top
                        && !served.contains_key(&(r, reg.id))
                        && (filter.is_empty() || reg.uri.contains(filter))
                    {
                        idle.push(reg.id);
                    }
                });
                for id in idle {
                    if rows.len() >= query.top {
                        break 'fill;
                    }
                    rows.push((0.0, 0, r, id));
                }
            }
        }
        let shown: Vec<Value> = rows
            .iter()
            .take(query.top)
            .filter_map(|&(rate, calls, r, id)| {
                let realm = &realms[r];
                let (registration, policy) = realm.dealer.get(id)?;
                let in_flight = served.get(&(r, id)).map_or(0, |s| s.1);
                let mut list = members.remove(&(r, id)).unwrap_or_default();
                let all = registration.members();
                for member in &all {
                    if !list.iter().any(|m| m["session"] == member.session.id) {
                        list.push(json!({ "session": member.session.id, "served": 0, "in_flight": 0 }));
                    }
                }
                list.retain(|m| all.iter().any(|c| m["session"] == c.session.id));
                Some(json!({
                    "realm": realm.name,
                    "id": id,
                    "uri": &*registration.uri,
                    "match": policy.name(),
                    "rule": registration.policy.as_str(),
                    "member_count": all.len(),
                    "members": list,
                    "calls": calls,
                    "calls_per_sec": round1(rate),
                    "in_flight": in_flight,
                }))
            })
            .collect();

        sessions.sort_by_key(|s| std::cmp::Reverse(s.0));
        let total_sessions = sessions.len();
        let shown_sessions: Vec<Value> = sessions.into_iter().take(query.sessions).map(|(_, v)| v).collect();
        let census = router.census();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": router.metrics.uptime().as_secs(),
            "ready": !router.shutdown.is_cancelled(),
            "totals": {
                "connections": census.sessions,
                "sessions": census.joined,
                "registrations": census.registrations,
                "subscriptions": census.subscriptions,
                "calls_in_flight": census.calls,
                "invocations_in_flight": census.invocations,
                "queued_bytes": census.queued_bytes,
            },
            "realms": realm_rows,
            "series": {
                "calls_per_sec": series_calls,
                "p50_us": series_p50,
                "p99_us": series_p99,
            },
            "registrations": { "total": total_registrations, "shown": shown },
            "sessions": { "total": total_sessions, "shown": shown_sessions },
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Takes a sample every second until `stop`.
pub async fn sample(state: Arc<StatusState>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => state.take_sample(),
        }
    }
}
