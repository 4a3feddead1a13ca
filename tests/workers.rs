//! Session workers: sessions spread round-robin over the workers, calls between sessions on the
//! same worker and on different workers are answered exactly, and the workers end with the
//! runtime that started the router (its own test binary: it counts this process's threads).

mod common;

use std::time::Duration;

use roundhouse::client::{echo_invocations, Client};
use roundhouse::wire::{Dict, Serializer, Value};

/// Threads of this process that are session workers.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(roundhouse::workers::THREAD_NAME_PREFIX))
        .count()
}

/// `n` calls of `procedure`, each with its own argument, which the echoing callee sends back.
async fn echoed(caller: &mut Client, procedure: &str, n: usize) {
    for i in 0..n {
        let argument = format!("{procedure}#{i}");
        let payload = caller.call(procedure, vec![Value::from(argument.as_str())]).await.expect("call answered");
        assert_eq!(common::first_arg(&payload), argument);
    }
}

#[test]
fn sessions_spread_over_the_workers_and_the_workers_end_with_their_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let address = runtime.block_on(async {
        let router = common::router_with(|config| config.worker_threads = 2).await;
        assert_eq!(worker_threads(), 2);

        // Accepted in turn: worker 0, 1, 0, 1.
        let mut sessions = Vec::new();
        for procedure in ["com.example.zero", "com.example.one"] {
            let mut callee = common::join(&router, Serializer::Json).await;
            callee.register(procedure, Dict::new()).await.expect("registers");
            sessions.push(callee.session_id());
            tokio::spawn(echo_invocations(callee));
        }
        let mut callers = Vec::new();
        for _ in 0..2 {
            let caller = common::join(&router, Serializer::MsgPack).await;
            sessions.push(caller.session_id());
            callers.push(caller);
        }
        let workers: Vec<_> =
            sessions.iter().map(|id| router.shared().sessions.get(id).expect("open session").worker()).collect();
        assert_eq!(workers, [Some(0), Some(1), Some(0), Some(1)]);

        // Each caller reaches a callee on its own worker and one on the other.
        for caller in &mut callers {
            echoed(caller, "com.example.zero", 200).await;
            echoed(caller, "com.example.one", 200).await;
        }
        for caller in callers {
            common::say_goodbye(caller).await;
        }
        router.local_addr()
    });
    drop(runtime);

    // The router's handle was dropped without a shutdown: the workers stop with the runtime, and
    // the listener (owned by worker 0) closes.
    let mut left = (worker_threads(), std::net::TcpStream::connect(address).is_ok());
    for _ in 0..500 {
        if left == (0, false) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        left = (worker_threads(), std::net::TcpStream::connect(address).is_ok());
    }
    assert_eq!(left, (0, false), "(worker threads, listener still accepting) after the runtime ended");
}
