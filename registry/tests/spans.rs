//! The registry's `tracing` spans carry their fields: a registration's service, id and
//! address; a served request's service, method, route template and status, with the handler
//! running inside it.
//!
//! A current-thread runtime, so the subscriber set for the test thread also sees the server's
//! tasks.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use svckit_registry::{Instance, Lifecycle, MemoryRegistry, Registry, RouteLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One span as seen: its name and its fields, as recorded so far.
type Seen = Vec<(&'static str, HashMap<String, String>)>;

/// Keeps every span's name and fields (the values recorded after creation included).
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Seen>>,
    index: Arc<Mutex<HashMap<Id, usize>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        self.index.lock().unwrap().insert(id.clone(), spans.len());
        spans.push((attrs.metadata().name(), fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let Some(&at) = self.index.lock().unwrap().get(id) else {
            return;
        };
        values.record(&mut Fields(&mut self.spans.lock().unwrap()[at].1));
    }
}

impl Capture {
    /// The fields of every span called `name`.
    fn named(&self, name: &str) -> Vec<HashMap<String, String>> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, fields)| fields.clone())
            .collect()
    }
}

fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn get_body(addr: &str, path: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn registration_and_request_spans_carry_their_fields() {
    let capture = Capture::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let registry = MemoryRegistry::new();

    let registration = registry
        .register(Instance::new("r1", "s_reg", "127.0.0.1:7").unwrap())
        .await
        .unwrap();
    assert_eq!(
        capture.named("registration"),
        [fields(&[
            ("service", "s_reg"),
            ("id", "r1"),
            ("addr", "127.0.0.1:7")
        ])]
    );
    registration.deregister().await.unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lifecycle = Arc::new(
        Lifecycle::builder("s_http")
            .id("h1")
            .handle_signals(false)
            .register(&registry, addr)
            .await
            .unwrap(),
    );
    // The handler answers with the name of the span it runs in.
    let app = Router::new()
        .route(
            "/prod/{id}",
            get(|Path(_): Path<u32>| async {
                tracing::Span::current()
                    .metadata()
                    .map_or("none", |m| m.name())
            }),
        )
        .layer(RouteLayer);
    let server = tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move { lifecycle.serve(listener, app).await }
    });
    let addr = addr.to_string();
    let response = get_body(&addr, "/prod/7").await;
    assert!(response.ends_with("\r\n\r\nhttp.server"), "{response}");
    let response = get_body(&addr, "/nope").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    lifecycle.shutdown();
    server.await.unwrap().unwrap();

    assert_eq!(
        capture.named("http.server"),
        [
            fields(&[
                ("service", "s_http"),
                ("method", "GET"),
                ("route", "/prod/{id}"),
                ("status", "200"),
            ]),
            fields(&[
                ("service", "s_http"),
                ("method", "GET"),
                ("route", "unmatched"),
                ("status", "404"),
            ]),
        ]
    );
}
