//! WAMP over WebSocket (tokio-tungstenite): subprotocol negotiation, frame-type checks, limits.
//!
//! `wamp.2.json` travels in text frames, `wamp.2.msgpack` and `wamp.2.cbor` in binary frames; a
//! frame of the other kind is a protocol violation (close status 1003), a text frame that is not
//! UTF-8 too (1007), a message over the limit too (1009). A handshake that offers none of our
//! subprotocols, asks for another path, or comes from a web origin the listener does not allow
//! ([`super::origin`], HTTP 403), is refused with an HTTP error that says why. The
//! socket sits behind a [`FrameGate`], so a large frame costs memory only as its bytes arrive.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, Stream, StreamExt};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::gate::{FrameGate, Framing};
use super::origin::OriginPolicy;
use super::{CloseCode, Connection, OutFrame, PeerLink};
use crate::router::RouterShared;
use crate::session::lifecycle;
use crate::session::protocol::Inbound;
use crate::wire::Serializer;

/// Serves one accepted connection (plain TCP or TLS): handshake, then a WAMP session.
// The handshake callback's error type is tungstenite's HTTP response; its size is not ours to pick.
#[allow(clippy::result_large_err)]
pub async fn serve<S>(router: Arc<RouterShared>, socket: S, connection: Connection, origins: &OriginPolicy)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Connection { peer, deadline, prefix, tls } = connection;
    let config = &router.config;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_write_buffer_size(config.write_buffer_size.saturating_mul(4).max(config.max_message_size * 2))
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
    let mut chosen = None;
    let mut refusal = None;
    let path = config.path.as_str();
    let callback = |request: &Request, response: Response| {
        let origin = request.headers().get(http::header::ORIGIN).map(|o| o.to_str().unwrap_or("(not text)"));
        if let Err(reason) = origins.check(origin) {
            return Err(refuse(&mut refusal, StatusCode::FORBIDDEN, "origin", reason));
        }
        negotiate(request, response, path, &mut chosen, &mut refusal)
    };
    let (max, timeout) = (config.max_message_size, config.message_timeout());
    let gated = FrameGate::with_prefix(socket, Framing::WebSocket, max, timeout, &prefix);
    drop(prefix);
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(gated, callback, Some(ws_config));
    let ws = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            // Logged once: the refusal's reason if we refused, else what went wrong.
            match refusal {
                Some(Refusal { status, reason, kind }) => {
                    router.metrics.refused("websocket", kind);
                    tracing::info!(%peer, status = status.as_u16(), reason, "WebSocket handshake refused");
                }
                None => {
                    router.metrics.refused("websocket", "bad_request");
                    tracing::info!(%peer, %error, "WebSocket handshake failed");
                }
            }
            return;
        }
        Err(_) => {
            router.metrics.refused("websocket", "timeout");
            tracing::info!(%peer, "WebSocket handshake timed out");
            return;
        }
    };
    let Some(serializer) = chosen else { return };
    tracing::debug!(%peer, subprotocol = serializer.subprotocol(), "WebSocket connection open");
    let (sink, stream) = ws.split();
    let (frames, sink) = (Frames { inner: stream, serializer }, FrameSink { inner: sink, serializer });
    // A WebSocket peer announces no limit of its own, and answers pings (RFC 6455 requires it).
    let link =
        PeerLink { transport: super::Kind::WebSocket, peer, serializer, max_outgoing: usize::MAX, pings: true, tls };
    lifecycle::run(router, link, frames, sink).await;
}

/// Picks the first subprotocol in the client's list that we speak.
#[allow(clippy::result_large_err)] // the signature tungstenite's callback requires
fn negotiate(
    request: &Request,
    mut response: Response,
    path: &str,
    chosen: &mut Option<Serializer>,
    refusal: &mut Option<Refusal>,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != path {
        let reason = format!("no WAMP endpoint at {}; use {path}", request.uri().path());
        return Err(refuse(refusal, StatusCode::NOT_FOUND, "wrong_path", reason));
    }
    let offered = request
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    let mut offered = offered;
    let Some(serializer) = offered.find_map(Serializer::from_subprotocol) else {
        let wanted: Vec<_> = Serializer::ALL.iter().map(|s| s.subprotocol()).collect();
        let reason = format!("no supported WAMP subprotocol offered; this router speaks {}", wanted.join(", "));
        return Err(refuse(refusal, StatusCode::BAD_REQUEST, "no_subprotocol", reason));
    };
    response
        .headers_mut()
        .insert(http::header::SEC_WEBSOCKET_PROTOCOL, http::HeaderValue::from_static(serializer.subprotocol()));
    *chosen = Some(serializer);
    Ok(response)
}

/// Why we refused a handshake, for the one log line and the counter.
struct Refusal {
    status: StatusCode,
    reason: String,
    kind: &'static str,
}

fn refuse(refusal: &mut Option<Refusal>, status: StatusCode, kind: &'static str, reason: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason.clone()));
    *response.status_mut() = status;
    *refusal = Some(Refusal { status, reason, kind });
    response
}

type Socket<S> = WebSocketStream<FrameGate<S>>;

/// Incoming WAMP frames of one connection.
struct Frames<S> {
    inner: SplitStream<Socket<S>>,
    serializer: Serializer,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Frames<S> {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        loop {
            let binary = self.serializer.is_binary();
            let protocol = self.serializer.subprotocol();
            let violation = |reason: String, code| Inbound::Violation { reason, code };
            let item = match ready!(self.inner.poll_next_unpin(cx)) {
                None | Some(Ok(WsMessage::Close(_))) => return Poll::Ready(None),
                Some(Ok(WsMessage::Text(text))) if !binary => Inbound::Frame(Bytes::from(text)),
                Some(Ok(WsMessage::Binary(data))) if binary => Inbound::Frame(data),
                Some(Ok(WsMessage::Text(_))) => {
                    violation(format!("text frame on a {protocol} session"), CloseCode::Unsupported)
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    violation(format!("binary frame on a {protocol} session"), CloseCode::Unsupported)
                }
                Some(Ok(WsMessage::Pong(_))) => Inbound::Pong,
                Some(Ok(_)) => continue, // ping: tungstenite answers it itself
                Some(Err(tungstenite::Error::Capacity(error))) => {
                    violation(format!("message too large: {error}"), CloseCode::TooBig)
                }
                Some(Err(tungstenite::Error::Utf8(error))) => {
                    violation(format!("text frame is not UTF-8: {error}"), CloseCode::InvalidData)
                }
                Some(Err(tungstenite::Error::Io(error))) if error.kind() == std::io::ErrorKind::TimedOut => {
                    violation(error.to_string(), CloseCode::Policy)
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "WebSocket read failed");
                    return Poll::Ready(None);
                }
            };
            return Poll::Ready(Some(item));
        }
    }
}

/// Outgoing WAMP frames of one connection.
struct FrameSink<S> {
    inner: SplitSink<Socket<S>, WsMessage>,
    serializer: Serializer,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<OutFrame> for FrameSink<S> {
    type Error = tungstenite::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: OutFrame) -> Result<(), Self::Error> {
        let message = match frame {
            OutFrame::Message(frame) if self.serializer.is_binary() => WsMessage::Binary(frame),
            OutFrame::Message(frame) => WsMessage::Text(Utf8Bytes::try_from(frame)?),
            OutFrame::Ping(payload) => WsMessage::Ping(payload),
            OutFrame::Pong(payload) => WsMessage::Pong(payload),
            OutFrame::Close(code) => {
                WsMessage::Close(Some(CloseFrame { code: code.code().into(), reason: Utf8Bytes::default() }))
            }
        };
        Pin::new(&mut self.inner).start_send(message)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
