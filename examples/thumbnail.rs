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
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};
use svckit::cache::{getter_fn, BoxError, Cache, Error as CacheError, Group};
use svckit::registry::{Lifecycle, Registry};
use tokio::sync::Semaphore;

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
    /// A cache key that is no thumbnail request (a peer asked for it).
    #[error("key refused: {0}")]
    BadKey(&'static str),
    #[error(
        "image is {width}x{height} = {:.1} megapixels, over the limit of {limit} megapixels",
        f64::from(*width) * f64::from(*height) / 1e6
    )]
    TooManyPixels { width: u32, height: u32, limit: u32 },
    #[error(
        "image is {width}x{height}: decoding it for a {thumb_width}x{thumb_height} thumbnail \
         needs {needed_mib} MiB, over the limit of {limit_mib} MiB"
    )]
    TooMuchMemory {
        width: u32,
        height: u32,
        thumb_width: u32,
        thumb_height: u32,
        needed_mib: u64,
        limit_mib: u64,
    },
    #[error("the image needs more decoder memory than the limit of {limit_mib} MiB: {reason}")]
    DecoderLimit { limit_mib: u64, reason: String },
}

impl ThumbError {
    /// The answer to a request that failed so.
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadKey(_) => StatusCode::BAD_REQUEST,
            // The request is fine and small; what it names is too large to process.
            Self::TooManyPixels { .. } | Self::TooMuchMemory { .. } | Self::DecoderLimit { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Origin(_) | Self::Image(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// An `image` error, with its limit when a decoder hit one.
    fn from_image(e: ImageError, max_alloc: u64) -> Self {
        match e {
            ImageError::Limits(e) => Self::DecoderLimit {
                limit_mib: max_alloc.div_ceil(MIB),
                reason: e.to_string(),
            },
            e => Self::Image(e.to_string()),
        }
    }
}

const MIB: u64 = 1 << 20;

/// What a decoder may allocate beside the pixels while reading a header or an image: PNG text
/// and ICC profiles, the zune-jpeg and GIF decoders' own buffers.
const DECODER_BUFFERS: u64 = 4 * MIB;

/// Bounds on decoding: the pixels of one original, and the memory of all decodes in flight,
/// so that a small file of many pixels (a decompression bomb) costs a header read, not RAM.
#[derive(Debug, Clone)]
struct DecodeLimits {
    max_megapixels: u32,
    /// One permit per MiB that decodes may hold together.
    budget: Arc<Semaphore>,
    budget_mib: u32,
}

impl DecodeLimits {
    fn new(max_megapixels: u32, budget_mib: u32) -> Self {
        Self {
            max_megapixels,
            budget: Arc::new(Semaphore::new(budget_mib as usize)),
            budget_mib,
        }
    }

    /// Renders `spec` from `original` once its header shows it within the limits and the
    /// budget has room for what decoding it takes.
    async fn render(&self, original: Bytes, spec: Spec) -> Result<Vec<u8>, ThumbError> {
        let limits = self.clone();
        let (original, spec, cost_mib) = blocking(move || {
            let cost = limits.cost_mib(&original, &spec)?;
            Ok((original, spec, cost))
        })
        .await?;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(cost_mib)
            .await
            .map_err(|_| ThumbError::Image("the decode budget is closed".to_owned()))?;
        blocking(move || {
            // The permit goes with the decode, not with the caller: when the caller goes away
            // the blocking task still runs to its end, and the budget counts it until then.
            let _permit = permit;
            render(&original, &spec, u64::from(cost_mib) * MIB)
        })
        .await
    }

    /// What decoding `original` for `spec` holds at its peak, in MiB, estimated from its header
    /// alone: the pixels; the thumbnail twice (resized, then converted or encoded); the
    /// decoder's buffers; for a GIF the frame it composes the image from; for a JPEG its copy
    /// of the input and, unless it is sequential, the coefficients zune-jpeg keeps until the
    /// last scan (2 bytes per sample, up to 3 samples per pixel).
    fn cost_mib(&self, original: &[u8], spec: &Spec) -> Result<u32, ThumbError> {
        let reader = reader(original, DECODER_BUFFERS)?;
        let format = reader.format();
        let decoder = reader
            .into_decoder()
            .map_err(|e| ThumbError::from_image(e, DECODER_BUFFERS))?;
        let (width, height) = decoder.dimensions();
        let pixels = u64::from(width) * u64::from(height);
        if pixels > u64::from(self.max_megapixels) * 1_000_000 {
            return Err(ThumbError::TooManyPixels {
                width,
                height,
                limit: self.max_megapixels,
            });
        }
        let decoded = decoder.total_bytes();
        let (thumb_width, thumb_height) = fit(width, height, spec.width, spec.height);
        let thumb_pixel = u64::from(decoder.color_type().bytes_per_pixel()).max(4);
        let thumb = 2 * u64::from(thumb_width) * u64::from(thumb_height) * thumb_pixel;
        let format_extra = match format {
            Some(ImageFormat::Gif) => decoded,
            Some(ImageFormat::Jpeg) if sequential_jpeg(original) => original.len() as u64,
            Some(ImageFormat::Jpeg) => original.len() as u64 + 6 * pixels,
            _ => 0,
        };
        let needed_mib = (decoded + thumb + DECODER_BUFFERS + format_extra).div_ceil(MIB);
        match u32::try_from(needed_mib) {
            Ok(n) if n <= self.budget_mib => Ok(n),
            _ => Err(ThumbError::TooMuchMemory {
                width,
                height,
                thumb_width,
                thumb_height,
                needed_mib,
                limit_mib: self.budget_mib.into(),
            }),
        }
    }
}

/// Runs `f` on the blocking pool: decoding is CPU work.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ThumbError> + Send + 'static,
) -> Result<T, ThumbError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ThumbError::Image(format!("the decode task failed: {e}")))?
}

/// A reader of `original` in the format its bytes show, whose decoder allocates at most
/// `max_alloc` bytes.
fn reader(original: &[u8], max_alloc: u64) -> Result<ImageReader<Cursor<&[u8]>>, ThumbError> {
    let mut reader = ImageReader::new(Cursor::new(original))
        .with_guessed_format()
        .map_err(|e| ThumbError::Image(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    Ok(reader)
}

/// The size `image`'s `thumbnail` gives a `width`x`height` image to fit in the box.
fn fit(width: u32, height: u32, box_width: u32, box_height: u32) -> (u32, u32) {
    let ratio = f64::min(
        f64::from(box_width) / f64::from(width),
        f64::from(box_height) / f64::from(height),
    );
    let side = |n: u32| ((f64::from(n) * ratio).round() as u32).max(1);
    (side(width), side(height))
}

/// Whether a JPEG's frame is sequential (SOF0, SOF1), which zune-jpeg decodes row by row.
/// Walks the header's segments up to the first frame; anything else counts as progressive.
fn sequential_jpeg(bytes: &[u8]) -> bool {
    let mut at = 2; // after SOI
    while let Some(&[0xFF, marker, hi, lo]) = bytes.get(at..at + 4) {
        match marker {
            0xFF => {
                at += 1; // fill byte
                continue;
            }
            0xC0 | 0xC1 => return true,
            0xC4 | 0xC8 | 0xCC => {}            // DHT, JPG, DAC: not frames
            0xC2..=0xCF | 0xDA => return false, // another frame, or a scan before any frame
            _ => {}
        }
        at += 2 + usize::from(u16::from_be_bytes([hi, lo]));
    }
    false
}

/// Resizes `original` to fit in the spec's box, keeping the aspect ratio, and encodes it; the
/// decoder allocates at most `max_alloc` bytes, pixels included.
fn render(original: &[u8], spec: &Spec, max_alloc: u64) -> Result<Vec<u8>, ThumbError> {
    let img = reader(original, max_alloc)?
        .decode()
        .map_err(|e| ThumbError::from_image(e, max_alloc))?;
    let thumb = img.thumbnail(spec.width, spec.height);
    drop(img);
    let thumb = match spec.format {
        // JPEG has no alpha channel.
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(thumb.into_rgb8()),
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

/// The cache with the thumbnails group; its getter fetches from `origin` and renders within
/// `limits`.
fn thumbnail_cache(
    self_url: &str,
    origin: &str,
    budget: usize,
    limits: DecodeLimits,
) -> Result<(Cache, Group), CacheError> {
    let cache = Cache::builder(self_url).build()?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
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
        DecodeLimits::new(args.max_megapixels, args.decode_mib),
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
