//! `svckit confd`: confd's command line over svckit's confd-compatible renderer
//! ([`svckit::config::confd`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use svckit::config::confd::Confd;
use svckit::registry::Keyspace;
use tokio_util::sync::CancellationToken;

use crate::error::{chain, Failure};

/// `confd`: flags named as confd's, so `confd -onetime -backend etcdv3 -node URL` becomes
/// `svckit confd --onetime --backend etcdv3 --node URL`.
#[derive(Debug, Args)]
pub(crate) struct ConfdArgs {
    /// confd's configuration directory: resource files in DIR/conf.d/*.toml, templates in
    /// DIR/templates.
    #[arg(long, value_name = "DIR", default_value = "/etc/confd")]
    confdir: PathBuf,

    /// Key prefix; when set it replaces the `prefix` of every resource (as confd's -prefix).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    prefix: String,

    /// Render every resource once and exit: non-zero when any failed, each failure on one
    /// line on stderr. Takes precedence over --watch and --interval (as in confd).
    #[arg(long)]
    onetime: bool,

    /// Render, then render again after every change of a resource's keys (coalescing
    /// bursts), until SIGINT/SIGTERM. Takes precedence over --interval.
    #[arg(long)]
    watch: bool,

    /// Render every SECONDS (confd's default mode), until SIGINT/SIGTERM.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    interval: u64,

    /// The key-value backend. Only etcd v3 is supported; accepted so confd command lines
    /// work unchanged.
    #[arg(long, value_name = "BACKEND", default_value = "etcdv3", value_parser = backend)]
    backend: String,

    /// Render and compare only: never write a destination or run a command; differences are
    /// logged (as confd's -noop).
    #[arg(long)]
    noop: bool,

    /// Write destinations without running check_cmd or reload_cmd (as confd's -sync-only).
    #[arg(long = "sync-only")]
    sync_only: bool,

    /// Log level on stderr (as confd's -log-level); RUST_LOG overrides it. Default: warn.
    #[arg(long = "log-level", value_name = "LEVEL", value_enum)]
    log_level: Option<LogLevel>,
}

/// confd's log levels (logrus names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogLevel {
    /// Everything, including each watch event.
    Debug,
    /// Files updated, watches started.
    Info,
    /// Problems that are retried (the default).
    Warn,
    /// Failures only.
    Error,
    /// Failures only (confd's name for the level that exits).
    Fatal,
    /// Failures only (confd's name for the level that panics).
    Panic,
}

impl LogLevel {
    /// The tracing directive.
    pub(crate) fn directive(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error | Self::Fatal | Self::Panic => "error",
        }
    }
}

/// `--backend`: etcd v3 only.
fn backend(value: &str) -> Result<String, String> {
    match value {
        "etcdv3" => Ok(value.to_owned()),
        other => Err(format!(
            "backend {other:?} is not supported: svckit confd reads etcd v3 only (--backend etcdv3)"
        )),
    }
}

/// How the resources are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Once,
    Watch,
    Interval(Duration),
}

impl ConfdArgs {
    fn mode(&self) -> Mode {
        if self.onetime {
            Mode::Once
        } else if self.watch {
            Mode::Watch
        } else {
            Mode::Interval(Duration::from_secs(self.interval))
        }
    }

    /// The log level asked for with --log-level.
    pub(crate) fn log_level(&self) -> Option<LogLevel> {
        self.log_level
    }

    /// Whether this runs once (its failures are printed here, not logged again).
    pub(crate) fn is_onetime(&self) -> bool {
        self.mode() == Mode::Once
    }

    /// Loads the resources: before connecting, so a broken resource file is reported at
    /// once (confd refuses to start with one too).
    pub(crate) fn load(&self) -> Result<Confd, Failure> {
        let confd = Confd::load(&self.confdir, &self.prefix).map_err(|e| {
            Failure::new(
                format!("loading the confd directory {}", self.confdir.display()),
                e,
            )
        })?;
        Ok(confd.noop(self.noop).sync_only(self.sync_only))
    }

    /// Applies the resources in the chosen mode; watch and interval run until `shutdown`.
    pub(crate) async fn run(
        &self,
        confd: &Confd,
        keyspace: &Keyspace,
        shutdown: CancellationToken,
    ) -> Result<(), Failure> {
        let mode = self.mode();
        tracing::info!(confdir = %self.confdir.display(), ?mode, resources = confd.resource_files().count(), "confd starting");
        match mode {
            Mode::Once => {
                let report = confd.run_once(keyspace).await;
                let total = report.outcomes().len();
                let mut failed = 0;
                for error in report.errors() {
                    failed += 1;
                    crate::out::report(&format!("confd: {}", chain(error)));
                }
                tracing::info!(updated = report.updated(), failed, total, "confd done");
                if failed > 0 {
                    return Err(Failure::msg(format!(
                        "confd: {failed} of {total} resource(s) failed"
                    )));
                }
                Ok(())
            }
            Mode::Watch => confd
                .watch(keyspace, shutdown)
                .await
                .map_err(|e| Failure::new("confd watch", e)),
            Mode::Interval(every) => confd
                .poll(keyspace, every, shutdown)
                .await
                .map_err(|e| Failure::new("confd interval", e)),
        }
    }
}
