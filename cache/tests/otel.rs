//! W3C trace context across a cache hop (feature `otel`): a get that misses fetches from the
//! key's owner inside its `cache_get` span, so the request carries that span as the parent,
//! and the owner, serving behind a layer that extracts the context, loads the key in a
//! `cache_get` span of the same trace.
#![cfg(feature = "otel")]

use axum::extract::Request;
use axum::middleware::{from_fn, Next};
use bytes::Bytes;
use svckit_cache::{getter_fn, BoxError, Cache};
use svckit_testing::otel::{attribute, FinishedSpans, SpanData};
use tracing::{Instrument, Level};

/// A server span continuing the caller's trace, as `Lifecycle::serve` makes one.
async fn server_span(req: Request, next: Next) -> axum::response::Response {
    let span = tracing::info_span!("peer_server");
    svckit_registry::trace::extract(req.headers(), &span);
    next.run(req).instrument(span).await
}

// The only test of this binary: its subscriber and propagator are the global ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_loads_in_the_trace_of_the_get_that_fetched() {
    // As an application tracing at info: the loads' debug `flight` spans are off.
    let finished = FinishedSpans::install_global(Level::INFO);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_url = format!("http://{}", listener.local_addr().unwrap());
    let a_url = "http://127.0.0.1:1".to_owned();
    let getter = || getter_fn(|key: String| async move { Ok::<_, BoxError>(Bytes::from(key)) });
    let (a, b) = (
        Cache::builder(&a_url).build().unwrap(),
        Cache::builder(&b_url).build().unwrap(),
    );
    let a_group = a
        .new_group("otel", 1 << 20, getter())
        .hot_one_in(0)
        .build()
        .unwrap();
    let _b_group = b.new_group("otel", 1 << 20, getter()).build().unwrap();
    for c in [&a, &b] {
        c.set_peers([&a_url, &b_url]).unwrap();
    }
    let app = b.router().layer(from_fn(server_span));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| a.owner(k).as_deref() == Some(b_url.as_str()))
        .unwrap();

    assert_eq!(a_group.get(&key).await.unwrap(), key);
    // B's spans end before its answer is sent, A's after it is read.
    let spans = finished.all();
    let gets: Vec<&SpanData> = spans.iter().filter(|s| s.name == "cache_get").collect();
    assert_eq!(gets.len(), 2, "{spans:?}");
    let asked = gets
        .iter()
        .find(|s| attribute(s, "peer_request").as_deref() == Some("false"))
        .expect("A's span");
    let served = gets
        .iter()
        .find(|s| attribute(s, "peer_request").as_deref() == Some("true"))
        .expect("B's span");
    assert_eq!(attribute(asked, "outcome").as_deref(), Some("peer"));
    assert_eq!(attribute(asked, "group").as_deref(), Some("otel"));
    assert_eq!(attribute(served, "outcome").as_deref(), Some("local"));
    let server: Vec<&SpanData> = spans.iter().filter(|s| s.name == "peer_server").collect();
    assert_eq!(server.len(), 1, "{spans:?}");
    // One trace: A's get -> B's server span -> B's load.
    let trace = asked.span_context.trace_id();
    assert_eq!(server[0].span_context.trace_id(), trace);
    assert_eq!(server[0].parent_span_id, asked.span_context.span_id());
    assert_eq!(served.span_context.trace_id(), trace);
    assert_eq!(served.parent_span_id, server[0].span_context.span_id());
}
