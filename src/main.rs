//! `roundhouse`: run the router from the command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use roundhouse::config::{ConfigError, LogFormat};
use roundhouse::{RealmConfig, Router, RouterConfig};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Roundhouse, a WAMP v2 router with a sharded, wait-free dealer.
///
/// With no arguments it serves ws://127.0.0.1:8080/ws with the realm `realm1`, where anonymous
/// sessions may register, call, subscribe and publish (but not use the meta API's admin
/// procedures), and the admin endpoints (status page, /metrics, /healthz, /readyz) on
/// http://127.0.0.1:8090/. Stop it with Ctrl-C or SIGTERM: sessions get GOODBYE
/// wamp.close.system_shutdown and the process exits 0. SIGHUP re-reads the config file and
/// applies principals, roles, TLS certificates and allowed origins to new sessions; a file that
/// does not load is logged and the running configuration stays.
///
/// Every flag can also be set through the environment variable shown with it; flags and
/// environment override the config file.
///
/// Exit codes: 0 on a clean stop (or a valid config, for check-config); 1 when the router fails
/// at run time (cannot bind, no runtime); 2 for an invalid config file or command line.
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

    /// Session worker threads, each running whole sessions (0: one per CPU less one, at least
    /// one). Overrides the config file.
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
    /// Validate a config file and explain what it sets up: listeners, realms, how sessions
    /// authenticate, roles and their rules, who may use the admin meta procedures. Exits 0 when
    /// the file is valid, 2 (with the reason on stderr) when it is not.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Read a secret from standard input (its first line) and print the config line that stores
    /// it for a principal: a ticket's Argon2id (or PBKDF2) hash, a salted WAMP-CRA key, or a
    /// WAMP-SCRAM credential (Argon2id or PBKDF2; the stored keys, never the password).
    HashSecret {
        /// What the secret is for.
        #[arg(long, value_enum, default_value = "ticket")]
        method: SecretMethod,
        /// The hash for a ticket, or the KDF for a WAMP-SCRAM credential.
        #[arg(long, value_enum, default_value = "argon2id")]
        kdf: Kdf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SecretMethod {
    Ticket,
    Wampcra,
    WampScram,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Kdf {
    Argon2id,
    Pbkdf2,
}

/// Runs a subcommand; `cli`'s file, flags and environment are the configuration print-config shows.
fn run_command(command: Command, cli: &Cli) -> ExitCode {
    use roundhouse::commands::{self, SecretFor, EXIT_FAILURE, EXIT_INVALID, EXIT_OK};
    match command {
        Command::PrintConfig => match load(cli) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::from(EXIT_OK)
            }
            Err(error) => {
                eprintln!("roundhouse: {error}");
                ExitCode::from(EXIT_INVALID)
            }
        },
        Command::CheckConfig { file } => match commands::check_config(&file) {
            Ok(explanation) => {
                print!("{explanation}");
                println!("{}: valid", file.display());
                ExitCode::from(EXIT_OK)
            }
            Err(error) => {
                eprintln!("roundhouse: {error}");
                ExitCode::from(EXIT_INVALID)
            }
        },
        Command::HashSecret { method, kdf } => {
            let mut secret = String::new();
            if std::io::stdin().read_line(&mut secret).is_err() || secret.trim_end_matches(['\r', '\n']).is_empty() {
                eprintln!("roundhouse: give the secret on standard input");
                return ExitCode::from(EXIT_INVALID);
            }
            let secret = secret.trim_end_matches(['\r', '\n']);
            let kind = match (method, kdf) {
                (SecretMethod::Wampcra, _) => SecretFor::Wampcra,
                (SecretMethod::Ticket, Kdf::Argon2id) => {
                    SecretFor::Ticket(roundhouse::auth::ticket::HashKind::Argon2id)
                }
                (SecretMethod::Ticket, Kdf::Pbkdf2) => SecretFor::Ticket(roundhouse::auth::ticket::HashKind::Pbkdf2),
                (SecretMethod::WampScram, Kdf::Argon2id) => {
                    SecretFor::Scram(roundhouse::auth::ticket::HashKind::Argon2id)
                }
                (SecretMethod::WampScram, Kdf::Pbkdf2) => SecretFor::Scram(roundhouse::auth::ticket::HashKind::Pbkdf2),
            };
            match commands::hash_secret(secret, kind) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::from(EXIT_OK)
                }
                Err(error) => {
                    eprintln!("roundhouse: {error}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    roundhouse::config::parse_addr(text)
}

fn parse_log_level(text: &str) -> Result<String, String> {
    roundhouse::config::check_log_level(text).map(|()| text.to_owned())
}

/// The configuration: the file (or defaults), then flags and environment, validated, with the
/// certificates it names read and checked.
fn load(cli: &Cli) -> Result<RouterConfig, ConfigError> {
    let mut config = match &cli.config {
        Some(path) => RouterConfig::from_file(path)?,
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
    config.validate()?;
    config.load_listeners()?;
    Ok(config)
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(command) = cli.command.take() {
        return run_command(command, &cli);
    }
    let config = match load(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("roundhouse: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_level.as_deref(), &config);
    raise_file_limit(config.max_connections);

    let runtime = match control_runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("roundhouse: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut signals = match Signals::install() {
            Ok(signals) => signals,
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
        while let Signal::Reload = signals.next().await {
            reload(&cli, &router);
        }
        // /readyz answers 503 from here on, while sessions are told GOODBYE.
        router.shutdown().await;
        if let Some(admin) = admin {
            admin.stop();
        }
        ExitCode::SUCCESS
    })
}

/// SIGHUP: re-reads the config file and applies what a running router can change. A file that
/// does not load is logged and the running configuration stays.
fn reload(cli: &Cli, router: &roundhouse::RouterHandle) {
    let Some(path) = &cli.config else {
        return tracing::warn!("SIGHUP: no config file to re-read (started without --config); nothing changed");
    };
    let outcome = load(cli).and_then(|config| router.reload(config));
    match outcome {
        Ok(report) => {
            for key in &report.needs_restart {
                tracing::warn!(key = key.as_str(), "config reload: changed, but takes effect only after a restart");
            }
            for part in &report.applied {
                tracing::info!(applied = part.as_str(), "config reload: applied to new connections");
            }
            tracing::info!(config = %path.display(), "config reloaded");
        }
        Err(error) => {
            tracing::error!(config = %path.display(), %error, "config reload refused; the running configuration stays");
        }
    }
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

/// The runtime of the main thread: signals, reloads, the admin listener and the call-timeout
/// sweeper. Sessions run on the router's own workers (`worker_threads`, see
/// [`roundhouse::workers`]), so nothing here competes with routing.
fn control_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
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

/// What a signal asks for.
enum Signal {
    /// SIGINT or SIGTERM: shut down.
    Shutdown,
    /// SIGHUP: reload the config file. Never a reason to exit.
    Reload,
}

/// The handlers of SIGINT, SIGTERM and SIGHUP, installed before the router starts, so an early
/// signal still shuts down gracefully and an early SIGHUP does not kill the process.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => {
                tracing::info!("SIGINT received");
                Signal::Shutdown
            }
            _ = self.terminate.recv() => {
                tracing::info!("SIGTERM received");
                Signal::Shutdown
            }
            _ = self.hangup.recv() => {
                tracing::info!("SIGHUP received: reloading the config");
                Signal::Reload
            }
        }
    }
}
