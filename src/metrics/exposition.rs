//! `/metrics`: the router's counters and tables in the Prometheus text format (0.0.4), written
//! by `prometheus-client`'s encoder from a [`Collector`] that reads everything at scrape time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{histogram, CloseCause, Direction, EventCount, OUTCOMES, REFUSALS, RULES};
use crate::router::RouterShared;
use crate::wire::{MessageType, Serializer};

/// The Content-Type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of the router, as Prometheus text.
pub fn render(shared: &Arc<RouterShared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RouterCollector(shared.clone())));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).expect("writing to a String");
    out
}

struct RouterCollector(Arc<RouterShared>);

impl std::fmt::Debug for RouterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouterCollector")
    }
}

/// Message types a router receives or sends.
const TYPES: [MessageType; 22] = [
    MessageType::Hello,
    MessageType::Welcome,
    MessageType::Abort,
    MessageType::Challenge,
    MessageType::Authenticate,
    MessageType::Goodbye,
    MessageType::Error,
    MessageType::Publish,
    MessageType::Published,
    MessageType::Subscribe,
    MessageType::Subscribed,
    MessageType::Unsubscribe,
    MessageType::Unsubscribed,
    MessageType::Event,
    MessageType::Call,
    MessageType::Cancel,
    MessageType::Result,
    MessageType::Register,
    MessageType::Registered,
    MessageType::Unregister,
    MessageType::Unregistered,
    MessageType::Invocation,
];

type Labels<'a> = Vec<(&'static str, &'a str)>;

struct Writer<'e> {
    encoder: DescriptorEncoder<'e>,
}

impl Writer<'_> {
    fn counters(&mut self, name: &str, help: &str, rows: &[(Labels<'_>, u64)]) -> std::fmt::Result {
        let mut metric = self.encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in rows {
            ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn gauges(&mut self, name: &str, help: &str, rows: &[(Labels<'_>, i64)]) -> std::fmt::Result {
        let mut metric = self.encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in rows {
            ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn histograms(&mut self, name: &str, help: &str, rows: &[(Labels<'_>, &[u64])]) -> std::fmt::Result {
        let mut metric = self.encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, counts) in rows {
            let count: u64 = counts[..histogram::BUCKETS].iter().sum();
            let sum = counts[histogram::SUM] as f64 / 1e9;
            let buckets = histogram::prometheus_buckets(counts);
            let mut family = metric.encode_family(labels)?;
            family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

fn serializer_name(serializer: Serializer) -> &'static str {
    match serializer {
        Serializer::Json => "json",
        Serializer::MsgPack => "msgpack",
        Serializer::Cbor => "cbor",
    }
}

impl Collector for RouterCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let shared = &self.0;
        let metrics = &shared.metrics;
        let mut w = Writer { encoder };
        let mut realms: Vec<_> = shared.realms.values().collect();
        realms.sort_by(|a, b| a.name.cmp(&b.name));

        w.gauges(
            "roundhouse_build_info",
            "Always 1; the labels name the router's version.",
            &[(vec![("version", env!("CARGO_PKG_VERSION"))], 1)],
        )?;
        w.gauges(
            "roundhouse_uptime_seconds",
            "Seconds since the router started.",
            &[(vec![], metrics.uptime().as_secs() as i64)],
        )?;
        w.gauges(
            "roundhouse_ready",
            "1 while the router serves, 0 once it is shutting down.",
            &[(vec![], i64::from(!shared.shutdown.is_cancelled()))],
        )?;
        w.gauges(
            "roundhouse_connections_open",
            "Open connections with a session (joined or not yet).",
            &[(vec![], shared.sessions.len() as i64)],
        )?;
        w.counters(
            "roundhouse_connections_accepted",
            "Connections accepted.",
            &[(vec![], metrics.connections.load(Ordering::Relaxed))],
        )?;
        let refusals: Vec<_> = REFUSALS
            .iter()
            .enumerate()
            .map(|(i, (t, r))| (vec![("transport", *t), ("reason", *r)], metrics.refusals[i].load(Ordering::Relaxed)))
            .collect();
        w.counters("roundhouse_handshakes_refused", "Connections refused before a session began.", &refusals)?;

        // Sessions now, by realm, transport, serializer and authentication method.
        let mut sessions = Vec::new();
        let mut joined = Vec::new();
        for realm in &realms {
            let mut counts = std::collections::BTreeMap::<(&str, &str, &str), i64>::new();
            for session in realm.sessions.iter() {
                // Joined sessions have an identity; one being torn down may already lack it.
                let authmethod = session.identity().map_or("none", |i| i.authmethod);
                *counts
                    .entry((session.transport().as_str(), serializer_name(session.serializer), authmethod))
                    .or_default() += 1;
            }
            for ((transport, serializer, authmethod), n) in counts {
                sessions.push((
                    vec![
                        ("realm", realm.name.as_str()),
                        ("transport", transport),
                        ("serializer", serializer),
                        ("authmethod", authmethod),
                    ],
                    n,
                ));
            }
            for transport in crate::transport::Kind::ALL {
                for (s, serializer) in Serializer::ALL.iter().enumerate() {
                    let n = realm.metrics.joined[transport as usize][s].load(Ordering::Relaxed);
                    if n > 0 {
                        joined.push((
                            vec![
                                ("realm", realm.name.as_str()),
                                ("transport", transport.as_str()),
                                ("serializer", serializer_name(*serializer)),
                            ],
                            n,
                        ));
                    }
                }
            }
        }
        w.gauges("roundhouse_sessions", "Sessions joined to a realm now.", &sessions)?;
        w.counters("roundhouse_sessions_joined", "Sessions that joined a realm.", &joined)?;
        let closed: Vec<_> =
            CloseCause::ALL.iter().map(|c| (vec![("reason", c.as_str())], metrics.sessions_closed(*c))).collect();
        w.counters("roundhouse_sessions_closed", "Sessions that ended, by why.", &closed)?;
        let slow: u64 =
            CloseCause::ALL.iter().filter(|c| c.is_slow_consumer()).map(|c| metrics.sessions_closed(*c)).sum();
        w.counters(
            "roundhouse_slow_consumer_disconnects",
            "Sessions closed for not reading what they were sent (queue over slow_consumer_bytes, or stuck).",
            &[(vec![], slow)],
        )?;

        // Messages and bytes by direction and type.
        let snapshot = metrics.messages_snapshot();
        let mut messages = Vec::new();
        let mut bytes = Vec::new();
        for direction in [Direction::In, Direction::Out] {
            let label = if direction == Direction::In { "in" } else { "out" };
            for kind in TYPES {
                let index = ((direction as usize * super::TYPES) + kind as usize) * 2;
                messages.push((vec![("direction", label), ("type", kind.name())], snapshot[index]));
                bytes.push((vec![("direction", label), ("type", kind.name())], snapshot[index + 1]));
            }
        }
        w.counters("roundhouse_messages", "WAMP messages received (in) and sent (out), by type.", &messages)?;
        w.counters("roundhouse_message_bytes", "Bytes of WAMP messages received and sent, by type.", &bytes)?;

        // Calls.
        let mut calls = Vec::new();
        let mut latency_rows = Vec::new();
        let latencies: Vec<(usize, Vec<u64>)> =
            realms.iter().enumerate().map(|(i, r)| (i, r.metrics.latency_snapshot())).collect();
        for (i, realm) in realms.iter().enumerate() {
            let snapshot = realm.metrics.calls_snapshot();
            for (rule_slot, rule) in RULES.iter().enumerate() {
                for (o, outcome) in OUTCOMES.iter().enumerate() {
                    let n = snapshot[rule_slot * OUTCOMES.len() + o];
                    if n > 0 {
                        calls.push((vec![("realm", realm.name.as_str()), ("rule", *rule), ("outcome", *outcome)], n));
                    }
                }
                let counts = &latencies[i].1[rule_slot * histogram::WIDTH..(rule_slot + 1) * histogram::WIDTH];
                if counts[..histogram::BUCKETS].iter().any(|c| *c > 0) {
                    latency_rows.push((vec![("realm", realm.name.as_str()), ("rule", *rule)], counts));
                }
            }
        }
        w.counters(
            "roundhouse_calls",
            "Calls ended, by realm, invocation rule (none: reached no registration) and outcome (result, a wamp.error URI, or application_error).",
            &calls,
        )?;
        w.histograms(
            "roundhouse_call_duration_seconds",
            "Router-side latency from CALL received to RESULT or ERROR queued for the caller, by realm and rule.",
            &latency_rows,
        )?;

        // Opted-in procedures.
        let mut procedure_calls = Vec::new();
        let procedure_latency: Vec<(usize, usize, Vec<u64>)> = realms
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.metrics.procedures.iter().enumerate().map(move |(p, m)| (i, p, m.latency.snapshot())))
            .collect();
        let mut procedure_latency_rows = Vec::new();
        for (i, p, counts) in &procedure_latency {
            let realm = realms[*i];
            let procedure = &realm.metrics.procedures[*p];
            let outcomes = procedure.calls.snapshot();
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                if outcomes[o] > 0 || o == 0 {
                    procedure_calls.push((
                        vec![
                            ("realm", realm.name.as_str()),
                            ("procedure", procedure.uri.as_str()),
                            ("outcome", *outcome),
                        ],
                        outcomes[o],
                    ));
                }
            }
            procedure_latency_rows
                .push((vec![("realm", realm.name.as_str()), ("procedure", procedure.uri.as_str())], counts.as_slice()));
        }
        w.counters(
            "roundhouse_procedure_calls",
            "Calls ended, per procedure listed in [metrics] procedures, by outcome.",
            &procedure_calls,
        )?;
        w.histograms(
            "roundhouse_procedure_call_duration_seconds",
            "Router-side CALL to answer latency, per procedure listed in [metrics] procedures.",
            &procedure_latency_rows,
        )?;

        // Tables now.
        let mut in_flight = Vec::new();
        let mut queued = Vec::new();
        let mut invocations = Vec::new();
        let mut queued_bytes = Vec::new();
        let mut registrations = Vec::new();
        let mut subscriptions = Vec::new();
        let mut reroutes = Vec::new();
        let mut timeouts = Vec::new();
        let mut cancels = Vec::new();
        let mut evictions = Vec::new();
        let mut published = Vec::new();
        let mut delivered = Vec::new();
        let mut dropped = Vec::new();
        for realm in &realms {
            let name = realm.name.as_str();
            let (mut calls_queued, mut calls_running, mut serving, mut bytes) = (0usize, 0usize, 0usize, 0usize);
            for session in realm.sessions.iter() {
                let (q, r) = session.calls.stages();
                calls_queued += q;
                calls_running += r;
                serving += session.invocations_in_flight();
                bytes += session.outbox().queued_bytes();
            }
            in_flight.push((vec![("realm", name)], (calls_queued + calls_running) as i64));
            queued.push((vec![("realm", name)], calls_queued as i64));
            invocations.push((vec![("realm", name)], serving as i64));
            queued_bytes.push((vec![("realm", name)], bytes as i64));
            registrations.push((vec![("realm", name)], realm.dealer.registration_count() as i64));
            subscriptions.push((vec![("realm", name)], realm.broker.subscription_count() as i64));
            let m = &realm.metrics;
            reroutes.push((vec![("realm", name)], m.reroutes.load(Ordering::Relaxed)));
            timeouts.push((vec![("realm", name)], m.timeouts.load(Ordering::Relaxed)));
            for (i, mode) in ["skip", "kill", "killnowait"].iter().enumerate() {
                cancels.push((vec![("realm", name), ("mode", *mode)], m.cancels[i].load(Ordering::Relaxed)));
            }
            evictions.push((vec![("realm", name), ("reason", "killed")], m.kills.load(Ordering::Relaxed)));
            evictions.push((vec![("realm", name), ("reason", "revoked")], m.revocations.load(Ordering::Relaxed)));
            published.push((vec![("realm", name)], m.event_count(EventCount::Published)));
            delivered.push((vec![("realm", name)], m.event_count(EventCount::Delivered)));
            dropped.push((vec![("realm", name)], m.event_count(EventCount::Dropped)));
        }
        w.gauges(
            "roundhouse_calls_in_flight",
            "Calls between CALL and their answer, as callers see them.",
            &in_flight,
        )?;
        w.gauges(
            "roundhouse_calls_queued",
            "Calls in flight not yet written to a callee (waiting in its queue, or for room in it).",
            &queued,
        )?;
        w.gauges(
            "roundhouse_invocations_in_flight",
            "INVOCATIONs written to callees and not yet answered.",
            &invocations,
        )?;
        w.gauges("roundhouse_queued_bytes", "Bytes waiting in sessions' outbound queues.", &queued_bytes)?;
        w.gauges("roundhouse_registrations", "Registrations with at least one member.", &registrations)?;
        w.gauges("roundhouse_subscriptions", "Subscriptions with at least one subscriber.", &subscriptions)?;
        w.counters("roundhouse_call_reroutes", "Calls handed to another member of their registration.", &reroutes)?;
        w.counters("roundhouse_call_timeouts", "Calls that ran past their CALL.Options.timeout.", &timeouts)?;
        w.counters("roundhouse_cancels", "CANCEL messages received, by mode.", &cancels)?;
        w.counters(
            "roundhouse_evictions",
            "Sessions killed (wamp.session.kill*) and memberships revoked (wamp.registration.remove_callee) through the meta API.",
            &evictions,
        )?;
        w.counters("roundhouse_events_published", "PUBLISH messages accepted.", &published)?;
        w.counters("roundhouse_events_delivered", "EVENTs queued to subscribers.", &delivered)?;
        w.counters("roundhouse_events_dropped", "EVENTs dropped for subscribers whose queue was full.", &dropped)?;
        Ok(())
    }
}
