//! Setup shared by the examples: logs, metrics and traces, and etcd options from the flags and
//! the environment.
#![allow(dead_code)]

#[cfg(feature = "otel")]
mod otel;

/// Sets up what every example reports through: logs, metrics and (with the `otel` feature)
/// traces. Call it first in `main`, before anything records a metric.
///
/// - Logs go to stderr, one line per event with its span fields; `RUST_LOG` overrides the
///   default level (`info`). Colours only when stderr is a terminal (a log file gets no
///   escape codes); `SVCKIT_LOG_FORMAT=json` writes one JSON object per line instead.
/// - Metrics: a Prometheus recorder for the `metrics` facade svckit records through, served
///   by [`metrics_route`].
/// - Traces (`--features otel`): the W3C propagator, and with `SVCKIT_OTEL_SPANS=<file>` every
///   finished span appended to that file as one JSON object per line.
pub(crate) fn init_telemetry(service: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = std::env::var("SVCKIT_LOG_FORMAT").unwrap_or_default();
    let json = format.eq_ignore_ascii_case("json");
    if !json && !format.is_empty() && !format.eq_ignore_ascii_case("text") {
        eprintln!("SVCKIT_LOG_FORMAT={format:?} is neither json nor text: logging text");
    }
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed()
    };
    let subscriber = tracing_subscriber::registry().with(logs.with_filter(filter));
    #[cfg(feature = "otel")]
    let subscriber = subscriber.with(otel::layer(service));
    #[cfg(not(feature = "otel"))]
    let _ = service;
    let _ = subscriber.try_init();
    let _ = prometheus();
}

/// Buckets (seconds) of svckit's `_seconds` histograms: 0.5 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's Prometheus recorder, installed on first use.
fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed; the metrics then go there.
        let _ = metrics::set_global_recorder(recorder);
        // `# HELP` lines and units for the registry's families (the balancer and the cache
        // describe theirs when they first record).
        svckit::registry::describe_metrics();
        handle
    })
}

/// `GET /metrics`: this process's metrics in Prometheus' text format. The cache's counters
/// are read at this moment (`publish_metrics`), so its hit path records nothing.
pub(crate) fn metrics_route() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            svckit::cache::publish_metrics();
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                prometheus().render(),
            )
        }),
    )
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
