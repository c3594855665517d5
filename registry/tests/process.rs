//! Real processes and real signals: a child that is SIGKILLed, and a child serving a slow
//! request that gets SIGTERM.
//!
//! The child is this test binary run again with `SVCKIT_REGISTRY_CHILD` set, selecting the
//! `child_main` test; in a normal test run `child_main` does nothing.

use std::process::Stdio;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use etcd_client::Client;
use svckit_registry::{EtcdOptions, EtcdRegistry, Instance, Lifecycle, Registry};
use svckit_testing::process::{self, Signal};
use svckit_testing::Etcd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

const CHILD_ROLE: &str = "SVCKIT_REGISTRY_CHILD";
const CHILD_ETCD: &str = "SVCKIT_REGISTRY_CHILD_ETCD";
const KILL_TTL: Duration = Duration::from_secs(2);

/// The child's entry point (a no-op unless run as a child).
#[test]
fn child_main() {
    let Ok(role) = std::env::var(CHILD_ROLE) else {
        return;
    };
    let endpoint = std::env::var(CHILD_ETCD).expect("the etcd endpoint");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match role.as_str() {
            "register" => child_register(endpoint).await,
            "serve" => child_serve(endpoint, Duration::from_millis(1500)).await,
            "serve_stuck" => child_serve(endpoint, Duration::from_secs(60)).await,
            other => panic!("unknown child role {other}"),
        }
    });
}

async fn child_register(endpoint: String) {
    let registry = EtcdRegistry::connect(EtcdOptions::new([endpoint]).ttl(KILL_TTL))
        .await
        .unwrap();
    let reg = registry
        .register(Instance::with_random_id("killme", "127.0.0.1:1").unwrap())
        .await
        .unwrap();
    println!("READY {}", reg.key());
    tokio::time::sleep(Duration::from_secs(60)).await;
    panic!("the child was not killed");
}

async fn child_serve(endpoint: String, slow: Duration) {
    // A long TTL: the key disappearing within 1 s can only be the deregistration.
    let registry = EtcdRegistry::connect(EtcdOptions::new([endpoint]).ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lifecycle = Lifecycle::register(&registry, "slowservice", listener.local_addr().unwrap())
        .await
        .unwrap();
    let app = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(move || async move {
                println!("SLOW_STARTED");
                tokio::time::sleep(slow).await;
                "done"
            }),
        );
    println!(
        "READY {} {}",
        lifecycle.instance().key("/services"),
        lifecycle.instance().addr()
    );
    match lifecycle.serve(listener, app).await {
        Ok(()) => {}
        Err(svckit_registry::Error::ShutdownForced { in_flight }) => {
            println!("FORCED in_flight={in_flight}");
            return;
        }
        Err(other) => panic!("serve failed: {other}"),
    }
    println!("EXITING in_flight={}", lifecycle.in_flight());
}

fn spawn_child(role: &str, etcd: &Etcd) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_main", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env(CHILD_ETCD, etcd.endpoint())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads the child's stdout until a line starting with `prefix`; returns its other words.
async fn expect_line(lines: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> Vec<String> {
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest prints `test child_main ... ` without a newline before the child's output.
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..]
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
            }
        }
        panic!("the child ended before printing {prefix:?}");
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("no {prefix:?} from the child within 20 s"))
}

fn signal(child: &Child, sig: Signal) {
    process::signal(child.id().expect("the child runs"), sig);
}

async fn present(c: &mut Client, key: &str) -> bool {
    c.get(key, None).await.unwrap().count() == 1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_child_disappears_within_ttl_plus_two_seconds() {
    let etcd = Etcd::start();
    let (mut child, mut lines) = spawn_child("register", &etcd);
    let key = expect_line(&mut lines, "READY ").await.remove(0);
    let mut c = Client::connect([etcd.endpoint()], None).await.unwrap();
    assert!(present(&mut c, &key).await);

    signal(&child, Signal::Kill);
    let killed = Instant::now();
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    while present(&mut c, &key).await {
        assert!(
            killed.elapsed() <= KILL_TTL + Duration::from_secs(2),
            "key still present {:?} after SIGKILL",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = killed.elapsed();
    assert!(
        gone <= KILL_TTL + Duration::from_secs(2),
        "gone after {gone:?}"
    );
}

/// A child serving role `role`, registered, with one `/slow` request in flight.
struct Serving {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    conn: tokio::net::TcpStream,
    client: Client,
    key: String,
}

async fn serving_a_slow_request(role: &str, etcd: &Etcd) -> Serving {
    let (child, mut lines) = spawn_child(role, etcd);
    let ready = expect_line(&mut lines, "READY ").await;
    let (key, addr) = (ready[0].clone(), ready[1].clone());
    let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
    assert!(present(&mut client, &key).await);
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    expect_line(&mut lines, "SLOW_STARTED").await;
    Serving {
        child,
        lines,
        conn,
        client,
        key,
    }
}

/// Opens a connection to `addr` and sends `bytes`.
async fn connect_and_send(addr: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    conn
}

/// Sends SIGTERM and waits for the key to go, failing past `limit`; returns how long it took.
async fn sigterm_until_gone(child: &Child, c: &mut Client, key: &str, limit: Duration) -> Duration {
    signal(child, Signal::Term);
    let termed = Instant::now();
    while present(c, key).await {
        assert!(
            termed.elapsed() <= limit,
            "key still present {:?} after SIGTERM",
            termed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    termed.elapsed()
}

/// The slow request on `conn` is answered in full, then the child says it ends with nothing
/// in flight and exits 0.
async fn answered_and_exited_0(
    conn: &mut tokio::net::TcpStream,
    lines: &mut Lines<BufReader<ChildStdout>>,
    child: &mut Child,
) {
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("done"), "{response}");
    let exit = expect_line(lines, "EXITING ").await;
    assert_eq!(exit, ["in_flight=0"]);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "child exit status");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_deregisters_at_once_and_finishes_the_request_in_flight() {
    let etcd = Etcd::start();
    let Serving {
        mut child,
        mut lines,
        mut conn,
        mut client,
        key,
    } = serving_a_slow_request("serve", &etcd).await;
    // The lease lives 30 s: gone within 3 s is the deregistration, not an expiry.
    let gone = sigterm_until_gone(&child, &mut client, &key, Duration::from_secs(3)).await;

    answered_and_exited_0(&mut conn, &mut lines, &mut child).await;
    assert!(gone <= Duration::from_secs(3), "gone after {gone:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_stops_the_drain_at_once() {
    let etcd = Etcd::start();
    let Serving {
        mut child,
        mut lines,
        conn: _conn,
        mut client,
        key,
    } = serving_a_slow_request("serve_stuck", &etcd).await;
    // First SIGTERM: deregistered, then draining the 60 s request (30 s grace by default).
    sigterm_until_gone(&child, &mut client, &key, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.try_wait().unwrap().is_none(), "still draining");

    // Second SIGTERM: out at once, saying what it left behind.
    signal(&child, Signal::Term);
    let forced = Instant::now();
    let left = expect_line(&mut lines, "FORCED ").await;
    assert_eq!(left, ["in_flight=1"]);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the child exits after the second signal")
        .unwrap();
    assert!(status.success(), "child exit status {status:?}");
    assert!(
        forced.elapsed() < Duration::from_secs(5),
        "took {:?}",
        forced.elapsed()
    );
}

/// Reads until the server closes `conn` (EOF or reset), failing past `limit`.
async fn closed_within(conn: &mut tokio::net::TcpStream, limit: Duration) {
    let mut sink = Vec::new();
    let read = tokio::time::timeout(limit, conn.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "connection still open after {limit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_idle_and_slowloris_connections_and_waits_only_for_the_request_in_flight() {
    let etcd = Etcd::start();
    let Serving {
        mut child,
        mut lines,
        mut conn,
        mut client,
        key,
    } = serving_a_slow_request("serve", &etcd).await;
    let addr = conn.peer_addr().unwrap().to_string();
    // 100 idle connections: half kept alive after one answered request, half never sent a byte.
    let mut idle = Vec::new();
    for i in 0..100 {
        let c = if i % 2 == 0 {
            let mut c = connect_and_send(&addr, b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n").await;
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            c
        } else {
            tokio::net::TcpStream::connect(&addr).await.unwrap()
        };
        c.set_nodelay(true).unwrap();
        idle.push(c);
    }
    // 10 slowloris connections, half-way through their request head.
    let mut slow = Vec::new();
    for _ in 0..10 {
        slow.push(connect_and_send(&addr, b"GET /fast HTTP/1.1\r\nHo").await);
    }

    let termed = Instant::now();
    let gone = sigterm_until_gone(&child, &mut client, &key, Duration::from_secs(3)).await;
    // The idle and half-sent connections are closed at once, not after the grace timeout.
    for c in idle.iter_mut().chain(slow.iter_mut()) {
        closed_within(c, Duration::from_secs(1)).await;
    }
    let closed = termed.elapsed();
    answered_and_exited_0(&mut conn, &mut lines, &mut child).await;
    let exited = termed.elapsed();
    // The slow request takes 1.5 s from its start; the drain waits for it and nothing else.
    assert!(
        exited < Duration::from_secs(3),
        "exited {exited:?} after SIGTERM"
    );
    println!(
        "FAULT scenario=sigterm_idle_slowloris idle=100 slowloris=10 in_flight=1 \
         key_gone_ms={} connections_closed_ms={} exit_ms={} exit_code=0",
        gone.as_millis(),
        closed.as_millis(),
        exited.as_millis()
    );
}
