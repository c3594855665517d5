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

use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use svckit::registry::{EtcdRegistry, Lifecycle};

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

/// The product routes, testable without a socket. `instance_id` goes into `x-served-by`.
fn app(instance_id: &str) -> Router {
    Router::new()
        .route("/prod/{id}", get(product))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(instance_id.to_owned())
}

async fn product(State(served_by): State<String>, Path(id): Path<String>) -> Response {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let served_by = AppendHeaders([("x-served-by", served_by)]);
    (served_by, format!("get product byID:{id}")).into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_tracing();
    let args = Args::parse();
    let listen = format!("{}:{}", args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;

    // Connect to etcd; register once the listener is bound, so the registered address is real.
    let options = common::etcd_options(&args.etcd)?.ttl(Duration::from_secs(args.ttl.max(1)));
    let registry = EtcdRegistry::connect(options)
        .await
        .with_context(|| format!("cannot connect to etcd at {}", args.etcd))?;
    let mut lifecycle = Lifecycle::builder(&args.name);
    if let Some(id) = &args.id {
        lifecycle = lifecycle.id(id);
    }
    if let Some(host) = &args.advertise {
        lifecycle = lifecycle.advertise_host(host);
    }
    let lifecycle = lifecycle
        .register(&registry, listener.local_addr()?)
        .await
        .context("cannot register the product service")?;
    let instance = lifecycle.instance();
    tracing::info!(
        id = instance.id(),
        name = instance.name(),
        addr = instance.addr(),
        "registered"
    );

    // Serve until SIGINT/SIGTERM: deregister first, then finish the requests in flight.
    lifecycle.serve(listener, app(instance.id())).await?;
    Ok(())
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
            .get("x-served-by")
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
