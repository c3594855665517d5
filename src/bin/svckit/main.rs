//! `svckit`: the command-line tool of svckit.
//!
//! - `svckit confd`: confd's command line (`--confdir`, `--node`, `--prefix`, `--onetime`,
//!   `--watch`, `--interval`, `--backend etcdv3`, `--noop`, `--sync-only`, `--log-level`)
//!   over the confd-compatible renderer.
//! - `svckit config get | put | watch`: config keys in etcd.
//! - `svckit services [NAME]`, `svckit services watch [NAME]`: registered instances.
//! - `svckit cache flush GROUP`: a cluster-wide flush of a cache group.
//!
//! etcd endpoints come from `--etcd` (comma-separated) or `--node` (repeatable), auth and TLS
//! from the `SVCKIT_ETCD_*` environment variables. Failures are one line on stderr
//! (`svckit: what failed: why`) and exit 1; usage errors exit 2. Logs go to stderr at `warn`
//! unless `RUST_LOG` says otherwise.

mod cache;
mod confd;
mod config;
mod diff;
mod error;
mod etcd;
mod out;
mod services;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use svckit::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::error::{Failure, EXIT_FAILURE};
use crate::out::{report, Shutdown};

/// svckit's command-line tool: confd-compatible rendering, config keys and registered
/// services in etcd.
#[derive(Debug, Parser)]
#[command(
    name = "svckit",
    version,
    propagate_version = true,
    after_help = "etcd auth and TLS come from the environment: SVCKIT_ETCD_USER and \
                  SVCKIT_ETCD_PASSWORD, SVCKIT_ETCD_CA (a PEM file; talk TLS), SVCKIT_ETCD_CERT \
                  and SVCKIT_ETCD_KEY (client certificate). Logs go to stderr; RUST_LOG sets \
                  their level (default warn).\n\nExit status: 0 on success, 1 when an \
                  operation failed, 2 for a usage error."
)]
struct Cli {
    #[command(flatten)]
    etcd: etcd::EtcdArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render files from etcd keys with confd's resource files and templates, once, on every
    /// change or on an interval.
    #[command(after_help = "Examples:\n  \
        svckit confd --onetime --backend etcdv3 --node http://127.0.0.1:2379 --confdir /etc/confd\n  \
        svckit confd --watch --node http://127.0.0.1:2379 --prefix /myconfig")]
    Confd(confd::ConfdArgs),

    /// Read, write and watch config keys.
    #[command(subcommand)]
    Config(config::ConfigCommand),

    /// List registered service instances, or follow them live (`services watch`).
    ///
    /// A table of NAME, ID, ADDRESS and TTL (the time left on the instance's lease) of every
    /// service, or of NAME; then a `MALFORMED KEY: REASON` line for every key that does not
    /// fit `<prefix>/<id>/<name>` = `host:port`.
    #[command(
        after_help = "Examples:\n  svckit services\n  svckit services productservice\n  \
                            svckit services watch productservice"
    )]
    Services(services::ServicesArgs),

    /// Cluster-wide operations of the group cache (`cache flush GROUP`).
    #[command(subcommand)]
    Cache(cache::CacheCommand),
}

impl Command {
    /// Whether the command runs until SIGINT/SIGTERM (a watch, confd's watch or interval).
    fn runs_until_stopped(&self) -> bool {
        match self {
            Self::Confd(args) => !args.is_onetime(),
            Self::Config(command) => command.is_watch(),
            Self::Services(args) => args.is_watch(),
            Self::Cache(_) => false,
        }
    }
}

/// A key or prefix: starts with `/` (`/` alone is every key).
fn key_prefix(value: &str) -> Result<String, String> {
    if value.starts_with('/') {
        Ok(value.to_owned())
    } else {
        Err("it must start with `/` (e.g. /config/app/)".to_owned())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report(&Failure::new("starting the async runtime", e).to_string());
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(run(cli));
    // Background tasks (watches) must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.is_quiet() {
                report(&failure.to_string());
            }
            ExitCode::from(failure.code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // Commands that run until stopped end cleanly (exit 0) on SIGINT/SIGTERM; the others
    // keep the default: a signal ends them at once.
    let shutdown = if cli.command.runs_until_stopped() {
        Some(Shutdown::install()?)
    } else {
        None
    };
    let stop = shutdown.as_ref().map(Shutdown::token).unwrap_or_default();
    match &cli.command {
        Command::Confd(args) => {
            let confd = args.load()?;
            let registry = cli.etcd.connect(None).await?;
            args.run(&confd, &registry.keyspace(), stop.clone()).await
        }
        Command::Config(command) => {
            let registry = cli.etcd.connect(None).await?;
            command.run(&registry.keyspace(), stop.clone()).await
        }
        Command::Services(args) => {
            let registry = cli.etcd.connect(Some(args.prefix())).await?;
            args.run(&registry.keyspace(), stop.clone()).await
        }
        Command::Cache(command) => {
            let registry = cli.etcd.connect(None).await?;
            command.run(&registry.keyspace()).await
        }
    }
}

/// Logs to stderr, without colour unless stderr is a terminal. `RUST_LOG` overrides the
/// default level: warn, or confd's --log-level.
fn init_tracing(cli: &Cli) {
    let mut default = "warn".to_owned();
    if let Command::Confd(args) = &cli.command {
        if let Some(level) = args.log_level() {
            default = level.directive().to_owned();
        }
        if args.is_onetime() {
            // --onetime prints each failed resource itself, on one line.
            default.push_str(",svckit_config::confd::run=off");
        }
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
