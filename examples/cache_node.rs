//! A groupcache node: one group whose misses are fetched from an origin over HTTP or read from
//! a directory, sharing its keys with its peers over golang/groupcache's protocol (Go nodes
//! can join; writes follow mailgun/groupcache's).
//!
//! Run with: `cargo run --example cache_node -- --listen 127.0.0.1:9103 --group demo --origin http://127.0.0.1:9300 --peers http://127.0.0.1:9101,http://127.0.0.1:9103`
//! or, with peers from etcd: `cargo run --example cache_node -- --listen 127.0.0.1:9103 --group demo --origin http://127.0.0.1:9300 --etcd 127.0.0.1:2379 --service groupcache`
//! or, values from files: `... --dir ./static` instead of `--origin` (the key `a/b.png` is
//! the file `./static/a/b.png`).
//!
//! On the one listen address it serves the peer protocol (`/_groupcache/<group>/<key>`) and:
//! - `GET /get?key=K`: the value; 502 with the reason when the origin fails; with `--dir`,
//!   400 for a key that would leave the directory (`..`, absolute, NUL, a symlink out) and
//!   404 for a missing file;
//! - `POST /set?key=K[&ttl=SECONDS][&hot=1]` (body = the value): stores it on the key's owner;
//! - `POST /remove?key=K`: removes it from every node, answers which peers failed (JSON);
//! - `POST /flush`: bumps the group's generation in etcd (needs `--etcd`): every node drops
//!   the group's entries;
//! - `GET /stats`: the group's counters, its generation and the peers in the ring, as JSON.
//!
//! Start the `origin` example first, or point `--origin` at any HTTP server: the key `/a/b`
//! is fetched from `<origin>/a/b`.

mod common;

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use clap::Parser;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Deserialize;
use svckit::balancer::{HttpClient, Limits};
use svckit::cache::{getter_fn, BoxError, Cache, Error as CacheError, Group};
use svckit::registry::{
    DiscoveryState, EtcdRegistry, Keyspace, Lifecycle, MemoryRegistry, Registry, RouteLayer,
};
use svckit::status::StatusPage;

/// The group's byte budget (main and hot cache together).
const BUDGET: usize = 64 << 20;
/// One origin fetch: headers and body within 10 s, at most 32 MiB. A stalled or endless
/// origin must not hold the key's load (and every caller waiting on it) forever.
const ORIGIN_LIMITS: Limits = Limits::new(Duration::from_secs(10), 32 << 20);

/// The largest value `POST /set` takes (the body); larger bodies get 413.
const MAX_SET_BYTES: usize = 8 << 20;
/// The largest file the `--dir` getter reads.
const MAX_FILE_BYTES: u64 = 32 << 20;

/// Flags of the cache node.
#[derive(Debug, Parser)]
#[command(about = "A groupcache-compatible cache node")]
struct Args {
    /// Address to listen on (peer protocol, /get and /stats).
    #[arg(long)]
    listen: SocketAddr,
    /// The group name (Go peers must use the same).
    #[arg(long, default_value = "demo")]
    group: String,
    /// Base URL of the origin the getter fetches keys from.
    #[arg(long, required_unless_present = "dir", conflicts_with = "dir")]
    origin: Option<String>,
    /// A directory the getter reads keys from as relative paths (instead of --origin).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Static peer base URLs, comma-separated, normally including this node's own.
    #[arg(long, value_delimiter = ',', conflicts_with = "etcd")]
    peers: Vec<String>,
    /// etcd endpoints, comma-separated: register as --service and take the peers from it.
    #[arg(long)]
    etcd: Option<String>,
    /// The service name cache nodes register under in etcd.
    #[arg(long, default_value = "groupcache")]
    service: String,
    /// This node's own base URL as its peers list it. Default: `http://<listen>`.
    #[arg(long = "self")]
    self_url: Option<String>,
    /// After SIGTERM, how long (ms) the node keeps serving once deregistered: the peers that
    /// take over its keys ask it for them meanwhile (the handoff) instead of the origin.
    #[arg(long, default_value_t = 2000)]
    linger_ms: u64,
    /// For how long (ms) after the ring changed a key's new owner first asks the key's
    /// previous owner on a miss; 0 turns the handoff off (and the hand-over of this node's
    /// keys when it stops).
    #[arg(long, default_value_t = 30_000)]
    handoff_ms: u64,
    /// A secret every peer request must carry (all nodes the same; golang/groupcache nodes
    /// cannot send it). Default: the SVCKIT_CACHE_SECRET environment variable, else none.
    #[arg(long, env = "SVCKIT_CACHE_SECRET", hide_env_values = true)]
    shared_secret: Option<String>,
    /// The largest PUT body a peer may send, in bytes.
    #[arg(long, default_value_t = svckit::cache::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
}

/// What a key must escape to be a URL path: the WHATWG path percent-encode set (controls,
/// space, `"`, `#`, `<`, `>`, `?`, `` ` ``, `{`, `}`) plus `\`, `^` and `|`, which `http::Uri`
/// refuses. `/` stays, so the key `/a/b` is the origin's path `/a/b`.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// The origin URL of `key`: the origin followed by the key as a path, without a doubled `/`.
fn origin_url(origin: &str, key: &str) -> String {
    let slash = if key.starts_with('/') { "" } else { "/" };
    let path = utf8_percent_encode(key, PATH);
    format!("{}{slash}{path}", origin.trim_end_matches('/'))
}

/// A getter that fetches `origin_url(origin, key)`; a non-2xx answer is an error.
fn origin_getter(origin: String) -> impl svckit::cache::Getter {
    let client = HttpClient::new();
    getter_fn(move |key: String| {
        let (client, url) = (client.clone(), origin_url(&origin, &key));
        async move {
            let resp = client
                .get(&url, ORIGIN_LIMITS)
                .await
                .map_err(|e| format!("origin {url}: {}", common::with_sources(&e)))?;
            if !resp.status().is_success() {
                return Err::<_, BoxError>(
                    format!("origin answered {} for {url}", resp.status()).into(),
                );
            }
            Ok(resp.into_body())
        }
    })
}

/// Why a key names no file inside the directory.
#[derive(Debug, thiserror::Error)]
enum FileKeyError {
    #[error(
        "key {0:?} is not a relative path inside the directory (no `..`, no leading `/`, no NUL)"
    )]
    Outside(String),
    #[error("key {0:?} leads out of the directory through a symlink")]
    SymlinkOut(String),
    #[error("no file for key {0:?}")]
    Missing(String),
    #[error("key {0:?} is not a regular file")]
    NotAFile(String),
    #[error("key {key:?}: {source}")]
    Io { key: String, source: std::io::Error },
}

/// Where `key` is inside `root` (canonical), checked before anything is opened: only
/// normal segments (no `..`, no root, no NUL), and the resolved path (symlinks followed)
/// still inside `root`.
fn file_of(root: &Path, key: &str) -> Result<PathBuf, FileKeyError> {
    let outside = || FileKeyError::Outside(key.to_owned());
    if key.is_empty() || key.contains('\0') {
        return Err(outside());
    }
    let relative = Path::new(key);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(outside());
    }
    let resolved = root
        .join(relative)
        .canonicalize()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FileKeyError::Missing(key.to_owned()),
            _ => FileKeyError::Io {
                key: key.to_owned(),
                source: e,
            },
        })?;
    if !resolved.starts_with(root) {
        return Err(FileKeyError::SymlinkOut(key.to_owned()));
    }
    Ok(resolved)
}

/// A getter that reads `file_of(root, key)`, at most [`MAX_FILE_BYTES`].
fn dir_getter(root: PathBuf) -> impl svckit::cache::Getter {
    getter_fn(move |key: String| {
        let root = root.clone();
        async move {
            let path = file_of(&root, &key)?;
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|source| FileKeyError::Io {
                    key: key.clone(),
                    source,
                })?;
            let meta = file.metadata().await.map_err(|source| FileKeyError::Io {
                key: key.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err::<_, BoxError>(FileKeyError::NotAFile(key).into());
            }
            if meta.len() > MAX_FILE_BYTES {
                return Err(format!("file for key {key:?} is over {MAX_FILE_BYTES} bytes").into());
            }
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            use tokio::io::AsyncReadExt;
            file.take(MAX_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|source| FileKeyError::Io { key, source })?;
            Ok(Bytes::from(bytes))
        }
    })
}

/// What the routes share.
#[derive(Clone)]
struct Node {
    cache: Cache,
    group: Group,
    /// The canonical `--dir`, when values come from files.
    dir: Option<PathBuf>,
    /// etcd's keys, for `/flush`.
    keyspace: Option<Keyspace>,
}

#[derive(Debug, Deserialize)]
struct GetParams {
    key: Option<String>,
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

async fn get_value(State(node): State<Node>, Query(params): Query<GetParams>) -> Response {
    let Some(key) = params.key else {
        return bad_request("missing ?key=");
    };
    // With --dir, a key that leaves the directory is refused here, before any load (and so
    // before any peer's getter runs). A key with no file may still have been set.
    if let Some(root) = &node.dir {
        match file_of(root, &key) {
            Ok(_) | Err(FileKeyError::Missing(_)) => {}
            Err(e) => return bad_request(e),
        }
    }
    match node.group.get(&key).await {
        Ok(value) => ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response(),
        Err(e @ CacheError::KeyTooLong { .. }) => {
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
        // The load failed wherever it ran; a file that is not there is the reason to say.
        Err(_)
            if node.dir.as_deref().is_some_and(|root| {
                matches!(file_of(root, &key), Err(FileKeyError::Missing(_)))
            }) =>
        {
            (StatusCode::NOT_FOUND, format!("no file for key {key:?}\n")).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("{}\n", common::with_sources(&e)),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct SetParams {
    key: Option<String>,
    /// Seconds until the value expires; none: never.
    ttl: Option<u64>,
    /// `1` or `true`: keep a copy in this node's hot cache too.
    hot: Option<String>,
}

async fn set_value(
    State(node): State<Node>,
    Query(params): Query<SetParams>,
    body: Bytes,
) -> Response {
    let Some(key) = params.key else {
        return bad_request("missing ?key=");
    };
    let hot = matches!(params.hot.as_deref(), Some("1" | "true"));
    let expire = match params.ttl {
        None => None,
        Some(secs) => match SystemTime::now().checked_add(Duration::from_secs(secs)) {
            Some(at) => Some(at),
            None => return bad_request(format!("ttl {secs} is out of range")),
        },
    };
    match node.group.set(&key, body, expire, hot).await {
        Ok(()) => (StatusCode::NO_CONTENT, "").into_response(),
        Err(e @ CacheError::KeyTooLong { .. }) => bad_request(e),
        Err(e @ CacheError::ValueTooLarge { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("{}\n", common::with_sources(&e)),
        )
            .into_response(),
    }
}

async fn remove_value(State(node): State<Node>, Query(params): Query<GetParams>) -> Response {
    let Some(key) = params.key else {
        return bad_request("missing ?key=");
    };
    match node.group.remove(&key).await {
        Ok(removed) => {
            let failed: Vec<String> = removed
                .failed()
                .iter()
                .map(|e| common::with_sources(e))
                .collect();
            let status = if failed.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            };
            (
                status,
                Json(serde_json::json!({ "key": key, "failed": failed })),
            )
                .into_response()
        }
        Err(e @ CacheError::KeyTooLong { .. }) => bad_request(e),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("{}\n", common::with_sources(&e)),
        )
            .into_response(),
    }
}

async fn flush(State(node): State<Node>) -> Response {
    let Some(keyspace) = &node.keyspace else {
        return (
            StatusCode::CONFLICT,
            "flush needs etcd: start the node with --etcd\n",
        )
            .into_response();
    };
    match node.group.flush(keyspace).await {
        Ok(generation) => {
            Json(serde_json::json!({ "group": node.group.name(), "generation": generation }))
                .into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("{}\n", common::with_sources(&e)),
        )
            .into_response(),
    }
}

async fn stats(State(node): State<Node>) -> Json<serde_json::Value> {
    let group = &node.group;
    let s = group.stats();
    let tier = |c: svckit::cache::CacheStats| serde_json::json!({ "bytes": c.bytes, "items": c.items, "hits": c.hits, "evictions": c.evictions });
    Json(serde_json::json!({
        "group": group.name(),
        "peers": node.cache.peers(),
        "generation": group.generation(),
        "gets": s.gets,
        "cache_hits": s.cache_hits,
        "peer_loads": s.peer_loads,
        "peer_errors": s.peer_errors,
        "loads": s.loads,
        "loads_deduped": s.loads_deduped,
        "local_loads": s.local_loads,
        "local_load_errors": s.local_load_errors,
        "handoff_loads": s.handoff_loads,
        "server_requests": s.server_requests,
        "main_cache": tier(s.main_cache),
        "hot_cache": tier(s.hot_cache),
    }))
}

/// The node's routes: the peer protocol, `/get`, `/set`, `/remove`, `/flush` and `/stats`.
fn app(cache: &Cache, node: Node) -> Router {
    Router::new()
        .route("/get", get(get_value))
        .route(
            "/set",
            post(set_value).layer(DefaultBodyLimit::max(MAX_SET_BYTES)),
        )
        .route("/remove", post(remove_value))
        .route("/flush", post(flush))
        .route("/stats", get(stats))
        .with_state(node)
        .merge(cache.router())
}

/// Waits (at most 10 s) until discovery has listed `service` and the cache's ring holds
/// every instance it lists.
async fn ring_holds_the_others(cache: &Cache, registry: &EtcdRegistry, service: &str) {
    let discovery = registry.discovery();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let listed = discovery.state() == DiscoveryState::Live;
        if listed && cache.peers().len() == discovery.instances(service).len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!("joining before the ring holds the other nodes: no handoff to this node");
}

/// Waits (at most 5 s) until the cache's ring holds this node.
async fn in_own_ring(cache: &Cache, self_url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cache.peers().iter().any(|p| p == self_url) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("serving before the ring holds this node");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_telemetry("cache_node");
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let self_url = match &args.self_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{bound}"),
    };

    // One group; a miss is loaded by the key's owner among the peers, from the origin or
    // the directory.
    let mut builder = Cache::builder(&self_url)
        .handoff_window(Duration::from_millis(args.handoff_ms))
        .max_request_bytes(args.max_request_bytes);
    if let Some(secret) = &args.shared_secret {
        builder = builder.shared_secret(secret);
    }
    let cache = builder.build()?;
    let dir = match &args.dir {
        Some(dir) => Some(
            dir.canonicalize()
                .with_context(|| format!("--dir {}", dir.display()))?,
        ),
        None => None,
    };
    let group = match (&dir, &args.origin) {
        (Some(dir), _) => cache.new_group(&args.group, BUDGET, dir_getter(dir.clone())),
        (None, Some(origin)) => cache.new_group(&args.group, BUDGET, origin_getter(origin.clone())),
        (None, None) => bail!("give --origin URL or --dir DIR"),
    }
    .build()?;

    // Peers and registration. With etcd the node registers as --service and its ring follows
    // the instances; with a static list an in-process registry only gives the same ordered
    // shutdown (SIGINT/SIGTERM: deregister, stop accepting, drain).
    let mut lifecycle = Lifecycle::builder(args.service.as_str())
        .grace(Duration::from_secs(10))
        .linger(Duration::from_millis(args.linger_ms));
    // Register the host peers reach us at: the one in --self when given.
    let self_uri = args
        .self_url
        .as_deref()
        .and_then(|u| u.parse::<http::Uri>().ok());
    if let Some(host) = self_uri.as_ref().and_then(http::Uri::host) {
        lifecycle = lifecycle.advertise_host(host);
    }
    let mut keyspace = None;
    let (lifecycle, status, _follower, _flushes) = match &args.etcd {
        Some(endpoints) => {
            // The ring holds the *registered* address, http://<host>:<bound port>: a --self
            // with another port or a path would leave this node out of its own ring.
            let same_port = self_uri.as_ref().map(http::Uri::port_u16);
            let path = self_uri.as_ref().map(http::Uri::path);
            if args.self_url.is_some()
                && (same_port != Some(Some(bound.port())) || !matches!(path, Some("" | "/")))
            {
                bail!("--self {self_url} must be http://<host>:{} (the listen port, no path) when peers come from etcd", bound.port());
            }
            let registry = EtcdRegistry::connect(common::etcd_options(endpoints)?)
                .await
                .with_context(|| format!("cannot connect to etcd at {endpoints}"))?;
            let follower = cache.follow(&registry.discovery(), &args.service)?;
            // Join the ring only once it holds the others: the change that adds this node
            // is what tells it which peer held its keys meanwhile (the handoff).
            ring_holds_the_others(&cache, &registry, &args.service).await;
            // A flush anywhere (POST /flush on any node) drops this node's entries too.
            let flushes = cache.follow_flushes(&registry.keyspace())?;
            keyspace = Some(registry.keyspace());
            (
                lifecycle.register(&registry, bound).await?,
                StatusPage::new(&registry),
                Some(follower),
                Some(flushes),
            )
        }
        None => {
            let peers = if args.peers.is_empty() {
                vec![self_url.clone()]
            } else {
                args.peers.clone()
            };
            cache.set_peers(&peers)?;
            let registry = MemoryRegistry::new();
            (
                lifecycle.register(&registry, bound).await?,
                StatusPage::new(&registry),
                None,
                None,
            )
        }
    };
    tracing::info!(listen = %bound, self_url = %self_url, group = %args.group, peers = ?cache.peers(), "cache node serving");

    if args.etcd.is_some() {
        // Peers send this node its keys as soon as they see it registered; it must know it
        // owns them (its ring holds itself, its previous owners remembered) before it
        // answers, or it would load them afresh. Their requests wait in the listen backlog.
        in_own_ring(&cache, &self_url).await;
    }
    let node = Node {
        cache: cache.clone(),
        group,
        dir,
        keyspace,
    };
    let lifecycle = std::sync::Arc::new(lifecycle);
    // On SIGTERM, once deregistered and out of its own ring, the node hands its keys to
    // their new owners during its linger (whatever the load, none is lost to the origin).
    let _hand_over = (args.etcd.is_some() && args.handoff_ms > 0).then(|| {
        let (lifecycle, cache) = (lifecycle.clone(), cache.clone());
        tokio::spawn(async move {
            while !lifecycle.is_shutting_down() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while cache.peers().contains(&self_url) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cache.hand_over().await
        })
    });
    // GET /_svckit/status and /metrics beside the cache's routes; RouteLayer labels the
    // request metrics by route template.
    let status = status.registration(lifecycle.instance()).cache(&cache);
    let app = app(&cache, node)
        .merge(status.router())
        .merge(common::metrics_route())
        .layer(RouteLayer);
    lifecycle.serve(listener, app).await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[test]
    fn origin_urls() {
        assert_eq!(origin_url("http://o:1", "/a/b"), "http://o:1/a/b");
        assert_eq!(origin_url("http://o:1/", "/a/b"), "http://o:1/a/b");
        assert_eq!(
            origin_url("http://o:1", "a b?c#d"),
            "http://o:1/a%20b%3Fc%23d"
        );
        assert_eq!(origin_url("http://o:1/img", "é"), "http://o:1/img/%C3%A9");
    }

    async fn call(app: Router, uri: &str) -> (StatusCode, Bytes) {
        let resp = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    #[tokio::test]
    async fn get_and_stats_routes() {
        // An origin that knows /hello and nothing else.
        let origin = Router::new().route("/hello", get(|| async { "world" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, origin).await });

        let cache = Cache::builder("http://127.0.0.1:1").build().unwrap();
        let group = cache
            .new_group("demo", 1 << 20, origin_getter(origin_url))
            .build()
            .unwrap();
        let node = Node {
            cache: cache.clone(),
            group,
            dir: None,
            keyspace: None,
        };
        let app = app(&cache, node);
        assert_eq!(
            call(app.clone(), "/get?key=/hello").await,
            (StatusCode::OK, Bytes::from("world"))
        );
        assert_eq!(
            call(app.clone(), "/get?key=hello").await,
            (StatusCode::OK, Bytes::from("world"))
        );
        let (status, body) = call(app.clone(), "/get?key=/missing").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(String::from_utf8_lossy(&body).contains("404"), "{body:?}");
        assert_eq!(call(app.clone(), "/get").await.0, StatusCode::BAD_REQUEST);
        let (status, body) = call(app.clone(), "/stats").await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["group"], "demo");
        assert_eq!(json["local_loads"], 2);
        assert_eq!(json["local_load_errors"], 1);
        // The peer protocol is mounted beside the routes.
        assert_eq!(
            call(app, "/_groupcache/demo/%2Fhello").await.0,
            StatusCode::OK
        );
    }

    async fn send(app: Router, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    /// A node over `dir` (canonicalized as main does), alone in its ring.
    fn dir_node(dir: &Path) -> (Router, Group) {
        let root = dir.canonicalize().unwrap();
        let cache = Cache::builder("http://127.0.0.1:1").build().unwrap();
        let group = cache
            .new_group("files", 1 << 20, dir_getter(root.clone()))
            .build()
            .unwrap();
        let node = Node {
            cache: cache.clone(),
            group: group.clone(),
            dir: Some(root),
            keyspace: None,
        };
        (app(&cache, node), group)
    }

    #[tokio::test]
    async fn dir_keys_that_leave_the_directory_are_refused_before_any_read() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "SECRET").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/b.png"), "PNG").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        let (app, group) = dir_node(dir.path());

        assert_eq!(
            call(app.clone(), "/get?key=a/b.png").await,
            (StatusCode::OK, Bytes::from("PNG"))
        );
        assert_eq!(
            call(app.clone(), "/get?key=a/none.png").await.0,
            StatusCode::NOT_FOUND
        );
        let secret = outside.path().join("secret");
        let absolute = format!("/get?key={}", secret.display());
        for uri in [
            "/get?key=../x",
            "/get?key=..%2Fx",
            "/get?key=/etc/passwd",
            absolute.as_str(),
            "/get?key=a/../../x",
            "/get?key=a/..",
            "/get?key=link",
            "/get?key=out/secret",
            "/get?key=a%00b",
            "/get?key=",
        ] {
            let (status, body) = call(app.clone(), uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body:?}");
            assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{uri}");
        }
        // Nothing was loaded for any of them: one load succeeded (a/b.png), one failed (the
        // missing a/none.png).
        assert_eq!(group.stats().local_loads, 1);
        assert_eq!(group.stats().local_load_errors, 1);

        // The peer path has no front door: the getter itself refuses, as a counted error.
        for key in ["..%2Fx", "link", "out%2Fsecret", "%2Fetc%2Fpasswd"] {
            let (status, body) = call(app.clone(), &format!("/_groupcache/files/{key}")).await;
            assert!(
                status.is_server_error() || status.is_client_error(),
                "{key}: {status}"
            );
            assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{key}");
        }
        assert_eq!(group.stats().local_load_errors, 5);
    }

    #[tokio::test]
    async fn set_get_remove_and_hostile_set_requests() {
        let dir = tempfile::tempdir().unwrap();
        let (app, group) = dir_node(dir.path());
        assert_eq!(
            send(
                app.clone(),
                "POST",
                "/set?key=k1&ttl=60&hot=1",
                b"v1".to_vec()
            )
            .await
            .0,
            StatusCode::NO_CONTENT
        );
        // Served from the cache: no file k1 exists, yet the value is there... through the
        // group directly (the front door's --dir check answers 404 for a key with no file).
        assert_eq!(group.get("k1").await.unwrap(), Bytes::from("v1"));
        assert_eq!(group.stats().local_loads, 0);
        let (status, body) = send(app.clone(), "POST", "/remove?key=k1", Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        assert!(
            group.get("k1").await.is_err(),
            "removed, and no file to load it from"
        );

        // Hostile requests: no key, a ttl that is not a number, an oversized body.
        assert_eq!(
            send(app.clone(), "POST", "/set", b"v".to_vec()).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            send(app.clone(), "POST", "/set?key=k&ttl=soon", b"v".to_vec())
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            send(
                app.clone(),
                "POST",
                "/set?key=k",
                vec![0; MAX_SET_BYTES + 1]
            )
            .await
            .0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        // A value larger than the cache holds per entry (1 MiB here): refused, not dropped.
        let (status, body) = send(app.clone(), "POST", "/set?key=big", vec![7; 2 << 20]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body:?}");
        // Flush needs etcd.
        assert_eq!(
            send(app, "POST", "/flush", Vec::new()).await.0,
            StatusCode::CONFLICT
        );
    }
}
