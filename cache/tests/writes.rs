//! Writes over the wire (mailgun/groupcache's PUT and DELETE, `GetResponse.expire`) between
//! real nodes on loopback, and hostile write requests.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use common::{cluster, eventually, hot_cluster, owner_index, value_of, Node, TestGetter, GROUP};
use http::{Method, Request, StatusCode};
use prost::Message;
use svckit_balancer::{HttpClient, Limits};
use svckit_cache::SECRET_HEADER;
use tower::ServiceExt;

/// mailgun/groupcache's messages, declared independently of the crate's own.
#[derive(Clone, PartialEq, prost::Message)]
struct GetResponse {
    #[prost(bytes = "vec", optional, tag = "1")]
    value: Option<Vec<u8>>,
    #[prost(double, optional, tag = "2")]
    minute_qps: Option<f64>,
    #[prost(int64, optional, tag = "3")]
    expire: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SetRequest {
    #[prost(string, optional, tag = "1")]
    group: Option<String>,
    #[prost(string, optional, tag = "2")]
    key: Option<String>,
    #[prost(bytes = "vec", optional, tag = "3")]
    value: Option<Vec<u8>>,
    #[prost(int64, optional, tag = "4")]
    expire: Option<i64>,
}

fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// Sends a request to a node over its socket; returns status and body.
async fn send(
    node: &Node,
    method: Method,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", node.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Bytes::from(body)).unwrap();
    let resp = HttpClient::new()
        .send(req, Limits::new(Duration::from_secs(5), 1 << 20))
        .await
        .unwrap();
    (resp.status(), resp.into_body())
}

/// A key owned by node `i`.
fn key_owned_by(nodes: &[Node], i: usize, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|k| owner_index(nodes, k) == i)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_reaches_the_owner_and_the_hot_cache_of_the_setter() {
    let getter = TestGetter::default();
    let nodes = cluster(&getter).await;
    let key = key_owned_by(&nodes, 1, "set");
    nodes[0]
        .group
        .set(&key, "from node 0", None, true)
        .await
        .unwrap();
    assert_eq!(nodes[1].group.get(&key).await.unwrap(), "from node 0");
    assert_eq!(nodes[0].group.get(&key).await.unwrap(), "from node 0");
    assert_eq!(nodes[0].group.stats().peer_loads, 0, "node 0 kept it hot");
    assert_eq!(nodes[2].group.get(&key).await.unwrap(), "from node 0");
    assert_eq!(
        nodes[2].group.stats().peer_loads,
        1,
        "fetched from the owner"
    );
    // Without `hot`, the setter drops its own copy and reads the owner's.
    nodes[0]
        .group
        .set(&key, "second", None, false)
        .await
        .unwrap();
    assert_eq!(nodes[0].group.get(&key).await.unwrap(), "second");
    assert_eq!(nodes[0].group.stats().peer_loads, 1);
    assert_eq!(getter.total(), 0, "no getter call anywhere");
    // An owner that cannot be reached fails the set, and nothing is stored here.
    let mut nodes = nodes;
    nodes[1].stop_server().await;
    let err = nodes[0]
        .group
        .set(&key, "lost", None, true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, svckit_cache::Error::Peer { op: "set", .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remove_reaches_every_node_and_reports_the_peers_that_failed() {
    let getter = TestGetter::default();
    let mut nodes = hot_cluster(&getter, 1).await;
    let key = key_owned_by(&nodes, 2, "rm");
    for n in &nodes {
        assert_eq!(n.group.get(&key).await.unwrap(), value_of(&key));
    }
    assert_eq!(nodes[0].group.stats().hot_cache.items, 1);
    assert_eq!(getter.calls_of(&key), 1);
    let removed = nodes[0].group.remove(&key).await.unwrap();
    assert!(removed.is_complete(), "{:?}", removed.failed());
    for n in &nodes {
        let s = n.group.stats();
        assert_eq!(s.main_cache.items + s.hot_cache.items, 0, "{}", n.url);
    }
    for n in &nodes {
        assert_eq!(n.group.get(&key).await.unwrap(), value_of(&key));
    }
    assert_eq!(getter.calls_of(&key), 2, "the owner loaded it once more");
    // A peer that is down is reported; the others still remove.
    nodes[1].stop_server().await;
    let removed = nodes[0].group.remove(&key).await.unwrap();
    let failed: Vec<&str> = removed.failed().iter().map(|e| e.peer()).collect();
    assert_eq!(failed, [nodes[1].url.as_str()]);
    assert_eq!(nodes[2].group.stats().main_cache.items, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_travels_with_the_value_and_hot_copies_expire_with_it() {
    let getter = TestGetter::default();
    *getter.ttl.lock().unwrap() = Some(Duration::from_secs(5));
    let nodes = hot_cluster(&getter, 1).await;
    let key = key_owned_by(&nodes, 1, "ttl");
    let before = unix_nanos(SystemTime::now());
    assert_eq!(nodes[0].group.get(&key).await.unwrap(), value_of(&key));
    // The owner's answer carries the expiry (field 3, Unix nanoseconds).
    let (status, body) = send(
        &nodes[1],
        Method::GET,
        &format!("/_groupcache/{GROUP}/{key}"),
        vec![],
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let msg = GetResponse::decode(body).unwrap();
    let expire = msg.expire.unwrap();
    assert!(
        expire >= before + 5_000_000_000 && expire < before + 8_000_000_000,
        "{expire} vs {before}"
    );
    assert_eq!(msg.value.unwrap(), value_of(&key));
    assert_eq!(getter.calls_of(&key), 1);
    // Until the instant, node 0 answers from its hot copy; after it, both reload once.
    let expire_at = UNIX_EPOCH + Duration::from_nanos(expire as u64);
    assert_eq!(nodes[0].group.get(&key).await.unwrap(), value_of(&key));
    assert_eq!(nodes[0].group.stats().peer_loads, 1);
    tokio::time::sleep(expire_at.duration_since(SystemTime::now()).unwrap()).await;
    assert_eq!(nodes[0].group.get(&key).await.unwrap(), value_of(&key));
    assert_eq!(nodes[0].group.stats().peer_loads, 2, "the hot copy expired");
    assert_eq!(getter.calls_of(&key), 2, "and so did the owner's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_put_and_delete_on_the_wire() {
    let getter = TestGetter::default();
    let node = Node::start(getter.clone()).await;
    node.cache.set_peers([&node.url]).unwrap();
    let expire = unix_nanos(SystemTime::now()) + 60_000_000_000;
    let body = SetRequest {
        group: Some(GROUP.into()),
        key: Some("a b/c".into()),
        value: Some(b"put value".to_vec()),
        expire: Some(expire),
    }
    .encode_to_vec();
    let path = format!("/_groupcache/{GROUP}/a%20b%2Fc");
    let (status, resp) = send(&node, Method::PUT, &path, body, &[]).await;
    assert_eq!((status, resp.len()), (StatusCode::OK, 0));
    assert_eq!(node.group.get("a b/c").await.unwrap(), "put value");
    let (status, resp) = send(&node, Method::GET, &path, vec![], &[]).await;
    assert_eq!(status, StatusCode::OK);
    let msg = GetResponse::decode(resp).unwrap();
    assert_eq!(
        (msg.value.unwrap(), msg.expire),
        (b"put value".to_vec(), Some(expire))
    );
    let (status, resp) = send(&node, Method::DELETE, &path, vec![], &[]).await;
    assert_eq!((status, resp.len()), (StatusCode::OK, 0));
    assert_eq!(node.group.get("a b/c").await.unwrap(), value_of("a b/c"));
    assert_eq!(getter.total(), 1);
    // A value that never expires is sent without field 3 (golang/groupcache's bytes).
    let (_, resp) = send(&node, Method::GET, &path, vec![], &[]).await;
    assert_eq!(GetResponse::decode(resp).unwrap().expire, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_writes_get_4xx_and_change_nothing() {
    let getter = TestGetter::default();
    let node = Node::start_with(getter.clone(), |b| b.max_request_bytes(4096)).await;
    node.cache.set_peers([&node.url]).unwrap();
    let path = format!("/_groupcache/{GROUP}/k");
    let set = |key: Option<&str>, len: usize| {
        SetRequest {
            group: Some(GROUP.into()),
            key: key.map(Into::into),
            value: Some(vec![7; len]),
            expire: None,
        }
        .encode_to_vec()
    };
    let cases: Vec<(Method, String, Vec<u8>, StatusCode)> = vec![
        (
            Method::PUT,
            path.clone(),
            set(Some("k"), 8192),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::PUT,
            path.clone(),
            vec![0xff, 0xff, 0xff],
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            path.clone(),
            vec![0x0a, 0x10, b'g'],
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            path.clone(),
            set(None, 3),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            path.clone(),
            set(Some(&"k".repeat(1025)), 3),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/_groupcache/nope/k".into(),
            set(Some("k"), 3),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/_groupcache/nope/k".into(),
            vec![],
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/_groupcache/demo/%zz".into(),
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PATCH,
            path.clone(),
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, body, want) in cases {
        let (status, _) = send(&node, method.clone(), &path, body, &[]).await;
        assert_eq!(status, want, "{method} {path}");
    }
    // Without a declared length, the body is cut at the limit all the same.
    let chunks = futures_util::stream::iter(
        (0..30).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 200]))),
    );
    let req = Request::put(&path).body(Body::from_stream(chunks)).unwrap();
    let resp = node.cache.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let s = node.group.stats();
    assert_eq!((s.main_cache.items, getter.total()), (0, 0));
    assert_eq!(
        node.group.get("k").await.unwrap(),
        value_of("k"),
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_require_the_shared_secret_when_one_is_set() {
    let getter = TestGetter::default();
    let a = Node::start_with(getter.clone(), |b| b.shared_secret("s3cret")).await;
    let b = Node::start_with(getter.clone(), |b| b.shared_secret("s3cret")).await;
    for n in [&a, &b] {
        n.cache.set_peers([&a.url, &b.url]).unwrap();
    }
    let path = format!("/_groupcache/{GROUP}/k");
    let body = SetRequest {
        group: Some(GROUP.into()),
        key: Some("k".into()),
        value: Some(b"forged".to_vec()),
        expire: None,
    }
    .encode_to_vec();
    for (method, body) in [(Method::PUT, body.clone()), (Method::DELETE, vec![])] {
        let (status, _) = send(&a, method.clone(), &path, body.clone(), &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method}");
        let wrong = [(SECRET_HEADER, "guess")];
        let (status, _) = send(&a, method.clone(), &path, body, &wrong).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method}");
    }
    assert_eq!(a.group.stats().main_cache.items, 0);
    // Between the two nodes, with the secret, sets and removes go through.
    let key = (0..)
        .map(|i| format!("s{i}"))
        .find(|k| a.cache.owner(k).as_deref() == Some(b.url.as_str()))
        .unwrap();
    a.group.set(&key, "ok", None, false).await.unwrap();
    assert_eq!(b.group.get(&key).await.unwrap(), "ok");
    assert!(a.group.remove(&key).await.unwrap().is_complete());
    eventually("removed on the owner", || {
        b.group.stats().main_cache.items == 0
    })
    .await;
}
