//! Command-line flags, and the small parsers they need (durations, invocation rule lists).

use std::time::Duration;

use clap::{Parser, ValueEnum};
use roundhouse::wire::Serializer;

/// Load generator for WAMP v2 routers: RPC throughput and latency, session setup rate, memory per
/// idle session, and a chaos soak that checks every call is answered exactly once.
///
/// With no --url it starts an embedded Roundhouse router on 127.0.0.1 (an ephemeral port) and
/// benchmarks it, so `cargo run --release -p loadtest` alone shows the product working. With --url
/// it drives any WAMP router that speaks WAMP over WebSocket (ws://) or RawSocket (rs://host:port),
/// with JSON, MessagePack or CBOR.
///
/// rpc mode: --callees sessions register --procedure with the invocation rule and echo every
/// INVOCATION back as YIELD; --callers sessions each keep --window calls in flight (closed loop) or
/// send at a fixed total --rate (open loop). After --warmup, results are collected for --duration and
/// printed as a table per rule (calls/s, latency percentiles, errors, calls per callee, CPU per call).
///
/// CPU per call: the router's CPU time (the embedded router's own threads, or --router-pid's process)
/// and the load generator's, over the measured interval, divided by the calls completed in it. A
/// DISTURBED line warns when other processes took CPU time meanwhile.
///
/// chaos mode: in two rounds, --warmup then --duration, callees join, serve and leave in every way
/// (UNREGISTER, GOODBYE, a dropped connection, freezing), healthy callers pipeline checked calls
/// over WebSocket and RawSocket in every serializer (timeouts, CANCEL in all three modes,
/// progressive results and invocations), slow consumers stop reading, and hostile sessions send
/// malformed frames. Every choice comes from a seeded RNG (--seed, printed). The run fails with a
/// precise message if a healthy call is not answered exactly once, within its timeout plus --grace,
/// with an error URI that fits how it ended; if a healthy session is disturbed; if a hostile one is
/// not refused; or if, once everyone has left a round, the router is not empty; or if its RSS then,
/// after the second round, exceeds its RSS after the first by more than --rss-margin percent plus
/// 16 MiB.
///
/// Output: tables on stdout; --json adds one JSON line per result (with the router's version, the
/// load generator's commit, host, CPU model and a timestamp), --csv one CSV row per result instead,
/// and --hist-out writes the latency histograms as an HdrHistogram interval log.
///
/// Linux only: CPU per call (router, loader, other processes: the DISTURBED warning), the router's
/// RSS in idle and chaos modes, and the CPU model are read from /proc; elsewhere they are left out
/// ("unknown"), and everything else works.
///
/// Exit status: 0 when every call succeeded (chaos: no violation), 1 when any call failed (chaos: any
/// violation), 2 when the router could not be reached or the flags are invalid.
#[derive(Parser, Debug, Clone)]
#[command(name = "loadtest", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// WebSocket URL of the router to test, e.g. ws://127.0.0.1:8080/ws. Without it an embedded
    /// Roundhouse is started on an ephemeral port.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// rpc mode: where the callees connect, when not to --url: another node of a Roundhouse
    /// cluster, so every call crosses from the callers' node to the callees' (e.g. --url
    /// ws://127.0.0.1:8081/ws --callee-url ws://127.0.0.1:8082/ws against scripts/cluster.sh).
    #[arg(long, value_name = "URL", requires = "url")]
    pub callee_url: Option<String>,

    /// PEM file with the CA certificate(s) that a wss:// --url's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Realm every session joins.
    #[arg(long, default_value = "realm1", value_name = "URI")]
    pub realm: String,

    /// Procedure the callees register and the callers call.
    #[arg(long, default_value = "com.roundhouse.loadtest", value_name = "URI")]
    pub procedure: String,

    /// What to measure: `rpc` calls through callees, `connect` session setup and teardown
    /// (HELLO→WELCOME→GOODBYE) as fast as --callers loops can go, `idle` memory per idle joined
    /// session (--sessions of them), or `chaos`, the soak described above.
    #[arg(long, value_enum, default_value_t = Mode::Rpc)]
    pub mode: Mode,

    /// Invocation rule(s) the callees register with: one or several comma-separated of single,
    /// roundrobin, random, first, last, queue_least_loaded, queue_least_loaded_sample,
    /// jump_consistent_hash, or `all` for each in turn. `single` always runs with one callee, since
    /// a single registration admits only one. With jump_consistent_hash each call carries an
    /// `rkey`, cycling over 1024 keys.
    #[arg(long, default_value = "roundrobin", value_parser = parse_rules, value_name = "RULES")]
    pub rule: RuleList,

    /// Callees register with `REGISTER.Options.concurrency` N: the router routes at most N calls
    /// at once to each, and queues the rest (Roundhouse's queue holds 1000 by default; raise it
    /// with --max-queued-calls when callers × window is larger).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub concurrency: Option<u64>,

    /// With --concurrency: `REGISTER.Options._max_queued_calls`, the registration's queue bound.
    #[arg(long, value_name = "N", requires = "concurrency")]
    pub max_queued_calls: Option<u64>,

    /// How long each callee takes to answer a call (calls are served in parallel, each answered
    /// this long after it arrived); 0 answers at once.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub service_time: Duration,

    /// Makes callee K (1-based) answer FACTOR times slower than --service-time (which defaults to
    /// 1ms when this is given without it), e.g. `1:10`.
    #[arg(long, value_parser = parse_slow_callee, value_name = "K:FACTOR")]
    pub slow_callee: Option<(usize, f64)>,

    /// Each callee works on one call at a time (a call waits for the ones before it, then takes
    /// its service time), so a slow callee has a capacity and builds a backlog when a rule sends
    /// it more than it can serve; without it calls are served in parallel.
    #[arg(long)]
    pub serial_callees: bool,

    /// Callee sessions, each answering INVOCATIONs with a YIELD that echoes the payload [default:
    /// 4]. Chaos: callees alive at once, each replaced by a new one when it leaves [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub callees: Option<u32>,

    /// Caller sessions (rpc), concurrent connect loops (connect), or concurrent openers (idle)
    /// [default: 4]. Chaos: healthy callers alive at once [default: 6].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub callers: Option<u32>,

    /// Calls in flight per caller [default: 32; chaos: 64]. Without --rate this is the closed loop:
    /// a new call goes out as soon as one completes. With --rate it caps the calls in flight; calls
    /// that fall due while the window is full wait, and that wait counts in their latency.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub window: Option<u32>,

    /// Open loop: a fixed total call rate in calls/s, spread evenly over the callers. Latency is
    /// measured from each call's intended send time, so queueing in the router (or the loader) is not
    /// hidden ("coordinated omission"); the latency from the actual send time is shown as well.
    /// Chaos always paces its healthy callers [default: 1000].
    #[arg(long, value_name = "CALLS_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// How long results are collected, after the warmup: e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,

    /// Load before measuring starts; its results are discarded (but its errors still count)
    /// [default: 2s]. Chaos: the first round, after which the router's RSS is first read [default:
    /// 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Option<Duration>,

    /// Size in bytes of the one binary argument each call carries (and each YIELD echoes). JSON
    /// carries it as "\u0000" + base64, so its frames are about a third larger.
    #[arg(long, default_value_t = 16, value_name = "BYTES")]
    pub payload: usize,

    /// WAMP serializer: wamp.2.json, wamp.2.msgpack or wamp.2.cbor (RawSocket serializer ids 1, 2, 3).
    #[arg(long, value_enum, default_value_t = SerializerArg::Json)]
    pub serializer: SerializerArg,

    /// Transport: WebSocket, or RawSocket (TCP). With rawsocket a ws:// --url (or the embedded
    /// router's) is reached as RawSocket on the same host and port, which Roundhouse serves there
    /// too; an rs://HOST:PORT --url always means RawSocket.
    #[arg(long, value_enum, default_value_t = TransportArg::Websocket)]
    pub transport: TransportArg,

    /// Also write each rpc and connect run's latency histogram to FILE as an HdrHistogram interval
    /// log (V2, compressed, one interval per result, tagged with the rule or mode), for
    /// HistogramLogAnalyzer and the other HdrHistogram tools. Values are microseconds.
    #[arg(long, value_name = "FILE")]
    pub hist_out: Option<std::path::PathBuf>,

    /// Print one CSV row per result on stdout (after a header row), instead of the tables (which
    /// then go to stderr). Not with --json.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,

    /// Tokio worker threads of the load generator. With 1 (the default) it runs on the main thread
    /// alone (a current-thread runtime).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// Session workers of the embedded router (default: the router's own, one per CPU less one,
    /// at least one). Ignored with --url.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024), value_name = "N")]
    pub router_threads: Option<u32>,

    /// Run the embedded router in a child process (this binary, re-executed) instead of in this
    /// process's own threads. `idle` mode always does this, so the router's memory is not mixed
    /// with the clients'.
    #[arg(long)]
    pub spawn_router: bool,

    /// PID of the router process given by --url: its CPU time (utime+stime from /proc/PID/stat)
    /// over the measured interval is reported per call, and in idle mode its VmRSS growth per
    /// session.
    #[arg(long, value_name = "PID")]
    pub router_pid: Option<u32>,

    /// Idle mode: how many joined sessions to open and hold.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sessions: u32,

    /// How long calls still unanswered when the measurement ends may take to complete before they
    /// count as failed (`loadtest.timeout`).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,

    /// Chaos: the seed of every random choice (default: from the clock). It is printed, so a failing
    /// run can be replayed with the same choices (timing, and so interleavings, still differ).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Chaos: how long the router may take beyond what a peer asked for: to answer a call after
    /// its timeout (or its deliberate delay), to close a frozen peer or refuse a hostile one. It
    /// must exceed the router's idle_timeout + keepalive_interval, message_timeout and
    /// handshake_timeout; the embedded router uses 3 s, 1 s, 2 s and 3 s, and pings RawSocket peers
    /// too (see loadtest/README.md). A router with the default configuration needs --grace 100s,
    /// and does not close a frozen RawSocket peer at all.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub grace: Duration,

    /// Chaos: the router's RSS once everyone has left the second round may exceed its RSS once
    /// everyone had left the first (the warmup) by at most this many percent, plus 16 MiB for the
    /// allocator's own noise (checked when the router is its own process: --router-pid or
    /// --spawn-router).
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT")]
    pub rss_margin: f64,

    /// Chaos: hostile cases to leave out, comma-separated (see loadtest/README.md for the names).
    #[arg(long, value_name = "CASES", value_delimiter = ',')]
    pub skip: Vec<String>,

    /// Connect mode: how each session authenticates (the realm must have the principal).
    #[arg(long, value_enum, default_value_t = AuthArg::Anonymous)]
    pub auth: AuthArg,

    /// Connect mode: the principal of --auth ticket/wampcra/cryptosign (cryptosign may omit it).
    #[arg(long, value_name = "AUTHID")]
    pub authid: Option<String>,

    /// Connect mode: the ticket, the WAMP-CRA secret or SCRAM password, or the Ed25519 private key
    /// (64 hex digits).
    #[arg(long, value_name = "SECRET", default_value = "")]
    pub secret: String,

    /// Connect mode: also serve this procedure in --realm as the realm's dynamic authenticator
    /// (one extra session, anonymous): it admits every authid in role `anonymous`, with --secret
    /// as the WAMP-CRA secret, and accepts a ticket equal to --secret.
    #[arg(long, value_name = "URI")]
    pub authenticator: Option<String>,

    /// Print one machine-readable JSON line per result (per rule in rpc mode) on stdout at the end;
    /// the tables then go to stderr.
    #[arg(long)]
    pub json: bool,

    /// Internal: serve an embedded router and print its URL (used for --spawn-router and idle mode).
    #[arg(long, hide = true)]
    pub internal_router: bool,
}

/// What the run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// RPC calls through echoing callees.
    Rpc,
    /// Session setup and teardown rate.
    Connect,
    /// Router memory per idle joined session.
    Idle,
    /// The chaos soak: churn, cancels, timeouts, slow and hostile peers; every call checked.
    Chaos,
}

/// How connect-mode sessions authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// No credentials.
    Anonymous,
    /// A ticket.
    Ticket,
    /// WAMP-CRA (plain or salted, as the router's CHALLENGE says).
    Wampcra,
    /// An Ed25519 key.
    Cryptosign,
    /// WAMP-SCRAM (the spec's dialect) with the password in --secret.
    WampScram,
}

impl Cli {
    /// The credentials `--auth`, `--authid` and `--secret` describe.
    pub fn credentials(&self) -> Result<roundhouse::client::Credentials, String> {
        use roundhouse::client::Credentials;
        let authid = || self.authid.clone().ok_or_else(|| format!("--auth {:?} needs --authid", self.auth));
        Ok(match self.auth {
            AuthArg::Anonymous => Credentials::Anonymous,
            AuthArg::Ticket => Credentials::Ticket { authid: authid()?, ticket: self.secret.clone() },
            AuthArg::Wampcra => Credentials::Wampcra { authid: authid()?, secret: self.secret.clone() },
            AuthArg::Cryptosign => {
                let key = (0..self.secret.len().min(64))
                    .step_by(2)
                    .map(|i| u8::from_str_radix(self.secret.get(i..i + 2).unwrap_or("zz"), 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .ok_or("--auth cryptosign needs --secret with the private key in 64 hex digits")?;
                Credentials::Cryptosign { authid: self.authid.clone(), private_key: key }
            }
            AuthArg::WampScram => Credentials::WampScram { authid: authid()?, password: self.secret.clone() },
        })
    }

    /// `--callees`, or the mode's default.
    pub fn callees(&self) -> u32 {
        self.callees.unwrap_or(if self.mode == Mode::Chaos { 10 } else { 4 })
    }

    /// `--callers`, or the mode's default.
    pub fn callers(&self) -> u32 {
        self.callers.unwrap_or(if self.mode == Mode::Chaos { 6 } else { 4 })
    }

    /// `--window`, or the mode's default.
    pub fn window(&self) -> u32 {
        self.window.unwrap_or(if self.mode == Mode::Chaos { 64 } else { 32 })
    }

    /// Each callee's service time, in registration order (the slow one's multiplied).
    pub fn service_times(&self) -> Vec<Duration> {
        let base = match (self.service_time.is_zero(), self.slow_callee) {
            (true, Some(_)) => Duration::from_millis(1),
            _ => self.service_time,
        };
        (1..=self.callees() as usize)
            .map(|k| match self.slow_callee {
                Some((slow, factor)) if slow == k => base.mul_f64(factor),
                _ => base,
            })
            .collect()
    }

    /// `--warmup`, or the mode's default.
    pub fn warmup(&self) -> Duration {
        self.warmup.unwrap_or(Duration::from_secs(if self.mode == Mode::Chaos { 10 } else { 2 }))
    }
}

/// The serializer flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SerializerArg {
    /// wamp.2.json
    Json,
    /// wamp.2.msgpack
    Msgpack,
    /// wamp.2.cbor
    Cbor,
}

/// The transport flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// WAMP over WebSocket.
    Websocket,
    /// WAMP over RawSocket (TCP).
    Rawsocket,
}

impl SerializerArg {
    /// The library's serializer.
    pub fn serializer(self) -> Serializer {
        match self {
            SerializerArg::Json => Serializer::Json,
            SerializerArg::Msgpack => Serializer::MsgPack,
            SerializerArg::Cbor => Serializer::Cbor,
        }
    }

    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            SerializerArg::Json => "json",
            SerializerArg::Msgpack => "msgpack",
            SerializerArg::Cbor => "cbor",
        }
    }
}

/// Invocation rules to run, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleList(pub Vec<&'static str>);

/// Every invocation rule: the shared-registration contract's, then Roundhouse's load-aware and
/// keyed ones, in `all` order.
pub const RULES: [&str; 8] = [
    "single",
    "roundrobin",
    "random",
    "first",
    "last",
    "queue_least_loaded",
    "queue_least_loaded_sample",
    "jump_consistent_hash",
];

/// Parses `--slow-callee K:FACTOR`.
pub fn parse_slow_callee(text: &str) -> Result<(usize, f64), String> {
    let bad = || format!("'{text}' is not K:FACTOR (a callee number from 1 and a factor > 0, e.g. 1:10)");
    let (k, factor) = text.split_once(':').ok_or_else(bad)?;
    let k: usize = k.trim().parse().map_err(|_| bad())?;
    let factor: f64 = factor.trim().parse().map_err(|_| bad())?;
    if k == 0 || !factor.is_finite() || factor <= 0.0 {
        return Err(bad());
    }
    Ok((k, factor))
}

/// Parses `--rule`: `all`, or a comma-separated list of rule names.
pub fn parse_rules(text: &str) -> Result<RuleList, String> {
    if text.trim() == "all" {
        return Ok(RuleList(RULES.to_vec()));
    }
    let mut rules = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let rule = RULES
            .iter()
            .find(|r| **r == name)
            .ok_or_else(|| format!("unknown rule '{name}' (expected {} or all)", RULES.join(", ")))?;
        if !rules.contains(rule) {
            rules.push(*rule);
        }
    }
    if rules.is_empty() {
        return Err("no rule given".into());
    }
    Ok(RuleList(rules))
}

/// Parses a duration: a number with an optional unit `ms`, `s` (the default), `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("'{text}' is not a duration (try 10s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit '{other}' in '{text}' (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds > 86_400.0 * 7.0 {
        return Err(format!("duration '{text}' is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("'{text}' is not a positive number of calls per second")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn rule_lists_parse_dedupe_and_refuse_unknown_names() {
        assert_eq!(parse_rules("all").unwrap().0, RULES.to_vec());
        assert_eq!(parse_rules("first, last,first").unwrap().0, vec!["first", "last"]);
        assert!(parse_rules("roundrobin,bogus").is_err());
        assert!(parse_rules(",").is_err());
    }

    #[test]
    fn slow_callees_parse() {
        assert_eq!(parse_slow_callee("1:10"), Ok((1, 10.0)));
        assert_eq!(parse_slow_callee(" 3 : 2.5 "), Ok((3, 2.5)));
        for bad in ["0:10", "1:0", "1", "x:2", "1:-2"] {
            assert!(parse_slow_callee(bad).is_err(), "{bad}");
        }
        let cli = Cli::parse_from(["loadtest", "--callees", "3", "--slow-callee", "2:10"]);
        let ms = |n| Duration::from_millis(n);
        assert_eq!(cli.service_times(), vec![ms(1), ms(10), ms(1)]);
    }

    #[test]
    fn the_flags_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
