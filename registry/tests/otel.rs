//! W3C trace context into a server (feature `otel`): the `http.server` span of
//! `Lifecycle::serve` continues an incoming `traceparent`, and the handler runs inside it, so
//! what the handler sends on carries the server span as its parent.
#![cfg(feature = "otel")]

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use http::HeaderMap;
use svckit_registry::{Lifecycle, MemoryRegistry, RouteLayer};
use svckit_testing::otel::FinishedSpans;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

// The only test of this binary: its subscriber and propagator are the global ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_span_continues_the_callers_trace() {
    let finished = FinishedSpans::install_global(tracing::Level::TRACE);

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

    let served = finished.one("http.server");
    assert_eq!(served.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(served.parent_span_id.to_string(), CALLER_SPAN_ID);
    let parts: Vec<&str> = sent_on.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent sent on: {sent_on:?}");
    assert_eq!(parts[1], TRACE_ID);
    assert_eq!(parts[2], served.span_context.span_id().to_string());
}
