//! `Lifecycle::serve` against real sockets: slow and idle clients are cut off, the shutdown
//! closes idle connections at once and waits only for requests in flight.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use svckit_registry::{Error, Lifecycle, LifecycleBuilder, MemoryRegistry, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

fn app() -> Router {
    Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "done"
            }),
        )
}

/// Registers and serves `app()` with `options`; returns the lifecycle, the address and the
/// server task.
async fn start(
    builder: LifecycleBuilder,
    options: ServeOptions,
) -> (
    std::sync::Arc<Lifecycle>,
    String,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let registry = MemoryRegistry::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lifecycle = std::sync::Arc::new(
        builder
            .handle_signals(false)
            .serve_options(options)
            .register(&registry, addr)
            .await
            .unwrap(),
    );
    let serving = lifecycle.clone();
    let server = tokio::spawn(async move { serving.serve(listener, app()).await });
    (lifecycle, addr.to_string(), server)
}

/// Reads until the server closes `conn`; returns how long that took, failing past `limit`.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(limit, conn.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "connection still open after {limit:?}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_client_is_cut_off_after_the_header_timeout() {
    let options = ServeOptions::new().header_read_timeout(Duration::from_secs(1));
    let (lifecycle, addr, server) = start(Lifecycle::builder("svc"), options).await;
    // Timed from before the connect: the server's clock starts no earlier.
    let started = Instant::now();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    // One header byte every 100 ms: the head never completes.
    let head =
        b"GET /fast HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for byte in head {
        if conn.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        // Any answer (EOF, a reset, a 408) means the server gave up on the head.
        if tokio::time::timeout(Duration::from_millis(100), conn.read(&mut buf))
            .await
            .is_ok()
        {
            cut = true;
            break;
        }
    }
    let after = started.elapsed();
    assert!(cut, "still connected after {after:?}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "cut off after {after:?}, header timeout 1 s"
    );
    lifecycle.shutdown();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    // A client that connects and sends nothing is bounded by the idle timeout.
    let options = ServeOptions::new()
        .header_read_timeout(Duration::from_secs(30))
        .idle_timeout(Duration::from_millis(500));
    let (lifecycle, addr, server) = start(Lifecycle::builder("svc"), options).await;
    // Timed from before the connect: the server's clock starts no earlier.
    let started = Instant::now();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
    lifecycle.shutdown();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connection_cap_holds_new_connections_until_one_closes() {
    let options = ServeOptions::new().max_connections(1);
    let (lifecycle, addr, server) = start(Lifecycle::builder("svc"), options).await;
    let mut first = TcpStream::connect(&addr).await.unwrap();
    first
        .write_all(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The second connection is accepted by the kernel but not served while the first is open.
    let mut second = TcpStream::connect(&addr).await.unwrap();
    second
        .write_all(b"GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waited.is_err(), "served beyond the cap of 1 connection");
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf))
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    lifecycle.shutdown();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_idle_connections_and_waits_only_for_the_request_in_flight() {
    let (lifecycle, addr, server) = start(Lifecycle::builder("svc"), ServeOptions::new()).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /fast HTTP/1.1\r\nHo").await.unwrap();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    until_in_flight(&lifecycle, 1).await;

    let started = Instant::now();
    lifecycle.shutdown();
    for c in idle.iter_mut().chain(std::iter::once(&mut half)) {
        closed_within(c, Duration::from_millis(500)).await;
    }
    let mut response = String::new();
    slow.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("done"), "{response}");
    server.await.unwrap().unwrap();
    let took = started.elapsed();
    // The 800 ms request started before the shutdown; the 30 s grace is not waited.
    assert!(took < Duration::from_secs(2), "drain took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grace_expiry_counts_the_requests_it_waited_for() {
    let builder = Lifecycle::builder("svc").grace(Duration::from_millis(200));
    let (lifecycle, addr, server) = start(builder, ServeOptions::new()).await;
    let _idle = TcpStream::connect(&addr).await.unwrap();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    until_in_flight(&lifecycle, 1).await;
    lifecycle.shutdown();
    match server.await.unwrap() {
        Err(e @ Error::GraceExpired { in_flight: 1, .. }) => {
            assert_eq!(
                e.to_string(),
                "grace timeout of 200ms expired with 1 request(s) still in flight"
            );
        }
        other => panic!("expected GraceExpired with 1 request in flight, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_http2_with_prior_knowledge() {
    let (lifecycle, addr, server) = start(Lifecycle::builder("svc"), ServeOptions::new()).await;
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/fast"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"fast");
    drop(send);
    lifecycle.shutdown();
    server.await.unwrap().unwrap();
    driver.abort();
}

/// One GET over a new connection; `None` when the connection is refused or cut.
async fn get_fast(addr: &str) -> Option<String> {
    let mut conn = TcpStream::connect(addr).await.ok()?;
    conn.write_all(b"GET /fast HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.ok()?;
    Some(answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn linger_serves_new_connections_after_deregistering_then_stops() {
    use svckit_registry::Registry;
    let registry = MemoryRegistry::new();
    let discovery = registry.discovery();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lifecycle = std::sync::Arc::new(
        Lifecycle::builder("svc")
            .handle_signals(false)
            .linger(Duration::from_secs(2))
            .register(&registry, addr)
            .await
            .unwrap(),
    );
    let serving = lifecycle.clone();
    let server = tokio::spawn(async move { serving.serve(listener, app()).await });
    let addr = addr.to_string();
    while discovery.instances("svc").is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let started = Instant::now();
    lifecycle.shutdown();
    while !discovery.instances("svc").is_empty() {
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "not deregistered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Deregistered, and still serving new connections while it lingers.
    let answer = get_fast(&addr).await.expect("served while lingering");
    assert!(answer.ends_with("fast"), "{answer}");
    assert!(!server.is_finished());
    server.await.unwrap().unwrap();
    let stopped = started.elapsed();
    assert!(
        stopped >= Duration::from_secs(2) && stopped < Duration::from_secs(5),
        "stopped {stopped:?} after the shutdown, linger 2 s"
    );
    assert!(
        get_fast(&addr).await.is_none(),
        "still accepting after the linger"
    );
}

/// Waits (up to 5 s) until `n` requests are in flight: a connection's request is counted
/// once the server has accepted it and read its head, which a loaded machine may delay.
async fn until_in_flight(lifecycle: &Lifecycle, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while lifecycle.in_flight() != n {
        assert!(
            Instant::now() < deadline,
            "{} requests in flight, not {n}",
            lifecycle.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
