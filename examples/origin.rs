//! A small image origin for the thumbnail example: serves the files of one directory, after
//! writing generated sample images into it (nothing is downloaded), and counts fetches.
//!
//! Run with: `cargo run --example origin -- --listen 127.0.0.1:9300`
//!
//! `GET /<name>`: the file (404 when missing; 400 for names with `/`, `\` or `..`).
//! `GET /_stats`: `{"fetches": {"<name>": <count>, ...}, "total": <n>}` as JSON.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use svckit::registry::{Lifecycle, MemoryRegistry, RouteLayer};
use svckit::status::StatusPage;

/// Flags of the origin.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9300")]
    listen: String,
    /// Directory to serve; sample images are written into it. Default: a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The origin's state: the directory it serves and how often each file was fetched.
#[derive(Debug, Clone)]
struct Origin {
    dir: Arc<PathBuf>,
    fetches: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// The sample images written at start: name, width, height.
const SAMPLES: [(&str, u32, u32); 4] = [
    ("sample.png", 640, 480),
    ("photo.jpg", 800, 600),
    ("banner.jpeg", 1200, 300),
    ("logo.gif", 256, 256),
];

/// Writes the generated sample images into `dir`.
fn write_samples(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (i, (name, w, h)) in SAMPLES.iter().enumerate() {
        let img = image::RgbImage::from_fn(*w, *h, |x, y| {
            let r = (x * 255 / w) as u8;
            let g = (y * 255 / h) as u8;
            let b = ((x + y + i as u32 * 60) % 256) as u8;
            image::Rgb([r, g, b])
        });
        img.save(dir.join(name))?;
    }
    Ok(())
}

fn app(origin: Origin) -> Router {
    Router::new()
        .route("/_stats", get(stats))
        .route("/{name}", get(file))
        .with_state(origin)
}

async fn file(State(origin): State<Origin>, UrlPath(name): UrlPath<String>) -> Response {
    if name.is_empty() || name.contains(['/', '\\']) || name.contains("..") {
        return (StatusCode::BAD_REQUEST, "bad file name\n").into_response();
    }
    let path = origin.dir.join(&name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            *origin
                .fetches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(name.clone())
                .or_default() += 1;
            let mime = match name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("png") => "image/png",
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("gif") => "image/gif",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, mime)], bytes).into_response()
        }
        Err(_) => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

async fn stats(State(origin): State<Origin>) -> Json<serde_json::Value> {
    let fetches = origin
        .fetches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let total: u64 = fetches.values().sum();
    Json(serde_json::json!({ "fetches": fetches, "total": total }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_telemetry("origin");
    let args = Args::parse();
    let tmp;
    let dir = match args.dir {
        Some(dir) => dir,
        None => {
            tmp = std::env::temp_dir().join(format!("svckit-origin-{}", std::process::id()));
            tmp.clone()
        }
    };
    write_samples(&dir)
        .with_context(|| format!("cannot write sample images to {}", dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let origin = Origin {
        dir: Arc::new(dir.clone()),
        fetches: Arc::default(),
    };
    tracing::info!(listen = %args.listen, dir = %dir.display(), "origin serving sample images");
    // Not a discovered service: an in-process registry gives it the same server and the same
    // SIGINT/SIGTERM handling as the others.
    let registry = MemoryRegistry::new();
    let lifecycle = Lifecycle::register(&registry, "origin", listener.local_addr()?).await?;
    // GET /_svckit/status and /metrics beside the files.
    let status = StatusPage::new(&registry).registration(lifecycle.instance());
    let app = app(origin)
        .merge(status.router())
        .merge(common::metrics_route())
        .layer(RouteLayer);
    let served = lifecycle.serve(listener, app).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(served?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(app: Router, path: &str) -> (StatusCode, Vec<u8>) {
        let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body.to_vec())
    }

    #[tokio::test]
    async fn serves_samples_counts_fetches_and_refuses_bad_names() {
        let dir = tempfile_dir();
        write_samples(&dir).unwrap();
        let origin = Origin {
            dir: Arc::new(dir.clone()),
            fetches: Arc::default(),
        };
        let app = app(origin);
        let (status, body) = get_path(app.clone(), "/sample.png").await;
        assert_eq!(status, StatusCode::OK);
        let img = image::load_from_memory(&body).unwrap();
        assert_eq!((img.width(), img.height()), (640, 480));
        assert_eq!(
            get_path(app.clone(), "/missing.png").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get_path(app.clone(), "/..%2Fetc").await.0,
            StatusCode::BAD_REQUEST
        );
        let (_, stats) = get_path(app.clone(), "/_stats").await;
        let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
        assert_eq!(stats["fetches"]["sample.png"], 1);
        assert_eq!(stats["total"], 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "svckit-origin-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
