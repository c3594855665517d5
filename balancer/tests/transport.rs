//! The transport on its own: `send` and `get` against a loopback server, and each typed
//! error (invalid URL, connect, body too large, timeout).

use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use svckit_balancer::{HttpClient, Limits, TransportError};

/// `/secret` echoes the `x-secret` header, `/big` answers 100 kB, `/stream` 100 kB chunked
/// (no length declared), `/teapot` a 418 with a 2 kB body, `/slow` answers after 2 s.
async fn server() -> String {
    let app = Router::new()
        .route(
            "/secret",
            get(|h: HeaderMap| async move {
                h.get("x-secret")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 100_000] }))
        .route(
            "/stream",
            get(|| async {
                let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1_000]));
                axum::body::Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/teapot",
            get(|| async { (http::StatusCode::IM_A_TEAPOT, vec![b't'; 2_000]) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn send_carries_headers_and_returns_every_status() {
    let base = server().await;
    let client = HttpClient::builder()
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(4)
        .build();
    let req = http::Request::get(format!("{base}/secret"))
        .header("x-secret", "s3")
        .body(Bytes::new())
        .unwrap();
    let resp = client.send(req, Limits::default()).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    assert_eq!(resp.into_body(), "s3");
    let resp = client
        .get(&format!("{base}/teapot"), Limits::default())
        .await
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::IM_A_TEAPOT);
    assert_eq!(resp.body().len(), 2_000);
}

#[tokio::test]
async fn over_the_limit_names_the_status_and_limit() {
    let base = server().await;
    let client = HttpClient::new();
    let limits = Limits::new(Duration::from_secs(5), 1_000);
    let err = client
        .get(&format!("{base}/big"), limits)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::BodyTooLarge { status, limit: 1_000 } if status == 200),
        "{err:?}"
    );
    let err = client
        .get(&format!("{base}/stream"), limits)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::BodyTooLarge { status, limit: 1_000 } if status == 200),
        "chunked: {err:?}"
    );
    let whole = client
        .get(&format!("{base}/stream"), Limits::default())
        .await
        .unwrap();
    assert!(whole.headers().get("content-length").is_none());
    assert_eq!(whole.body().len(), 100_000);
    let err = client
        .get(&format!("{base}/teapot"), limits)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::BodyTooLarge { status, .. } if status == 418),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the body of a 418 I'm a teapot answer exceeds the limit of 1000 bytes"
    );
}

#[tokio::test]
async fn timeout_connect_and_invalid_url_are_typed() {
    let base = server().await;
    let client = HttpClient::new();
    let err = client
        .get(
            &format!("{base}/slow"),
            Limits::new(Duration::from_millis(100), 1_000),
        )
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        matches!(err, TransportError::Timeout { after } if after == Duration::from_millis(100))
    );

    // A port nothing listens on: refused at connect, so never sent.
    // (Port 1: nothing binds it, where a port just released could be taken again.)
    let addr = "127.0.0.1:1";
    let err = client
        .get(&format!("http://{addr}/x"), Limits::default())
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());

    for bad in ["/relative", "not a url", "https://h:1/"] {
        let err = client.get(bad, Limits::default()).await.unwrap_err();
        assert!(
            matches!(&err, TransportError::InvalidUrl { url, .. } if url == bad),
            "{bad}: {err:?}"
        );
    }
}
