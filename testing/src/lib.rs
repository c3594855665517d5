//! Test support for svckit: [`Etcd`] starts Debian's `etcd` binary on free loopback ports in a
//! temporary directory, waits until it is healthy, can stop (SIGKILL) and restart it on the
//! same data directory, and kills it on drop.
//!
//! ```no_run
//! let etcd = svckit_testing::Etcd::start();
//! let endpoint = etcd.endpoint(); // "127.0.0.1:<port>"
//! # drop(endpoint);
//! ```
//!
//! [`Etcd::builder`] starts it with TLS on the client URL instead (optionally requiring client
//! certificates); with the `tls` feature, `tls::TestCa` generates the certificates at test
//! time:
//!
//! ```no_run
//! # #[cfg(feature = "tls")] {
//! let ca = svckit_testing::tls::TestCa::new();
//! let etcd = svckit_testing::Etcd::builder()
//!     .tls_pem(ca.server_cert_pem(), ca.server_key_pem())
//!     .client_cert_auth_pem(ca.ca_pem())
//!     .start();
//! let endpoint = etcd.endpoint(); // "https://127.0.0.1:<port>"
//! # drop(endpoint);
//! # }
//! ```
//!
//! [`process`] starts the example binaries and signals them; [`load`] drives calls from several
//! tasks and counts their outcomes.
//!
//! [`EtcdCluster`] starts several members forming one cluster (`--initial-cluster`), each of
//! which can be SIGKILLed and restarted on its own, and finds the current leader; the builder
//! also passes further server flags, such as a short `--auth-token-ttl`:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let cluster = svckit_testing::Etcd::builder()
//!     .auth_token_ttl(Duration::from_secs(2))
//!     .start_cluster(3);
//! let leader = cluster.wait_leader(Duration::from_secs(10));
//! # drop(leader);
//! ```
//!
//! Health and leadership are probed on a separate plain-HTTP metrics URL
//! (`--listen-metrics-urls`), which serves `/health` and `/metrics` whatever the client URL
//! requires.
//!
//! The helpers block the calling thread while they wait (at most a few seconds). From async
//! tests that have background tasks running, use a multi-threaded runtime
//! (`#[tokio::test(flavor = "multi_thread")]`).

#[cfg(feature = "tls")]
pub mod tls;

mod cluster;
mod etcd;
pub mod go;
pub mod load;
mod member;
pub mod metrics;
mod origin;
#[cfg(feature = "otel")]
pub mod otel;
pub mod process;
mod prometheus;
mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub use cluster::EtcdCluster;
pub use etcd::{Etcd, EtcdBuilder};
pub use origin::CountingOrigin;
pub use prometheus::Prometheus;
pub use proxy::Proxy;

/// How to install the etcd binary when it is missing.
pub const INSTALL_HINT: &str = "apt-get install -y etcd-server";

/// The etcd binary: `$SVCKIT_ETCD_BIN`, else `etcd` on the `PATH`, else `/usr/bin/etcd`.
///
/// # Panics
/// When none exists, with a message that says how to install it.
pub fn etcd_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SVCKIT_ETCD_BIN") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("etcd"))
            .find(|p| p.is_file())
    });
    match on_path {
        Some(bin) => bin,
        None if Path::new("/usr/bin/etcd").is_file() => PathBuf::from("/usr/bin/etcd"),
        None => panic!(
            "the etcd server binary was not found on PATH; these tests need a real etcd. \
             Install it with `{INSTALL_HINT}` (Debian/Ubuntu) or set SVCKIT_ETCD_BIN"
        ),
    }
}

/// A loopback TCP port that was free a moment ago.
///
/// Taken below Linux's ephemeral range (32768–60999), from a counter private to this
/// process: a port the kernel hands out for `:0` is also the source port of the next outgoing
/// connection, and with many tests connecting at once one took an etcd's port between this
/// check and etcd's bind. A port here is only taken by someone binding it on purpose.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct loopback ports that were free a moment ago (see [`free_port`]).
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test process starts at its own place in the span, so two test binaries (or a test
    // and the example it started) rarely try the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut ports = Vec::with_capacity(n);
    for _ in 0..SPAN {
        if ports.len() == n {
            break;
        }
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(
        ports.len(),
        n,
        "no {n} free loopback ports in {FIRST}..{}",
        FIRST + SPAN
    );
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(9);
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 9, "{ports:?}");
        // Below the kernel's ephemeral range, where outgoing connections take their ports.
        assert!(
            ports.iter().all(|&p| (20_000..32_000).contains(&p)),
            "{ports:?}"
        );
    }
}
