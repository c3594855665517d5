//! A real Prometheus (Debian's `prometheus` binary) on a free loopback port in a temporary
//! directory, scraping the targets it is given: for the observability test and the demo's
//! `--prometheus`. Killed on drop.
//!
//! The targets live in a file Prometheus watches (`file_sd_configs`, job `svckit`, each
//! target labelled `process`), rewritten whole on every [`Prometheus::scrape`], so a process
//! started later is scraped too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    addr: String,
    dir: tempfile::TempDir,
    targets: BTreeMap<String, String>,
    _child: Child,
}

impl Prometheus {
    /// Where Debian installs it, when it is installed.
    pub fn binary() -> Option<PathBuf> {
        ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }

    /// Starts it with no target yet, scraping (and evaluating `rule_files`) every `every`,
    /// and waits (at most 30 s) until it is ready.
    pub async fn start(every: Duration, rule_files: &[&str]) -> Result<Prometheus, String> {
        let bin = Self::binary()
            .ok_or("prometheus is not installed (Debian: apt-get install prometheus)")?;
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let ms = every.as_millis().max(100);
        let timeout = ms * 4 / 5;
        let config = format!(
            "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {timeout}ms\n  evaluation_interval: {ms}ms\n\
             rule_files: {rule_files:?}\n\
             scrape_configs:\n  - job_name: svckit\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
            dir.path().join("targets.json").display()
        );
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write("prometheus.yml", &config)?;
        write("targets.json", "[]")?;
        let addr = format!("127.0.0.1:{}", crate::free_port());
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start prometheus: {e}"))?;
        let prometheus = Prometheus {
            addr,
            dir,
            targets: BTreeMap::new(),
            _child: child,
        };
        for _ in 0..300 {
            if prometheus.ready().await {
                return Ok(prometheus);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("prometheus did not become ready within 30 s".to_owned())
    }

    /// Its base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a target: `/metrics` at `addr` (`host:port`), labelled `process="<label>"`.
    pub fn scrape(&mut self, label: &str, addr: &str) -> std::io::Result<()> {
        self.targets.insert(label.to_owned(), addr.to_owned());
        let groups: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|(label, addr)| {
                serde_json::json!({"targets": [addr], "labels": {"process": label}})
            })
            .collect();
        // Written whole, then renamed: Prometheus never reads half a file.
        let tmp = self.dir.path().join("targets.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&groups)?)?;
        std::fs::rename(tmp, self.dir.path().join("targets.json"))
    }

    /// The number of targets given.
    pub fn targets(&self) -> usize {
        self.targets.len()
    }

    /// Whether `/-/ready` answers 200 (an HTTP/1.0 GET: the testing crate has no client).
    async fn ready(&self) -> bool {
        let Ok(mut conn) = tokio::net::TcpStream::connect(&self.addr).await else {
            return false;
        };
        let head = format!("GET /-/ready HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        if conn.write_all(head.as_bytes()).await.is_err() {
            return false;
        }
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut answer));
        matches!(read.await, Ok(Ok(_)))
            && (answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200"))
    }
}
