//! The peer protocol: the router without a socket, hostile input, misbehaving peers and the
//! shared secret.

mod common;

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use common::{eventually, value_of, Node, TestGetter, GROUP};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use prost::Message;
use svckit_cache::{Cache, SECRET_HEADER};
use tower::ServiceExt;

/// golang/groupcache's GetResponse, declared independently of the crate's own.
#[derive(Clone, PartialEq, prost::Message)]
struct GetResponse {
    #[prost(bytes = "vec", optional, tag = "1")]
    value: Option<Vec<u8>>,
    #[prost(double, optional, tag = "2")]
    minute_qps: Option<f64>,
}

async fn call(cache: &Cache, req: Request<Body>) -> (StatusCode, Option<String>, Bytes) {
    let resp = cache.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ct, body)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn single(getter: &TestGetter) -> Cache {
    let cache = Cache::builder("http://127.0.0.1:1").build().unwrap();
    cache
        .new_group(GROUP, 1 << 20, getter.clone())
        .build()
        .unwrap();
    cache
}

#[tokio::test]
async fn serves_get_response_protobuf_from_the_raw_path() {
    let getter = TestGetter::default();
    let cache = single(&getter);
    // Go's client sends url.QueryEscape(key): "/a b" -> "%2Fa+b".
    let (status, ct, body) = call(&cache, get("/_groupcache/demo/%2Fa+b%3F%23%25")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/x-protobuf"));
    let msg = GetResponse::decode(body).unwrap();
    assert_eq!(msg.value.unwrap(), value_of("/a b?#%").to_vec());
    assert_eq!(getter.calls_of("/a b?#%"), 1);
    let g = cache.group(GROUP).unwrap();
    assert_eq!(g.stats().server_requests, 1);
    // Served again from memory.
    let (status, _, _) = call(&cache, get("/_groupcache/demo/%2Fa+b%3F%23%25")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(getter.calls_of("/a b?#%"), 1);
    assert_eq!(g.stats().cache_hits, 1);
}

#[tokio::test]
async fn hostile_requests_get_4xx_and_never_reach_the_getter() {
    let getter = TestGetter::default();
    let cache = single(&getter);
    let long_key = format!("/_groupcache/demo/{}", "x".repeat(1025));
    for (path, want) in [
        ("/_groupcache/demo/%zz", StatusCode::BAD_REQUEST),
        ("/_groupcache/demo/%", StatusCode::BAD_REQUEST),
        ("/_groupcache/demo/a%4", StatusCode::BAD_REQUEST),
        ("/_groupcache/demo/%FF%FE", StatusCode::BAD_REQUEST),
        ("/_groupcache/de%ZZmo/k", StatusCode::BAD_REQUEST),
        ("/_groupcache/demo", StatusCode::BAD_REQUEST),
        ("/_groupcache/", StatusCode::BAD_REQUEST),
        ("/_groupcache/nosuchgroup/k", StatusCode::NOT_FOUND),
        (long_key.as_str(), StatusCode::BAD_REQUEST),
    ] {
        let (status, _, body) = call(&cache, get(path)).await;
        assert_eq!(status, want, "{path:.60}: {body:?}");
    }
    let (status, _, _) = call(
        &cache,
        Request::post("/_groupcache/demo/k")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(getter.total(), 0);
}

#[tokio::test]
async fn a_getter_error_is_a_500_with_a_short_text() {
    let getter = TestGetter::default();
    getter.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let cache = single(&getter);
    let (status, ct, body) = call(&cache, get("/_groupcache/demo/k")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(ct.unwrap().starts_with("text/plain"));
    assert!(body.len() < 200, "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_is_required_when_configured() {
    let getter = TestGetter::default();
    let a = Node::start_with(getter.clone(), |b| b.shared_secret("s3cret")).await;
    let b = Node::start_with(getter.clone(), |b| b.shared_secret("s3cret")).await;
    let (status, _, _) = call(&a.cache, get("/_groupcache/demo/k")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let wrong = Request::get("/_groupcache/demo/k")
        .header(SECRET_HEADER, "s3creT")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&a.cache, wrong).await.0, StatusCode::FORBIDDEN);
    let right = Request::get("/_groupcache/demo/k")
        .header(SECRET_HEADER, "s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&a.cache, right).await.0, StatusCode::OK);
    // Peers configured with the secret fetch from each other.
    let urls = [a.url.clone(), b.url.clone()];
    a.cache.set_peers(&urls).unwrap();
    b.cache.set_peers(&urls).unwrap();
    let key = (0..)
        .map(|i| format!("s{i}"))
        .find(|k| a.cache.owner(k).unwrap() == b.url)
        .unwrap();
    assert_eq!(a.group.get(&key).await.unwrap(), value_of(&key));
    assert_eq!(a.group.stats().peer_loads, 1);
    assert_eq!(a.group.stats().peer_errors, 0);
}

/// A peer that misbehaves in one way for every request.
async fn fake_peer(behaviour: &'static str) -> String {
    let app = axum::Router::new().fallback(move || async move {
        let ok = GetResponse {
            value: Some(vec![b'x'; 4096]),
            minute_qps: None,
        }
        .encode_to_vec();
        match behaviour {
            "oversized" => (StatusCode::OK, ok).into_response(),
            "garbage" => (StatusCode::OK, vec![0xff, 0xff, 0xff, 0x01]).into_response(),
            "unavailable" => (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
            "redirect" => (
                StatusCode::FOUND,
                [(http::header::LOCATION, "http://127.0.0.1:1/elsewhere")],
            )
                .into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                (StatusCode::OK, ok).into_response()
            }
            _ => unreachable!(),
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

use axum::response::IntoResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_peers_are_counted_errors_with_local_fallback() {
    let getter = TestGetter::default();
    let node = Node::start_with(getter.clone(), |b| {
        b.max_response_bytes(1024)
            .peer_timeout(Duration::from_millis(300))
    })
    .await;
    // A port nobody listens on (1 is reserved; nothing binds it).
    let refused = "http://127.0.0.1:1".to_owned();
    let mut peers = vec![refused];
    for b in ["oversized", "garbage", "unavailable", "redirect", "slow"] {
        peers.push(fake_peer(b).await);
    }
    for (i, peer) in peers.iter().enumerate() {
        node.cache.set_peers([&node.url, peer]).unwrap();
        let key = (0..)
            .map(|n| format!("bad{i}-{n}"))
            .find(|k| node.cache.owner(k).as_deref() == Some(peer.as_str()))
            .unwrap();
        assert_eq!(
            node.group.get(&key).await.unwrap(),
            value_of(&key),
            "peer {i}"
        );
        let s = node.group.stats();
        assert_eq!(s.peer_errors, i as u64 + 1, "peer {i} counted");
        assert_eq!(s.local_loads, i as u64 + 1, "peer {i} fell back");
        assert_eq!(s.peer_loads, 0);
    }
    eventually("no flight left", || node.group.in_flight() == 0).await;
}
