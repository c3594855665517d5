//! [`Etcd`]: one etcd server alone, and [`EtcdBuilder`], which also starts an
//! [`EtcdCluster`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::EtcdCluster;
use crate::free_ports;
use crate::member::{Member, ServerConfig, TlsFiles, START_TIMEOUT};

/// How many sets of ports starting etcd tries: another process may bind a port between
/// [`free_ports`] checking it and etcd binding it; the next set is then taken.
const PORT_ATTEMPTS: usize = 3;

/// A real etcd server on loopback, killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    member: Member,
    // Removed after the member was killed (fields drop in order).
    _dir: tempfile::TempDir,
}

/// Starts an [`Etcd`] or an [`EtcdCluster`] with options: TLS on the client URL, client
/// certificate authentication, further server flags. Made by [`Etcd::builder`].
#[derive(Default)]
#[must_use]
pub struct EtcdBuilder {
    server_identity: Option<(Vec<u8>, Vec<u8>)>,
    client_ca: Option<Vec<u8>>,
    extra_args: Vec<String>,
}

impl fmt::Debug for EtcdBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No key material in test logs.
        f.debug_struct("EtcdBuilder")
            .field("tls", &self.server_identity.is_some())
            .field("client_cert_auth", &self.client_ca.is_some())
            .field("extra_args", &self.extra_args)
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

    /// How long an auth token lives unused once authentication is enabled: etcd's
    /// `--auth-token-ttl`, in whole seconds (rounded up, at least 1). Default: etcd's, 300 s.
    pub fn auth_token_ttl(self, ttl: Duration) -> Self {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        self.arg(format!("--auth-token-ttl={}", secs.max(1)))
    }

    /// One more server flag, passed as given (`--flag=value`), after the ones the helper sets.
    /// A flag etcd refuses makes [`start`](Self::start) fail at once with the server's log.
    /// Default: none.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Starts etcd as configured and waits (up to 20 s) until it is healthy.
    ///
    /// # Panics
    /// When client certificate authentication is asked for without TLS, the files cannot be
    /// written, the `etcd` binary is missing or the server does not become healthy.
    pub fn start(self) -> Etcd {
        for attempt in 1..=PORT_ATTEMPTS {
            let dir = temp_dir("svckit-etcd-");
            let ports = free_ports(3);
            let ports = [ports[0], ports[1], ports[2]];
            let name = "svckit-test";
            let initial_cluster = format!("{name}=http://127.0.0.1:{}", ports[1]);
            let config = self.server_config(&dir, initial_cluster, ports[0]);
            let mut member = Member::new(name.to_owned(), dir.path().to_owned(), ports, config);
            member.spawn();
            match member.try_wait_started(START_TIMEOUT) {
                Ok(()) => return Etcd { member, _dir: dir },
                Err(_) if attempt < PORT_ATTEMPTS && member.port_taken() => {}
                Err(exited) => panic!("{exited}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts a cluster of `members` etcd servers on loopback as configured (`m0`, `m1`, …,
    /// each with its own ports and data directory) and waits (up to 20 s) until every member
    /// is healthy, which needs an elected leader.
    ///
    /// # Panics
    /// As [`start`](Self::start); also when `members` is 0.
    pub fn start_cluster(self, members: usize) -> EtcdCluster {
        assert!(members > 0, "a cluster needs at least one member");
        'attempts: for attempt in 1..=PORT_ATTEMPTS {
            let dir = temp_dir("svckit-etcd-cluster-");
            let ports = free_ports(3 * members);
            let names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
            let initial_cluster = names
                .iter()
                .zip(ports.chunks(3))
                .map(|(name, p)| format!("{name}=http://127.0.0.1:{}", p[1]))
                .collect::<Vec<_>>()
                .join(",");
            let config = self.server_config(&dir, initial_cluster, ports[0]);
            let mut members: Vec<Member> = names
                .into_iter()
                .zip(ports.chunks(3))
                .map(|(name, p)| {
                    let root = dir.path().join(&name);
                    Member::new(name, root, [p[0], p[1], p[2]], config.clone())
                })
                .collect();
            // All at once: a member of a new cluster is healthy only once a quorum has met.
            for member in &mut members {
                member.spawn();
            }
            for member in &mut members {
                match member.try_wait_started(START_TIMEOUT) {
                    Ok(()) => {}
                    Err(_) if attempt < PORT_ATTEMPTS && member.port_taken() => continue 'attempts,
                    Err(exited) => panic!("{exited}"),
                }
            }
            return EtcdCluster::new(members, dir);
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Writes the TLS files into `dir` and gathers what every member is started with.
    fn server_config(
        &self,
        dir: &tempfile::TempDir,
        initial_cluster: String,
        first_port: u16,
    ) -> Arc<ServerConfig> {
        assert!(
            self.client_ca.is_none() || self.server_identity.is_some(),
            "client_cert_auth_pem needs tls_pem: etcd checks client certificates only over TLS"
        );
        let tls = self.server_identity.as_ref().map(|(cert_pem, key_pem)| {
            let write = |name: &str, pem: &[u8]| {
                let path = dir.path().join(name);
                std::fs::write(&path, pem)
                    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                path
            };
            TlsFiles {
                cert: write("server.pem", cert_pem),
                key: write("server-key.pem", key_pem),
                client_ca: self.client_ca.as_deref().map(|ca| write("ca.pem", ca)),
            }
        });
        Arc::new(ServerConfig {
            tls,
            initial_cluster,
            token: format!("svckit-{}-{first_port}", std::process::id()),
            extra_args: self.extra_args.clone(),
        })
    }
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory for etcd")
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

    /// A builder for an etcd (or a cluster) with TLS on the client URL or further flags.
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// The client endpoint as etcd clients take it: `127.0.0.1:<port>` for plain HTTP,
    /// `https://127.0.0.1:<port>` when the server was started with TLS.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// The client address without a scheme, `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        self.member.addr()
    }

    /// The client URL, `http://127.0.0.1:<port>`, or `https://` with TLS.
    pub fn url(&self) -> String {
        self.member.url()
    }

    /// True when the client URL is served over TLS.
    pub fn is_tls(&self) -> bool {
        self.member.is_tls()
    }

    /// The plain-HTTP metrics URL, `http://127.0.0.1:<port>`, which serves `/health` and
    /// `/metrics` whatever the client URL requires.
    pub fn metrics_url(&self) -> String {
        self.member.metrics_url()
    }

    /// The data directory, kept across [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn data_dir(&self) -> PathBuf {
        self.member.data_dir()
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.member.pid()
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.member.is_running()
    }

    /// Kills the server (SIGKILL) and waits for it to exit. The data directory stays.
    pub fn stop(&mut self) {
        self.member.stop();
    }

    /// Starts the server again on the same ports and data directory and waits until healthy.
    pub fn restart(&mut self) {
        self.member.spawn();
        self.member.wait_started(START_TIMEOUT);
    }

    /// Waits until the server answers `/health` on its metrics URL with `"health":"true"`.
    ///
    /// # Panics
    /// When it does not within `timeout`; the message includes the server's log tail.
    pub fn wait_healthy(&self, timeout: Duration) {
        self.member.wait_healthy(timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::http_get;

    fn health(port: u16) -> bool {
        http_get(port, "/health", Duration::from_millis(500))
            .is_some_and(|b| b.contains("\"health\":\"true\""))
    }

    #[test]
    fn starts_stops_and_restarts_on_the_same_data() {
        let mut etcd = Etcd::start();
        assert!(!etcd.is_tls());
        assert_eq!(etcd.endpoint(), etcd.addr());
        assert!(etcd.url().starts_with("http://"));
        // Plain HTTP: the client URL itself answers, and so does the metrics URL.
        assert!(health(etcd.member.client_port));
        assert!(health(etcd.member.metrics_port));
        assert!(etcd.data_dir().join("member").is_dir());
        // Alone, it leads.
        assert!(etcd.member.is_leader());
        etcd.stop();
        assert!(!etcd.is_running());
        assert_eq!(etcd.pid(), None);
        assert!(!health(etcd.member.client_port));
        assert!(!health(etcd.member.metrics_port));
        etcd.restart();
        assert!(etcd.is_running());
        assert!(etcd.pid().is_some());
        assert!(health(etcd.member.client_port));
    }

    #[test]
    fn extra_flags_reach_the_server() {
        let etcd = Etcd::builder()
            .auth_token_ttl(Duration::from_millis(1500))
            .start();
        let pid = etcd.pid().unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        assert!(
            args.contains(&&b"--auth-token-ttl=2"[..]),
            "rounded up to whole seconds"
        );
    }

    #[test]
    #[should_panic(expected = "exited")]
    fn a_refused_flag_fails_at_once() {
        let _ = Etcd::builder().arg("--no-such-flag=1").start();
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
            format!("https://127.0.0.1:{}", etcd.member.client_port)
        );
        assert_eq!(etcd.url(), etcd.endpoint());
        for file in ["server.pem", "server-key.pem", "ca.pem"] {
            assert!(etcd._dir.path().join(file).is_file(), "{file} written");
        }
        assert!(health(etcd.member.metrics_port));
        // Plain HTTP on the TLS client port gets no health answer.
        assert!(!health(etcd.member.client_port));
        etcd.restart();
        assert!(
            health(etcd.member.metrics_port),
            "TLS settings survive a restart"
        );
    }

    #[test]
    #[should_panic(expected = "client_cert_auth_pem needs tls_pem")]
    fn client_cert_auth_without_tls_is_refused() {
        let _ = Etcd::builder().client_cert_auth_pem("ca").start();
    }
}
