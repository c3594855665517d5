//! Test support: small HTTP servers on 127.0.0.1 that answer with their own id, and helpers
//! to build endpoints against them.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use svckit_balancer::{Endpoint, HttpClient};
use svckit_registry::{Discovery, Instance};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The service name every test server registers under.
pub const SERVICE: &str = "echo";

/// An HTTP/1 server on a free loopback port. Every connection task belongs to the server
/// task, so [`TestServer::kill`] closes the listener and every open connection at once.
pub struct TestServer {
    pub id: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Routes: `/id` answers the id after `delay`; `/big` answers 100 kB; `/flaky` answers
    /// 503 when `flaky`, else the id; `/hang` never answers when `flaky`, else the id;
    /// anything else 404.
    pub async fn start(id: &str, delay: Duration) -> Self {
        Self::start_with(id, delay, false).await
    }

    pub async fn start_with(id: &str, delay: Duration, flaky: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (id_s, hits_s) = (id.to_owned(), hits.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let (id, hits) = (id_s.clone(), hits_s.clone());
                        conns.spawn(async move {
                            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                                let (id, hits) = (id.clone(), hits.clone());
                                async move {
                                    hits.fetch_add(1, Ordering::SeqCst);
                                    let resp = match req.uri().path() {
                                        "/id" => {
                                            if !delay.is_zero() {
                                                tokio::time::sleep(delay).await;
                                            }
                                            http::Response::new(Full::new(Bytes::from(id)))
                                        }
                                        "/big" => http::Response::new(Full::new(Bytes::from(vec![b'x'; 100_000]))),
                                        "/flaky" if flaky => http::Response::builder()
                                            .status(503)
                                            .body(Full::new(Bytes::from(id)))
                                            .unwrap(),
                                        "/flaky" => http::Response::new(Full::new(Bytes::from(id))),
                                        "/hang" if flaky => std::future::pending().await,
                                        "/hang" => http::Response::new(Full::new(Bytes::from(id))),
                                        _ => http::Response::builder()
                                            .status(404)
                                            .body(Full::new(Bytes::new()))
                                            .unwrap(),
                                    };
                                    Ok::<_, Infallible>(resp)
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self {
            id: id.to_owned(),
            addr,
            hits,
            task,
        }
    }

    /// Requests served (or started) so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Kills the server: the listener and every connection close, in-flight requests fail.
    pub fn kill(&self) {
        self.task.abort();
    }

    pub fn instance(&self) -> Instance {
        Instance::new(&self.id, SERVICE, self.addr.to_string()).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `n` servers with ids `s0..s{n-1}`.
pub async fn servers(n: usize, delay: Duration) -> Vec<TestServer> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(TestServer::start(&format!("s{i}"), delay).await);
    }
    out
}

pub fn static_discovery(servers: &[TestServer]) -> Discovery {
    Discovery::from_static(servers.iter().map(TestServer::instance))
}

/// A request for the echo service: a path, answered with the server's id.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: &'static str,
    pub method: http::Method,
    pub key: String,
}

impl Call {
    pub fn get(path: &'static str) -> Self {
        Self {
            path,
            method: http::Method::GET,
            key: String::new(),
        }
    }

    pub fn keyed(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ..Self::get("/id")
        }
    }
}

pub fn encode(c: Call) -> Result<http::Request<Bytes>, http::Error> {
    http::Request::builder()
        .method(c.method)
        .uri(c.path)
        .body(Bytes::new())
}

/// The responding server's id; non-2xx statuses are decode errors.
pub fn decode(r: http::Response<Bytes>) -> Result<String, String> {
    if !r.status().is_success() {
        return Err(format!("status {}", r.status()));
    }
    String::from_utf8(r.into_body().to_vec()).map_err(|e| e.to_string())
}

pub fn builder(
    client: &HttpClient,
    discovery: &Discovery,
) -> svckit_balancer::EndpointBuilder<Call, String> {
    client.endpoint(discovery, SERVICE, encode, decode)
}

/// Runs `n` calls with at most `concurrency` in flight; returns every result in order.
pub async fn run(
    endpoint: &Endpoint<Call, String>,
    n: usize,
    concurrency: usize,
    call: impl Fn(usize) -> Call,
) -> Vec<Result<String, svckit_balancer::Error>> {
    use futures_util::stream::{self, StreamExt};
    // Unordered, so a slow call never holds back the start of the next ones.
    let mut out: Vec<(usize, _)> = stream::iter((0..n).map(|i| {
        let fut = endpoint.invoke(call(i));
        async move { (i, fut.await) }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// How many results came from each id (errors are counted under `"error"`).
pub fn tally(
    results: &[Result<String, svckit_balancer::Error>],
) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in results {
        let k = match r {
            Ok(id) => id.clone(),
            Err(_) => "error".to_owned(),
        };
        *m.entry(k).or_default() += 1;
    }
    m
}
