//! The thumbnail service: `GET /v1/image/<w>x<h>/<name>` answers the origin's image `<name>`
//! resized to fit in w×h (aspect ratio kept), in the format its extension names. The resized
//! bytes live in a group cache shared by every running instance: the instances find each other
//! in etcd, each thumbnail is produced once across the cluster, and any instance answers with
//! the same bytes.
//!
//! Run with: `cargo run --example thumbnail -- --listen 127.0.0.1:8000 --origin http://127.0.0.1:9300`
//! (start the `origin` example first; `--etcd 127.0.0.1:2379` by default).

mod common;

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use image::ImageFormat;
use svckit::cache::{getter_fn, BoxError, Cache, Error as CacheError, Group};
use svckit::registry::{Lifecycle, Registry};

/// Flags of the thumbnail service.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (serves the thumbnails and the cache's peer protocol).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
    /// Base URL of the image origin.
    #[arg(long, default_value = "http://127.0.0.1:9300")]
    origin: String,
    /// etcd endpoints, comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    etcd: String,
    /// The service name the instances register (and find their cache peers) under.
    #[arg(long, default_value = "thumbnail")]
    service: String,
    /// Cache budget in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mib: usize,
}

/// Largest width or height a thumbnail may have.
const MAX_SIDE: u32 = 4096;

/// What a thumbnail request asks for, checked before anything is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    width: u32,
    height: u32,
    name: String,
    format: ImageFormat,
}

impl Spec {
    /// Parses the `<w>x<h>` and `<name>` path segments.
    fn parse(size: &str, name: &str) -> Result<Self, &'static str> {
        let (w, h) = size
            .split_once('x')
            .ok_or("malformed size: expected <width>x<height>")?;
        let parse_side = |s: &str| -> Result<u32, &'static str> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 5 {
                return Err("malformed size: width and height must be decimal numbers");
            }
            let n: u32 = s.parse().map_err(|_| "malformed size")?;
            if n == 0 || n > MAX_SIDE {
                return Err("size out of range: width and height must be 1..=4096");
            }
            Ok(n)
        };
        let (width, height) = (parse_side(w)?, parse_side(h)?);
        if name.is_empty() || name.contains(['/', '\\']) || name.contains("..") {
            return Err("bad image name: it must not contain `/`, `\\` or `..`");
        }
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .ok_or("unknown extension: use .png, .jpg, .jpeg or .gif")?;
        let format = match ext.as_str() {
            "png" => ImageFormat::Png,
            "jpg" | "jpeg" => ImageFormat::Jpeg,
            "gif" => ImageFormat::Gif,
            _ => return Err("unknown extension: use .png, .jpg, .jpeg or .gif"),
        };
        Ok(Self {
            width,
            height,
            name: name.to_owned(),
            format,
        })
    }

    /// The cache key: `<w>x<h>/<name>`.
    fn key(&self) -> String {
        format!("{}x{}/{}", self.width, self.height, self.name)
    }

    /// Parses a cache key back (the getter runs on whichever node owns the key).
    fn from_key(key: &str) -> Result<Self, &'static str> {
        let (size, name) = key.split_once('/').ok_or("malformed cache key")?;
        Self::parse(size, name)
    }

    fn content_type(&self) -> &'static str {
        match self.format {
            ImageFormat::Png => "image/png",
            ImageFormat::Gif => "image/gif",
            _ => "image/jpeg",
        }
    }
}

/// Why a thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
enum ThumbError {
    #[error("the origin has no image {0:?}")]
    NotFound(String),
    #[error("the origin is unreachable or failed: {0}")]
    Origin(String),
    #[error("the origin's image could not be decoded or encoded: {0}")]
    Image(String),
}

/// Resizes `original` to fit in the spec's box, keeping the aspect ratio, and encodes it.
fn render(original: &[u8], spec: &Spec) -> Result<Vec<u8>, ThumbError> {
    let img = image::load_from_memory(original).map_err(|e| ThumbError::Image(e.to_string()))?;
    let thumb = img.thumbnail(spec.width, spec.height);
    let thumb = match spec.format {
        // JPEG has no alpha channel.
        ImageFormat::Jpeg => image::DynamicImage::ImageRgb8(thumb.to_rgb8()),
        _ => thumb,
    };
    let mut out = Cursor::new(Vec::new());
    thumb
        .write_to(&mut out, spec.format)
        .map_err(|e| ThumbError::Image(e.to_string()))?;
    Ok(out.into_inner())
}

/// A strong ETag for the bytes: their CRC-32 (IEEE) and length.
fn etag(bytes: &[u8]) -> String {
    format!("\"{:08x}-{:x}\"", crc32fast::hash(bytes), bytes.len())
}

/// The cache group thumbnails live in.
const GROUP: &str = "thumbnails";

type HttpClient =
    Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::Empty<Bytes>>;

/// How long one origin fetch may take, body included.
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches `name` from the origin, headers and body within [`ORIGIN_TIMEOUT`].
async fn fetch_origin(client: &HttpClient, origin: &str, name: &str) -> Result<Bytes, ThumbError> {
    let url = format!("{}/{name}", origin.trim_end_matches('/'));
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ThumbError::Origin(format!("bad origin URL {url}: {e}")))?;
    let fetch = async {
        let resp = client
            .get(uri)
            .await
            .map_err(|e| ThumbError::Origin(format!("{url}: {e}")))?;
        match resp.status() {
            s if s.is_success() => {}
            http::StatusCode::NOT_FOUND => return Err(ThumbError::NotFound(name.to_owned())),
            s => return Err(ThumbError::Origin(format!("{url} answered {s}"))),
        }
        let body = http_body_util::Limited::new(resp.into_body(), 32 << 20)
            .collect()
            .await
            .map_err(|e| ThumbError::Origin(format!("{url}: {e}")))?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(ORIGIN_TIMEOUT, fetch)
        .await
        .map_err(|_| ThumbError::Origin(format!("{url} timed out")))?
}

/// The cache with the thumbnails group; its getter fetches from `origin` and renders.
fn thumbnail_cache(
    self_url: &str,
    origin: &str,
    budget: usize,
) -> Result<(Cache, Group), CacheError> {
    let cache = Cache::builder(self_url).build()?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let origin: Arc<str> = Arc::from(origin);
    let getter = getter_fn(move |key: String| {
        let (client, origin) = (client.clone(), origin.clone());
        async move {
            let spec = Spec::from_key(&key).map_err(|e| ThumbError::Image(e.to_owned()))?;
            let original = fetch_origin(&client, &origin, &spec.name).await?;
            let bytes = tokio::task::spawn_blocking(move || render(&original, &spec))
                .await
                .map_err(|e| ThumbError::Image(e.to_string()))??;
            Ok::<_, BoxError>(Bytes::from(bytes))
        }
    });
    let group = cache.new_group(GROUP, budget, getter).build()?;
    Ok((cache, group))
}

/// What the handlers share: the node's cache (for its peers) and the thumbnails group.
#[derive(Debug, Clone)]
struct Node {
    cache: Cache,
    group: Group,
}

/// The thumbnail routes plus the cache's peer protocol, testable without a socket.
fn app(cache: &Cache, group: Group) -> Router {
    Router::new()
        .route("/v1/image/{size}/{name}", get(thumbnail))
        .route("/health", get(|| async { "ok\n" }))
        .route("/stats", get(stats))
        .with_state(Node {
            cache: cache.clone(),
            group,
        })
        .merge(cache.router())
}

async fn thumbnail(
    State(Node { group, .. }): State<Node>,
    Path((size, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let spec = match Spec::parse(&size, &name) {
        Ok(spec) => spec,
        Err(reason) => return (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response(),
    };
    let bytes = match group.get(&spec.key()).await {
        Ok(bytes) => bytes,
        Err(e) => return error_response(&e),
    };
    let tag = etag(&bytes);
    let cache_control = (header::CACHE_CONTROL, "public, max-age=86400, immutable");
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if not_modified {
        return (
            StatusCode::NOT_MODIFIED,
            [cache_control, (header::ETAG, tag.as_str())],
        )
            .into_response();
    }
    let mut resp = (
        [cache_control, (header::CONTENT_TYPE, spec.content_type())],
        bytes,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Maps a cache error to an answer: the getter's own error says 404 or 502.
fn error_response(e: &CacheError) -> Response {
    let (status, text) = match e {
        CacheError::Getter { source, .. } => match source.downcast_ref::<ThumbError>() {
            Some(ThumbError::NotFound(_)) => (StatusCode::NOT_FOUND, source.to_string()),
            Some(other) => (StatusCode::BAD_GATEWAY, other.to_string()),
            None => (StatusCode::BAD_GATEWAY, source.to_string()),
        },
        CacheError::KeyTooLong { .. } => (StatusCode::BAD_REQUEST, e.to_string()),
        other => (StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    };
    (status, format!("{text}\n")).into_response()
}

async fn stats(State(node): State<Node>) -> axum::Json<serde_json::Value> {
    let s = node.group.stats();
    axum::Json(serde_json::json!({
        "gets": s.gets,
        "cache_hits": s.cache_hits,
        "peer_loads": s.peer_loads,
        "peer_errors": s.peer_errors,
        "loads": s.loads,
        "local_loads": s.local_loads,
        "local_load_errors": s.local_load_errors,
        "server_requests": s.server_requests,
        "main_items": s.main_cache.items,
        "hot_items": s.hot_cache.items,
        "peers": node.cache.peers(),
    }))
}

#[tokio::main]
async fn main() {
    common::init_tracing();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .unwrap_or_else(|e| common::fail(format_args!("cannot listen on {}: {e}", args.listen)));
    let bound = listener
        .local_addr()
        .unwrap_or_else(|e| common::fail(format_args!("cannot read the bound address: {e}")));
    let (cache, group) = thumbnail_cache(
        &format!("http://{bound}"),
        &args.origin,
        args.cache_mib << 20,
    )
    .unwrap_or_else(|e| common::fail(e));
    let options = common::etcd_options(&args.etcd);
    let registry = common::connect_etcd(options, &args.etcd).await;
    // The instances of this service are the cache's peers: the ring follows discovery.
    let _follower = cache
        .follow(&registry.discovery(), &args.service)
        .unwrap_or_else(|e| common::fail(e));
    let builder = Lifecycle::builder(args.service.as_str());
    let lifecycle = common::register(builder, &registry, bound, &args.etcd).await;
    tracing::info!(addr = %bound, id = lifecycle.instance().id(), "thumbnail service registered");
    let app = app(&cache, group);
    common::serve(listener, app, &lifecycle).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    async fn call(app: &Router, path: &str, inm: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = axum::http::Request::get(path);
        if let Some(tag) = inm {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body.to_vec())
    }

    /// A counting origin on loopback serving one generated 400x200 PNG as `wide.png`.
    async fn origin() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let mut png = Cursor::new(Vec::new());
        image::RgbImage::from_pixel(400, 200, image::Rgb([10, 200, 30]))
            .write_to(&mut png, ImageFormat::Png)
            .unwrap();
        let png = Bytes::from(png.into_inner());
        let counter = hits.clone();
        let origin = Router::new().route(
            "/{name}",
            get(move |Path(name): Path<String>| {
                let (png, counter) = (png.clone(), counter.clone());
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    if name == "wide.png" {
                        png.into_response()
                    } else {
                        StatusCode::NOT_FOUND.into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, origin).await });
        (format!("http://{addr}"), hits)
    }

    fn test_app(origin: &str) -> Router {
        let (cache, group) = thumbnail_cache("http://127.0.0.1:1", origin, 8 << 20).unwrap();
        app(&cache, group)
    }

    #[test]
    fn spec_parsing() {
        let s = Spec::parse("100x50", "cat.JPG").unwrap();
        assert_eq!((s.width, s.height, s.format), (100, 50, ImageFormat::Jpeg));
        assert_eq!(Spec::from_key(&s.key()).unwrap(), s);
        for (size, name) in [
            ("0x10", "a.png"),
            ("10x0", "a.png"),
            ("4097x10", "a.png"),
            ("10", "a.png"),
            ("x10", "a.png"),
            ("10x10x10", "a.png"),
            ("-1x10", "a.png"),
            ("+1x10", "a.png"),
            ("99999999999x1", "a.png"),
            ("10x10", "..png"),
            ("10x10", "a\\b.png"),
            ("10x10", "a.bmp"),
            ("10x10", "noext"),
        ] {
            assert!(Spec::parse(size, name).is_err(), "{size} {name}");
        }
    }

    #[tokio::test]
    async fn resizes_keeping_aspect_ratio_with_cache_headers_and_304() {
        let (origin, hits) = origin().await;
        let app = test_app(&origin);
        let (status, headers, body) = call(&app, "/v1/image/100x100/wide.png", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "image/png");
        assert!(headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("max-age"));
        let img = image::load_from_memory(&body).unwrap();
        assert_eq!((img.width(), img.height()), (100, 50));
        let tag = headers[header::ETAG].to_str().unwrap().to_owned();
        let (status, _, body) = call(&app, "/v1/image/100x100/wide.png", Some(&tag)).await;
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
        // Same thumbnail again: served from the cache, no second origin fetch.
        let (status, _, _) = call(&app, "/v1/image/100x100/wide.png", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // Another format of the same original.
        let (status, headers, body) = call(&app, "/v1/image/40x40/wide.png", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(image::load_from_memory(&body).unwrap().width(), 40);
        assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    }

    #[tokio::test]
    async fn bad_input_is_400_without_an_origin_fetch() {
        let (origin, hits) = origin().await;
        let app = test_app(&origin);
        for path in [
            "/v1/image/0x10/wide.png",
            "/v1/image/5000x10/wide.png",
            "/v1/image/abc/wide.png",
            "/v1/image/10x10/..%2Fwide.png",
            "/v1/image/10x10/a%5Cb.png",
            "/v1/image/10x10/wide.tiff",
            "/v1/image/10x10/..",
        ] {
            let (status, _, body) = call(&app, path, None).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn origin_404_is_404_and_unreachable_origin_is_502() {
        let (origin, _) = origin().await;
        let (status, _, _) = call(&test_app(&origin), "/v1/image/10x10/missing.png", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let closed = format!("http://127.0.0.1:{}", svckit_testing::free_port());
        let (status, _, _) = call(&test_app(&closed), "/v1/image/10x10/wide.png", None).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
}
