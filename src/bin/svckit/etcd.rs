//! The etcd flags every subcommand shares, and connecting with them.

use std::time::Duration;

use clap::Args;
use svckit::registry::{Error, EtcdOptions, EtcdRegistry, DEFAULT_PREFIX};

use crate::error::Failure;

/// Where etcd is when no flag says.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// How long connecting waits for etcd to answer.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// etcd endpoints: `--etcd` (comma-separated, as the examples take it) and `--node` (confd
/// style, repeatable). Both may be given; every endpoint named is used.
#[derive(Debug, Clone, Args)]
pub(crate) struct EtcdArgs {
    /// etcd endpoints, comma-separated: `host:port` or `http(s)://host:port`
    /// [default: http://127.0.0.1:2379]. Auth and TLS: the SVCKIT_ETCD_* environment
    /// variables (see `svckit --help`).
    #[arg(long, global = true, value_name = "ENDPOINTS", value_delimiter = ',')]
    etcd: Vec<String>,

    /// An etcd endpoint, as confd's -node takes it (`http://127.0.0.1:2379`); repeat it for
    /// several.
    #[arg(long, global = true, value_name = "URL")]
    node: Vec<String>,
}

impl EtcdArgs {
    /// Every endpoint named, in order, without repeats; the default when none is.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        let mut endpoints: Vec<String> = Vec::new();
        for endpoint in self.etcd.iter().chain(&self.node) {
            let endpoint = endpoint.trim();
            if !endpoint.is_empty() && !endpoints.iter().any(|e| e == endpoint) {
                endpoints.push(endpoint.to_owned());
            }
        }
        if endpoints.is_empty() {
            endpoints.push(DEFAULT_ENDPOINT.to_owned());
        }
        endpoints
    }

    /// Connects to etcd with auth and TLS from the environment. `services_prefix` is where
    /// instances live (`/services` when `None`).
    pub(crate) async fn connect(
        &self,
        services_prefix: Option<&str>,
    ) -> Result<EtcdRegistry, Failure> {
        let endpoints = self.endpoints();
        let joined = endpoints.join(",");
        let options = EtcdOptions::new(endpoints)
            .prefix(services_prefix.unwrap_or(DEFAULT_PREFIX))
            .dial_timeout(DIAL_TIMEOUT)
            .with_env()
            .map_err(|e| Failure::new("reading the etcd auth and TLS settings", e))?;
        tracing::debug!(endpoints = %joined, "connecting to etcd");
        EtcdRegistry::connect(options).await.map_err(|e| {
            let what = match e {
                Error::Unreachable { .. } | Error::Timeout { .. } => {
                    format!("etcd at {joined} is unreachable")
                }
                _ => format!("connecting to etcd at {joined}"),
            };
            Failure::new(what, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_both_flags_without_repeats() {
        let args = EtcdArgs {
            etcd: vec!["a:1".into(), " b:2".into()],
            node: vec!["http://c:3".into(), "a:1".into(), String::new()],
        };
        assert_eq!(args.endpoints(), ["a:1", "b:2", "http://c:3"]);
        let none = EtcdArgs {
            etcd: vec![],
            node: vec![],
        };
        assert_eq!(none.endpoints(), [DEFAULT_ENDPOINT]);
    }
}
