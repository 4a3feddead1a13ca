//! The admin listener through real HTTP on loopback: probes, `/metrics` parsed as Prometheus text
//! whose values rise with real calls, `/api/status`, the page and its script.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use roundhouse::client::{echo_invocations, Client};
use roundhouse::wire::{Dict, Serializer, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` from `addr`: the status code, the headers (lower-case names) and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, HashMap<String, String>, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await.unwrap().unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect();
    assert_eq!(headers_len(&headers), Some(body.len()), "Content-Length matches the body of {path}");
    (status, headers, body.to_owned())
}

fn headers_len(headers: &HashMap<String, String>) -> Option<usize> {
    headers.get("content-length").and_then(|v| v.parse().ok())
}

/// Prometheus text: `name{labels}` → value; checks that every sample's family has a TYPE line.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(types.contains_key(family) || types.contains_key(name), "{name} has a TYPE line");
        assert!(samples.insert(series.to_owned(), value).is_none(), "{series} appears once");
    }
    samples
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn probes_metrics_and_status_over_http() {
    let router = router_with(|c| c.metrics.procedures = vec!["com.example.echo".to_owned()]).await;
    let admin = roundhouse::admin::start(router.shared().clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = admin.local_addr();

    let (status, headers, body) = get(addr, "/healthz").await;
    assert_eq!((status, headers["content-type"].as_str()), (200, "application/json"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"], "ok");
    let (status, _, body) = get(addr, "/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"], "ready");
    assert_eq!(get(addr, "/nope").await.0, 404);

    let before = parse_prometheus(&get(addr, "/metrics").await.2);
    let calls = r#"roundhouse_calls_total{realm="realm1",rule="roundrobin",outcome="result"}"#;
    assert_eq!(value(&before, calls), 0.0);

    // Real calls: two callees share a round-robin registration; one caller calls 50 times, plus a
    // call nobody answers and an application error.
    let mut callees = Vec::new();
    for _ in 0..2 {
        let mut callee = join(&router, Serializer::MsgPack).await;
        callee.register("com.example.echo", Dict::new().with("invoke", "roundrobin")).await.unwrap();
        callees.push(tokio::spawn(echo_invocations(callee)));
    }
    let mut caller = join(&router, Serializer::Json).await;
    for i in 0..50u64 {
        caller.call("com.example.echo", vec![Value::UInt(i)]).await.unwrap();
    }
    assert!(caller.call("com.example.nobody", vec![]).await.is_err());

    let (status, headers, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let after = parse_prometheus(&text);
    assert_eq!(value(&after, calls), 50.0);
    assert_eq!(
        value(&after, r#"roundhouse_calls_total{realm="realm1",rule="none",outcome="wamp.error.no_such_procedure"}"#),
        1.0
    );
    assert_eq!(value(&after, r#"roundhouse_call_duration_seconds_count{realm="realm1",rule="roundrobin"}"#), 50.0);
    let sum = value(&after, r#"roundhouse_call_duration_seconds_sum{realm="realm1",rule="roundrobin"}"#);
    assert!(sum > 0.0 && sum < 50.0, "latency sum {sum}");
    assert_eq!(
        value(&after, r#"roundhouse_call_duration_seconds_bucket{realm="realm1",rule="roundrobin",le="+Inf"}"#),
        50.0
    );
    assert_eq!(
        value(
            &after,
            r#"roundhouse_procedure_calls_total{realm="realm1",procedure="com.example.echo",outcome="result"}"#
        ),
        50.0
    );
    assert!(value(&after, r#"roundhouse_messages_total{direction="in",type="CALL"}"#) >= 51.0);
    assert!(value(&after, r#"roundhouse_messages_total{direction="out",type="INVOCATION"}"#) >= 50.0);
    assert!(value(&after, r#"roundhouse_message_bytes_total{direction="in",type="CALL"}"#) > 51.0 * 10.0);
    assert_eq!(
        value(
            &after,
            r#"roundhouse_sessions{realm="realm1",transport="websocket",serializer="msgpack",authmethod="anonymous"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            r#"roundhouse_sessions{realm="realm1",transport="websocket",serializer="json",authmethod="anonymous"}"#
        ),
        1.0
    );
    assert_eq!(value(&after, r#"roundhouse_registrations{realm="realm1"}"#), 1.0);
    assert_eq!(value(&after, r#"roundhouse_calls_in_flight{realm="realm1"}"#), 0.0);

    // The status JSON names the registration, its rule and both members with what they served.
    let (status, _, body) = get(addr, "/api/status?top=5&sessions=2").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let registration = &json["registrations"]["shown"][0];
    assert_eq!(registration["uri"], "com.example.echo");
    assert_eq!(registration["rule"], "roundrobin");
    assert_eq!(registration["calls"], 50);
    let served: Vec<u64> =
        registration["members"].as_array().unwrap().iter().map(|m| m["served"].as_u64().unwrap()).collect();
    assert_eq!(served, vec![25, 25]);
    assert_eq!(json["sessions"]["total"], 3);
    assert_eq!(json["sessions"]["shown"].as_array().unwrap().len(), 2);
    assert_eq!(json["realms"][0]["calls_total"], 51);

    let (status, headers, page) = get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/html"));
    assert!(page.contains("/status.js") && !page.contains("http://") && !page.contains("https://"), "no CDN");
    let (status, _, script) = get(addr, "/status.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("/api/status"));

    // Shutting down: readiness goes 503 while the admin listener still answers.
    drop(caller);
    let shared = router.shared().clone();
    shared.shutdown.cancel();
    let (status, _, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("shutting_down"));
    assert_eq!(get(addr, "/healthz").await.0, 200);
    router.shutdown().await;
    admin.stop();
    for callee in callees {
        callee.abort();
    }
}

#[tokio::test]
async fn events_and_sessions_closed_are_counted() {
    let router = router().await;
    let admin = roundhouse::admin::start(router.shared().clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut subscriber = join(&router, Serializer::Cbor).await;
    subscriber.subscribe("com.example.topic", Dict::new()).await.unwrap();
    let mut publisher = join(&router, Serializer::Json).await;
    for _ in 0..3 {
        let request = publisher.request_id();
        publisher
            .send(&roundhouse::wire::Message::Publish {
                request,
                options: Dict::new(),
                topic: "com.example.topic".into(),
                payload: roundhouse::wire::Payload::Empty,
            })
            .await
            .unwrap();
    }
    for _ in 0..3 {
        subscriber.recv().await.unwrap();
    }
    say_goodbye(publisher).await;
    let text = get(admin.local_addr(), "/metrics").await.2;
    let samples = parse_prometheus(&text);
    assert_eq!(value(&samples, r#"roundhouse_events_published_total{realm="realm1"}"#), 3.0);
    assert_eq!(value(&samples, r#"roundhouse_events_delivered_total{realm="realm1"}"#), 3.0);
    assert_eq!(value(&samples, r#"roundhouse_sessions_closed_total{reason="goodbye"}"#), 1.0);
    assert_eq!(value(&samples, r#"roundhouse_subscriptions{realm="realm1"}"#), 1.0);
    drop(subscriber);
    admin.stop();
}

#[tokio::test]
async fn a_taken_admin_address_is_named_in_the_error() {
    let router = router().await;
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let error = match roundhouse::admin::start(router.shared().clone(), addr).await {
        Err(error) => error.to_string(),
        Ok(_) => panic!("bound a taken address"),
    };
    assert!(error.contains(&addr.to_string()), "{error}");
    let _ = Client::join(&router.url(), REALM, Serializer::Json).await.unwrap();
}

/// The status page's JSON and `/metrics` at 10,000 sessions and 100,000 registrations: small
/// answers, built in well under a second. The router is the real binary, as its own process (so
/// each side holds only its own end of the 10,000 connections). Run by hand, it takes a while:
/// `cargo test --release --test admin -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn status_stays_light_with_10k_sessions_and_100k_registrations() {
    use std::io::BufRead;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let config = std::env::temp_dir().join(format!("roundhouse-scale-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nmax_registrations_per_session = 100000\nkeepalive_interval_ms = 0\n\
         idle_timeout_ms = 0\nlog_format = \"json\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roundhouse"))
        .args(["--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut url, mut admin) = (String::new(), String::new());
    while url.is_empty() || admin.is_empty() {
        let line: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        match line["message"].as_str().unwrap_or_default() {
            "router listening" => url = line["url"].as_str().unwrap().to_owned(),
            m if m.starts_with("admin listening") => {
                admin = line["url"].as_str().unwrap().trim_start_matches("http://").trim_end_matches('/').to_owned()
            }
            _ => {}
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    // 10 callees, 10,000 registrations each, REGISTERs pipelined in chunks.
    let mut callees = Vec::new();
    for c in 0..10 {
        let mut callee = Client::join(&url, REALM, Serializer::MsgPack).await.unwrap();
        for chunk in 0..10 {
            for i in 0..1_000u64 {
                let request = callee.request_id();
                let procedure = format!("com.example.c{c}.p{}", chunk * 1000 + i);
                callee
                    .tx
                    .feed(&roundhouse::wire::Message::Register { request, options: Dict::new(), procedure })
                    .await
                    .unwrap();
            }
            callee.tx.flush().await.unwrap();
            for _ in 0..1_000 {
                assert!(matches!(callee.recv().await.unwrap(), roundhouse::wire::Message::Registered { .. }));
            }
        }
        callees.push(callee);
    }
    // 10,000 idle sessions, opened 100 at a time.
    let mut sessions = Vec::new();
    for _ in 0..100 {
        let batch: Vec<_> = (0..100).map(|_| Client::join(&url, REALM, Serializer::Json)).collect();
        let joined =
            tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(batch)).await.unwrap();
        for client in joined {
            sessions.push(client.unwrap());
        }
    }
    for path in ["/api/status", "/api/status", "/metrics", "/api/status?q=c3.p999&top=5"] {
        let started = std::time::Instant::now();
        let (status, _, body) = get(admin, path).await;
        let took = started.elapsed();
        println!("{path}: {} bytes in {took:?}", body.len());
        assert_eq!(status, 200);
        assert!(body.len() < 64 * 1024, "{path} is {} bytes", body.len());
        assert!(took < Duration::from_secs(2), "{path} took {took:?}");
    }
    let json: serde_json::Value = serde_json::from_str(&get(admin, "/api/status").await.2).unwrap();
    assert_eq!(json["registrations"]["total"], 100_000);
    assert_eq!(json["registrations"]["shown"].as_array().unwrap().len(), 25);
    assert_eq!(json["sessions"]["total"], 10_010);
    let filtered: serde_json::Value = serde_json::from_str(&get(admin, "/api/status?q=c3.p9999").await.2).unwrap();
    assert_eq!(filtered["registrations"]["shown"][0]["uri"], "com.example.c3.p9999");
    drop(sessions);
    drop(callees);
    child.kill().unwrap();
    let _ = child.wait();
    std::fs::remove_file(config).ok();
}
