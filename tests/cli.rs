//! The `roundhouse` binary as users start it: flags, config file, logs, and signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use roundhouse::client::Client;
use roundhouse::wire::{Message, Serializer};

const BIN: &str = env!("CARGO_BIN_EXE_roundhouse");

/// Starts the binary and returns it with the URL it logged.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
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
