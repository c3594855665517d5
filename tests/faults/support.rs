//! What the fault scenarios share: `product` instances as child processes, a paced load
//! through the library's own Endpoint that counts every failed call, an observer that reads
//! the keys straight from etcd, waits with deadlines, and the `FAULT` report line.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, ConnectOptions, GetOptions};
use svckit::balancer::{Endpoint, HttpClient, Picker, RetryPolicy};
use svckit::registry::{Discovery, EtcdOptions, EtcdRegistry, Registry};
use svckit_testing::load::{Failure, Load, LoadOptions, LoadReport};
use svckit_testing::process::{self, Signal};
use tokio::process::{Child, Command};

/// The service every product instance registers as.
pub(crate) const SERVICE: &str = "productservice";
/// Load workers, each sending one call per [`PACE`]: about 400 calls/s in all, paced so
/// that two scenarios running side by side leave the 2 cores to etcd's heartbeats.
pub(crate) const WORKERS: usize = 4;
/// The pause between two calls of one worker.
pub(crate) const PACE: Duration = Duration::from_millis(10);
/// The load as the report line names it.
pub(crate) const LOAD: &str = "4x100/s p2c retry3";

/// Runs a blocking test-support call (starting, killing, electing etcd) without stalling the
/// runtime's other tasks, such as the load.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Polls `ok` every 50 ms until it holds; returns how long that took.
///
/// # Panics
/// When it does not hold within `timeout`.
pub(crate) async fn wait_for(what: &str, timeout: Duration, ok: impl FnMut() -> bool) -> Duration {
    process::wait_until(what, timeout, ok).await
}

pub(crate) use process::poll_until;

/// [`poll_until`] that panics on the timeout.
pub(crate) async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, ok: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(timeout, ok)
        .await
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Prints one `FAULT scenario=… key=value …` line straight to stderr, so it shows whether or
/// not the test harness captures output. RELIABILITY.md records these lines.
pub(crate) fn report(scenario: &str, fields: &[(&str, String)]) {
    let mut line = format!("FAULT scenario={scenario}");
    for (key, value) in fields {
        line.push_str(&format!(" {key}={value}"));
    }
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Milliseconds, for the report.
pub(crate) fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// etcd options for an in-process client: short timeouts so a dead member costs seconds, not
/// the defaults' tens of seconds.
pub(crate) fn options(endpoints: &[String]) -> EtcdOptions {
    EtcdOptions::new(endpoints.iter().cloned())
        .dial_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(2))
}

/// A registry client and its discovery view.
pub(crate) async fn discovery(options: EtcdOptions) -> (EtcdRegistry, Discovery) {
    let registry = EtcdRegistry::connect(options)
        .await
        .expect("the discovery client connects");
    let discovery = registry.discovery();
    (registry, discovery)
}

/// The discovery view as `key → address`, comparable with [`Observer::keys`].
pub(crate) fn view(discovery: &Discovery) -> BTreeMap<String, String> {
    discovery
        .all()
        .iter()
        .map(|i| (i.key(discovery.prefix()), i.addr().to_owned()))
        .collect()
}

/// The ids of `SERVICE` in the discovery view.
pub(crate) fn ids(discovery: &Discovery) -> Vec<String> {
    discovery
        .instances(SERVICE)
        .iter()
        .map(|i| i.id().to_owned())
        .collect()
}

/// The key of instance `id` of `SERVICE`.
pub(crate) fn key_of(id: &str) -> String {
    format!("/services/{id}/{SERVICE}")
}

/// One `product` example process, registered as `SERVICE` with a fixed id. Its stderr goes to
/// a file that is shown when something about it fails, and removed on drop; the process is
/// killed on drop.
#[derive(Debug)]
pub(crate) struct Product {
    child: Child,
    id: String,
    log: PathBuf,
}

impl Product {
    /// Starts `product --port <free> --etcd <endpoints> --id <id> --ttl <ttl_secs>`.
    pub(crate) fn start(endpoints: &[String], id: &str, ttl_secs: u64) -> Self {
        Self::start_with_env(endpoints, id, ttl_secs, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub(crate) fn start_with_env(
        endpoints: &[String],
        id: &str,
        ttl_secs: u64,
        env: &[(&str, &str)],
    ) -> Self {
        let log = std::env::temp_dir().join(format!(
            "svckit-faults-{}-{id}-{}.log",
            std::process::id(),
            svckit_testing::free_port()
        ));
        let stderr = std::fs::File::create(&log).expect("create the product log file");
        let child = Command::new(process::example_bin("product"))
            .args(["--port", &svckit_testing::free_port().to_string()])
            .args(["--etcd", &endpoints.join(",")])
            .args(["--id", id, "--ttl", &ttl_secs.to_string()])
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start the product example");
        Self {
            child,
            id: id.to_owned(),
            log,
        }
    }

    /// The instance id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The instance's key in etcd.
    pub(crate) fn key(&self) -> String {
        key_of(&self.id)
    }

    /// The last lines the process wrote to stderr.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Its exit status if it has exited.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal(&self, signal: Signal) {
        process::signal(self.child.id().expect("the product still runs"), signal);
    }

    /// SIGKILL, and wait until it is gone.
    pub(crate) async fn sigkill(&mut self) {
        self.signal(Signal::Kill);
        self.wait_exit().await;
    }

    /// SIGTERM, and wait (up to 20 s) until it exits; returns its exit code.
    pub(crate) async fn sigterm(&mut self) -> Option<i32> {
        self.signal(Signal::Term);
        self.wait_exit().await.code()
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let id = self.id.clone();
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{id} did not exit within 20 s"))
            .expect("wait for the product")
    }
}

impl Drop for Product {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Reads `/services/` straight from one etcd member, independent of the library under test.
#[derive(Clone)]
pub(crate) struct Observer {
    endpoint: String,
    user: Option<(String, String)>,
    client: Option<Client>,
}

/// A key's value and lease.
pub(crate) type Keys = BTreeMap<String, (String, i64)>;

impl Observer {
    /// An observer of the member at `endpoint`.
    pub(crate) async fn connect(endpoint: &str) -> Self {
        let client = Client::connect([endpoint], None)
            .await
            .expect("the observer connects");
        Self {
            endpoint: endpoint.to_owned(),
            user: None,
            client: Some(client),
        }
    }

    /// An observer that authenticates as `user` afresh for every read, so an expired token
    /// never stands in its way.
    pub(crate) fn with_auth(endpoint: &str, user: &str, password: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            user: Some((user.to_owned(), password.to_owned())),
            client: None,
        }
    }

    /// A client for one request.
    pub(crate) async fn client(&self) -> Option<Client> {
        match (&self.client, &self.user) {
            (Some(client), _) => Some(client.clone()),
            (None, Some((user, password))) => {
                let options = ConnectOptions::new()
                    .with_user(user.clone(), password.clone())
                    .with_timeout(Duration::from_secs(2));
                Client::connect([self.endpoint.as_str()], Some(options))
                    .await
                    .ok()
            }
            (None, None) => Client::connect([self.endpoint.as_str()], None).await.ok(),
        }
    }

    /// Every key under `/services/` with its value and lease, or `None` when the member did
    /// not answer within a second (no leader, down).
    pub(crate) async fn keys(&self) -> Option<Keys> {
        let read = async {
            let mut client = self.client().await?;
            let resp = client
                .get("/services/", Some(GetOptions::new().with_prefix()))
                .await
                .ok()?;
            Some(
                resp.kvs()
                    .iter()
                    .map(|kv| {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let value = String::from_utf8_lossy(kv.value()).into_owned();
                        (key, (value, kv.lease()))
                    })
                    .collect(),
            )
        };
        // Generous: a loaded machine's read (through a member just elected, or a fresh
        // authentication) takes longer than an idle one's.
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten()
    }

    /// The keys as `key → value`, comparable with [`view`].
    pub(crate) async fn values(&self) -> Option<BTreeMap<String, String>> {
        Some(
            self.keys()
                .await?
                .into_iter()
                .map(|(k, (v, _))| (k, v))
                .collect(),
        )
    }

    /// True when `key` is present (false also when the member did not answer).
    pub(crate) async fn has(&self, key: &str) -> bool {
        self.keys().await.is_some_and(|k| k.contains_key(key))
    }

    /// True when the member answered and `key` is absent.
    pub(crate) async fn lacks(&self, key: &str) -> bool {
        self.keys().await.is_some_and(|k| !k.contains_key(key))
    }
}

/// A product request's reply: which instance served it.
fn decode(resp: http::Response<Bytes>) -> Result<String, String> {
    if resp.status() != http::StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    if !resp.body().starts_with(b"get product byID:") {
        return Err(format!("body {:?}", String::from_utf8_lossy(resp.body())));
    }
    Ok(resp
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned())
}

/// The product Endpoint as a client would build it: p2c, 2 s per attempt, at most 3 attempts
/// within 5 s on other instances (with the default retry budget).
pub(crate) fn product_endpoint(discovery: &Discovery) -> Endpoint<u64, String> {
    HttpClient::new()
        .endpoint(
            discovery,
            SERVICE,
            |id: u64| http::Request::get(format!("/prod/{id}")).body(Bytes::new()),
            decode,
        )
        .picker(Picker::by_name("p2c").expect("the p2c picker"))
        .timeout(Duration::from_secs(2))
        .retry(RetryPolicy::new(3, Duration::from_secs(5)))
        .build()
        .expect("build the product endpoint")
}

/// Paced calls through [`product_endpoint`] from [`WORKERS`] tasks, one per [`PACE`] each,
/// until finished; every call that does not end in a correct reply counts as failed. The
/// label of a call is the instance that served it.
pub(crate) fn start_load(discovery: &Discovery) -> Load {
    let endpoint = product_endpoint(discovery);
    let options = LoadOptions::new().workers(WORKERS).pace(PACE);
    Load::start(options, move |n| {
        let endpoint = endpoint.clone();
        async move {
            endpoint
                .invoke(n % 1000)
                .await
                .map_err(|e| Failure::new("call", e))
        }
    })
}

/// Waits (up to 10 s) until `more` further calls were made.
pub(crate) async fn run_for_calls(load: &Load, more: u64) {
    load.run_for_calls(more, Duration::from_secs(10)).await;
}

/// The load's fields for [`report`].
pub(crate) fn load_fields(report: &LoadReport) -> Vec<(&'static str, String)> {
    vec![
        ("load", LOAD.to_owned()),
        ("load_s", format!("{:.1}", report.ran.as_secs_f64())),
        ("calls", report.calls.to_string()),
        ("failed", report.failed.to_string()),
        ("max_call_ms", ms(report.max_latency)),
    ]
}

/// Starts three `product` instances on `endpoints` with lease `ttl_secs` and waits (up to
/// 20 s) until a client of its own discovers all three; returns them, the client and its view.
pub(crate) async fn three_products_discovered(
    endpoints: &[String],
    ids_: [&str; 3],
    ttl_secs: u64,
) -> (Vec<Product>, EtcdRegistry, Discovery) {
    let products = ids_
        .iter()
        .map(|id| Product::start(endpoints, id, ttl_secs))
        .collect();
    let (client, discovery) = discovery(options(endpoints)).await;
    wait_for(
        "three instances discovered",
        Duration::from_secs(20),
        || ids(&discovery).len() == 3,
    )
    .await;
    (products, client, discovery)
}
