//! The product service: an axum app registered in etcd under `/services/<id>/<name>`, kept
//! alive by a lease, deregistered and drained on SIGINT/SIGTERM. Start it several times on
//! different ports and call it by name with the `product_client` example.
//!
//! Run with: `cargo run --example product -- --name productservice --port 8081`
//! (`--etcd 127.0.0.1:2379` by default; `--id`, `--ttl`, `--advertise` optional).
//!
//! `GET /prod/<digits>`: 200 `get product byID:<id>` and, on a second line, the live config's
//! greeting and the price (10.00 × `price_factor`), with `x-served-by: <instance id>`.
//! `GET /health`: 200. `GET /_svckit/status`: what this instance sees (HTML; `?format=json`).
//! `GET /metrics`: Prometheus metrics. Anything else: 404.
//!
//! Live config: the keys under `/config/<name>/` (`greeting`, `price_factor`), followed
//! through one etcd watch. `etcdctl put /config/productservice/price_factor 1.2` changes the
//! answers of every running instance at once; a value that is not a number or not in
//! (0, 100] is refused and the last good one stays.

mod common;

use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use serde::Deserialize;
use svckit::config::ConfigWatch;
use svckit::registry::{EtcdRegistry, Lifecycle, Registry, RouteLayer};
use svckit::status::StatusPage;

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

/// The live settings under `/config/<name>/`; every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
struct ProductConfig {
    /// Said on the second line of every answer.
    greeting: String,
    /// Multiplies the base price of 10.00.
    price_factor: f64,
}

impl Default for ProductConfig {
    fn default() -> Self {
        Self {
            greeting: "hello".to_owned(),
            price_factor: 1.0,
        }
    }
}

impl ProductConfig {
    /// Refuses what no answer should show.
    fn check(&self) -> Result<(), String> {
        if !(self.price_factor > 0.0 && self.price_factor <= 100.0) {
            return Err(format!(
                "price_factor {} is not in (0, 100]",
                self.price_factor
            ));
        }
        if self.greeting.len() > 200 || self.greeting.contains('\n') {
            return Err("greeting must be one line of at most 200 bytes".to_owned());
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AppState {
    served_by: String,
    config: ConfigWatch<ProductConfig>,
}

/// The product routes, testable without a socket. `instance_id` goes into `x-served-by`.
fn app(instance_id: &str, config: ConfigWatch<ProductConfig>) -> Router {
    Router::new()
        .route("/prod/{id}", get(product))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(AppState {
            served_by: instance_id.to_owned(),
            config,
        })
}

async fn product(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    // Lock-free: the last good config, whatever etcd is doing.
    let config = state.config.get();
    let price = 10.0 * config.price_factor;
    let served_by = AppendHeaders([("x-served-by", state.served_by)]);
    let body = format!(
        "get product byID:{id}\n{} price {price:.2}",
        config.greeting
    );
    (served_by, body).into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_telemetry("product");
    let args = Args::parse();
    // A bad name is refused before anything else happens (its config prefix comes from it).
    svckit::registry::validate_name(&args.name)?;
    let listen = format!("{}:{}", args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;

    // Connect to etcd; register once the listener is bound, so the registered address is real.
    let options = common::etcd_options(&args.etcd)?.ttl(Duration::from_secs(args.ttl.max(1)));
    let registry = EtcdRegistry::connect(options)
        .await
        .with_context(|| format!("cannot connect to etcd at {}", args.etcd))?;
    // The live config, one watch on /config/<name>/ (defaults when the keys are absent);
    // read before registering, so no caller is served before it.
    let config = ConfigWatch::<ProductConfig>::builder(
        &registry.keyspace(),
        &format!("/config/{}/", args.name),
    )
    .validate(ProductConfig::check)
    .default_value(ProductConfig::default())
    .start()
    .await
    .context("cannot read the live config")?;
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

    // What this process sees and does: GET /_svckit/status (HTML; ?format=json) and
    // GET /metrics (Prometheus); RouteLayer labels the request metrics by route template.
    let status = StatusPage::new(&registry).registration(instance);
    let app = app(instance.id(), config)
        .merge(status.router())
        .merge(common::metrics_route())
        .layer(RouteLayer);

    // Serve until SIGINT/SIGTERM: deregister first, then finish the requests in flight.
    lifecycle.serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use svckit::registry::MemoryRegistry;
    use tower::ServiceExt;

    async fn call_with(
        registry: &MemoryRegistry,
        path: &str,
    ) -> (StatusCode, Option<String>, String) {
        let config = ConfigWatch::<ProductConfig>::builder(&registry.keyspace(), "/config/p/")
            .validate(ProductConfig::check)
            .default_value(ProductConfig::default())
            .start()
            .await
            .unwrap();
        let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let resp = app("inst1", config).oneshot(req).await.unwrap();
        let status = resp.status();
        let served = resp
            .headers()
            .get("x-served-by")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, served, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn call(path: &str) -> (StatusCode, Option<String>, String) {
        call_with(&MemoryRegistry::new(), path).await
    }

    #[tokio::test]
    async fn product_by_id() {
        let (status, served, body) = call("/prod/42").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(served.as_deref(), Some("inst1"));
        assert_eq!(body, "get product byID:42\nhello price 10.00");
    }

    #[tokio::test]
    async fn the_answer_follows_the_config_and_refuses_a_bad_factor() {
        let registry = MemoryRegistry::new();
        let keys = registry.keyspace();
        keys.put("/config/p/greeting", "hi").await.unwrap();
        keys.put("/config/p/price_factor", "1.5").await.unwrap();
        assert_eq!(
            call_with(&registry, "/prod/1").await.2,
            "get product byID:1\nhi price 15.00"
        );
        // Refused at start: the defaults serve.
        let registry = MemoryRegistry::new();
        registry
            .keyspace()
            .put("/config/p/price_factor", "-1")
            .await
            .unwrap();
        assert_eq!(
            call_with(&registry, "/prod/1").await.2,
            "get product byID:1\nhello price 10.00"
        );
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
