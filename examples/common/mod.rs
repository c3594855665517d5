//! Setup shared by the examples: logging, failing with one clear line, flag helpers.
#![allow(dead_code)]

use std::fmt::Display;

/// Logs to stderr; `RUST_LOG` overrides the default level (`info`).
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Prints one line that says what failed and exits with status 1.
pub(crate) fn fail(what: impl Display) -> ! {
    eprintln!("error: {what}");
    std::process::exit(1)
}

/// Splits a comma-separated flag value, dropping empty parts.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An error and its sources on one line: `what failed: why: why`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

/// etcd options for the comma-separated `endpoints`, plus auth and TLS from the environment:
/// `SVCKIT_ETCD_USER` / `SVCKIT_ETCD_PASSWORD`, `SVCKIT_ETCD_CA` (a PEM file; the endpoints
/// then use `https://`), `SVCKIT_ETCD_CERT` / `SVCKIT_ETCD_KEY` (client identity, PEM files).
pub(crate) fn etcd_options(endpoints: &str) -> svckit::registry::EtcdOptions {
    let mut options = svckit::registry::EtcdOptions::new(split_list(endpoints))
        .dial_timeout(std::time::Duration::from_secs(3));
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // A user without a password is passed on as such: connecting refuses it by name.
    if let Some(user) = env("SVCKIT_ETCD_USER") {
        options = options.auth(user, env("SVCKIT_ETCD_PASSWORD").unwrap_or_default());
    }
    let read = |var: &str, path: String| {
        std::fs::read(&path).unwrap_or_else(|e| fail(format_args!("{var}={path}: {e}")))
    };
    if let Some(ca) = env("SVCKIT_ETCD_CA") {
        options = options.tls_ca_pem(read("SVCKIT_ETCD_CA", ca));
    }
    if let (Some(cert), Some(key)) = (env("SVCKIT_ETCD_CERT"), env("SVCKIT_ETCD_KEY")) {
        options =
            options.tls_identity_pem(read("SVCKIT_ETCD_CERT", cert), read("SVCKIT_ETCD_KEY", key));
    }
    options
}

/// Connects to etcd, or exits with one line that names the endpoints and the cause.
pub(crate) async fn connect_etcd(
    options: svckit::registry::EtcdOptions,
    endpoints: &str,
) -> svckit::registry::EtcdRegistry {
    use svckit::registry::Error;
    svckit::registry::EtcdRegistry::connect(options)
        .await
        .unwrap_or_else(|e| match e {
            // etcd answered: say what it refused, not that it cannot be reached.
            Error::AuthFailed { .. }
            | Error::AuthRequired { .. }
            | Error::MissingPassword { .. } => {
                fail(format_args!("etcd at {endpoints}: {}", chain(&e)))
            }
            _ => fail(format_args!(
                "cannot reach etcd at {endpoints}: {}",
                chain(&e)
            )),
        })
}

/// Serves `app` with `lifecycle.serve` (slow and idle clients bounded, requests in flight
/// counted) until SIGINT/SIGTERM, which deregisters first; then drains within the grace
/// timeout. Exits with one line on failure.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    lifecycle: &svckit::registry::Lifecycle,
) {
    if let Err(e) = lifecycle.serve(listener, app).await {
        fail(format_args!("shutdown: {}", chain(&e)));
    }
}

/// Registers the server bound at `bound` through `builder`, or exits with one line.
pub(crate) async fn register(
    builder: svckit::registry::LifecycleBuilder,
    registry: &svckit::registry::EtcdRegistry,
    bound: std::net::SocketAddr,
    endpoints: &str,
) -> svckit::registry::Lifecycle {
    use svckit::registry::Error;
    builder
        .register(registry, bound)
        .await
        .unwrap_or_else(|e| match e {
            // Refused before anything was sent: the flag, not etcd, is at fault.
            Error::InvalidIdent { .. } | Error::InvalidAddress { .. } => fail(e),
            _ => fail(format_args!(
                "cannot register in etcd at {endpoints}: {}",
                chain(&e)
            )),
        })
}
