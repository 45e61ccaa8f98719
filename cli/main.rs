//! The `supermq` command line: without a subcommand, load the configuration, start the server
//! and run it until ctrl-c or SIGTERM; with one, run a client tool (`pub`, `sub`, `bench`,
//! `health`, `ctl`), edit a password file (`passwd`) or look after a store (`storage`).
//!
//! A configuration or start-up problem is printed as one line naming the key, and the process
//! exits with code 2 (README, Command line). A tool's error is one line too, with its exit code
//! (listed in each tool's `--help`).

use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use supermq::config;
use supermq::server::Server;

mod client;
mod tools;

use tools::ToolError;

/// An MQTT 3.1 / 3.1.1 / 5.0 broker that runs alone or as a full-mesh cluster.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    /// Configuration file (TOML); without it, built-in defaults (MQTT on 0.0.0.0:1883).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The client tools; without one, `supermq` runs the broker.
#[derive(Subcommand)]
enum Command {
    /// Publish messages to a topic (like mosquitto_pub)
    Pub(tools::publish::PubArgs),
    /// Subscribe to topic filters and print the messages (like mosquitto_sub)
    Sub(tools::subscribe::SubArgs),
    /// Measure a broker: throughput, loss, latency, idle connection memory
    ///
    /// Each run prints a table (or, with --format legacy, micro-mq's "Total sent" line) and
    /// then one JSON line, last on stdout, for scripts; progress goes to stderr every second.
    /// `bench conns` opens idle connections and reports the broker's memory per connection;
    /// `--isolation` runs a shape alone and beside a slow subscriber, and compares the two.
    Bench(Box<tools::bench::BenchArgs>),
    /// Check that a broker serves MQTT: CONNECT, CONNACK, DISCONNECT (exit 0 when it does)
    ///
    /// Without -h/-p it dials the [mqtt] tcp listener of the configuration given with -c and
    /// the SUPERMQ_ environment, as the broker itself would read them: the Docker image's
    /// health check.
    Health(tools::health::HealthArgs),
    /// Add, change or delete a user in a password file (like mosquitto_passwd)
    ///
    /// Writes argon2id hashes; the broker also reads mosquitto's $7$ lines, so a file made by
    /// mosquitto_passwd can be edited in place.
    Passwd(tools::passwd::PasswdArgs),
    /// The admin API from a terminal: nodes, routes, clients, kick, subscriptions, groups,
    /// retained messages, publish (tables, or --json)
    Ctl(tools::ctl::CtlArgs),
    /// Check or compact a stopped node's store ([storage] dir): `storage check DIR`,
    /// `storage compact DIR`
    Storage(tools::storage::StorageArgs),
}

/// Exit code for a configuration or start-up error.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        None => run_broker(args.config.as_deref()),
        Some(Command::Pub(args)) => run_tool("pub", None, tools::publish::run(args)),
        Some(Command::Sub(args)) => run_tool("sub", None, tools::subscribe::run(args)),
        Some(Command::Bench(args)) => {
            let threads = args.threads();
            run_tool("bench", Some(threads), tools::bench::run(*args))
        }
        Some(Command::Health(args)) => run_tool("health", None, tools::health::run(args)),
        Some(Command::Ctl(args)) => run_tool("ctl", None, tools::ctl::run(args)),
        // No runtime: it only reads and writes one file.
        Some(Command::Passwd(args)) => report("passwd", tools::passwd::run(args)),
        Some(Command::Storage(args)) => report("storage", tools::storage::run(args)),
    }
}

/// Runs a client tool to completion on a runtime of `threads` workers (`None`: the calling
/// thread alone, enough for `pub` and `sub`).
fn run_tool(
    name: &str,
    threads: Option<usize>,
    tool: impl Future<Output = Result<(), ToolError>>,
) -> ExitCode {
    let runtime = match threads {
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(threads) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build(),
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(tool),
        Err(error) => {
            eprintln!("supermq {name}: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    report(name, result)
}

/// A tool's outcome as the exit code, its error as one line on stderr.
fn report(name: &str, result: Result<(), ToolError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("supermq {name}: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs the broker with the configuration at `path` (or the defaults) until ctrl-c or SIGTERM.
fn run_broker(path: Option<&Path>) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("supermq: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config.log);
    let threads = config.node.worker_threads();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("supermq: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::bind(&config).await {
            Ok(server) => server,
            Err(error) => {
                eprintln!("supermq: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        tokio::spawn(reload_on_hangup(std::sync::Arc::clone(server.broker())));
        tracing::info!(node = %config.node.name, version = env!("CARGO_PKG_VERSION"), threads, "supermq started");
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Logs to stdout as `[log]` says (validated when the configuration was loaded): `RUST_LOG`
/// wins over `level`; `format` "json" writes one JSON object per line, for log collectors.
fn init_logging(log: &config::LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    if log.format == "json" {
        subscriber.json().with_ansi(false).init();
    } else {
        // Colours only on a terminal: under Docker or systemd the escape codes would litter
        // the log.
        subscriber.with_ansi(std::io::stdout().is_terminal()).init();
    }
}

/// Re-reads the password and ACL files on every SIGHUP. A file that cannot be read or parsed
/// leaves the rules in force as they were.
async fn reload_on_hangup(broker: std::sync::Arc<supermq::broker::Broker>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: the auth files cannot be reloaded");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        match broker.auth().reload() {
            Ok(()) => tracing::info!("SIGHUP: password and ACL files reloaded"),
            Err(error) => {
                tracing::error!(%error, "SIGHUP: reload failed; the previous rules stay in force");
            }
        }
    }
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
