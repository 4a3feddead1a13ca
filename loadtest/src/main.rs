//! `loadtest`: a WAMP v2 load generator for Roundhouse, or any WAMP router over WebSocket.
//!
//! `cargo run --release -p loadtest` starts an embedded Roundhouse and benchmarks RPC through it;
//! `--help` explains every flag. Modules: [`cli`] flags, [`target`] the router under test, [`rpc`],
//! [`connect`], [`idle`] and [`chaos`] the four modes, [`report`] tables and JSON, [`cpu`] `/proc` readings,
//! [`progress`] the live line on stderr, [`timer`] the open loop's precise timer, [`wamp`] session
//! helpers.
//!
//! Threads: the load generator runs on its own tokio runtime (a current-thread runtime on the main
//! thread with `--threads 1`, else `--threads` workers named `rh-loader*`); an in-process embedded
//! router runs on a separate multi-thread runtime whose workers are named `rh-router*`, so the two
//! never share workers and the router's CPU time is read from its own threads.

mod chaos;
mod cli;
mod connect;
mod cpu;
mod idle;
mod meta;
mod progress;
mod report;
mod rpc;
mod target;
mod timer;
mod wamp;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Mode};
use target::{Target, Tuning};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status when calls or sessions failed.
const EXIT_FAILED: u8 = 1;
/// Exit status when the run could not happen (router unreachable, bad flags).
const EXIT_SETUP: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let tuning = if cli.mode == Mode::Chaos { Tuning::Chaos } else { Tuning::Default };
    if cli.internal_router {
        return ExitCode::from(target::serve_child(&cli.realm, router_threads(&cli), tuning) as u8);
    }
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    if let Err(message) = check(&cli, fd_limit) {
        eprintln!("loadtest: {message}");
        return ExitCode::from(EXIT_SETUP);
    }
    if let Some(ca_file) = &cli.ca_file {
        if let Err(message) = wamp::trust(ca_file) {
            eprintln!("loadtest: {message}");
            return ExitCode::from(EXIT_SETUP);
        }
    }
    let target = match (&cli.url, cli.mode) {
        (Some(url), _) => Ok(Target::external(url, cli.router_pid)),
        (None, Mode::Idle) => Target::child_process(&cli.realm, router_threads(&cli), tuning),
        (None, _) if cli.spawn_router => Target::child_process(&cli.realm, router_threads(&cli), tuning),
        (None, _) => Target::in_process(&cli.realm, router_threads(&cli), tuning),
    };
    let target = match target {
        Ok(target) => target,
        Err(message) => {
            eprintln!("loadtest: {message}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    eprintln!("loadtest: router under test: {}", target.description);
    if let Some(callee_url) = &cli.callee_url {
        eprintln!("loadtest: callees connect to {callee_url}, callers to {}", target.url);
    }
    let runtime = match loader_runtime(cli.threads as usize) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadtest: cannot start the load generator's runtime: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let outcome = runtime.block_on(run(&cli, &target));
    runtime.shutdown_timeout(Duration::from_secs(1));
    target.stop();
    match outcome {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) if cli.mode == Mode::Chaos => {
            eprintln!("loadtest: FAILED: {failed} violations (listed in the report; replay with --seed)");
            ExitCode::from(EXIT_FAILED)
        }
        Ok(failed) => {
            eprintln!("loadtest: FAILED: {failed} calls or sessions failed (see the errors above)");
            ExitCode::from(EXIT_FAILED)
        }
        Err(message) => {
            eprintln!("loadtest: {message}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

/// Runs the chosen mode, prints its results, and returns how many operations failed.
async fn run(cli: &Cli, target: &Target) -> Result<u64, String> {
    let serializer = cli.serializer.serializer();
    let rawsocket = cli.transport == cli::TransportArg::Rawsocket || target.url.starts_with("rs://");
    let url = wamp::transport_url(&target.url, rawsocket);
    // One session first: an unreachable router is reported as such, and its WELCOME names it.
    let router_version = {
        let client = wamp::join(&url, &cli.realm, serializer).await?;
        let agent = client.router_agent().map(str::to_owned);
        let (mut tx, mut rx) = client.split();
        wamp::leave(&mut tx, &mut rx).await;
        agent
    };
    let facts = meta::facts(router_version.as_deref(), if rawsocket { "rawsocket" } else { "websocket" });
    let mut histograms: Vec<(String, Duration, hdrhistogram::Histogram<u64>)> = Vec::new();
    // With --json or --csv, stdout carries only those and the tables go to stderr.
    let show = |text: &str| {
        if cli.json || cli.csv {
            eprintln!("{text}");
        } else {
            println!("{text}");
            let _ = std::io::stdout().flush();
        }
    };
    let mut json_lines = Vec::new();
    let failed = match cli.mode {
        Mode::Rpc => {
            let settings = rpc::RpcSettings {
                url: url.clone(),
                callee_url: cli
                    .callee_url
                    .as_deref()
                    .map_or_else(|| url.clone(), |u| wamp::transport_url(u, rawsocket)),
                router: target.description.clone(),
                router_cpu: target.router_cpu.clone(),
                realm: cli.realm.clone(),
                procedure: cli.procedure.clone(),
                serializer,
                serializer_name: cli.serializer.name(),
                callees: cli.callees() as usize,
                callers: cli.callers() as usize,
                window: cli.window() as usize,
                rate: cli.rate,
                warmup: cli.warmup(),
                duration: cli.duration,
                drain: cli.drain_timeout,
                payload: cli.payload,
                concurrency: cli.concurrency,
                max_queued_calls: cli.max_queued_calls,
                service_times: cli.service_times(),
                serial_callees: cli.serial_callees,
            };
            let mut results = Vec::new();
            for rule in &cli.rule.0 {
                if *rule == "single" && cli.callees() > 1 {
                    eprintln!("loadtest: rule single admits one callee; running it with 1 callee");
                }
                let result = rpc::run_rule(&settings, rule).await?;
                show(&result.table());
                json_lines.push(result.json());
                histograms.push((result.rule.to_owned(), result.measured, result.latency.clone()));
                results.push(result);
            }
            if results.len() > 1 {
                show(&rpc::rpc_summary(&results));
            }
            results.iter().map(|r| r.error_count()).sum()
        }
        Mode::Connect => {
            let _authenticator = match &cli.authenticator {
                Some(procedure) => {
                    Some(connect::serve_authenticator(&url, &cli.realm, serializer, procedure, &cli.secret).await?)
                }
                None => None,
            };
            let result = connect::run(&connect::ConnectSettings {
                url: url.clone(),
                router: target.description.clone(),
                router_cpu: target.router_cpu.clone(),
                realm: cli.realm.clone(),
                credentials: cli.credentials()?,
                serializer,
                serializer_name: cli.serializer.name(),
                loops: cli.callers() as usize,
                warmup: cli.warmup(),
                duration: cli.duration,
            })
            .await?;
            show(&result.table());
            json_lines.push(result.json());
            let (measured, cycles) = result.cycles();
            histograms.push(("connect".to_owned(), measured, cycles.clone()));
            result.errors.values().sum()
        }
        Mode::Idle => {
            let result = idle::run(&idle::IdleSettings {
                url: url.clone(),
                router: target.description.clone(),
                router_pid: target.router_pid,
                realm: cli.realm.clone(),
                serializer,
                sessions: cli.sessions as usize,
                openers: cli.callers() as usize,
            })
            .await?;
            show(&result.table());
            json_lines.push(result.json());
            result.errors.values().sum::<u64>() + result.dropped as u64
        }
        Mode::Chaos => {
            let seed = cli.seed.unwrap_or_else(|| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                now.as_nanos() as u64 % 1_000_000_000
            });
            let settings = chaos::ChaosSettings {
                url: target.url.clone(),
                router: target.description.clone(),
                router_cpu: target.router_cpu.clone(),
                router_pid: target.router_pid,
                in_process: target.is_in_process(),
                realm: cli.realm.clone(),
                seed,
                callees: cli.callees().into(),
                callers: cli.callers().into(),
                window: cli.window() as usize,
                rate: cli.rate.unwrap_or(1000.0),
                warmup: cli.warmup(),
                duration: cli.duration,
                grace: cli.grace,
                rss_margin: cli.rss_margin,
                skip: cli.skip.clone(),
            };
            let result = chaos::run(&settings, &|| target.census()).await?;
            show(&result.table());
            json_lines.push(result.json());
            result.violation_count
        }
    };
    for line in &mut json_lines {
        if let serde_json::Value::Object(map) = line {
            map.extend(facts.clone());
        }
    }
    if cli.json {
        let mut out = std::io::stdout().lock();
        for line in &json_lines {
            let _ = writeln!(out, "{line}");
        }
    }
    if cli.csv {
        print!("{}", meta::csv(&json_lines));
        let _ = std::io::stdout().flush();
    }
    if let Some(path) = &cli.hist_out {
        let list: Vec<_> = histograms.iter().map(|(tag, measured, h)| (tag.clone(), *measured, h)).collect();
        meta::write_histograms(path, &list)?;
        eprintln!("loadtest: latency histograms written to {} (HdrHistogram interval log)", path.display());
    }
    Ok(failed)
}

/// Refuses flag combinations that cannot work.
fn check(cli: &Cli, fd_limit: u64) -> Result<(), String> {
    if cli.router_pid.is_some() && cli.url.is_none() {
        return Err("--router-pid needs --url (the embedded router is measured on its own)".into());
    }
    if cli.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    let connections = match cli.mode {
        Mode::Rpc => (cli.callers() + cli.callees()) as u64,
        Mode::Connect => cli.callers() as u64,
        Mode::Idle => cli.sessions as u64,
        // Each slot holds one session at a time, hostile cases a few more.
        Mode::Chaos => (cli.callers() + cli.callees()) as u64 + 16,
    };
    // In-process, each connection costs a descriptor on both ends.
    let per_connection = if cli.url.is_none() && !cli.spawn_router && cli.mode != Mode::Idle { 2 } else { 1 };
    if connections * per_connection + 64 > fd_limit {
        return Err(format!(
            "{connections} connections need more file descriptors than the limit of {fd_limit} \
             (raise the hard limit: ulimit -Hn)"
        ));
    }
    Ok(())
}

fn router_threads(cli: &Cli) -> Option<usize> {
    cli.router_threads.map(|n| n as usize)
}

fn loader_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        // The runtime runs on this (the main) thread.
        timer::reduce_timer_slack();
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("rh-loader")
            .on_thread_start(timer::reduce_timer_slack)
            .enable_all()
            .build()
    }
}

/// Warnings of the embedded router (and the client library) go to stderr; RUST_LOG overrides.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
