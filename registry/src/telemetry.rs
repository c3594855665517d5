//! The metric families the registry records through the `metrics` facade, named once here.
//! The application installs the recorder (a Prometheus exporter, say); without one every
//! record is a no-op. The list, with labels, is in the crate docs ("Metrics and traces").

use std::time::Duration;

/// Gauge by `service`: registrations of the service this process holds.
pub(crate) const REGISTERED: &str = "svckit_registry_registered";
/// Counter by `service`: keepalive requests (or keepalive stream openings) that failed.
pub(crate) const KEEPALIVE_FAILURES: &str = "svckit_registry_lease_keepalive_failures_total";
/// Counter by `service`: registrations put again after their lease was lost.
pub(crate) const REREGISTRATIONS: &str = "svckit_registry_reregistrations_total";
/// Gauge by `service`: the instances discovery sees.
pub(crate) const DISCOVERY_INSTANCES: &str = "svckit_discovery_instances";
/// Counter by `reason` (compaction, reconnect, reconcile): discovery watches started over.
pub(crate) const DISCOVERY_RESYNCS: &str = "svckit_discovery_resyncs_total";
/// Counter: entries under the discovery prefix skipped because they do not fit the layout.
pub(crate) const DISCOVERY_MALFORMED: &str = "svckit_discovery_malformed_keys_total";
/// Counter by `service`, `route`, `status` (class): requests served by `Lifecycle::serve`.
pub(crate) const HTTP_REQUESTS: &str = "svckit_http_server_requests_total";
/// Histogram by `service`, `route`: from a request's head to the end of its response body.
pub(crate) const HTTP_DURATION: &str = "svckit_http_server_request_duration_seconds";
/// Gauge by `service`: requests between their head and the end of their response body.
pub(crate) const HTTP_IN_FLIGHT: &str = "svckit_http_server_in_flight";
/// Gauge by `service`: how long the server has been draining (the last drain, once over).
pub(crate) const HTTP_DRAIN: &str = "svckit_http_server_drain_duration_seconds";

/// Describes the registry's metric families (units and help text) to the installed
/// recorder, for the `# HELP` lines of a Prometheus scrape. Call it once after installing
/// the recorder; the families are recorded whether or not it was called.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        REGISTERED,
        "Registrations of the service this process holds (1 per live registration)."
    );
    describe_counter!(
        KEEPALIVE_FAILURES,
        "Lease keepalives that failed (the lease is lost once none succeeds for a whole TTL)."
    );
    describe_counter!(
        REREGISTRATIONS,
        "Registrations granted and put again after their lease was lost."
    );
    describe_gauge!(
        DISCOVERY_INSTANCES,
        "Instances of the service discovery currently sees."
    );
    describe_counter!(
        DISCOVERY_RESYNCS,
        "Discovery watches started over, by reason (compaction, reconnect, reconcile)."
    );
    describe_counter!(
        DISCOVERY_MALFORMED,
        "Entries under the discovery prefix skipped because they do not fit the layout."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "Requests served, by route template and status class."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "From a request's head to the end of its response body."
    );
    describe_gauge!(HTTP_IN_FLIGHT, "Requests being served.");
    describe_gauge!(
        HTTP_DRAIN,
        Unit::Seconds,
        "How long the server has been draining (updated every 250 ms), or the last drain took."
    );
}

/// Runs a server's drain, keeping [`HTTP_DRAIN`] at how long it has been draining (every
/// 250 ms, so a scrape during the drain sees it grow), then at how long it took.
pub(crate) async fn draining<F: std::future::Future>(service: &str, drain: F) -> F::Output {
    let gauge = metrics::gauge!(HTTP_DRAIN, "service" => service.to_owned());
    let started = std::time::Instant::now();
    gauge.set(0.0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    tokio::pin!(drain);
    let out = loop {
        tokio::select! {
            out = &mut drain => break out,
            _ = tick.tick() => gauge.set(started.elapsed().as_secs_f64()),
        }
    };
    gauge.set(started.elapsed().as_secs_f64());
    out
}

/// How often [`draining`] updates its gauge.
const TICK: Duration = Duration::from_millis(250);
