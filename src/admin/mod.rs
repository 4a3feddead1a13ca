//! The admin listener: its own address (never the WAMP port), on the runtime that starts it (the
//! `roundhouse` binary's main thread), never on a session worker (see [`crate::workers`]).
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 `{"status":"ok"}` while the process runs |
//! | `GET /readyz` | 200 `{"status":"ready",...}` once the listeners are bound and the realms up; 503 `{"status":"shutting_down"}` from the first shutdown signal on |
//! | `GET /metrics` | Prometheus text format (see [`crate::metrics`]) |
//! | `GET /` | the live status page (HTML and JS shipped in the binary) |
//! | `GET /api/status` | the page's JSON: realms, top sessions, top registrations, the last minute's series |
//!
//! A deliberately small HTTP/1.1 server: GET and HEAD only, one request per connection, request
//! heads of at most 8 KiB, 5 s to send one. Everything it shows is read from the router's tables
//! and sharded counters; nothing on the call path waits for it.

pub mod status;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::router::RouterShared;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("status.js");

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// A running admin listener; dropping it does not stop it, [`AdminHandle::stop`] does.
pub struct AdminHandle {
    local_addr: SocketAddr,
    stop: CancellationToken,
}

impl AdminHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The status page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }

    /// Stops accepting and stops the status sampler.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Binds `addr` and serves the admin endpoints for `router` until stopped. The bind error names
/// the address.
pub async fn start(router: Arc<RouterShared>, addr: SocketAddr) -> io::Result<AdminHandle> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind the admin listener to {addr}: {e}")))?;
    let local_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let state = Arc::new(status::StatusState::new(router.clone()));
    tokio::spawn(status::sample(state.clone(), stop.clone()));
    tokio::spawn(accept(listener, state, stop.clone()));
    tracing::info!(url = %format!("http://{local_addr}/"), "admin listening: /healthz /readyz /metrics /api/status, status page at /");
    Ok(AdminHandle { local_addr, stop })
}

/// Admin responses being built at once (see [`serve`]).
static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

async fn accept(listener: TcpListener, state: Arc<status::StatusState>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), serve(tcp, state)).await;
                });
            }
            Err(error) => {
                tracing::debug!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One HTTP response.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn json(status: u16, value: serde_json::Value) -> Self {
        Response { status, content_type: "application/json", body: value.to_string() }
    }

    fn text(status: u16, body: &str) -> Self {
        Response { status, content_type: "text/plain; charset=utf-8", body: format!("{body}\n") }
    }
}

async fn serve(mut tcp: TcpStream, state: Arc<status::StatusState>) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
            }
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    let read = tokio::time::timeout(Duration::from_secs(5), read).await;
    let head_only = head.starts_with(b"HEAD ");
    let response = match read {
        // /metrics and /api/status walk every session and registration: off the workers that
        // route calls, and one walk at a time, so scrapers cannot take the router's threads.
        Ok(Ok(())) => {
            let _turn = RENDERING.acquire().await.map_err(io::Error::other)?;
            let head = std::mem::take(&mut head);
            tokio::task::spawn_blocking(move || route(&head, &state)).await.map_err(io::Error::other)?
        }
        Ok(Err(error)) if error.kind() == io::ErrorKind::InvalidData => Response::text(431, "request head too large"),
        _ => return Ok(()),
    };
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(response.body.as_bytes());
    }
    tcp.write_all(&out).await?;
    tcp.shutdown().await
}

fn route(head: &[u8], state: &status::StatusState) -> Response {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Response::text(400, "bad request line");
    };
    if method != "GET" && method != "HEAD" {
        return Response::text(405, "only GET and HEAD");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let router = state.router();
    match path {
        "/healthz" => Response::json(200, serde_json::json!({ "status": "ok" })),
        "/readyz" if router.shutdown.is_cancelled() => {
            Response::json(503, serde_json::json!({ "status": "shutting_down" }))
        }
        "/readyz" => Response::json(
            200,
            serde_json::json!({
                "status": "ready",
                "realms": router.realms.len(),
                "sessions": router.sessions.len(),
            }),
        ),
        "/metrics" => Response {
            status: 200,
            content_type: crate::metrics::exposition::CONTENT_TYPE,
            body: crate::metrics::exposition::render(router),
        },
        "/" | "/index.html" => {
            Response { status: 200, content_type: "text/html; charset=utf-8", body: PAGE.to_owned() }
        }
        "/status.js" => {
            Response { status: 200, content_type: "text/javascript; charset=utf-8", body: SCRIPT.to_owned() }
        }
        "/api/status" => Response::json(200, state.status(&status::Query::parse(query))),
        _ => Response::text(404, "not found; try /, /healthz, /readyz, /metrics or /api/status"),
    }
}
