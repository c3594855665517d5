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
//! The helpers block the calling thread while they wait (at most a few seconds). From async
//! tests that have background tasks running, use a multi-threaded runtime
//! (`#[tokio::test(flavor = "multi_thread")]`).

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
}

impl Etcd {
    /// Starts etcd on free loopback ports in a fresh temporary directory and waits (up to
    /// 20 s) until it answers `/health`.
    ///
    /// # Panics
    /// When the `etcd` binary is missing (the message says how to install it) or the server
    /// does not become healthy.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("svckit-etcd-")
            .tempdir()
            .expect("create a temporary directory for etcd");
        let mut etcd = Self {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd
    }

    /// The client endpoint, `127.0.0.1:<port>`, as etcd clients take it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
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

    /// Waits until the server answers `/health` with `"health":"true"`.
    ///
    /// # Panics
    /// When it does not within `timeout`; the message includes the server's log tail.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if health(self.client_port) {
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
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the etcd log file");
        let child = Command::new(&bin)
            .arg("--name=svckit-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=svckit-test={peer}"))
            .arg("--initial-cluster-state=new")
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
        assert!(health(etcd.client_port));
        assert!(etcd.data_dir().join("member").is_dir());
        etcd.stop();
        assert!(!etcd.is_running());
        assert!(!health(etcd.client_port));
        etcd.restart();
        assert!(etcd.is_running());
        assert!(health(etcd.client_port));
    }
}
