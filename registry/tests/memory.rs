//! The in-memory registry under paused Tokio time (deterministic TTLs and backoff), and the
//! lifecycle's shutdown order in process.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use svckit_registry::{
    DiscoveryState, Error, Instance, Lifecycle, MemoryRegistry, RegistrationState, Registry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(start_paused = true)]
async fn keepalive_holds_the_key_for_many_ttls_and_it_expires_one_ttl_after_drop() {
    let registry = MemoryRegistry::with_ttl(Duration::from_secs(3));
    let discovery = registry.discovery();
    let reg = registry
        .register(Instance::new("a", "svc", "127.0.0.1:1").unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(discovery.instances("svc").len(), 1);
    assert_eq!(reg.recoveries(), 0);
    drop(reg);
    tokio::time::sleep(Duration::from_millis(1900)).await;
    assert_eq!(discovery.instances("svc").len(), 1, "lease still running");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        discovery.instances("svc").is_empty(),
        "expired within the TTL"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deleted_key_is_put_back_at_once() {
    let registry = MemoryRegistry::with_ttl(Duration::from_secs(30));
    let other = registry.client(Duration::from_secs(30));
    let mut watch = other.discovery().watch("svc").unwrap();
    let reg = registry
        .register(Instance::new("a", "svc", "127.0.0.1:1").unwrap())
        .await
        .unwrap();
    assert_eq!(watch.changed().await.unwrap().len(), 1);
    let mut states = reg.state_watch();
    registry.delete_raw(reg.key());
    let deleted_at = tokio::time::Instant::now();
    // Back without waiting for a keepalive (every TTL/3 = 10 s) to notice.
    while !(reg.recoveries() == 1 && watch.snapshot().len() == 1) {
        assert!(
            deleted_at.elapsed() < Duration::from_millis(500),
            "not back within 500 ms"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*states.borrow_and_update(), RegistrationState::Registered);
    watch.mark_seen();
    reg.deregister().await.unwrap();
    assert!(watch.changed().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn compaction_and_malformed_entries_in_memory() {
    let registry = MemoryRegistry::new();
    registry.put_raw("/services/ok/svc", "127.0.0.1:1");
    registry.put_raw("/services/a-b/svc", "127.0.0.1:1");
    registry.put_raw("/services/x", "127.0.0.1:1");
    let discovery = registry.discovery();
    let watch = discovery.watch("svc").unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(discovery.state(), DiscoveryState::Live);
    assert_eq!(discovery.stats().malformed_skipped, 2);
    assert_eq!(watch.snapshot().len(), 1);
    // The reconcile re-lists every 30 s.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(discovery.stats().relists, 2);
    assert_eq!(registry.revision(), 3);
}

async fn slow_app(lifecycle: &Lifecycle, delay: Duration) -> Router {
    Router::new()
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(delay).await;
                "done"
            }),
        )
        .layer(lifecycle.layer())
}

async fn start_request(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_deregisters_first_then_drains_the_request_in_flight() {
    let registry = MemoryRegistry::new();
    let discovery = registry.discovery();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lifecycle = Lifecycle::builder("web")
        .id("web1")
        .handle_signals(false)
        .register(&registry, addr)
        .await
        .unwrap();
    assert_eq!(lifecycle.instance().addr(), addr.to_string());
    assert_eq!(
        lifecycle.registration_state(),
        RegistrationState::Registered
    );
    let app = slow_app(&lifecycle, Duration::from_millis(800)).await;

    let mut conn = start_request(addr).await;
    let server = {
        let signal = lifecycle.shutdown_signal();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
        }
    };
    let drain = lifecycle.drain(server);
    tokio::pin!(drain);
    // Serve until the request is in flight.
    tokio::select! {
        _ = &mut drain => panic!("the server stopped early"),
        () = async { while lifecycle.in_flight() == 0 { tokio::time::sleep(Duration::from_millis(5)).await } } => {}
    }
    assert_eq!(discovery.instances("web").len(), 1);
    lifecycle.shutdown();
    let served = tokio::time::timeout(Duration::from_secs(5), &mut drain)
        .await
        .expect("drained in time");
    assert!(matches!(served, Ok(Ok(()))), "{served:?}");
    // Deregistered, and the request in flight was answered.
    assert!(discovery.instances("web").is_empty());
    assert_eq!(lifecycle.in_flight(), 0);
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("done"));
}

type Drain = tokio::task::JoinHandle<Result<std::io::Result<()>, Error>>;

/// A server behind a lifecycle with `grace`, serving one 30 s request that is in flight, its
/// drain running in a task (with the connection kept open by the returned stream).
async fn serving_a_stuck_request(
    grace: Duration,
) -> (MemoryRegistry, Arc<Lifecycle>, Drain, tokio::net::TcpStream) {
    let registry = MemoryRegistry::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lifecycle = Lifecycle::builder("web")
        .grace(grace)
        .handle_signals(false)
        .register(&registry, addr)
        .await
        .unwrap();
    let lifecycle = Arc::new(lifecycle);
    let app = slow_app(&lifecycle, Duration::from_secs(30)).await;
    let conn = start_request(addr).await;
    let drain = {
        let lifecycle = lifecycle.clone();
        let signal = lifecycle.shutdown_signal();
        tokio::spawn(async move {
            lifecycle
                .drain(axum::serve(listener, app).with_graceful_shutdown(signal))
                .await
        })
    };
    while lifecycle.in_flight() == 0 {
        assert!(!drain.is_finished(), "the server stopped early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (registry, lifecycle, drain, conn)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grace_timeout_bounds_the_drain() {
    let (registry, lifecycle, drain, _conn) =
        serving_a_stuck_request(Duration::from_millis(200)).await;
    lifecycle.shutdown();
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("the grace timeout ends the drain")
        .unwrap();
    assert!(
        matches!(out, Err(Error::GraceExpired { in_flight: 1, grace }) if grace == Duration::from_millis(200)),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(registry.discovery().instances("web").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn forcing_stops_a_drain_at_once() {
    let (registry, lifecycle, mut drain, _conn) =
        serving_a_stuck_request(Duration::from_secs(60)).await;
    lifecycle.shutdown();
    // Draining now, with a 60 s grace and a 30 s request in flight: still running.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut drain)
            .await
            .is_err(),
        "the drain waits for the request in flight"
    );
    assert!(registry.discovery().instances("web").is_empty());
    lifecycle.force();
    let out = tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("forcing ends the drain at once")
        .unwrap();
    assert!(
        matches!(out, Err(Error::ShutdownForced { in_flight: 1 })),
        "{out:?}"
    );
}
