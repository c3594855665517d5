//! `svckit services [NAME]` and `svckit services watch [NAME]`: the registered instances,
//! read from the keys themselves so malformed entries can be shown, not only skipped.

use std::collections::HashMap;
use std::fmt::Write as _;

use clap::{Args, Subcommand};
use svckit::registry::{Instance, KeyEntry, KeySnapshot, Keyspace, MalformedEntry, DEFAULT_PREFIX};
use tokio_util::sync::CancellationToken;

use crate::diff::{changes, Change};
use crate::error::Failure;
use crate::out::print;

/// `services`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServicesArgs {
    #[command(subcommand)]
    command: Option<ServicesCommand>,

    /// Only the instances of this service (`[A-Za-z0-9_]+`).
    #[arg(value_parser = service_name)]
    name: Option<String>,

    /// The key prefix instances are registered under (`<prefix>/<id>/<name>` = `host:port`).
    #[arg(long, global = true, default_value = DEFAULT_PREFIX, value_parser = services_prefix)]
    prefix: String,
}

/// `services watch`.
#[derive(Debug, Subcommand)]
pub(crate) enum ServicesCommand {
    /// Print instances as they come and go, until SIGINT/SIGTERM.
    ///
    /// One line per change: `+ NAME ID ADDRESS` (registered; the instances present at start
    /// come first), `- NAME ID ADDRESS` (deregistered or lease expired), `~ NAME ID ADDRESS
    /// (was OLD)` (same id, new address), and `MALFORMED KEY: REASON` for a key that does
    /// not fit the layout. While etcd is unreachable the last known instances are kept and
    /// the watch reconnects.
    #[command(after_help = "Example:\n  svckit services watch productservice")]
    Watch {
        /// Only the instances of this service (`[A-Za-z0-9_]+`).
        #[arg(value_parser = service_name)]
        name: Option<String>,
    },
}

impl ServicesArgs {
    /// Whether this is `services watch`.
    pub(crate) fn is_watch(&self) -> bool {
        self.command.is_some()
    }

    /// The key prefix of instances (without a trailing `/`).
    pub(crate) fn prefix(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }

    /// Lists or watches.
    pub(crate) async fn run(
        &self,
        keyspace: &Keyspace,
        shutdown: CancellationToken,
    ) -> Result<(), Failure> {
        let dir = format!("{}/", self.prefix());
        match &self.command {
            None => list(keyspace, &dir, self.name.as_deref()).await,
            Some(ServicesCommand::Watch { name }) => {
                watch(keyspace, &dir, name.as_deref(), shutdown).await
            }
        }
    }
}

/// The instances' prefix: `/` and at least one segment, as the registry requires.
fn services_prefix(value: &str) -> Result<String, String> {
    if value.starts_with('/') && !value.trim_end_matches('/').is_empty() {
        Ok(value.to_owned())
    } else {
        Err("it must start with `/` and name at least one segment (e.g. /services)".to_owned())
    }
}

/// A service name as the registry accepts it.
fn service_name(name: &str) -> Result<String, String> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(name.to_owned())
    } else {
        Err("a service name is ASCII letters, digits and `_` ([A-Za-z0-9_]+)".to_owned())
    }
}

/// Whether a malformed `key` concerns service `name` (one of its segments is the name).
fn mentions(key: &str, name: Option<&str>) -> bool {
    name.is_none_or(|name| key.split('/').any(|segment| segment == name))
}

fn malformed_line(error: &MalformedEntry, value: &[u8]) -> String {
    format!(
        "MALFORMED {}: {} (value {:?})\n",
        error.key,
        error.reason,
        String::from_utf8_lossy(value)
    )
}

async fn list(keyspace: &Keyspace, dir: &str, name: Option<&str>) -> Result<(), Failure> {
    let (_, entries) = keyspace
        .list(dir)
        .await
        .map_err(|e| Failure::new(format!("listing the instances under {dir}"), e))?;
    let mut rows: Vec<(Instance, i64)> = Vec::new();
    let mut malformed: Vec<(&KeyEntry, MalformedEntry)> = Vec::new();
    for entry in &entries {
        match Instance::from_entry(dir, entry.key().as_bytes(), entry.value()) {
            Ok(instance) if name.is_none_or(|n| instance.name() == n) => {
                rows.push((instance, entry.lease()));
            }
            Ok(_) => {}
            Err(error) if mentions(entry.key(), name) => malformed.push((entry, error)),
            Err(_) => {}
        }
    }
    rows.sort_by(|(a, _), (b, _)| (a.name(), a.id()).cmp(&(b.name(), b.id())));

    let mut ttls: HashMap<i64, String> = HashMap::new();
    for &(_, lease) in &rows {
        if ttls.contains_key(&lease) {
            continue;
        }
        let ttl = match lease {
            0 => "none".to_owned(),
            lease => match keyspace
                .lease_ttl(lease)
                .await
                .map_err(|e| Failure::new(format!("reading the TTL of lease {lease:x}"), e))?
            {
                Some(left) => format!("{}s", left.as_secs()),
                None => "expired".to_owned(),
            },
        };
        ttls.insert(lease, ttl);
    }

    let header = ["NAME", "ID", "ADDRESS", "TTL"];
    let table: Vec<[&str; 4]> = rows
        .iter()
        .map(|(i, lease)| {
            let ttl = ttls.get(lease).map_or("?", String::as_str);
            [i.name(), i.id(), i.addr(), ttl]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&table) {
        let _ = writeln!(
            text,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
    }
    for (entry, error) in &malformed {
        text.push_str(&malformed_line(error, entry.value()));
    }
    print(&text)
}

async fn watch(
    keyspace: &Keyspace,
    dir: &str,
    name: Option<&str>,
    shutdown: CancellationToken,
) -> Result<(), Failure> {
    let mut watch = keyspace
        .watch(dir)
        .map_err(|e| Failure::new(format!("watching the instances under {dir}"), e))?;
    let mut shown = KeySnapshot::default();
    let mut current = watch.mark_seen();
    loop {
        // Revision 0: the first listing has not arrived yet.
        if current.revision() != 0 {
            let mut text = String::new();
            for change in changes(&shown, &current) {
                text.push_str(&render(dir, name, change));
            }
            print(&text)?;
            shown = current;
        }
        current = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = watch.changed() => next.map_err(|e| {
                Failure::new(format!("watching the instances under {dir}"), e)
            })?,
        };
    }
}

/// The line of one change (empty when it concerns another service).
fn render(dir: &str, name: Option<&str>, change: Change<'_>) -> String {
    let parse = |key: &str, value: &[u8]| Instance::from_entry(dir, key.as_bytes(), value);
    let wanted = |i: &Instance| name.is_none_or(|n| i.name() == n);
    let line = |sign: char, i: &Instance| format!("{sign} {} {} {}", i.name(), i.id(), i.addr());
    match change {
        Change::Put { key, value, old } => match (parse(key, value), old.map(|o| parse(key, o))) {
            (Ok(new), Some(Ok(old))) if wanted(&new) => {
                format!("{} (was {})\n", line('~', &new), old.addr())
            }
            (Ok(new), _) if wanted(&new) => format!("{}\n", line('+', &new)),
            (Err(error), _) if mentions(key, name) => malformed_line(&error, value),
            _ => String::new(),
        },
        Change::Delete { key, old } => match parse(key, old) {
            Ok(old) if wanted(&old) => format!("{}\n", line('-', &old)),
            _ => String::new(),
        },
    }
}
