//! Test support for the observability tests: axum servers on 127.0.0.1 registered in a real
//! etcd, and an Endpoint builder over them.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use svckit_balancer::{EndpointBuilder, HttpClient, RoundRobin};
use svckit_registry::{Discovery, EtcdOptions, EtcdRegistry, Instance, Registration, Registry};
use svckit_testing::Etcd;
use tokio::sync::Notify;

/// An address nothing listens on (port 1): a connect to it is refused.
pub const DEAD: &str = "127.0.0.1:1";

/// Holds `/gate` requests until the test opens it.
#[derive(Default)]
pub struct Gate {
    pub entered: Notify,
    pub open: Notify,
}

/// An axum server on 127.0.0.1. `/ok` answers its id; `/fail` a 500; `/busy` a 503 when
/// `busy`, else its id; `/gate` its id once the test opens the gate; `/traceparent` the
/// request's `traceparent` header (empty without); anything else a 404.
pub struct Server {
    pub addr: SocketAddr,
    pub gate: Arc<Gate>,
    /// 503 answers given.
    unavailable: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(id: &'static str, busy: bool) -> Self {
        let gate = Arc::new(Gate::default());
        let unavailable = Arc::new(AtomicUsize::new(0));
        let (g, u) = (gate.clone(), unavailable.clone());
        let app = Router::new()
            .route("/ok", get(move || async move { id }))
            .route(
                "/fail",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
            )
            .route(
                "/busy",
                get(move || async move {
                    if busy {
                        u.fetch_add(1, Ordering::SeqCst);
                        (StatusCode::SERVICE_UNAVAILABLE, "busy")
                    } else {
                        (StatusCode::OK, id)
                    }
                }),
            )
            .route(
                "/traceparent",
                get(|headers: axum::http::HeaderMap| async move {
                    headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                }),
            )
            .route(
                "/gate",
                get(move || async move {
                    g.entered.notify_one();
                    g.open.notified().await;
                    id
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            gate,
            unavailable,
            task,
        }
    }

    pub fn unavailable(&self) -> usize {
        self.unavailable.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real etcd and a registry client, with instances `(id, addr)` of `service` registered.
pub struct Cluster {
    pub service: &'static str,
    pub discovery: Discovery,
    _registrations: Vec<Registration>,
    _registry: EtcdRegistry,
    _etcd: Etcd,
}

impl Cluster {
    pub async fn start(service: &'static str, instances: &[(&str, String)]) -> Self {
        let etcd = tokio::task::spawn_blocking(Etcd::start).await.unwrap();
        let registry = EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
            .await
            .unwrap();
        let mut registrations = Vec::new();
        for (id, addr) in instances {
            let instance = Instance::new(*id, service, addr.as_str()).unwrap();
            registrations.push(registry.register(instance).await.unwrap());
        }
        let discovery = registry.discovery();
        let mut watch = discovery.watch(service).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while watch.mark_seen().len() != instances.len() {
                watch.changed().await.unwrap();
            }
        })
        .await
        .expect("discovery shows every instance");
        Self {
            service,
            discovery,
            _registrations: registrations,
            _registry: registry,
            _etcd: etcd,
        }
    }

    /// An Endpoint builder: the request is a path, the answer the body of a 2xx (other
    /// statuses are decode errors); round robin over the instances in id order.
    pub fn endpoint(
        &self,
        client: &HttpClient,
    ) -> EndpointBuilder<&'static str, String, RoundRobin> {
        client
            .endpoint(
                &self.discovery,
                self.service,
                |path: &'static str| http::Request::get(path).body(Bytes::new()),
                |r: http::Response<Bytes>| {
                    if !r.status().is_success() {
                        return Err(format!("status {}", r.status()));
                    }
                    String::from_utf8(r.into_body().to_vec()).map_err(|e| e.to_string())
                },
            )
            .picker(RoundRobin::new())
    }
}
