//! One etcd server process: its ports and directory, spawning it, and probing its health and
//! leadership on the plain-HTTP metrics URL. [`Etcd`](crate::Etcd) is one member alone;
//! [`EtcdCluster`](crate::EtcdCluster) is several sharing one `--initial-cluster`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{etcd_binary, INSTALL_HINT};

/// How long starting waits for a healthy server.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the server's TLS material was written (inside the temporary directory).
#[derive(Debug)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: Option<PathBuf>,
}

/// What every member of one cluster is started with.
#[derive(Debug)]
pub(crate) struct ServerConfig {
    pub(crate) tls: Option<TlsFiles>,
    /// `--initial-cluster`: `name=http://127.0.0.1:<peer port>,...`.
    pub(crate) initial_cluster: String,
    /// `--initial-cluster-token`: unique per cluster, so members of two clusters never talk.
    pub(crate) token: String,
    /// Further server flags, passed as given.
    pub(crate) extra_args: Vec<String>,
}

/// One etcd server process on fixed loopback ports; the data directory outlives restarts.
#[derive(Debug)]
pub(crate) struct Member {
    name: String,
    /// Holds `data/` and `etcd.log`.
    root: PathBuf,
    pub(crate) client_port: u16,
    pub(crate) peer_port: u16,
    pub(crate) metrics_port: u16,
    config: Arc<ServerConfig>,
    child: Option<Child>,
}

impl Member {
    /// A member that is not running yet.
    pub(crate) fn new(
        name: String,
        root: PathBuf,
        [client_port, peer_port, metrics_port]: [u16; 3],
        config: Arc<ServerConfig>,
    ) -> Self {
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("create the etcd directory {}: {e}", root.display()));
        Self {
            name,
            root,
            client_port,
            peer_port,
            metrics_port,
            config,
            child: None,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.config.tls.is_some()
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// `host:port` for plain HTTP, the URL with TLS: what etcd clients take.
    pub(crate) fn endpoint(&self) -> String {
        if self.is_tls() {
            self.url()
        } else {
            self.addr()
        }
    }

    pub(crate) fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub(crate) fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, and wait until the process is gone. The data directory stays.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process (after stopping a running one); does not wait for it.
    pub(crate) fn spawn(&mut self) {
        self.stop();
        let bin = etcd_binary();
        let (client, peer) = (self.url(), self.peer_url());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the etcd log file");
        let mut command = Command::new(&bin);
        if let Some(tls) = &self.config.tls {
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
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.config.initial_cluster))
            .arg(format!("--initial-cluster-token={}", self.config.token))
            .arg("--initial-cluster-state=new")
            .arg(format!("--listen-metrics-urls={}", self.metrics_url()))
            .arg("--log-level=warn")
            .args(&self.config.extra_args)
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
    }

    /// Waits until a freshly spawned member is healthy; fails at once when it exited (a
    /// refused flag, a port taken) instead of waiting out the timeout.
    pub(crate) fn wait_started(&mut self, timeout: Duration) {
        if let Err(exited) = self.try_wait_started(timeout) {
            panic!("{exited}");
        }
    }

    /// As [`wait_started`](Self::wait_started), but a member that exited is an error (the
    /// message carries its log tail; [`port_taken`](Self::port_taken) tells whether another
    /// process had bound one of its ports).
    pub(crate) fn try_wait_started(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_healthy() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "etcd member {} on {} exited ({status}); log tail:\n{}",
                    self.name,
                    self.endpoint(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.timed_out(timeout);
    }

    /// Whether the member's log says one of its ports was bound by another process.
    pub(crate) fn port_taken(&self) -> bool {
        self.log_tail().contains("address already in use")
    }

    /// Waits until `/health` on the metrics URL says `"health":"true"`.
    pub(crate) fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.timed_out(timeout);
    }

    fn timed_out(&self, timeout: Duration) -> ! {
        panic!(
            "etcd member {} on {} did not become healthy within {timeout:?}; log tail:\n{}",
            self.name,
            self.endpoint(),
            self.log_tail()
        );
    }

    /// etcd's `/health`: true when the member has a leader and serves a linearizable read.
    pub(crate) fn is_healthy(&self) -> bool {
        http_get(self.metrics_port, "/health", Duration::from_millis(500))
            .is_some_and(|body| body.contains("\"health\":\"true\""))
    }

    /// The member's own view: `etcd_server_is_leader 1` on `/metrics`.
    pub(crate) fn is_leader(&self) -> bool {
        self.child.is_some()
            && http_get(self.metrics_port, "/metrics", Duration::from_secs(2)).is_some_and(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().eq(["etcd_server_is_leader", "1"]))
            })
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.root.join("etcd.log")
    }

    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` over plain HTTP/1.0 on a loopback port: the body and headers, or `None` when
/// nothing answers.
pub(crate) fn http_get(port: u16, path: &str, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    (!response.is_empty()).then_some(response)
}
