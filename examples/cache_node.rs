//! A groupcache node: one group whose misses are fetched from an origin over HTTP, sharing
//! its keys with its peers over golang/groupcache's protocol (Go nodes can join).
//!
//! Run with: `cargo run --example cache_node -- --listen 127.0.0.1:9103 --group demo --origin http://127.0.0.1:9300 --peers http://127.0.0.1:9101,http://127.0.0.1:9103`
//! or, with peers from etcd: `cargo run --example cache_node -- --listen 127.0.0.1:9103 --group demo --origin http://127.0.0.1:9300 --etcd 127.0.0.1:2379 --service groupcache`
//!
//! On the one listen address it serves the peer protocol (`/_groupcache/<group>/<key>`),
//! `GET /get?key=<key>` (the value; 502 with the reason when the origin fails) and
//! `GET /stats` (the group's counters as JSON). Start the `origin` example first, or point
//! `--origin` at any HTTP server: the key `/a/b` is fetched from `<origin>/a/b`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Deserialize;
use svckit::balancer::{HttpClient, Limits};
use svckit::cache::{getter_fn, BoxError, Cache, Error as CacheError, Group};
use svckit::registry::{EtcdRegistry, Lifecycle, MemoryRegistry, Registry};

/// The group's byte budget (main and hot cache together).
const BUDGET: usize = 64 << 20;
/// One origin fetch: headers and body within 10 s, at most 32 MiB. A stalled or endless
/// origin must not hold the key's load (and every caller waiting on it) forever.
const ORIGIN_LIMITS: Limits = Limits::new(Duration::from_secs(10), 32 << 20);

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
    #[arg(long)]
    origin: String,
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

#[derive(Debug, Deserialize)]
struct GetParams {
    key: Option<String>,
}

async fn get_value(State(group): State<Group>, Query(params): Query<GetParams>) -> Response {
    let Some(key) = params.key else {
        return (StatusCode::BAD_REQUEST, "missing ?key=\n").into_response();
    };
    match group.get(&key).await {
        Ok(value) => ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response(),
        Err(e @ CacheError::KeyTooLong { .. }) => {
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("{}\n", common::with_sources(&e)),
        )
            .into_response(),
    }
}

async fn stats(State(group): State<Group>) -> Json<serde_json::Value> {
    let s = group.stats();
    let tier = |c: svckit::cache::CacheStats| serde_json::json!({ "bytes": c.bytes, "items": c.items, "hits": c.hits, "evictions": c.evictions });
    Json(serde_json::json!({
        "group": group.name(),
        "gets": s.gets,
        "cache_hits": s.cache_hits,
        "peer_loads": s.peer_loads,
        "peer_errors": s.peer_errors,
        "loads": s.loads,
        "loads_deduped": s.loads_deduped,
        "local_loads": s.local_loads,
        "local_load_errors": s.local_load_errors,
        "server_requests": s.server_requests,
        "main_cache": tier(s.main_cache),
        "hot_cache": tier(s.hot_cache),
    }))
}

/// The node's routes: the peer protocol, `/get` and `/stats`.
fn app(cache: &Cache, group: Group) -> Router {
    Router::new()
        .route("/get", get(get_value))
        .route("/stats", get(stats))
        .with_state(group)
        .merge(cache.router())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_tracing();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let self_url = match &args.self_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{bound}"),
    };

    // One group; a miss is loaded by the key's owner among the peers, from the origin.
    let cache = Cache::builder(&self_url).build()?;
    let group = cache
        .new_group(&args.group, BUDGET, origin_getter(args.origin.clone()))
        .build()?;

    // Peers and registration. With etcd the node registers as --service and its ring follows
    // the instances; with a static list an in-process registry only gives the same ordered
    // shutdown (SIGINT/SIGTERM: deregister, stop accepting, drain).
    let mut lifecycle = Lifecycle::builder(args.service.as_str()).grace(Duration::from_secs(10));
    // Register the host peers reach us at: the one in --self when given.
    let self_uri = args
        .self_url
        .as_deref()
        .and_then(|u| u.parse::<http::Uri>().ok());
    if let Some(host) = self_uri.as_ref().and_then(http::Uri::host) {
        lifecycle = lifecycle.advertise_host(host);
    }
    let (lifecycle, _follower) = match &args.etcd {
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
            (lifecycle.register(&registry, bound).await?, Some(follower))
        }
        None => {
            let peers = if args.peers.is_empty() {
                vec![self_url.clone()]
            } else {
                args.peers.clone()
            };
            cache.set_peers(&peers)?;
            (
                lifecycle.register(&MemoryRegistry::new(), bound).await?,
                None,
            )
        }
    };
    tracing::info!(listen = %bound, self_url = %self_url, group = %args.group, peers = ?cache.peers(), "cache node serving");

    lifecycle.serve(listener, app(&cache, group)).await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use bytes::Bytes;
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
        let app = app(&cache, group);
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
}
