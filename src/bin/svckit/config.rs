//! `svckit config get | put | watch`: the keys under a prefix, read, written and followed.

use std::fmt::Write as _;
use std::time::Duration;

use clap::{Args, Subcommand};
use svckit::config::ConfigWatch;
use svckit::registry::{KeySnapshot, Keyspace};
use tokio_util::sync::CancellationToken;

use crate::diff::{changes, Change};
use crate::error::Failure;
use crate::out::print;

/// How long `get --json` waits for the listing.
const LISTING_TIMEOUT: Duration = Duration::from_secs(5);

/// Config keys in etcd.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the keys under PREFIX, sorted by key, one `key = value` line each; with
    /// --json, one JSON object instead.
    #[command(after_help = "Examples:\n  svckit config get /config/product/\n  \
                            svckit config get /config/product --json")]
    Get(GetArgs),
    /// Set KEY to VALUE (no lease) and print the etcd revision of the write.
    #[command(after_help = "Example:\n  svckit config put /config/product/greeting hello")]
    Put(PutArgs),
    /// Print the keys under PREFIX, then every change as it happens, until SIGINT/SIGTERM.
    ///
    /// Each batch starts with a `# revision N` line, followed by `PUT key = value` and
    /// `DELETE key` lines sorted by key. The first batch lists the keys present at start
    /// (as PUTs). Keys written in one etcd transaction arrive in one batch; changes that
    /// arrive faster than they are printed fold into one batch at the newest revision.
    /// While etcd is unreachable the watch keeps the last known keys and reconnects; what
    /// changed meanwhile is printed when it is back.
    #[command(after_help = "Example:\n  svckit config watch /config/product/")]
    Watch(WatchArgs),
}

/// `config get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The key prefix, starting with `/` (`/config/app` also matches `/config/application`;
    /// end it with `/` to read one directory).
    #[arg(value_parser = crate::key_prefix)]
    prefix: String,
    /// Print a nested JSON object by path segment, as the typed config sees the keys under
    /// PREFIX/ (leaves are strings; a directory of keys 0..n is an array).
    #[arg(long)]
    json: bool,
}

/// `config put`.
#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The key, for example `/config/product/greeting`.
    #[arg(value_parser = crate::key_prefix)]
    key: String,
    /// The value, stored as given (UTF-8 text).
    value: String,
}

/// `config watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The key prefix to follow, starting with `/`.
    #[arg(value_parser = crate::key_prefix)]
    prefix: String,
}

impl ConfigCommand {
    /// Whether this is `config watch`.
    pub(crate) fn is_watch(&self) -> bool {
        matches!(self, Self::Watch(_))
    }

    /// Runs the command against `keyspace`; a watch stops when `shutdown` is cancelled.
    pub(crate) async fn run(
        &self,
        keyspace: &Keyspace,
        shutdown: CancellationToken,
    ) -> Result<(), Failure> {
        match self {
            Self::Get(GetArgs {
                prefix,
                json: false,
            }) => get(keyspace, prefix).await,
            Self::Get(GetArgs { prefix, json: true }) => get_json(keyspace, prefix).await,
            Self::Put(PutArgs { key, value }) => {
                let revision = keyspace
                    .put(key, value)
                    .await
                    .map_err(|e| Failure::new(format!("putting {key}"), e))?;
                print(&format!("{revision}\n"))
            }
            Self::Watch(WatchArgs { prefix }) => watch(keyspace, prefix, shutdown).await,
        }
    }
}

async fn get(keyspace: &Keyspace, prefix: &str) -> Result<(), Failure> {
    let snapshot = keyspace
        .get(prefix)
        .await
        .map_err(|e| Failure::new(format!("reading the keys under {prefix}"), e))?;
    let mut text = String::new();
    for (key, value) in snapshot.iter() {
        let _ = writeln!(text, "{key} = {}", String::from_utf8_lossy(value));
    }
    print(&text)
}

async fn get_json(keyspace: &Keyspace, prefix: &str) -> Result<(), Failure> {
    let config = ConfigWatch::<serde_json::Value>::builder(keyspace, prefix)
        .startup_timeout(LISTING_TIMEOUT)
        .start()
        .await
        .map_err(|e| Failure::new(format!("reading the config under {prefix}"), e))?;
    let value = config.get();
    let json = serde_json::to_string_pretty(value.value())
        .map_err(|e| Failure::new(format!("printing the config under {prefix}"), e))?;
    print(&format!("{json}\n"))
}

async fn watch(
    keyspace: &Keyspace,
    prefix: &str,
    shutdown: CancellationToken,
) -> Result<(), Failure> {
    let mut watch = keyspace
        .watch(prefix)
        .map_err(|e| Failure::new(format!("watching {prefix}"), e))?;
    let mut shown: Option<KeySnapshot> = None;
    let mut current = watch.mark_seen();
    loop {
        // Revision 0: the first listing has not arrived yet.
        if current.revision() != 0 {
            let empty = KeySnapshot::default();
            let batch = changes(shown.as_ref().unwrap_or(&empty), &current);
            // The first batch is printed even when empty: it says the watch is live.
            if shown.is_none() || !batch.is_empty() {
                print(&render(current.revision(), &batch))?;
            }
            shown = Some(current);
        }
        current = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = watch.changed() => {
                next.map_err(|e| Failure::new(format!("watching {prefix}"), e))?
            }
        };
    }
}

/// One batch: `# revision N`, then a line per change.
fn render(revision: i64, batch: &[Change<'_>]) -> String {
    let mut text = format!("# revision {revision}\n");
    for change in batch {
        let _ = match change {
            Change::Put { key, value, .. } => {
                writeln!(text, "PUT {key} = {}", String::from_utf8_lossy(value))
            }
            Change::Delete { key, .. } => writeln!(text, "DELETE {key}"),
        };
    }
    text
}
