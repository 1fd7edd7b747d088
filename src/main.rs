//! The `jetedge` command line: parse arguments, load the config, run, and
//! map failures to exit codes (1: could not run, 2: invalid config, 3: the
//! encryption keys cannot open the store, which a restart will not fix).

use anyhow::Context;
use clap::{Parser, Subcommand};
use jetedge::config::{Config, LogFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod contracts;
mod ctl;
mod notify;
mod send;

/// mimalloc: the data path allocates many short-lived buffers per event
/// (bodies, JSON values, envelopes), where it measured faster than glibc's.
/// The log filter unless `JETEDGE_LOG` sets one. async-nats's connector
/// logs every failed reconnect; jetedge says what matters once instead.
const DEFAULT_LOG: &str = "info,async_nats=warn,async_nats::connector=off";

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "jetedge",
    version,
    about = "Edge event mesh node: webhooks and local NATS in, durable buffer, JetStream out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The config file every command reads.
#[derive(clap::Args)]
pub struct ConfigArg {
    #[arg(
        short,
        long,
        env = "JETEDGE_CONFIG",
        default_value = "conf/jetedge.toml",
        global = true
    )]
    pub config: PathBuf,
}

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    file: ConfigArg,
    /// Also print the config as the node runs it: every default filled in,
    /// the JETEDGE_* environment overrides applied, URLs' credentials hidden.
    #[arg(long)]
    print: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node until SIGTERM or Ctrl-C.
    Run(ConfigArg),
    /// Validate a config file; print every problem with its key path; exit 2 if invalid.
    Check(CheckArgs),
    /// Post a test event to a running node, signed the way the source expects.
    Send(send::SendArgs),
    /// Show a running node's state: link, backlog, subscriptions, breakers.
    Status(ctl::AdminArgs),
    /// Inspect, replay or purge a running node's dead-letter queue.
    Dlq(ctl::DlqArgs),
    /// Inspect, replay or purge events upstream refused for good.
    Parked(ctl::ParkedArgs),
    /// Make a running node read its config file again (as SIGHUP does);
    /// exit 2 with every problem if the file is invalid.
    Reload(ctl::AdminArgs),
    /// Watch events as a running node stores them (after redaction), one
    /// JSON line each.
    Tap(ctl::TapArgs),
    /// Print the node's channels (sources, subjects, subscriptions, schemas)
    /// as an AsyncAPI 3.0 document, from the config file.
    Asyncapi(ConfigArg),
    /// List the schemas a running node enforces and where each came from.
    Schemas(ctl::AdminArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        // The node's log format is in its config, so that is read first.
        Command::Run(a) => return run_node(&a.config),
        other => other,
    };
    init_logs(LogFormat::Text);
    // The other commands print for a shell: one whose reader went away
    // (`jetedge tap | head`) ends quietly, as Unix tools do, instead of
    // failing on the write.
    // SAFETY: restoring a signal's default disposition, before any thread
    // is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match command {
        Command::Run(_) => unreachable!("handled above"),
        Command::Check(a) => check(&a.file.config, a.print),
        Command::Send(args) => match load(&args.file.config) {
            Some(cfg) => report(send::send(&cfg, &args)),
            None => ExitCode::from(2),
        },
        Command::Status(args) => match load_for_admin(&args.file.config) {
            Some(cfg) => report(ctl::status(&cfg, &args)),
            None => ExitCode::from(2),
        },
        Command::Dlq(args) => match load_for_admin(&args.common.file.config) {
            Some(cfg) => report(ctl::dlq(&cfg, &args)),
            None => ExitCode::from(2),
        },
        Command::Parked(args) => match load_for_admin(&args.common.file.config) {
            Some(cfg) => report(ctl::parked(&cfg, &args)),
            None => ExitCode::from(2),
        },
        Command::Tap(args) => match load_for_admin(&args.common.file.config) {
            Some(cfg) => report(ctl::tap(&cfg, &args)),
            None => ExitCode::from(2),
        },
        Command::Asyncapi(a) => match load_for_admin(&a.config) {
            Some(cfg) => report(contracts::asyncapi(&cfg)),
            None => ExitCode::from(2),
        },
        Command::Schemas(args) => match load_for_admin(&args.file.config) {
            Some(cfg) => report(contracts::schemas(&cfg, &args)),
            None => ExitCode::from(2),
        },
        Command::Reload(args) => match load_for_admin(&args.file.config) {
            Some(cfg) => match ctl::reload(&cfg, &args) {
                Ok(false) => ExitCode::from(2),
                other => report(other.map(|_| ())),
            },
            None => ExitCode::from(2),
        },
    }
}

/// Logs to stderr, filtered by `JETEDGE_LOG` (default [`DEFAULT_LOG`]).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JETEDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// `jetedge run`: the config, the logs it asks for, the node.
fn run_node(path: &Path) -> ExitCode {
    let Some(cfg) = load(path) else {
        return ExitCode::from(2);
    };
    init_logs(cfg.node.log_format);
    raise_open_files_limit();
    match run(cfg) {
        Err(e) if is_key_problem(&e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(KEY_EXIT)
        }
        result => report(result),
    }
}

/// Raises the soft limit of open files to the hard one, as servers do: a
/// node holds its outbox segments, dedupe runs, and a socket per client,
/// target and link, and the usual soft limit (1,024) is a default for
/// interactive shells, not a budget chosen for it.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let before = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(soft = before, "could not raise the open files limit");
            }
        }
    }
}

fn load(path: &Path) -> Option<Config> {
    Config::load(path).map_err(|e| eprint!("{e}")).ok()
}

/// The config as the admin commands need it: parsed, not validated, no
/// secret resolved but the admin token (see [`Config::load_for_admin`]).
fn load_for_admin(path: &Path) -> Option<Config> {
    Config::load_for_admin(path)
        .map_err(|e| eprint!("{e}"))
        .ok()
}

fn check(path: &Path, print: bool) -> ExitCode {
    match load(path) {
        Some(cfg) => {
            if print {
                println!("{}", cfg.to_toml());
            }
            for w in cfg.warnings() {
                println!("warning: {w}");
            }
            println!(
                "{}: valid ({} source(s), {} route(s), {} redaction rule(s), {} subscription(s), upstream {})",
                path.display(),
                cfg.sources.len(),
                cfg.routes.len(),
                cfg.redactions.len(),
                cfg.subscriptions.len(),
                // Shown redacted: a server URL may carry a password.
                cfg.upstream.servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
            if let Some(line) = encryption_line(&cfg.node) {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        None => ExitCode::from(2),
    }
}

/// The ids of the encryption keys (as `jetedge status` and the node's
/// errors name them), once the config is valid.
fn encryption_line(node: &jetedge::config::NodeConfig) -> Option<String> {
    let id = |r: &jetedge::config::SecretRef| {
        let key = r.resolve().ok()?;
        let bytes = jetedge::store::decode_key(key.expose()).ok()?;
        Some(jetedge::store::key_id(&bytes).to_string())
    };
    let current = id(node.encryption_key.as_ref()?)?;
    let previous: Vec<String> = node.previous_keys.iter().filter_map(id).collect();
    Some(match previous.is_empty() {
        true => format!("encryption at rest: key {current}"),
        false => format!(
            "encryption at rest: key {current}, opening older values with {}",
            previous.join(", ")
        ),
    })
}

/// The exit code of a start refused because the configured keys cannot
/// open the store (a service manager should not restart it in a loop:
/// `RestartPreventExitStatus=3`).
const KEY_EXIT: u8 = 3;

fn is_key_problem(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<jetedge::StartError>(),
        Some(jetedge::StartError::Store {
            source: jetedge::store::StoreError::Key(_),
            ..
        })
    )
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[tokio::main]
async fn run(cfg: Config) -> anyhow::Result<()> {
    let node = jetedge::Node::start(cfg)
        .await
        .context("the node could not start")?;
    notify::notify("READY=1");
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing a SIGHUP handler")?;
    let failure = {
        let (stop, failed) = (wait_for_signal(), node.failed());
        tokio::pin!(stop, failed);
        loop {
            tokio::select! {
                _ = &mut stop => break None,
                reason = &mut failed => break Some(reason),
                // SIGHUP: read the config file again (the reloader logs the outcome).
                _ = hangup.recv() => {
                    notify::notify("RELOADING=1");
                    let _ = node.reload().await;
                    notify::notify("READY=1");
                }
            }
        }
    };
    notify::notify("STOPPING=1");
    node.shutdown().await;
    match failure {
        // A non-zero exit, so that the service manager restarts the node.
        Some(reason) => Err(anyhow::anyhow!("stopped after a storage failure: {reason}")),
        None => Ok(()),
    }
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
