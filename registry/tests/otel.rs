//! W3C trace context into a server (feature `otel`): the `http.server` span of
//! `Lifecycle::serve` continues an incoming `traceparent`, and the handler runs inside it, so
//! what the handler sends on carries the server span as its parent.
#![cfg(feature = "otel")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http::HeaderMap;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use svckit_registry::{Lifecycle, MemoryRegistry, RouteLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

// The only test of this binary: its subscriber and propagator are the global ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_span_continues_the_callers_trace() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let finished = Finished::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(finished.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("svckit-registry-test"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let registry = MemoryRegistry::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lifecycle = Arc::new(
        Lifecycle::builder("o_http")
            .handle_signals(false)
            .register(&registry, addr)
            .await
            .unwrap(),
    );
    // The handler answers with the `traceparent` an outgoing call of its would carry.
    let app = Router::new()
        .route(
            "/hop",
            get(|| async {
                let mut headers = HeaderMap::new();
                svckit_registry::trace::inject(&mut headers);
                headers
                    .get("traceparent")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            }),
        )
        .layer(RouteLayer);
    let server = tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move { lifecycle.serve(listener, app).await }
    });

    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /hop HTTP/1.1\r\nHost: t\r\nConnection: close\r\ntraceparent: 00-{TRACE_ID}-{CALLER_SPAN_ID}-01\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    let sent_on = response.rsplit("\r\n\r\n").next().unwrap().to_owned();
    lifecycle.shutdown();
    server.await.unwrap().unwrap();

    let spans = finished.0.lock().unwrap();
    let served: Vec<&SpanData> = spans.iter().filter(|s| s.name == "http.server").collect();
    assert_eq!(served.len(), 1, "{spans:?}");
    let served = served[0];
    assert_eq!(served.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(served.parent_span_id.to_string(), CALLER_SPAN_ID);
    let parts: Vec<&str> = sent_on.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent sent on: {sent_on:?}");
    assert_eq!(parts[1], TRACE_ID);
    assert_eq!(parts[2], served.span_context.span_id().to_string());
}
