//! Setup shared by the examples: logging, and etcd options from the flags and the environment.
#![allow(dead_code)]

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

/// Splits a comma-separated flag value, dropping empty parts.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// etcd options for the comma-separated `endpoints`, plus auth and TLS from the environment:
/// `SVCKIT_ETCD_USER` / `SVCKIT_ETCD_PASSWORD`, `SVCKIT_ETCD_CA` (a PEM file; the endpoints
/// then use `https://`), `SVCKIT_ETCD_CERT` / `SVCKIT_ETCD_KEY` (client identity, PEM files).
pub(crate) fn etcd_options(endpoints: &str) -> anyhow::Result<svckit::registry::EtcdOptions> {
    use anyhow::Context;
    let mut options = svckit::registry::EtcdOptions::new(split_list(endpoints))
        .dial_timeout(std::time::Duration::from_secs(3));
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // A user without a password is passed on as such: connecting refuses it by name.
    if let Some(user) = env("SVCKIT_ETCD_USER") {
        options = options.auth(user, env("SVCKIT_ETCD_PASSWORD").unwrap_or_default());
    }
    let read =
        |var: &str, path: String| std::fs::read(&path).with_context(|| format!("{var}={path}"));
    if let Some(ca) = env("SVCKIT_ETCD_CA") {
        options = options.tls_ca_pem(read("SVCKIT_ETCD_CA", ca)?);
    }
    if let (Some(cert), Some(key)) = (env("SVCKIT_ETCD_CERT"), env("SVCKIT_ETCD_KEY")) {
        options = options.tls_identity_pem(
            read("SVCKIT_ETCD_CERT", cert)?,
            read("SVCKIT_ETCD_KEY", key)?,
        );
    }
    Ok(options)
}

/// An error and its sources on one line, `what failed: why: why`, for answers and messages
/// that must name the cause (a transport error says what failed, its sources why).
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line = format!("{line}: {s}");
        source = s.source();
    }
    line
}
