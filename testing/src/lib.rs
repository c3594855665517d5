//! Test support for svckit: [`Etcd`] starts Debian's `etcd` binary on free loopback ports in a
//! temporary directory, waits until it is healthy, can stop and restart it on the same data
//! directory, and kills it on drop.
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
//! Health is probed on a separate plain-HTTP metrics URL (`--listen-metrics-urls`), which
//! serves `/health` whatever the client URL requires.
//!
//! The helpers block the calling thread while they wait (at most a few seconds). From async
//! tests that have background tasks running, use a multi-threaded runtime
//! (`#[tokio::test(flavor = "multi_thread")]`).

#[cfg(feature = "tls")]
pub mod tls;

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install the etcd binary when it is missing.
pub const INSTALL_HINT: &str = "apt-get install -y etcd-server";

/// A real etcd server on loopback, killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    tls: Option<TlsFiles>,
}

/// Where the server's TLS material was written (inside the temporary directory).
#[derive(Debug)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// Starts an [`Etcd`] with options: TLS on the client URL, client certificate
/// authentication. Made by [`Etcd::builder`].
#[derive(Default)]
#[must_use]
pub struct EtcdBuilder {
    server_identity: Option<(Vec<u8>, Vec<u8>)>,
    client_ca: Option<Vec<u8>>,
}

impl fmt::Debug for EtcdBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No key material in test logs.
        f.debug_struct("EtcdBuilder")
            .field("tls", &self.server_identity.is_some())
            .field("client_cert_auth", &self.client_ca.is_some())
            .finish()
    }
}

impl EtcdBuilder {
    /// Serve the client URL over TLS with this certificate and key (both PEM), written to
    /// `server.pem` / `server-key.pem` in the temporary directory. The certificate must be
    /// valid for `127.0.0.1`. Default: plain HTTP.
    pub fn tls_pem(mut self, cert_pem: impl AsRef<[u8]>, key_pem: impl AsRef<[u8]>) -> Self {
        self.server_identity = Some((cert_pem.as_ref().to_vec(), key_pem.as_ref().to_vec()));
        self
    }

    /// Require clients to present a certificate signed by this CA (PEM, written to `ca.pem`):
    /// etcd's `--client-cert-auth --trusted-ca-file`. Needs [`tls_pem`](Self::tls_pem).
    /// Default: no client certificates asked for.
    pub fn client_cert_auth_pem(mut self, ca_pem: impl AsRef<[u8]>) -> Self {
        self.client_ca = Some(ca_pem.as_ref().to_vec());
        self
    }

    /// Starts etcd as configured and waits (up to 20 s) until it is healthy.
    ///
    /// # Panics
    /// When client certificate authentication is asked for without TLS, the files cannot be
    /// written, the `etcd` binary is missing or the server does not become healthy.
    pub fn start(self) -> Etcd {
        assert!(
            self.client_ca.is_none() || self.server_identity.is_some(),
            "client_cert_auth_pem needs tls_pem: etcd checks client certificates only over TLS"
        );
        let dir = tempfile::Builder::new()
            .prefix("svckit-etcd-")
            .tempdir()
            .expect("create a temporary directory for etcd");
        let tls = self.server_identity.map(|(cert_pem, key_pem)| {
            let write = |name: &str, pem: &[u8]| {
                let path = dir.path().join(name);
                std::fs::write(&path, pem)
                    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                path
            };
            TlsFiles {
                cert: write("server.pem", &cert_pem),
                key: write("server-key.pem", &key_pem),
                client_ca: self.client_ca.as_deref().map(|ca| write("ca.pem", ca)),
            }
        });
        let [client_port, peer_port, metrics_port] = free_ports();
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port,
            peer_port,
            metrics_port,
            tls,
        };
        etcd.spawn();
        etcd
    }
}

impl Etcd {
    /// Starts a plain-HTTP etcd on free loopback ports in a fresh temporary directory and
    /// waits (up to 20 s) until it answers `/health`.
    ///
    /// # Panics
    /// When the `etcd` binary is missing (the message says how to install it) or the server
    /// does not become healthy.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder for an etcd with TLS on the client URL.
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// The client endpoint as etcd clients take it: `127.0.0.1:<port>` for plain HTTP,
    /// `https://127.0.0.1:<port>` when the server was started with TLS.
    pub fn endpoint(&self) -> String {
        if self.tls.is_some() {
            self.url()
        } else {
            self.addr()
        }
    }

    /// The client address without a scheme, `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL, `http://127.0.0.1:<port>`, or `https://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// True when the client URL is served over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The plain-HTTP metrics URL, `http://127.0.0.1:<port>`, which serves `/health` and
    /// `/metrics` whatever the client URL requires.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The data directory, kept across [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit. The data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data directory and waits until healthy.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Waits until the server answers `/health` on its metrics URL with `"health":"true"`.
    ///
    /// # Panics
    /// When it does not within `timeout`; the message includes the server's log tail.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if health(self.metrics_port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "etcd on {} did not become healthy within {timeout:?}; log tail:\n{}",
            self.endpoint(),
            self.log_tail()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&mut self) {
        let bin = etcd_binary();
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the etcd log file");
        let mut command = Command::new(&bin);
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()));
            if let Some(ca) = &tls.client_ca {
                command
                    .arg("--client-cert-auth")
                    .arg(format!("--trusted-ca-file={}", ca.display()));
            }
        }
        let child = command
            .arg("--name=svckit-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=svckit-test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--listen-metrics-urls={}", self.metrics_url()))
            .arg("--log-level=warn")
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start etcd ({}): {e}. Install it with `{INSTALL_HINT}`",
                    bin.display()
                )
            });
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(20));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

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
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// `N` distinct loopback ports that were free a moment ago (all bound at once, so no two are
/// the same).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port"))
        .collect();
    std::array::from_fn(|i| {
        listeners[i]
            .local_addr()
            .expect("local address of a bound port")
            .port()
    })
}

fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_restarts_on_the_same_data() {
        let mut etcd = Etcd::start();
        assert!(!etcd.is_tls());
        assert_eq!(etcd.endpoint(), etcd.addr());
        assert!(etcd.url().starts_with("http://"));
        // Plain HTTP: the client URL itself answers, and so does the metrics URL.
        assert!(health(etcd.client_port));
        assert!(health(etcd.metrics_port));
        assert!(etcd.data_dir().join("member").is_dir());
        etcd.stop();
        assert!(!etcd.is_running());
        assert!(!health(etcd.client_port));
        assert!(!health(etcd.metrics_port));
        etcd.restart();
        assert!(etcd.is_running());
        assert!(health(etcd.client_port));
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports();
        assert!(a != b && b != c && a != c, "{a} {b} {c}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn serves_tls_on_the_client_url_and_health_on_the_metrics_url() {
        let ca = crate::tls::TestCa::new();
        let mut etcd = Etcd::builder()
            .tls_pem(ca.server_cert_pem(), ca.server_key_pem())
            .client_cert_auth_pem(ca.ca_pem())
            .start();
        assert!(etcd.is_tls());
        assert_eq!(
            etcd.endpoint(),
            format!("https://127.0.0.1:{}", etcd.client_port)
        );
        assert_eq!(etcd.url(), etcd.endpoint());
        for file in ["server.pem", "server-key.pem", "ca.pem"] {
            assert!(etcd.dir.path().join(file).is_file(), "{file} written");
        }
        assert!(health(etcd.metrics_port));
        // Plain HTTP on the TLS client port gets no health answer.
        assert!(!health(etcd.client_port));
        etcd.restart();
        assert!(health(etcd.metrics_port), "TLS settings survive a restart");
    }

    #[test]
    #[should_panic(expected = "client_cert_auth_pem needs tls_pem")]
    fn client_cert_auth_without_tls_is_refused() {
        let _ = Etcd::builder().client_cert_auth_pem("ca").start();
    }
}
