//! W3C trace context across a hop (feature `otel`): an Endpoint's request carries the
//! `traceparent` of its attempt span, child of the invoke span, so the callee's server span
//! becomes the attempt's child; a plain `HttpClient::get` carries the current span's.
#![cfg(feature = "otel")]

mod cluster;

use cluster::{Cluster, Server};
use svckit_balancer::{HttpClient, Limits};
use svckit_testing::otel::FinishedSpans;
use tracing::Instrument;

/// `00-<trace id>-<parent span id>-<flags>` -> (trace id, parent span id), in hex.
fn parse(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent `{traceparent}`");
    (parts[1].to_owned(), parts[2].to_owned())
}

// The only test of this binary: its subscriber and propagator are the global ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_sees_the_attempt_span_as_its_parent() {
    let finished = FinishedSpans::install_global(tracing::Level::TRACE);

    let server = Server::start("a", false).await;
    let c = Cluster::start("otel_hop", &[("a", server.addr.to_string())]).await;
    let client = HttpClient::new();
    let ep = c.endpoint(&client).build().unwrap();
    let seen = ep.invoke("/traceparent").await.unwrap();
    let (trace_id, parent_id) = parse(&seen);
    let invoke = finished.one("invoke");
    let attempt = finished.one("attempt");
    assert_eq!(trace_id, invoke.span_context.trace_id().to_string());
    assert_eq!(trace_id, attempt.span_context.trace_id().to_string());
    assert_eq!(parent_id, attempt.span_context.span_id().to_string());
    assert_eq!(attempt.parent_span_id, invoke.span_context.span_id());

    // Outside an Endpoint (the cache's peer fetches): the current span's context.
    let outer = tracing::info_span!("outer");
    let url = format!("http://{}/traceparent", server.addr);
    let resp = client
        .get(&url, Limits::default())
        .instrument(outer)
        .await
        .unwrap();
    let (trace_id, parent_id) = parse(std::str::from_utf8(resp.body()).unwrap());
    let outer = finished.one("outer");
    assert_eq!(trace_id, outer.span_context.trace_id().to_string());
    assert_eq!(parent_id, outer.span_context.span_id().to_string());
    assert_ne!(
        outer.span_context.trace_id(),
        invoke.span_context.trace_id()
    );
}
