//! Setup shared by the examples: logging, and etcd options from the flags and the environment.
#![allow(dead_code)]

/// Logs to stderr, one line per event with its span fields; `RUST_LOG` overrides the
/// default level (`info`). Colours only when stderr is a terminal (a log file gets no
/// escape codes); `SVCKIT_LOG_FORMAT=json` writes one JSON object per line instead.
pub(crate) fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let json = std::env::var("SVCKIT_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
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

/// etcd options for the comma-separated `endpoints`, plus auth and TLS from the environment
/// ([`EtcdOptions::with_env`](svckit::registry::EtcdOptions::with_env)).
pub(crate) fn etcd_options(endpoints: &str) -> anyhow::Result<svckit::registry::EtcdOptions> {
    Ok(svckit::registry::EtcdOptions::new(split_list(endpoints))
        .dial_timeout(std::time::Duration::from_secs(3))
        .with_env()?)
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
