//! `roundhouse`: run the router from the command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use roundhouse::config::LogFormat;
use roundhouse::{RealmConfig, Router, RouterConfig};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Roundhouse, a WAMP v2 router with a sharded, wait-free dealer.
///
/// With no arguments it serves ws://127.0.0.1:8080/ws with the realm `realm1`, where anonymous
/// sessions may register, call, subscribe and publish, and the admin endpoints (status page,
/// /metrics, /healthz, /readyz) on http://127.0.0.1:8090/. Stop it with Ctrl-C or SIGTERM: sessions
/// get GOODBYE wamp.close.system_shutdown and the process exits 0.
///
/// Every flag can also be set through the environment variable shown with it; flags and
/// environment override the config file.
#[derive(Parser, Debug)]
#[command(name = "roundhouse", version, about, long_about)]
struct Cli {
    /// TOML configuration file; see roundhouse.toml in the repository for every key and its
    /// default (or run `roundhouse print-config`). Flags below override the file.
    #[arg(short, long, value_name = "FILE", env = "ROUNDHOUSE_CONFIG", global = true)]
    config: Option<PathBuf>,

    /// Address to listen on for WAMP (WebSocket, and RawSocket on the same port), e.g.
    /// 127.0.0.1:8080 or localhost:8080 (port 0 picks a free port).
    #[arg(short, long, value_name = "ADDR", env = "ROUNDHOUSE_LISTEN", value_parser = parse_addr, global = true)]
    listen: Option<SocketAddr>,

    /// A separate address serving RawSocket only.
    #[arg(long, value_name = "ADDR", env = "ROUNDHOUSE_RAWSOCKET_LISTEN", value_parser = parse_addr, global = true)]
    rawsocket_listen: Option<SocketAddr>,

    /// A realm to serve; repeat for several (comma-separated in the environment variable).
    /// Replaces the realms of the config file.
    #[arg(short, long = "realm", value_name = "URI", env = "ROUNDHOUSE_REALMS", value_delimiter = ',', global = true)]
    realms: Vec<String>,

    /// Address of the admin listener: status page at /, /metrics, /healthz, /readyz
    /// (default 127.0.0.1:8090).
    #[arg(long, value_name = "ADDR", env = "ROUNDHOUSE_ADMIN_LISTEN", value_parser = parse_addr, global = true)]
    admin_listen: Option<SocketAddr>,

    /// Do not start the admin listener.
    #[arg(long, env = "ROUNDHOUSE_NO_ADMIN", global = true)]
    no_admin: bool,

    /// Log filter: error, warn, info, debug, trace, off, or tracing directives such as
    /// "roundhouse=debug,info". Overrides RUST_LOG and the config file; anything else is refused.
    #[arg(long, value_name = "FILTER", env = "ROUNDHOUSE_LOG_LEVEL", value_parser = parse_log_level, global = true)]
    log_level: Option<String>,

    /// Log format.
    #[arg(long, value_enum, env = "ROUNDHOUSE_LOG_FORMAT", global = true)]
    log_format: Option<LogFormat>,

    /// Runtime worker threads (0: one per CPU). Overrides the config file.
    #[arg(long, value_name = "N", env = "ROUNDHOUSE_THREADS", global = true)]
    threads: Option<usize>,

    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do instead of serving.
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the configuration the router would run with (defaults, the config file, then flags
    /// and environment) as TOML, and exit. With no file and no flags: every default.
    PrintConfig,
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    roundhouse::config::parse_addr(text)
}

fn parse_log_level(text: &str) -> Result<String, String> {
    roundhouse::config::check_log_level(text).map(|()| text.to_owned())
}

/// The configuration: the file (or defaults), then flags and environment.
fn load(cli: &Cli) -> Result<RouterConfig, String> {
    let mut config = match &cli.config {
        Some(path) => RouterConfig::from_file(path).map_err(|e| e.to_string())?,
        None => RouterConfig::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(listen) = cli.rawsocket_listen {
        config.rawsocket_listen = Some(listen);
    }
    if !cli.realms.is_empty() {
        config.realms = cli.realms.iter().map(|name| RealmConfig::named(name)).collect();
    }
    if let Some(threads) = cli.threads {
        config.worker_threads = threads;
    }
    if let Some(format) = cli.log_format {
        config.log_format = format;
    }
    if let Some(level) = &cli.log_level {
        config.log_level = level.clone();
    }
    if let Some(listen) = cli.admin_listen {
        config.admin.listen = listen;
    }
    if cli.no_admin {
        config.admin.enabled = false;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("roundhouse: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::PrintConfig) = cli.command {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(cli.log_level.as_deref(), &config);
    raise_file_limit(config.max_connections);

    let runtime = match runtime(config.worker_threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("roundhouse: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let signal = match shutdown_signal() {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let admin_config = config.admin.clone();
        let router = match Router::start(config).await {
            Ok(router) => router,
            Err(error) => {
                tracing::error!(%error, "cannot start the router");
                eprintln!("roundhouse: {error}");
                return ExitCode::FAILURE;
            }
        };
        let admin = if admin_config.enabled {
            match roundhouse::admin::start(router.shared().clone(), admin_config.listen).await {
                Ok(admin) => Some(admin),
                Err(error) => {
                    tracing::error!(%error, "cannot start the admin listener");
                    eprintln!("roundhouse: {error} (choose another with --admin-listen, or --no-admin)");
                    router.shutdown().await;
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        signal.await;
        // /readyz answers 503 from here on, while sessions are told GOODBYE.
        router.shutdown().await;
        if let Some(admin) = admin {
            admin.stop();
        }
        ExitCode::SUCCESS
    })
}

/// Raises the soft limit on open files to the hard limit: the usual soft default of 1024 would
/// cap a router meant for tens of thousands of connections far below `max_connections`.
fn raise_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_connections as u64 => {
            tracing::info!(limit, max_connections, "open file limit is below max_connections; it caps connections");
        }
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
}

fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder.enable_all().build()
}

fn init_logging(flag: Option<&str>, config: &RouterConfig) {
    let filter = match flag {
        Some(directive) => EnvFilter::new(directive),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        // One flat object per line: the event's fields next to timestamp, level and message.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Installs the SIGINT and SIGTERM handlers (before the router starts, so an early signal still
/// shuts down gracefully) and returns a future that completes on the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
