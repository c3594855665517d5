//! W3C trace context across a hop (feature `otel`): an Endpoint's request carries the
//! `traceparent` of its attempt span, child of the invoke span, so the callee's server span
//! becomes the attempt's child; a plain `HttpClient::get` carries the current span's.
#![cfg(feature = "otel")]

mod cluster;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::{Cluster, Server};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use svckit_balancer::{HttpClient, Limits};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Keeps every finished span.
#[derive(Debug, Clone, Default)]
struct Finished(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Finished {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap().push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Finished {
    /// The one finished span called `name`.
    fn one(&self, name: &str) -> SpanData {
        let spans = self.0.lock().unwrap();
        let mut named = spans.iter().filter(|s| s.name == name);
        let span = named.next().unwrap_or_else(|| panic!("no `{name}` span"));
        assert!(named.next().is_none(), "more than one `{name}` span");
        span.clone()
    }
}

/// `00-<trace id>-<parent span id>-<flags>` -> (trace id, parent span id), in hex.
fn parse(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent `{traceparent}`");
    (parts[1].to_owned(), parts[2].to_owned())
}

// The only test of this binary: its subscriber and propagator are the global ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_sees_the_attempt_span_as_its_parent() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let finished = Finished::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(finished.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("svckit-balancer-test"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

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
