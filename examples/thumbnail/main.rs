//! The thumbnail service: `GET /v1/image/<w>x<h>/<name>` answers the origin's image `<name>`
//! resized to fit in w×h (aspect ratio kept), in the format its extension names. The resized
//! bytes live in a group cache shared by every running instance: the instances find each other
//! in etcd, each thumbnail is produced once across the cluster, and any instance answers with
//! the same bytes. Originals are bounded in pixels, read from their headers before decoding
//! (`--max-megapixels`), and decodes in flight in memory (`--decode-mib`); an image over
//! either limit is answered 422 with the limit named.
//!
//! Run with: `cargo run --example thumbnail -- --listen 127.0.0.1:8000 --origin http://127.0.0.1:9300`
//! (start the `origin` example first; `--etcd 127.0.0.1:2379` by default).

#[path = "../common/mod.rs"]
mod common;
mod render;

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use render::{etag, DecodeLimits, Spec, ThumbError};
use svckit::balancer::{HttpClient, Limits};
use svckit::cache::{getter_fn, BoxError, Cache, Error as CacheError, Group};
use svckit::registry::{EtcdRegistry, Lifecycle, Registry, RouteLayer};
use svckit::status::StatusPage;

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
    /// Largest original decoded, in megapixels (width × height / 10⁶), read from the image's
    /// header before any pixel is decoded; larger ones are answered 422.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_megapixels: u32,
    /// Memory all decodes in flight may hold together, in MiB, at least 8 (their pixels,
    /// decoder buffers and thumbnails, estimated from the headers). A decode waits for its
    /// share; an image that needs more than all of it is answered 422.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..))]
    decode_mib: u32,
}

/// The cache group thumbnails live in.
const GROUP: &str = "thumbnails";

/// One origin fetch: headers and body within 10 s, at most 32 MiB.
const ORIGIN_LIMITS: Limits = Limits::new(std::time::Duration::from_secs(10), 32 << 20);

/// Fetches `name` from the origin within [`ORIGIN_LIMITS`].
async fn fetch_origin(client: &HttpClient, origin: &str, name: &str) -> Result<Bytes, ThumbError> {
    let url = format!("{}/{name}", origin.trim_end_matches('/'));
    let resp = client
        .get(&url, ORIGIN_LIMITS)
        .await
        .map_err(|e| ThumbError::Origin(format!("{url}: {}", common::with_sources(&e))))?;
    match resp.status() {
        s if s.is_success() => Ok(resp.into_body()),
        StatusCode::NOT_FOUND => Err(ThumbError::NotFound(name.to_owned())),
        s => Err(ThumbError::Origin(format!("{url} answered {s}"))),
    }
}

/// The cache with the thumbnails group; its getter fetches from `origin` and renders within
/// `limits`.
fn thumbnail_cache(
    self_url: &str,
    origin: &str,
    budget: usize,
    limits: DecodeLimits,
) -> Result<(Cache, Group), CacheError> {
    let cache = Cache::builder(self_url).build()?;
    let client = HttpClient::new();
    let origin: Arc<str> = Arc::from(origin);
    let getter = getter_fn(move |key: String| {
        let (client, origin, limits) = (client.clone(), origin.clone(), limits.clone());
        async move {
            let spec = Spec::from_key(&key).map_err(ThumbError::BadKey)?;
            let original = fetch_origin(&client, &origin, &spec.name).await?;
            let bytes = limits.render(original, spec).await?;
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

/// Maps a cache error to an answer: the getter's own error says which.
fn error_response(e: &CacheError) -> Response {
    let (status, text) = match e {
        CacheError::Getter { source, .. } => match source.downcast_ref::<ThumbError>() {
            Some(thumb) => (thumb.status(), thumb.to_string()),
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
async fn main() -> anyhow::Result<()> {
    common::init_telemetry("thumbnail");
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr()?;

    // The thumbnails group: a miss is rendered once across the cluster, by the key's owner.
    let limits = DecodeLimits::new(args.max_megapixels, args.decode_mib);
    let (cache, group) = thumbnail_cache(
        &format!("http://{bound}"),
        &args.origin,
        args.cache_mib << 20,
        limits,
    )?;

    // The instances of this service are the cache's peers: the ring follows discovery.
    let registry = EtcdRegistry::connect(common::etcd_options(&args.etcd)?)
        .await
        .with_context(|| format!("cannot connect to etcd at {}", args.etcd))?;
    let _follower = cache.follow(&registry.discovery(), &args.service)?;
    let lifecycle = Lifecycle::register(&registry, args.service.as_str(), bound).await?;
    tracing::info!(addr = %bound, id = lifecycle.instance().id(), "thumbnail service registered");

    // Thumbnails, the peer protocol, /_svckit/status and /metrics on one port, until
    // SIGINT/SIGTERM; RouteLayer labels the request metrics by route template.
    let status = StatusPage::new(&registry)
        .registration(lifecycle.instance())
        .cache(&cache);
    let app = app(&cache, group)
        .merge(status.router())
        .merge(common::metrics_route())
        .layer(RouteLayer);
    lifecycle.serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use http_body_util::BodyExt;
    use image::ImageFormat;

    use super::render::*;
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

    fn png(img: impl Into<image::DynamicImage>) -> Bytes {
        let mut png = Cursor::new(Vec::new());
        img.into().write_to(&mut png, ImageFormat::Png).unwrap();
        Bytes::from(png.into_inner())
    }

    /// A counting origin on loopback serving two generated PNGs: `wide.png`, 400x200, and
    /// `bomb.png`, 2000x2000 pixels of one grey in a few KB.
    async fn origin() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let wide = png(image::RgbImage::from_pixel(
            400,
            200,
            image::Rgb([10, 200, 30]),
        ));
        let bomb = png(image::GrayImage::new(2000, 2000));
        let counter = hits.clone();
        let origin = Router::new().route(
            "/{name}",
            get(move |Path(name): Path<String>| {
                let (wide, bomb, counter) = (wide.clone(), bomb.clone(), counter.clone());
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    match name.as_str() {
                        "wide.png" => wide.into_response(),
                        "bomb.png" => bomb.into_response(),
                        _ => StatusCode::NOT_FOUND.into_response(),
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
        test_app_with(origin, DecodeLimits::new(16, 64))
    }

    fn test_app_with(origin: &str, limits: DecodeLimits) -> Router {
        let (cache, group) =
            thumbnail_cache("http://127.0.0.1:1", origin, 8 << 20, limits).unwrap();
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

    #[tokio::test]
    async fn too_many_pixels_is_422_naming_the_size_and_the_limit() {
        let (origin, _) = origin().await;
        let app = test_app_with(&origin, DecodeLimits::new(1, 64));
        let (status, _, body) = call(&app, "/v1/image/100x100/bomb.png", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            String::from_utf8_lossy(&body),
            "image is 2000x2000 = 4.0 megapixels, over the limit of 1 megapixels\n"
        );
        // Under the limit, the same image is served.
        let app = test_app_with(&origin, DecodeLimits::new(4, 64));
        let (status, _, _) = call(&app, "/v1/image/100x100/bomb.png", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_decode_needing_more_than_the_budget_is_422_naming_it() {
        let (origin, _) = origin().await;
        let app = test_app_with(&origin, DecodeLimits::new(16, 8));
        // 400x200 fitted in 4096x4096 is 4096x2048: 32 MiB of RGBA thumbnail, counted twice.
        let (status, _, body) = call(&app, "/v1/image/4096x4096/wide.png", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            String::from_utf8_lossy(&body),
            "image is 400x200: decoding it for a 4096x2048 thumbnail needs 69 MiB, \
             over the limit of 8 MiB\n"
        );
        let (status, _, _) = call(&app, "/v1/image/100x100/wide.png", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_peer_asking_for_a_bad_key_is_told_why() {
        let (origin, hits) = origin().await;
        let app = test_app(&origin);
        let (status, _, body) = call(&app, "/_groupcache/thumbnails/10x10%2F..png", None).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(
            body.contains("key refused: bad image name: it must not contain"),
            "{body}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn fit_is_the_size_thumbnail_makes() {
        for (w, h, bw, bh) in [
            (400, 200, 100, 100),
            (400, 200, 40, 40),
            (3, 1000, 64, 64),
            (10, 7, 4096, 4096),
            (333, 777, 120, 90),
        ] {
            let made = image::DynamicImage::new_rgb8(w, h).thumbnail(bw, bh);
            assert_eq!(fit(w, h, bw, bh), (made.width(), made.height()), "{w}x{h}");
        }
    }

    #[test]
    fn sequential_jpeg_tells_a_progressive_frame() {
        let mut jpeg = Cursor::new(Vec::new());
        image::RgbImage::new(16, 16)
            .write_to(&mut jpeg, ImageFormat::Jpeg)
            .unwrap();
        let mut jpeg = jpeg.into_inner();
        assert!(sequential_jpeg(&jpeg));
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 1] = 0xC2;
        assert!(!sequential_jpeg(&jpeg));
        assert!(!sequential_jpeg(b"not a jpeg"));
    }
}
