//! svckit's cache and golang/groupcache itself in ONE cluster.
//!
//! A real golang/groupcache node (`tests/go/groupcache_node.go`: golang/groupcache's own
//! `HTTPPool` and `Group`, built here with the system's Go in GOPATH mode against Debian's
//! `/usr/share/gocode`, no network) and two svckit cache nodes serve one group on loopback
//! with the same peer list. Keys are asked at random nodes; every node must return the same
//! bytes, every key must be loaded exactly once in the whole cluster, by the node that both
//! svckit's ring and golang/groupcache's ring name as its owner, and no node may count a peer
//! error (so Go answered svckit's fetches and svckit answered Go's).
//!
//! Needs `go` and golang/groupcache's source: `apt-get install -y golang-go
//! golang-github-golang-groupcache-dev` (`scripts/install-deps --tests` does it). Without
//! them the tests fail and say so. `SVCKIT_GO_GOPATH` overrides the GOPATH searched.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use svckit::balancer::{HttpClient, Limits, TransportError};
use svckit::cache::{getter_fn, BoxError, Cache, Group};
use svckit_testing::go::build_groupcache_program;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

const GROUP: &str = "interop";
/// Every test is bounded by this, Go build included.
const TEST_LIMIT: Duration = Duration::from_secs(55);

/// The value every node, Go or Rust, computes for a key (the Go node's `valueOf`).
fn value_of(key: &str) -> Bytes {
    Bytes::from(format!("value-of:{key}"))
}

// ---------------------------------------------------------------------------------------
// Building the Go node
// ---------------------------------------------------------------------------------------

/// Builds `tests/go/groupcache_node.go` once per test run (Go's build cache, kept under
/// cargo's target tmp dir, makes later runs quick). Panics with install instructions when
/// Go or golang/groupcache is missing.
fn go_node_binary() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build_go_node) {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}

fn build_go_node() -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/groupcache_node.go");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-interop");
    build_groupcache_program(&source, &dir, "groupcache_node")
}

// ---------------------------------------------------------------------------------------
// The nodes
// ---------------------------------------------------------------------------------------

/// What a query value escapes: everything but `A-Za-z0-9-_.~` (space as `%20`), which Go's
/// `url.QueryUnescape` reads back exactly.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn query_value(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// A golang/groupcache node running as a child process.
struct GoNode {
    url: String,
    client: HttpClient,
    // Dropping the child's stdin makes it exit; kill_on_drop backs that up.
    _stdin: ChildStdin,
    _child: Child,
}

impl GoNode {
    /// Starts the Go node on `port` with `peers`; `None` if it exited before being ready
    /// (e.g. the port was taken meanwhile).
    async fn start(port: u16, peers: &[String]) -> Option<Self> {
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(go_node_binary());
        cmd.arg("-listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-self")
            .arg(&url)
            .arg("-peers")
            .arg(peers.join(","))
            .arg("-group")
            .arg(GROUP)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().expect("start the Go node");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the Go node prints `ready` within 10 s");
        match ready {
            Ok(Some(line)) if line.starts_with("ready") => {}
            _ => return None,
        }
        Some(Self {
            url,
            client: HttpClient::new(),
            _stdin: stdin,
            _child: child,
        })
    }

    async fn request(&self, req: http::Request<Bytes>) -> (http::StatusCode, Bytes) {
        let what = req.uri().to_string();
        let limits = Limits::new(Duration::from_secs(10), 64 << 20);
        match self.client.send(req, limits).await {
            Ok(resp) => (resp.status(), resp.into_body()),
            Err(TransportError::Timeout { .. }) => panic!("{what}: no answer within 10 s"),
            Err(e) => panic!("{what}: {e}"),
        }
    }

    async fn get_path(&self, path_and_query: &str) -> Bytes {
        let req = http::Request::get(format!("{}{path_and_query}", self.url))
            .body(Bytes::new())
            .unwrap();
        let (status, body) = self.request(req).await;
        assert_eq!(
            status,
            http::StatusCode::OK,
            "GET {path_and_query} at the Go node: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// `group.Get(key)` on the Go node.
    async fn get(&self, key: &str) -> Bytes {
        self.get_path(&format!("/get?key={}", query_value(key)))
            .await
    }

    /// The keys the Go node's getter loaded.
    async fn loads(&self) -> Vec<String> {
        serde_json::from_slice(&self.get_path("/loads").await).expect("/loads is JSON")
    }

    /// The Go group's counters.
    async fn stats(&self) -> BTreeMap<String, i64> {
        serde_json::from_slice(&self.get_path("/stats").await).expect("/stats is JSON")
    }

    /// The owners golang/groupcache's `consistenthash` ring names for `keys`.
    async fn owners(&self, keys: &[String]) -> Vec<String> {
        let req = http::Request::post(format!("{}/owners", self.url))
            .body(Bytes::from(serde_json::to_vec(keys).unwrap()))
            .unwrap();
        let (status, body) = self.request(req).await;
        assert_eq!(status, http::StatusCode::OK, "POST /owners");
        serde_json::from_slice(&body).expect("/owners is JSON")
    }
}

/// An svckit cache node served on loopback.
struct RustNode {
    url: String,
    cache: Cache,
    group: Group,
    loads: Arc<Mutex<Vec<String>>>,
    server: JoinHandle<()>,
}

impl RustNode {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cache = Cache::builder(&url)
            .peer_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let loads = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&loads);
        let group = cache
            .new_group(
                GROUP,
                64 << 20,
                getter_fn(move |key: String| {
                    recorder.lock().unwrap().push(key.clone());
                    async move { Ok::<_, BoxError>(value_of(&key)) }
                }),
            )
            .build()
            .unwrap();
        let app = cache.router();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            cache,
            group,
            loads,
            server,
        }
    }

    fn loads(&self) -> Vec<String> {
        self.loads.lock().unwrap().clone()
    }
}

impl Drop for RustNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One Go node and two svckit nodes, all with the peer list `[rust0, go, rust1]`.
struct Cluster {
    go: GoNode,
    rust: [RustNode; 2],
    peers: Vec<String>,
}

impl Cluster {
    async fn start() -> Self {
        // Build first, outside the retry loop, so a missing toolchain fails with its message.
        tokio::task::spawn_blocking(go_node_binary)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let rust = [RustNode::start().await, RustNode::start().await];
        for _attempt in 0..5 {
            let port = svckit_testing::free_port();
            let go_url = format!("http://127.0.0.1:{port}");
            let peers = vec![rust[0].url.clone(), go_url, rust[1].url.clone()];
            let Some(go) = GoNode::start(port, &peers).await else {
                continue; // the port was taken between free_port and the Go node's bind
            };
            for node in &rust {
                node.cache.set_peers(&peers).unwrap();
            }
            return Self { go, rust, peers };
        }
        panic!("the Go node did not start (see its stderr above)");
    }

    /// The value of `key` asked at node `at` (0 = Go, 1 and 2 = svckit).
    async fn get(&self, at: usize, key: &str) -> Bytes {
        match at {
            0 => self.go.get(key).await,
            i => self.rust[i - 1]
                .group
                .get(key)
                .await
                .unwrap_or_else(|e| panic!("{key:?} at {}: {e}", self.rust[i - 1].url)),
        }
    }

    /// Every load in the cluster as (loading node's URL, key).
    async fn all_loads(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = Vec::new();
        for key in self.go.loads().await {
            all.push((self.go.url.clone(), key));
        }
        for node in &self.rust {
            for key in node.loads() {
                all.push((node.url.clone(), key));
            }
        }
        all
    }
}

/// `s` quoted, cut to 60 characters for messages.
fn short(s: &str) -> String {
    let cut: String = s.chars().take(60).collect();
    if cut.len() < s.len() {
        format!("{cut:?}... ({} bytes)", s.len())
    } else {
        format!("{cut:?}")
    }
}

/// Builds the Go node, then runs a test body on a runtime of its own, bounded by
/// [`TEST_LIMIT`].
///
/// Not `#[tokio::test]`: that drops its runtime when the body panics, and dropping a
/// runtime while svckit gets are starting loads can deadlock (svckit-cache's singleflight
/// spawns its load task while holding its map lock; tokio shuts a task spawned during
/// shutdown down on the spot, and the task's drop guard then locks the same mutex). A
/// failing test must fail, not hang CI, so the runtime is shut down in the background and
/// the body's panic is re-raised here. The Go node also exits when its stdin closes, i.e. at
/// the latest when the test process ends.
fn run_bounded<F>(body: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    // Built before the clock starts: a cold `go build` of net/http on a busy machine is
    // not what the limit bounds.
    go_node_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let task = rt.spawn(body);
    let outcome = rt.block_on(async move { tokio::time::timeout(TEST_LIMIT, task).await });
    rt.shutdown_background();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("the test task ended abnormally: {e}"),
        Err(_) => panic!("the test did not finish within {TEST_LIMIT:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// Awkward keys golang/groupcache carries between its own nodes. Keys with a space are
/// left out here: golang/groupcache's client sends a space as `+` (`url.QueryEscape`) and
/// its server reads the decoded `r.URL.Path`, where `+` stays `+`, so Go itself turns
/// "a b" into "a+b" between two Go nodes; see the space tests below.
fn awkward_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "/v1/image/gif/001/icon=100x100",
        "//",
        "..",
        ".",
        "/..",
        "../x",
        "%2F",
        "%",
        "%zz",
        "+",
        "a+b",
        "?",
        "#",
        "a?b=c#d&e",
        "&=;",
        "\t",
        "ключ/ü/😀",
        "日本語",
        "",
        "\\",
        "\"'<>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push("k".repeat(1024));
    let mut mixed = "é/?#%+".repeat(200);
    while mixed.len() > 1024 {
        mixed.pop();
    }
    keys.push(mixed);
    keys
}

/// ~300 distinct keys: plain ones, the awkward ones, and variants of the awkward ones so
/// that every node owns some of each kind.
fn interop_keys() -> Vec<String> {
    let awkward = awkward_keys();
    let mut keys: Vec<String> = (0..170).map(|i| format!("key-{i}")).collect();
    for (i, a) in awkward.iter().enumerate() {
        keys.push(a.clone());
        if a.len() < 100 {
            keys.push(format!("{a}{i}"));
            keys.push(format!("/{i}/{a}/"));
            keys.push(format!("{i}{a}{a}"));
            keys.push(format!("{a}/x{i}"));
            keys.push(format!("/v1/image/{i}/{a}?size=1#frag"));
        }
    }
    let mut seen = BTreeSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    for k in &keys {
        assert!(!k.contains(' ') && k.len() <= 1024, "bad test key {k:?}");
    }
    keys
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn go_and_svckit_nodes_share_one_cluster() {
    run_bounded(async {
        let cluster = Arc::new(Cluster::start().await);
        let keys = interop_keys();
        assert!(keys.len() >= 280, "{} keys", keys.len());

        // The two rings agree on every key's owner, and every node owns a share.
        let go_owners = cluster.go.owners(&keys).await;
        let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, go_owner) in keys.iter().zip(&go_owners) {
            for node in &cluster.rust {
                assert_eq!(
                    node.cache.owner(key).as_deref(),
                    Some(go_owner.as_str()),
                    "owner of {key:?}: svckit at {} vs golang/groupcache",
                    node.url
                );
            }
            *owned.entry(go_owner.as_str()).or_default() += 1;
        }
        for peer in &cluster.peers {
            let n = owned.get(peer.as_str()).copied().unwrap_or(0);
            assert!(n > keys.len() / 10, "{peer} owns only {n} keys");
        }

        // Each key asked twice at random nodes, all at once (at most 64 in flight).
        let mut rng = SmallRng::seed_from_u64(4);
        let limit = Arc::new(Semaphore::new(64));
        let mut tasks = Vec::new();
        for _round in 0..2 {
            for key in &keys {
                let at = rng.random_range(0..3);
                let (cluster, key, limit) = (Arc::clone(&cluster), key.clone(), limit.clone());
                tasks.push(tokio::spawn(async move {
                    let _permit = limit.acquire().await.unwrap();
                    let got = cluster.get(at, &key).await;
                    (got != value_of(&key)).then(|| {
                        format!(
                            "{} at node {at}: {}",
                            short(&key),
                            short(&String::from_utf8_lossy(&got))
                        )
                    })
                }));
            }
        }
        // Every get finishes before anything is asserted.
        let mut wrong = Vec::new();
        for t in tasks {
            wrong.extend(t.await.unwrap());
        }
        assert!(
            wrong.is_empty(),
            "{} wrong values, e.g. {:#?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        // Then every node, one after the other, returns the same bytes for every key.
        for key in &keys {
            for at in 0..3 {
                assert_eq!(
                    cluster.get(at, key).await,
                    value_of(key),
                    "{key:?} at node {at}"
                );
            }
        }

        // Each key was loaded exactly once in the whole cluster, by its owner.
        let loads = cluster.all_loads().await;
        assert_eq!(loads.len(), keys.len(), "loads in the cluster");
        let mut loader: BTreeMap<&str, &str> = BTreeMap::new();
        for (node, key) in &loads {
            assert!(
                loader.insert(key.as_str(), node.as_str()).is_none(),
                "{key:?} loaded twice"
            );
        }
        for (key, go_owner) in keys.iter().zip(&go_owners) {
            assert_eq!(
                loader.get(key.as_str()).copied(),
                Some(go_owner.as_str()),
                "{key:?} must be loaded once, by its owner"
            );
        }

        // No node fell back to a local load: Go answered svckit and svckit answered Go.
        let go_stats = cluster.go.stats().await;
        assert_eq!(go_stats["peer_errors"], 0, "Go's peer errors: {go_stats:?}");
        assert!(
            go_stats["peer_loads"] > 0,
            "Go fetched from svckit: {go_stats:?}"
        );
        assert!(
            go_stats["server_requests"] > 0,
            "svckit fetched from Go: {go_stats:?}"
        );
        for node in &cluster.rust {
            let s = node.group.stats();
            assert_eq!(s.peer_errors, 0, "peer errors at {}: {s:?}", node.url);
            assert!(s.peer_loads > 0, "{} fetched from peers: {s:?}", node.url);
            assert!(s.server_requests > 0, "{} served peers: {s:?}", node.url);
        }
    });
}

/// Keys with a space, each owned by `owner` in the cluster's ring.
fn space_keys_owned_by(cluster: &Cluster, owner: &str) -> Vec<String> {
    let keys: Vec<String> = (0..60)
        .flat_map(|i| [format!("a b {i}"), format!(" {i}"), format!("{i} + {i}")])
        .chain([" ".to_string(), "  ".to_string(), "a b".to_string()])
        .filter(|k| cluster.rust[0].cache.owner(k).as_deref() == Some(owner))
        .collect();
    assert!(
        keys.len() > 10,
        "{} space keys owned by {owner}",
        keys.len()
    );
    keys
}

#[test]
fn go_asks_svckit_owners_for_keys_with_spaces_intact() {
    run_bounded(async {
        let cluster = Cluster::start().await;
        for (i, node) in cluster.rust.iter().enumerate() {
            let keys = space_keys_owned_by(&cluster, &node.url);
            for key in &keys {
                // Go sends the space as `+`; svckit's server reads it as a space.
                assert_eq!(cluster.go.get(key).await, value_of(key), "{key:?}");
            }
            assert_eq!(node.loads(), keys, "svckit node {i} loaded the exact keys");
        }
        assert_eq!(cluster.go.loads().await, Vec::<String>::new());
        assert_eq!(cluster.go.stats().await["peer_errors"], 0);
    });
}

#[test]
fn svckit_asks_a_go_owner_for_keys_with_spaces_intact() {
    run_bounded(async {
        let cluster = Cluster::start().await;
        let keys = space_keys_owned_by(&cluster, &cluster.go.url);
        for key in &keys {
            let got = cluster.get(1, key).await;
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&value_of(key)),
                "{key:?} asked at svckit, owned by Go"
            );
        }
        assert_eq!(cluster.go.loads().await, keys, "Go loaded the exact keys");
        assert_eq!(cluster.rust[0].group.stats().peer_errors, 0);
    });
}

#[test]
fn go_gets_an_expiring_value_from_an_svckit_owner_as_the_plain_value() {
    run_bounded(async {
        let cluster = Cluster::start().await;
        let owner = &cluster.rust[0];
        let keys: Vec<String> = (0..200)
            .map(|i| format!("expiring {i}"))
            .filter(|k| owner.cache.owner(k).as_deref() == Some(owner.url.as_str()))
            .take(10)
            .collect();
        assert!(!keys.is_empty());
        // The owner answers with mailgun/groupcache's `expire` (field 3); golang/groupcache
        // does not know the field and keeps the value.
        let at = std::time::SystemTime::now() + Duration::from_secs(600);
        for key in &keys {
            let value = format!("set {key}");
            owner
                .group
                .set(key, value.clone(), Some(at), false)
                .await
                .unwrap();
            assert_eq!(cluster.go.get(key).await, value, "{key:?}");
        }
        assert!(owner.loads().is_empty(), "served from the set values");
        assert_eq!(cluster.go.loads().await, Vec::<String>::new());
        assert_eq!(cluster.go.stats().await["peer_errors"], 0);
    });
}
