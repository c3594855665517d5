//! The product service: an axum app registered in etcd under `/services/<id>/<name>`, kept
//! alive by a lease, deregistered and drained on SIGINT/SIGTERM. Start it several times on
//! different ports and call it by name with the `product_client` example.
//!
//! Run with: `cargo run --example product -- --name productservice --port 8081`
//! (`--etcd 127.0.0.1:2379` by default; `--id`, `--ttl`, `--advertise` optional).
//!
//! `GET /prod/<digits>`: 200 `get product byID:<id>` with `x-served-by: <instance id>`.
//! `GET /health`: 200. Anything else: 404.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use svckit::registry::Lifecycle;

/// Flags of the product service.
#[derive(Debug, Parser)]
struct Args {
    /// The service name to register under.
    #[arg(long, default_value = "productservice")]
    name: String,
    /// The port to listen on.
    #[arg(short = 'p', long, default_value_t = 8081)]
    port: u16,
    /// The address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// etcd endpoints, comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    etcd: String,
    /// The instance id (default: a random UUID, 32 hex digits).
    #[arg(long)]
    id: Option<String>,
    /// The lease TTL in seconds.
    #[arg(long, default_value_t = 10)]
    ttl: u64,
    /// The host to register instead of the bound address.
    #[arg(long)]
    advertise: Option<String>,
}

/// The header that names the instance which answered.
const SERVED_BY: &str = "x-served-by";

/// The product routes, testable without a socket. `instance_id` goes into `x-served-by`.
fn app(instance_id: &str) -> Router {
    let id: Arc<str> = Arc::from(instance_id);
    Router::new()
        .route("/prod/{id}", get(product))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(id)
}

async fn product(State(served_by): State<Arc<str>>, Path(id): Path<String>) -> Response {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut resp = format!("get product byID:{id}").into_response();
    if let Ok(value) = HeaderValue::from_str(&served_by) {
        resp.headers_mut().insert(SERVED_BY, value);
    }
    resp
}

#[tokio::main]
async fn main() {
    common::init_tracing();
    let args = Args::parse();
    let listen = format!("{}:{}", args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| common::fail(format_args!("cannot listen on {listen}: {e}")));
    let options = common::etcd_options(&args.etcd).ttl(Duration::from_secs(args.ttl.max(1)));
    let registry = common::connect_etcd(options, &args.etcd).await;
    let bound = listener
        .local_addr()
        .unwrap_or_else(|e| common::fail(format_args!("cannot read the bound address: {e}")));
    let mut builder = Lifecycle::builder(&args.name);
    if let Some(id) = &args.id {
        builder = builder.id(id);
    }
    if let Some(host) = &args.advertise {
        builder = builder.advertise_host(host);
    }
    let lifecycle = common::register(builder, &registry, bound, &args.etcd).await;
    let instance = lifecycle.instance().clone();
    tracing::info!(
        id = instance.id(),
        name = instance.name(),
        addr = instance.addr(),
        "registered"
    );
    let app = app(instance.id());
    common::serve(listener, app, &lifecycle).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(path: &str) -> (StatusCode, Option<String>, String) {
        let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let resp = app("inst1").oneshot(req).await.unwrap();
        let status = resp.status();
        let served = resp
            .headers()
            .get(SERVED_BY)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, served, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn product_by_id() {
        let (status, served, body) = call("/prod/42").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(served.as_deref(), Some("inst1"));
        assert_eq!(body, "get product byID:42");
    }

    #[tokio::test]
    async fn non_digit_ids_and_unknown_paths_are_404() {
        for path in [
            "/prod/abc",
            "/prod/4a2",
            "/prod/",
            "/prod",
            "/products/1",
            "/",
            "/prod/1/2",
        ] {
            assert_eq!(call(path).await.0, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn health_is_200() {
        assert_eq!(call("/health").await.0, StatusCode::OK);
    }
}
