//! Hostile sessions: each tries one malformed input and checks that the router refuses it — an
//! ABORT `wamp.error.protocol_violation` and a closed connection, or for transport-level abuse a
//! closed connection — within the grace period. Anything else (an answer to the malformed call, a
//! connection left open) is a violation. What they must not do to anybody else (a callee that
//! receives their bytes, a healthy caller slowed down) the other actors check.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roundhouse::client::tungstenite::protocol::frame::coding::{Data, OpCode};
use roundhouse::client::tungstenite::protocol::frame::Frame;
use roundhouse::client::tungstenite::Message as WsMessage;
use roundhouse::transport::rawsocket::RawFrame;
use roundhouse::wire::{Dict, Message, Payload, Serializer, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use super::peer::{self, Carrier, Endpoints, Peer, Transport};
use super::script::{Ask, Op, PROCEDURES, STREAM};
use super::Ctx;

/// Every hostile case, by name.
pub const CASES: [&str; 14] = [
    "json-leading-zero",
    "json-bad-utf8",
    "ws-text-bad-utf8",
    "truncated-frame",
    "oversized-frame",
    "announced-no-body",
    "request-id-reuse",
    "request-id-zero",
    "wrong-message-type",
    "garbage-frame",
    "garbage-before-handshake",
    "duplicate-keys",
    "deep-nesting",
    "binary-bad-utf8",
];

/// Hostile cases running at once, at most.
const AT_ONCE: usize = 4;

/// Starts hostile cases at random intervals until the run stops, then waits for them.
pub async fn scheduler(ctx: Arc<Ctx>, mut rng: fastrand::Rng) {
    let cases: Vec<&'static str> = CASES.iter().copied().filter(|c| !ctx.skip.iter().any(|s| s == c)).collect();
    if cases.is_empty() {
        return;
    }
    let mut running = JoinSet::new();
    let mut n = 0;
    while !ctx.stop.is_cancelled() {
        while running.try_join_next().is_some() {}
        if running.len() < AT_ONCE {
            n += 1;
            let case = cases[rng.usize(..cases.len())];
            let seed = rng.u64(..);
            running.spawn(run(ctx.clone(), case, n, seed));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(rng.u64(100..500))) => {}
            _ = ctx.stop.cancelled() => {}
        }
    }
    while running.join_next().await.is_some() {}
}

async fn run(ctx: Arc<Ctx>, case: &'static str, n: u64, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let name = format!("hostile {n} {case}");
    ctx.ledger.case(&format!("hostile: {case}"));
    let deadline = Instant::now() + ctx.grace;
    let outcome = match case {
        "json-leading-zero" => leading_zero(&ctx, &mut rng, deadline).await,
        "json-bad-utf8" => json_bad_utf8(&ctx, &mut rng, deadline).await,
        "ws-text-bad-utf8" => ws_text_bad_utf8(&ctx, &mut rng, deadline).await,
        "truncated-frame" => truncated(&ctx, &mut rng, deadline).await,
        "oversized-frame" => oversized(&ctx, deadline).await,
        "announced-no-body" => announced(&ctx, &mut rng, deadline).await,
        "request-id-reuse" => reuse(&ctx, &mut rng, n, deadline).await,
        "request-id-zero" => zero(&ctx, &mut rng, deadline).await,
        "wrong-message-type" => wrong_type(&ctx, &mut rng, deadline).await,
        "garbage-frame" => garbage(&ctx, &mut rng, deadline).await,
        "garbage-before-handshake" => garbage_before_handshake(&ctx, &mut rng, deadline).await,
        "duplicate-keys" => duplicate_keys(&ctx, &mut rng, deadline).await,
        "deep-nesting" => deep_nesting(&ctx, &mut rng, deadline).await,
        "binary-bad-utf8" => binary_bad_utf8(&ctx, &mut rng, deadline).await,
        other => Err(format!("unknown case {other}")),
    };
    if let Err(problem) = outcome {
        ctx.ledger.violation(&name, problem);
    }
}

/// What the router must do with the input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// ABORT `wamp.error.protocol_violation`, then close.
    Abort,
    /// That, or ERROR `wamp.error.invalid_argument` for a well-formed message whose payload is
    /// not acceptable.
    AbortOrInvalid,
}

async fn join(ctx: &Ctx, transport: Transport) -> Result<Peer, String> {
    Peer::join(&ctx.endpoints, transport, &[], ctx.grace).await.map_err(|e| format!("could not join: {e}"))
}

fn any_procedure(rng: &mut fastrand::Rng) -> &'static str {
    PROCEDURES[rng.usize(..STREAM)].uri
}

/// Sends `bytes` as one frame: a WebSocket text frame for JSON (even if they are not UTF-8), a
/// binary frame otherwise, or a RawSocket frame.
async fn send_bytes(peer: &mut Peer, bytes: Vec<u8>) -> Result<(), String> {
    let transport = peer.transport();
    let sent = match transport.carrier {
        Carrier::RawSocket => peer.tx.send_raw_frame(RawFrame::Message(Bytes::from(bytes))).await,
        Carrier::WebSocket if transport.serializer == Serializer::Json => {
            let frame = Frame::message(bytes, OpCode::Data(Data::Text), true);
            peer.tx.send_raw(WsMessage::Frame(frame)).await
        }
        Carrier::WebSocket => peer.tx.send_raw(WsMessage::Binary(Bytes::from(bytes))).await,
    };
    sent.map_err(|e| format!("could not send its frame: {}", crate::wamp::describe(&e)))
}

/// Waits for the router's refusal.
async fn refused(mut peer: Peer, expect: Expect, deadline: Instant) -> Result<(), String> {
    loop {
        match timeout_at(deadline, peer.recv()).await {
            Err(_) => return Err("neither ABORT nor a closed connection within the grace period".into()),
            Ok(Err(e)) => return Err(format!("connection closed without ABORT ({})", crate::wamp::describe(&e))),
            Ok(Ok(Message::Abort { reason, details })) => {
                if reason != "wamp.error.protocol_violation" {
                    let text = details.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
                    return Err(format!("ABORT {reason} ({text}), not wamp.error.protocol_violation"));
                }
                return closed(peer, deadline).await;
            }
            Ok(Ok(Message::Error { error, .. }))
                if expect == Expect::AbortOrInvalid && error == "wamp.error.invalid_argument" =>
            {
                return Ok(());
            }
            Ok(Ok(message @ (Message::Result { .. } | Message::Error { .. }))) => {
                return Err(format!("the router took it and answered {}", brief(&message)));
            }
            // Its own registration's INVOCATION, REGISTERED and the like.
            Ok(Ok(_)) => {}
        }
    }
}

/// Waits for the router to close the connection after its ABORT.
async fn closed(mut peer: Peer, deadline: Instant) -> Result<(), String> {
    loop {
        match timeout_at(deadline, peer.recv()).await {
            Err(_) => return Err("ABORT, but the connection stayed open".into()),
            Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Waits for the router to close a raw connection.
async fn tcp_closed(mut tcp: TcpStream, deadline: Instant, what: &str) -> Result<(), String> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return Err(format!("{what}: the connection stayed open for the grace period")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

fn brief(message: &Message) -> String {
    match message {
        Message::Error { error, payload, .. } => {
            let text = payload
                .to_values()
                .ok()
                .and_then(|(args, _)| args.first().and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            format!("ERROR {error} {text}")
        }
        other => format!("{:?}", other.message_type()),
    }
}

async fn leading_zero(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let carrier = if rng.bool() { Carrier::RawSocket } else { Carrier::WebSocket };
    let mut peer = join(ctx, Transport { carrier, serializer: Serializer::Json }).await?;
    let text = format!("[48,1,{{}},\"{}\",[01]]", any_procedure(rng));
    send_bytes(&mut peer, text.into_bytes()).await?;
    refused(peer, Expect::Abort, deadline).await
}

async fn json_bad_utf8(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let mut peer = join(ctx, Transport { carrier: Carrier::RawSocket, serializer: Serializer::Json }).await?;
    let mut bytes = format!("[48,1,{{}},\"{}\",[\"", any_procedure(rng)).into_bytes();
    bytes.extend_from_slice(&[0xff, b'"', b']', b']']);
    send_bytes(&mut peer, bytes).await?;
    refused(peer, Expect::Abort, deadline).await
}

async fn ws_text_bad_utf8(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let mut peer = join(ctx, Transport { carrier: Carrier::WebSocket, serializer: Serializer::Json }).await?;
    let mut bytes = format!("[48,1,{{}},\"{}\",[\"", any_procedure(rng)).into_bytes();
    bytes.extend_from_slice(&[0xc3, 0x28, b'"', b']', b']']);
    send_bytes(&mut peer, bytes).await?;
    refused(peer, Expect::Abort, deadline).await
}

/// A chaos CALL encoded in `serializer`.
fn chaos_call(serializer: Serializer, rng: &mut fastrand::Rng, request: u64) -> Vec<u8> {
    let procedure = rng.usize(..STREAM);
    let ask = Ask { caller: u64::MAX, request, procedure, op: Op::Echo, blob: rng.usize(64..512) };
    let call = Message::Call {
        request,
        options: Dict::new(),
        procedure: PROCEDURES[procedure].uri.into(),
        payload: Payload::args(ask.args()),
    };
    let mut frame = Vec::new();
    // The soak's own values always encode; an empty frame would only make the case weaker.
    let _ = serializer.try_encode(&call, &mut frame);
    frame
}

async fn truncated(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let transport = Transport::random(rng);
    let mut peer = join(ctx, transport).await?;
    let mut frame = chaos_call(transport.serializer, rng, 1);
    // Cut inside the arguments (the last half of the frame), so what is left is no shorter,
    // valid CALL.
    let len = frame.len();
    frame.truncate(rng.usize(len / 2..len - 1));
    send_bytes(&mut peer, frame).await?;
    refused(peer, Expect::Abort, deadline).await
}

/// A WebSocket connection upgraded by hand (subprotocol msgpack), for frames no library sends.
async fn raw_websocket(endpoints: &Endpoints, deadline: Instant) -> Result<TcpStream, String> {
    let upgrade = async {
        let mut tcp = TcpStream::connect(endpoints.addr).await.map_err(|e| format!("cannot connect: {e}"))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: wamp.2.msgpack\r\n\r\n",
            endpoints.path, endpoints.addr
        );
        tcp.write_all(request.as_bytes()).await.map_err(|e| format!("cannot send the upgrade: {e}"))?;
        let mut response = Vec::new();
        let mut byte = [0u8; 1];
        while !response.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).await.map_err(|e| format!("upgrade response cut short: {e}"))?;
            response.push(byte[0]);
        }
        if !response.starts_with(b"HTTP/1.1 101") {
            return Err(format!("upgrade refused: {}", String::from_utf8_lossy(&response)));
        }
        Ok(tcp)
    };
    timeout_at(deadline, upgrade).await.map_err(|_| "the upgrade took the whole grace period".to_owned())?
}

/// A masked binary frame header announcing `length` bytes.
fn ws_header(length: u64) -> Vec<u8> {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    header
}

async fn oversized(ctx: &Ctx, deadline: Instant) -> Result<(), String> {
    let mut tcp = raw_websocket(&ctx.endpoints, deadline).await?;
    let mut frame = ws_header(1 << 30);
    frame.extend_from_slice(&[0; 64]);
    tcp.write_all(&frame).await.map_err(|e| format!("cannot send: {e}"))?;
    tcp_closed(tcp, deadline, "a frame header announcing 1 GiB").await
}

async fn announced(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    if rng.bool() {
        let mut tcp = raw_websocket(&ctx.endpoints, deadline).await?;
        tcp.write_all(&ws_header((16 << 20) - 64)).await.map_err(|e| format!("cannot send: {e}"))?;
        return tcp_closed(tcp, deadline, "a WebSocket header announcing 16 MiB and no body").await;
    }
    let mut tcp = TcpStream::connect(ctx.endpoints.addr).await.map_err(|e| format!("cannot connect: {e}"))?;
    tcp.write_all(&[0x7f, 0xf2, 0, 0]).await.map_err(|e| format!("cannot send: {e}"))?;
    let mut reply = [0u8; 4];
    timeout_at(deadline, tcp.read_exact(&mut reply))
        .await
        .map_err(|_| "no RawSocket handshake reply".to_owned())?
        .map_err(|e| format!("RawSocket handshake failed: {e}"))?;
    tcp.write_all(&[0, 0xff, 0xff, 0xff]).await.map_err(|e| format!("cannot send: {e}"))?;
    tcp_closed(tcp, deadline, "a RawSocket header announcing 16 MiB and no body").await
}

async fn reuse(ctx: &Ctx, rng: &mut fastrand::Rng, n: u64, deadline: Instant) -> Result<(), String> {
    let mut peer = join(ctx, Transport::random(rng)).await?;
    let procedure = format!("chaos.hostile.h{n}");
    let request = peer.tx.request_id();
    let register = Message::Register { request, options: Dict::new(), procedure: procedure.clone() };
    peer.send(&register).await.map_err(|e| format!("lost its session: {}", crate::wamp::describe(&e)))?;
    match timeout_at(deadline, peer.recv()).await {
        Ok(Ok(Message::Registered { .. })) => {}
        other => return Err(format!("REGISTER {procedure}: {other:?}")),
    }
    // A call to itself, which it never answers, so the request id stays in flight.
    let call = Message::Call {
        request: 7,
        options: Dict::new(),
        procedure: procedure.clone(),
        payload: Payload::args(vec![Value::from("hostile")]),
    };
    peer.send(&call).await.map_err(|e| format!("lost its session: {}", crate::wamp::describe(&e)))?;
    match timeout_at(deadline, peer.recv()).await {
        Ok(Ok(Message::Invocation { .. })) => {}
        other => return Err(format!("its own call was not invoked: {other:?}")),
    }
    peer.send(&call).await.map_err(|e| format!("lost its session: {}", crate::wamp::describe(&e)))?;
    refused(peer, Expect::Abort, deadline).await
}

async fn zero(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let mut peer = join(ctx, Transport::random(rng)).await?;
    let call = Message::Call {
        request: 0,
        options: Dict::new(),
        procedure: any_procedure(rng).into(),
        payload: Payload::args(vec![Value::from("hostile")]),
    };
    peer.send(&call).await.map_err(|e| format!("lost its session: {}", crate::wamp::describe(&e)))?;
    refused(peer, Expect::Abort, deadline).await
}

async fn wrong_type(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let transport = Transport::random(rng);
    let mut peer = join(ctx, transport).await?;
    let message = match rng.u8(..5) {
        0 => Message::Welcome { session: 1, details: Dict::new() },
        1 => Message::Result { request: 1, details: Dict::new(), payload: Payload::Empty },
        2 => Message::Invocation { request: 1, registration: 1, details: Dict::new(), payload: Payload::Empty },
        3 => Message::Registered { request: 1, registration: 1 },
        _ => {
            // A message type no WAMP version defines.
            let bytes = match transport.serializer {
                Serializer::Json => b"[99,1]".to_vec(),
                Serializer::MsgPack => vec![0x92, 0x63, 0x01],
                Serializer::Cbor => vec![0x82, 0x18, 0x63, 0x01],
            };
            send_bytes(&mut peer, bytes).await?;
            return refused(peer, Expect::Abort, deadline).await;
        }
    };
    peer.send(&message).await.map_err(|e| format!("lost its session: {}", crate::wamp::describe(&e)))?;
    refused(peer, Expect::Abort, deadline).await
}

async fn garbage(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let transport = Transport::random(rng);
    let mut peer = join(ctx, transport).await?;
    // A first octet that starts no message, then noise (printable for a JSON text frame).
    let len = rng.usize(1..512);
    let bytes: Vec<u8> = match transport.serializer {
        Serializer::Json => std::iter::once(b'x').chain((0..len).map(|_| rng.u8(0x20..0x7f))).collect(),
        Serializer::MsgPack => std::iter::once(0xc1).chain((0..len).map(|_| rng.u8(..))).collect(),
        Serializer::Cbor => std::iter::once(0xff).chain((0..len).map(|_| rng.u8(..))).collect(),
    };
    send_bytes(&mut peer, bytes).await?;
    refused(peer, Expect::Abort, deadline).await
}

async fn garbage_before_handshake(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let mut tcp = TcpStream::connect(ctx.endpoints.addr).await.map_err(|e| format!("cannot connect: {e}"))?;
    // Neither RawSocket's 0x7F nor the G of an HTTP GET.
    let mut bytes: Vec<u8> = (0..rng.usize(1..2048)).map(|_| rng.u8(..)).collect();
    bytes[0] = rng.u8(0x80..=0xff);
    if rng.bool() {
        bytes.extend_from_slice(b"\r\n\r\n");
    }
    tcp.write_all(&bytes).await.map_err(|e| format!("cannot send: {e}"))?;
    tcp_closed(tcp, deadline, "noise instead of a handshake").await
}

async fn duplicate_keys(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let carrier = if rng.bool() { Carrier::RawSocket } else { Carrier::WebSocket };
    let transport = Transport { carrier, serializer: Serializer::Json };
    let client = peer::connect(&ctx.endpoints, transport, ctx.grace).await?;
    let mut peer = Peer::from_client(client, transport);
    // A HELLO whose details repeat 1,000 keys 200 times each (about 1.6 MB).
    let mut hello = format!("[1,\"{}\",{{\"roles\":{{\"caller\":{{}}}}", ctx.endpoints.realm);
    for i in 0..200_000 {
        hello.push_str(&format!(",\"k{}\":0", i % 1000));
    }
    hello.push_str("}]");
    let started = Instant::now();
    send_bytes(&mut peer, hello.into_bytes()).await?;
    match timeout_at(deadline, peer.recv()).await {
        Err(_) => Err("no WELCOME or ABORT within the grace period".into()),
        Ok(Err(e)) => Err(format!("connection closed without a word ({})", crate::wamp::describe(&e))),
        Ok(Ok(Message::Welcome { .. })) => {
            let took = started.elapsed();
            if took > ctx.grace / 2 {
                return Err(format!("its HELLO took {took:?} to be welcomed"));
            }
            peer.leave(ctx.grace, |_| {}).await
        }
        Ok(Ok(Message::Abort { .. })) => closed(peer, deadline).await,
        Ok(Ok(other)) => Err(format!("unexpected {:?}", other.message_type())),
    }
}

async fn deep_nesting(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let transport = Transport::random(rng);
    let mut peer = join(ctx, transport).await?;
    let procedure = any_procedure(rng).as_bytes();
    let depth = 100_000;
    let bytes = match transport.serializer {
        Serializer::Json => {
            let mut text = format!("[48,1,{{}},\"{}\",", any_procedure(rng)).into_bytes();
            text.extend(std::iter::repeat_n(b'[', depth));
            text.extend(std::iter::repeat_n(b']', depth));
            text.push(b']');
            text
        }
        Serializer::MsgPack => {
            let mut bytes = vec![0x95, 0x30, 0x01, 0x80, 0xa0 | procedure.len() as u8];
            bytes.extend_from_slice(procedure);
            bytes.extend(std::iter::repeat_n(0x91, depth));
            bytes.push(0xc0);
            bytes
        }
        Serializer::Cbor => {
            let mut bytes = vec![0x85, 0x18, 0x30, 0x01, 0xa0, 0x60 | procedure.len() as u8];
            bytes.extend_from_slice(procedure);
            bytes.extend(std::iter::repeat_n(0x81, depth));
            bytes.push(0xf6);
            bytes
        }
    };
    send_bytes(&mut peer, bytes).await?;
    refused(peer, Expect::Abort, deadline).await
}

async fn binary_bad_utf8(ctx: &Ctx, rng: &mut fastrand::Rng, deadline: Instant) -> Result<(), String> {
    let carrier = if rng.bool() { Carrier::RawSocket } else { Carrier::WebSocket };
    let serializer = if rng.bool() { Serializer::MsgPack } else { Serializer::Cbor };
    let mut peer = join(ctx, Transport { carrier, serializer }).await?;
    let procedure = any_procedure(rng).as_bytes();
    // CALL [48, 1, {}, procedure, ["\xff\xfe"]]: a string that is not UTF-8 in the arguments.
    let bytes = match serializer {
        Serializer::MsgPack => {
            let mut bytes = vec![0x95, 0x30, 0x01, 0x80, 0xa0 | procedure.len() as u8];
            bytes.extend_from_slice(procedure);
            bytes.extend_from_slice(&[0x91, 0xa2, 0xff, 0xfe]);
            bytes
        }
        _ => {
            let mut bytes = vec![0x85, 0x18, 0x30, 0x01, 0xa0, 0x60 | procedure.len() as u8];
            bytes.extend_from_slice(procedure);
            bytes.extend_from_slice(&[0x81, 0x62, 0xff, 0xfe]);
            bytes
        }
    };
    send_bytes(&mut peer, bytes).await?;
    refused(peer, Expect::AbortOrInvalid, deadline).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_frames_decode_as_their_author_meant_them() {
        let procedure = "chaos.first";
        let mut msgpack = vec![0x95, 0x30, 0x01, 0x80, 0xa0 | procedure.len() as u8];
        msgpack.extend_from_slice(procedure.as_bytes());
        msgpack.extend_from_slice(&[0x91, 0xa2, b'o', b'k']);
        let mut cbor = vec![0x85, 0x18, 0x30, 0x01, 0xa0, 0x60 | procedure.len() as u8];
        cbor.extend_from_slice(procedure.as_bytes());
        cbor.extend_from_slice(&[0x81, 0x62, b'o', b'k']);
        for (serializer, bytes) in [(Serializer::MsgPack, msgpack), (Serializer::Cbor, cbor)] {
            match serializer.decode(Bytes::from(bytes)) {
                Ok(Message::Call { request: 1, procedure: p, payload, .. }) => {
                    assert_eq!(p, procedure);
                    assert_eq!(payload.to_values().unwrap().0, vec![Value::from("ok")]);
                }
                other => panic!("{serializer:?}: {other:?}"),
            }
        }
    }
}
