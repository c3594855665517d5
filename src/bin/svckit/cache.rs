//! `svckit cache flush GROUP`: a cluster-wide flush of one cache group.

use clap::{Args, Subcommand};
use svckit::cache::{flush_group, generation_key};
use svckit::registry::Keyspace;

use crate::error::Failure;
use crate::out::print;

/// The group cache's cluster-wide operations.
#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Flush GROUP on every node: bump its generation in etcd
    /// (`/svckit/cache/<GROUP>/generation`); every node following it drops the group's
    /// entries within one watch round trip. Prints the new generation.
    #[command(after_help = "Example:\n  svckit cache flush thumbnails")]
    Flush(FlushArgs),
}

/// `cache flush`.
#[derive(Debug, Args)]
pub(crate) struct FlushArgs {
    /// The group name, as the nodes created it.
    #[arg(value_parser = group_name)]
    group: String,
}

/// A group name that makes one etcd key segment.
fn group_name(value: &str) -> Result<String, String> {
    if value.is_empty() || value.contains('/') {
        Err("a group name is not empty and holds no `/`".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

impl CacheCommand {
    pub(crate) async fn run(&self, keyspace: &Keyspace) -> Result<(), Failure> {
        match self {
            Self::Flush(args) => {
                let generation = flush_group(keyspace, &args.group).await.map_err(|e| {
                    Failure::new(format!("flushing {}", generation_key(&args.group)), e)
                })?;
                print(&format!("{generation}\n"))
            }
        }
    }
}
