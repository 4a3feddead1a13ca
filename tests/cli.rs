//! The `roundhouse` binary as users start it: flags, config file, logs, and signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use roundhouse::client::Client;
use roundhouse::wire::{Dict, Message, Serializer};

const BIN: &str = env!("CARGO_BIN_EXE_roundhouse");

/// Starts the binary and returns it with the URL it logged.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("router logs its URL").unwrap();
        if let Some(start) = line.find("ws://") {
            let rest = &line[start..];
            break rest[..rest.find('"').unwrap()].to_owned();
        }
    };
    // Keep draining stderr so the router never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("router did not exit");
}

#[tokio::test]
async fn sigterm_and_sigint_say_goodbye_and_exit_zero() {
    for name in ["TERM", "INT"] {
        let (mut child, url) = start(&[]);
        let mut client = Client::join(&url, "realm1", Serializer::Json).await.unwrap();
        signal(&child, name);
        match client.recv().await.unwrap() {
            Message::Goodbye { reason, .. } => assert_eq!(reason, "wamp.close.system_shutdown"),
            other => panic!("{other:?}"),
        }
        assert!(wait_exit(&mut child).success(), "SIG{name} exits 0");
    }
}

#[tokio::test]
async fn realms_come_from_flags_and_the_config_file() {
    let config = std::env::temp_dir().join(format!("roundhouse-test-{}.toml", std::process::id()));
    std::fs::write(&config, "[[realm]]\nname = \"com.example.fromfile\"\n").unwrap();
    let (mut child, url) = start(&["--config", config.to_str().unwrap()]);
    Client::join(&url, "com.example.fromfile", Serializer::MsgPack).await.unwrap();
    assert!(Client::join(&url, "realm1", Serializer::MsgPack).await.is_err(), "the file replaced realm1");
    child.kill().unwrap();
    let _ = child.wait();

    let (mut child, url) = start(&["--realm", "a.one", "--realm", "a.two"]);
    Client::join(&url, "a.one", Serializer::Json).await.unwrap();
    Client::join(&url, "a.two", Serializer::Json).await.unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    std::fs::remove_file(config).ok();
}

#[test]
fn help_explains_and_bad_config_is_refused() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for flag in ["--config", "--listen", "--realm", "--log-level", "ws://127.0.0.1:8080/ws"] {
        assert!(text.contains(flag), "--help mentions {flag}");
    }
    let config = std::env::temp_dir().join(format!("roundhouse-bad-{}.toml", std::process::id()));
    std::fs::write(&config, "lissten = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN).args(["--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lissten"), "names the bad key");
    std::fs::remove_file(config).ok();
}

#[test]
fn check_config_explains_a_valid_file_and_exits_2_on_an_invalid_one() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/roundhouse.toml");
    let out = Command::new(BIN).args(["check-config", example]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("anonymous sessions get role 'anonymous'") && text.ends_with("valid\n"), "{text}");
    let bad = std::env::temp_dir().join(format!("roundhouse-bad-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "[[realm]]\nname = \"r\"\n[[realm.principal]]\nauthid = \"a\"\nrole = \"nobody\"\nticket = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check-config"]).arg(&bad).output().unwrap();
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("principal 'a'"));
}

/// Runs `check-config` on `text`; its exit code and what it printed (stdout, then stderr).
fn check_config_text(text: &str) -> (Option<i32>, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("roundhouse-procedures-{}-{n}.toml", std::process::id()));
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN).args(["check-config"]).arg(&file).output().unwrap();
    std::fs::remove_file(&file).unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), printed)
}

#[test]
fn check_config_accepts_procedure_blocks_and_names_what_is_wrong_with_one() {
    // README's example.
    let readme = include_str!("../README.md");
    let example = readme.split("#### From the config").nth(1).unwrap();
    let example = example.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    assert!(example.contains("[[realm.procedure]]"));
    let (code, printed) = check_config_text(example);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("procedure \"com.myapp.cart\" Exact: invoke jump_consistent_hash, key from kwargs.user_id"),
        "{printed}"
    );
    let realm = "[[realm]]\nname = \"r\"\n[[realm.procedure]]\nuri = \"com.app.f\"\n";
    for (block, reason) in [
        ("invoke = \"fastest\"\n", "unknown invocation rule 'fastest'"),
        ("invoke = \"random\"\nconcurrency = 0\n", "concurrency must be at least 1"),
        ("invoke = \"jump_consistent_hash\"\nrkey = \"body.user\"\n", "rkey must be \"option\""),
        ("invoke = \"jump_consistent_hash\"\nrkey = \"args.first\"\n", "rkey must be \"option\""),
        ("invoke = \"roundrobin\"\nrkey = \"kwargs.user_id\"\n", "rkey applies only with invoke"),
        ("invoke = \"jump_consistent_hash\"\nrkey = \"kwargs.user..id\"\n", "'kwargs.user..id': a step is empty"),
        ("invoke = \"jump_consistent_hash\"\nrkey = \"args.0.a.b.c.d.e.f.g.h\"\n", "it takes 9 steps"),
        ("match = \"prefix\"\n", "sets none of invoke"),
        ("invoke = \"first\"\nmax_queue = 3\n", "unknown field `max_queue`"),
    ] {
        let (code, printed) = check_config_text(&format!("{realm}{block}"));
        assert_eq!(code, Some(2), "{block}: {printed}");
        assert!(printed.contains(reason), "{block}: {printed}");
        if !reason.starts_with("unknown field") {
            assert!(printed.contains("realm 'r': [[realm.procedure]] uri 'com.app.f'"), "{printed}");
        }
    }
}

#[test]
fn hash_secret_prints_a_ticket_hash_never_the_secret() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["hash-secret", "--kdf", "pbkdf2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("ticket = \"$pbkdf2-sha256$i=600000,l=32$") && !line.contains("s3cret"), "{line}");
}

#[test]
fn hash_secret_prints_a_scram_credential_that_check_config_accepts() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["hash-secret", "--method", "wamp-scram", "--kdf", "argon2id"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(line.starts_with("scram = { kdf = \"argon2id13\", salt = \"") && !line.contains("s3cret"), "{line}");
    assert!(line.contains("memory = 19456") && line.contains("stored_key = \"") && line.contains("server_key = \""));
    let file = std::env::temp_dir().join(format!("roundhouse-scram-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!("[[realm]]\nname = \"r\"\n[[realm.principal]]\nauthid = \"a\"\nrole = \"anonymous\"\n{line}\n"),
    )
    .unwrap();
    let out = Command::new(BIN).args(["check-config"]).arg(&file).output().unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("principal 'a' (role 'anonymous'): wamp-scram"));
}

/// Starts the binary and returns it, the URLs it logged (the `listen` listener's `ws://` one,
/// then every `wss://` one) and its log lines as they come.
fn start_logged_tls(args: &[&str]) -> (Child, String, Vec<String>, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut url, mut tls_urls) = (None, Vec::new());
    let url_in = |line: &str, scheme: &str| {
        line.find(scheme).map(|start| line[start..][..line[start..].find('"').unwrap()].to_owned())
    };
    while url.is_none() || tls_urls.is_empty() {
        let line = lines.next().expect("router logs its URLs").unwrap();
        if line.contains("\"router listening\"") {
            url = url_in(&line, "ws://");
        } else if let Some(tls) = url_in(&line, "wss://") {
            tls_urls.push(tls);
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| drop(tx.send(line))));
    (child, url.unwrap(), tls_urls, rx)
}

/// Waits (up to 10 s) for a log line containing `needle`.
fn wait_for_log(logs: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while let Ok(line) = logs.recv_timeout(until.saturating_duration_since(std::time::Instant::now())) {
        if line.contains(needle) {
            return line;
        }
    }
    panic!("no log line with {needle:?}");
}

mod pki;

async fn join_tls(url: &str, ca: &pki::Ca) -> Result<Client, roundhouse::client::ClientError> {
    let mut client = Client::connect_tls(url, Serializer::Json, pki::trusting(ca)).await?;
    client.hello("realm1").await?;
    Ok(client)
}

#[tokio::test]
async fn sighup_reloads_certificates_refuses_a_broken_file_and_never_stops_the_router() {
    let (old_ca, new_ca, dir) = (pki::Ca::new("old CA"), pki::Ca::new("new CA"), pki::Dir::temp());
    dir.server_tls(&old_ca.server());
    let file = |extra: &str| {
        format!("{extra}\n[[realm]]\nname = \"realm1\"\n\n[[listener]]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"router.pem\", key = \"router.key\" }}\n")
    };
    let config = dir.write("roundhouse.toml", &file(""));
    let (mut child, url, tls_urls, logs) = start_logged_tls(&["--config", config.to_str().unwrap()]);
    let wss = &tls_urls[0];
    let mut plain = Client::join(&url, "realm1", Serializer::Json).await.unwrap();
    let mut before = join_tls(wss, &old_ca).await.unwrap();

    // New certificate files at the same paths: new connections get them, open ones go on.
    dir.server_tls(&new_ca.server());
    signal(&child, "HUP");
    wait_for_log(&logs, "config reloaded");
    assert!(join_tls(wss, &old_ca).await.is_err());
    let after = join_tls(wss, &new_ca).await.unwrap();
    before.register("com.example.before", Dict::new()).await.unwrap();
    plain.register("com.example.plain", Dict::new()).await.unwrap();

    // A broken file is refused and logged; everything goes on as it was.
    dir.write("roundhouse.toml", "lissten = \"127.0.0.1:1\"\n");
    signal(&child, "HUP");
    assert!(wait_for_log(&logs, "config reload refused").contains("lissten"));
    // A key that needs a restart is named; the certificate still applies.
    dir.write("roundhouse.toml", &file("max_connections = 5"));
    signal(&child, "HUP");
    assert!(wait_for_log(&logs, "only after a restart").contains("max_connections"));
    wait_for_log(&logs, "config reloaded");
    let again = join_tls(wss, &new_ca).await.unwrap();
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP never stops the router");

    for client in [plain, before, after, again] {
        client.goodbye().await.unwrap();
    }
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
}

#[tokio::test]
async fn sighup_without_a_config_file_changes_nothing_and_keeps_serving() {
    let (mut child, url) = start(&[]);
    let mut client = Client::join(&url, "realm1", Serializer::Json).await.unwrap();
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP does not stop the router");
    client.register("com.example.after_hup", Dict::new()).await.unwrap();
    Client::join(&url, "realm1", Serializer::Json).await.unwrap();
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
}

/// Starts the binary and collects its log lines; returns it with the URL it logged.
fn start_logged(args: &[&str]) -> (Child, String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listen = if args.contains(&"--listen") { &[][..] } else { &["--listen", "127.0.0.1:0"][..] };
    let mut child = Command::new(BIN)
        .args(listen)
        .args(["--admin-listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let collected = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(start) = line.find("ws://") {
                let rest = &line[start..];
                let _ = tx.send(rest[..rest.find('"').unwrap()].to_owned());
            }
            collected.lock().unwrap().push(line);
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(10)).expect("router logs its URL");
    (child, url, log)
}

/// The JSON log lines whose message is `message`, once at least `count` of them arrived.
fn logged(log: &std::sync::Mutex<Vec<String>>, message: &str, count: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let found: Vec<serde_json::Value> = log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect();
        if found.len() >= count {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {count} log lines '{message}' in {:#?}", log.lock().unwrap());
}

#[tokio::test]
async fn sessions_are_logged_at_info_with_real_fields_and_refusals_once() {
    let (mut child, url, log) = start_logged(&[]);
    let client = Client::join(&url, "realm1", Serializer::MsgPack).await.unwrap();
    let session = client.session_id();
    client.goodbye().await.unwrap();
    // One info line per session, at its end, with who it was, why it ended and how long it lasted.
    let left = &logged(&log, "session left", 1)[0];
    assert_eq!(left["level"], "INFO");
    assert_eq!(left["session"], session);
    assert_eq!(left["realm"], "realm1");
    assert_eq!(left["transport"], "websocket");
    assert_eq!(left["serializer"], "wamp.2.msgpack");
    assert!(left["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{left}");
    assert!(left["authid"].as_str().unwrap().starts_with("anonymous"));
    assert_eq!(left["authrole"], "anonymous");
    assert_eq!(left["authmethod"], "anonymous");
    assert_eq!(left["reason"], "goodbye");
    assert!(left["seconds"].as_f64().unwrap() > 0.0, "{left}");
    // `session joined` is at debug: not in an info log.
    let joined = log.lock().unwrap().iter().filter(|l| l.contains("\"session joined\"")).count();
    assert_eq!(joined, 0);

    // A handshake offering no WAMP subprotocol, and a RawSocket one with reserved bits: each
    // refusal is logged once, with its reason.
    let address = url.trim_start_matches("ws://").trim_end_matches("/ws").to_owned();
    let mut tcp = std::net::TcpStream::connect(&address).unwrap();
    use std::io::{Read, Write};
    write!(
        tcp,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let mut raw = std::net::TcpStream::connect(&address).unwrap();
    raw.write_all(&[0x7F, 0xF1, 0x00, 0x01]).unwrap();
    let mut reply = [0u8; 4];
    raw.read_exact(&mut reply).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let refused = logged(&log, "WebSocket handshake refused", 1);
    assert_eq!(refused.len(), 1, "logged once: {refused:?}");
    assert_eq!(refused[0]["status"], 400);
    assert!(refused[0]["reason"].as_str().unwrap().contains("wamp.2.json"));
    let raw_refused = logged(&log, "RawSocket handshake refused", 1);
    assert_eq!(raw_refused.len(), 1);
    assert_eq!(raw_refused[0]["reason"], "reserved_bits");
    for line in log.lock().unwrap().iter() {
        assert!(!line.contains("Some(") && !line.contains("Str(\""), "debug text in a log line: {line}");
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not JSON: {line}");
    }
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
}

#[test]
fn a_certificate_that_does_not_load_is_refused_at_start_with_exit_2() {
    let dir = pki::Dir::temp();
    let config = dir.write("roundhouse.toml", "[tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n");
    let out = Command::new(BIN).args(["--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.pem"), "names the file: {stderr}");
}

#[test]
fn unknown_log_levels_are_refused() {
    for level in ["verbose", "roundhouse=loud"] {
        let out = Command::new(BIN).args(["--log-level", level, "print-config"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "--log-level {level}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown log level"), "{level}");
    }
    for level in ["debug", "roundhouse=debug,info", "WARN", "off"] {
        let out = Command::new(BIN).args(["--log-level", level, "print-config"]).output().unwrap();
        assert!(out.status.success(), "--log-level {level}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test]
async fn listen_takes_host_names_and_a_taken_address_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mut child, url, _) = start_logged(&["--listen", &format!("localhost:{port}")]);
    assert_eq!(url, format!("ws://127.0.0.1:{port}/ws"));
    Client::join(&url, "realm1", Serializer::Json).await.unwrap();

    // The same port again: the second router says which address is taken, and exits non-zero.
    let out = Command::new(BIN)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--no-admin"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    let out = Command::new(BIN).args(["--listen", "no-such-host.invalid:1", "print-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
}

#[test]
fn version_and_print_config_round_trip() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), format!("roundhouse {}", env!("CARGO_PKG_VERSION")));

    let out = Command::new(BIN).arg("print-config").env_remove("ROUNDHOUSE_LISTEN").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let path = std::env::temp_dir().join(format!("roundhouse-printed-{}.toml", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let parsed = roundhouse::RouterConfig::from_file(&path).expect("print-config parses back");
    let defaults = roundhouse::RouterConfig::default();
    assert_eq!(parsed.to_toml(), defaults.to_toml(), "the defaults, every key");
    assert!(text.contains("listen = \"127.0.0.1:8080\"") && text.contains("[admin]") && text.contains("[[realm]]"));

    // Environment overrides, and flags over the environment.
    let out = Command::new(BIN)
        .arg("print-config")
        .env("ROUNDHOUSE_LISTEN", "127.0.0.1:9999")
        .env("ROUNDHOUSE_REALMS", "a.one,a.two")
        .env("ROUNDHOUSE_ADMIN_LISTEN", "127.0.0.1:9998")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:9999\"") && text.contains("listen = \"127.0.0.1:9998\""), "{text}");
    assert!(text.contains("name = \"a.one\"") && text.contains("name = \"a.two\""), "{text}");
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:7777", "print-config"])
        .env("ROUNDHOUSE_LISTEN", "127.0.0.1:9999")
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("listen = \"127.0.0.1:7777\""));
    std::fs::remove_file(path).ok();
}

#[tokio::test]
async fn the_binary_serves_its_admin_endpoints() {
    let (mut child, url, log) = start_logged(&[]);
    let admin = logged(&log, "admin listening: /healthz /readyz /metrics /api/status, status page at /", 1)[0]["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(&admin).unwrap();
        write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(get("/readyz").starts_with("HTTP/1.1 200"));
    let _client = Client::join(&url, "realm1", Serializer::Json).await.unwrap();
    assert!(get("/metrics").contains(
        "roundhouse_sessions{realm=\"realm1\",transport=\"websocket\",serializer=\"json\",authmethod=\"anonymous\"} 1"
    ));
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
}

#[test]
fn the_systemd_unit_starts_the_binary_with_flags_it_takes() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/roundhouse.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/roundhouse"));
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/roundhouse.toml");
    let args: Vec<&str> = words.map(|w| if w == "/etc/roundhouse/roundhouse.toml" { example } else { w }).collect();
    let mut env = Command::new(BIN);
    for (key, value) in unit.lines().filter_map(|l| l.strip_prefix("Environment=")).filter_map(|e| e.split_once('=')) {
        env.env(key, value);
    }
    let out = env.args(&args).arg("print-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().contains("log_format = \"json\""));
}
