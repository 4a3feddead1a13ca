//! Slow consumers, and the healthy pub/sub pair beside them.
//!
//! A deaf subscriber subscribes to the ticks and to meta events, then never reads again; a deaf
//! caller keeps sending large calls and never reads their results. Both keep sending something,
//! so the router cannot take them for idle peers: what piles up for them must be dropped (events)
//! or end their session (results), never stall anybody else.
//!
//! Beside them a healthy publisher publishes numbered ticks (acknowledged, each within the grace
//! period) and a healthy subscriber must receive every one of them, in order, none missing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use roundhouse::client::ClientError;
use roundhouse::wire::{Dict, Message, Payload, Value};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::peer::{Peer, Transport};
use super::script::{Ask, Op, PROCEDURES, STREAM};
use super::Ctx;

/// The topic of the ticks.
const TICKS: &str = "chaos.ticks";

/// Time between two ticks.
const TICK: Duration = Duration::from_millis(10);

/// Meta topics a deaf subscriber subscribes to besides the ticks.
const META: [&str; 4] = [
    "wamp.session.on_join",
    "wamp.session.on_leave",
    "wamp.registration.on_register",
    "wamp.registration.on_unregister",
];

/// Runs deaf subscribers and deaf callers, alternately at random, until the run stops.
pub async fn deaf_slot(ctx: Arc<Ctx>, slot: u64, mut rng: fastrand::Rng) {
    let mut n = 0;
    while !ctx.stop.is_cancelled() {
        n += 1;
        let transport = Transport::random(&mut rng);
        let life_ms = ctx.max_life.as_millis().max(1000) as u64;
        let until = Instant::now() + Duration::from_millis(rng.u64(life_ms / 4..=life_ms));
        if rng.bool() {
            let name = format!("deaf subscriber {slot}.{n} {}", transport.name());
            deaf_subscriber(&ctx, &name, transport, until).await;
        } else {
            let name = format!("deaf caller {slot}.{n} {}", transport.name());
            deaf_caller(&ctx, &name, transport, until, &mut rng).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(100..500))).await;
    }
}

async fn deaf_subscriber(ctx: &Ctx, name: &str, transport: Transport, until: Instant) {
    let mut peer = match Peer::join(&ctx.endpoints, transport, &[], ctx.grace).await {
        Ok(peer) => peer,
        Err(e) => return ctx.ledger.violation(name, format!("could not join: {e}")),
    };
    for topic in std::iter::once(TICKS).chain(META) {
        if let Err(e) = subscribe(&mut peer, topic, ctx.grace).await {
            return ctx.ledger.violation(name, e);
        }
    }
    ctx.ledger.case("slow consumer: subscriber stops reading");
    let (mut tx, _rx) = peer.into_halves();
    // Never reads again; publishes now and then so that it is not idle.
    while Instant::now() < until && !ctx.stop.is_cancelled() {
        let request = tx.request_id();
        let publish =
            Message::Publish { request, options: Dict::new(), topic: "chaos.noise".into(), payload: Payload::Empty };
        if tx.send(&publish).await.is_err() {
            ctx.ledger.case("slow consumer closed by the router");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn deaf_caller(ctx: &Ctx, name: &str, transport: Transport, until: Instant, rng: &mut fastrand::Rng) {
    let peer = match Peer::join(&ctx.endpoints, transport, &[], ctx.grace).await {
        Ok(peer) => peer,
        Err(e) => return ctx.ledger.violation(name, format!("could not join: {e}")),
    };
    ctx.ledger.case("slow consumer: caller stops reading");
    let no = ctx.caller_number();
    let (mut tx, _rx) = peer.into_halves();
    while Instant::now() < until && !ctx.stop.is_cancelled() {
        let request = tx.request_id();
        let procedure = rng.usize(..STREAM);
        let ask = Ask { caller: no, request, procedure, op: Op::Echo, blob: 16 * 1024 };
        let call = Message::Call {
            request,
            options: Dict::new(),
            procedure: PROCEDURES[procedure].uri.into(),
            payload: Payload::args(ask.args()),
        };
        if tx.send(&call).await.is_err() {
            ctx.ledger.case("slow consumer closed by the router");
            return;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// SUBSCRIBE and wait for SUBSCRIBED.
async fn subscribe(peer: &mut Peer, topic: &str, within: Duration) -> Result<u64, String> {
    let request = peer.tx.request_id();
    let subscribe = Message::Subscribe { request, options: Dict::new(), topic: topic.into() };
    peer.send(&subscribe).await.map_err(|e| format!("lost its session: {}", crate::wamp::describe(&e)))?;
    let deadline = Instant::now() + within;
    loop {
        match timeout_at(deadline, peer.recv()).await {
            Ok(Ok(Message::Subscribed { request: r, subscription })) if r == request => return Ok(subscription),
            // Events of the topics it subscribed to before.
            Ok(Ok(Message::Event { .. })) => {}
            Ok(Ok(other)) => return Err(format!("SUBSCRIBE {topic} answered with {:?}", other.message_type())),
            Ok(Err(e)) => return Err(format!("lost its session: {}", crate::wamp::describe(&e))),
            Err(_) => return Err(format!("no SUBSCRIBED for {topic} within {within:?}")),
        }
    }
}

/// The healthy publisher and subscriber of the ticks, for the whole run.
pub async fn ticks(ctx: Arc<Ctx>, mut rng: fastrand::Rng) {
    let (pub_transport, sub_transport) = (Transport::random(&mut rng), Transport::random(&mut rng));
    let (pub_name, sub_name) =
        (format!("publisher {}", pub_transport.name()), format!("subscriber {}", sub_transport.name()));
    let mut subscriber = match Peer::join(&ctx.endpoints, sub_transport, &[], ctx.grace).await {
        Ok(peer) => peer,
        Err(e) => return ctx.ledger.violation(&sub_name, format!("could not join: {e}")),
    };
    let subscription = match subscribe(&mut subscriber, TICKS, ctx.grace).await {
        Ok(id) => id,
        Err(e) => return ctx.ledger.violation(&sub_name, e),
    };
    let mut publisher = match Peer::join(&ctx.endpoints, pub_transport, &[], ctx.grace).await {
        Ok(peer) => peer,
        Err(e) => return ctx.ledger.violation(&pub_name, format!("could not join: {e}")),
    };
    ctx.ledger.case("healthy publisher and subscriber");
    let ledger = &ctx.ledger;
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let (mut seq, mut expected) = (0u64, 0u64);
    let mut next_tick = Instant::now();
    let mut ending: Option<Instant> = None;
    let lost = |e: ClientError| format!("lost its session: {}", crate::wamp::describe(&e));
    loop {
        let now = Instant::now();
        if ending.is_none() && ctx.stop.is_cancelled() {
            ending = Some(now + ctx.grace);
        }
        if let Some(deadline) = ending {
            if sent.is_empty() && expected == seq {
                break;
            }
            if now >= deadline {
                let what = format!(
                    "{} ticks unacknowledged, {} not received, {:?} after the run stopped",
                    sent.len(),
                    seq - expected,
                    ctx.grace
                );
                ledger.violation(&pub_name, what);
                break;
            }
        } else if now >= next_tick {
            let request = publisher.tx.request_id();
            let blob = vec![(seq % 251) as u8; rng.usize(0..8192)];
            let payload = Payload::args(vec![Value::UInt(seq), Value::Bytes(blob)]);
            let options = Dict::new().with("acknowledge", true);
            if let Err(e) = publisher.send(&Message::Publish { request, options, topic: TICKS.into(), payload }).await {
                return ledger.violation(&pub_name, lost(e));
            }
            sent.insert(request, now);
            seq += 1;
            next_tick = (next_tick + TICK).max(now - TICK * 4);
        }
        if let Some((request, at)) = sent.iter().find(|(_, at)| now.duration_since(**at) > ctx.grace) {
            ledger
                .violation(&pub_name, format!("PUBLISH {request} unacknowledged after {:?}", now.duration_since(*at)));
            let request = *request;
            sent.remove(&request);
        }
        let wake = if ending.is_some() { now + Duration::from_millis(100) } else { next_tick };
        tokio::select! {
            biased;
            message = subscriber.recv() => match message {
                Ok(Message::Event { subscription: s, payload, .. }) if s == subscription => {
                    let got = payload.to_values().ok().and_then(|(args, _)| args.first().and_then(Value::as_u64));
                    match got {
                        Some(n) if n == expected => {}
                        Some(n) if n > expected => ledger.violation(&sub_name, format!("ticks {expected}..{} never arrived", n - 1)),
                        other => ledger.violation(&sub_name, format!("tick {other:?} arrived after tick {}", expected.wrapping_sub(1))),
                    }
                    if let Some(n) = got {
                        expected = expected.max(n + 1);
                    }
                    ledger.received.fetch_add(1, Ordering::Relaxed);
                }
                Ok(other) => return ledger.violation(&sub_name, format!("unexpected {:?}", other.message_type())),
                Err(e) => return ledger.violation(&sub_name, lost(e)),
            },
            message = publisher.recv() => match message {
                Ok(Message::Published { request, .. }) => {
                    if sent.remove(&request).is_some() {
                        ledger.published.fetch_add(1, Ordering::Relaxed);
                    } else {
                        ledger.violation(&pub_name, format!("PUBLISHED for request {request}, not in flight"));
                    }
                }
                Ok(other) => return ledger.violation(&pub_name, format!("unexpected {:?}", other.message_type())),
                Err(e) => return ledger.violation(&pub_name, lost(e)),
            },
            _ = sleep_until(wake) => {}
        }
    }
    for (name, peer) in [(pub_name, publisher), (sub_name, subscriber)] {
        if let Err(e) = peer.leave(ctx.grace, |_| {}).await {
            ledger.violation(&name, format!("could not leave: {e}"));
        }
    }
}
