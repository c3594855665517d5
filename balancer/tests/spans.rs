//! The balancer's spans: an `invoke` span per call holding an `attempt` span per attempt,
//! with their fields, as a `tracing` layer records them. Calls go to axum servers on
//! loopback registered in a real etcd.

mod cluster;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::{Cluster, Server, DEAD};
use svckit_balancer::{HttpClient, RetryPolicy};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A span as the [`Spans`] layer saw it.
#[derive(Debug, Clone)]
struct SpanSeen {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

/// A `tracing` layer that keeps the balancer's spans with their fields, including those
/// recorded after the span was created.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanSeen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !attrs.metadata().target().starts_with("svckit_balancer") {
            return;
        }
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(SpanSeen {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            parent,
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        // Ids are reused once a span closes: the latest span with the id is this one.
        if let Some(s) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Fields(&mut s.fields));
        }
    }
}

impl Spans {
    fn take(&self) -> Vec<SpanSeen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn fields(s: &SpanSeen, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| s.fields.get(*n).cloned().unwrap_or_default())
        .collect()
}

// The only test of this binary: its subscriber is the global one, set before any span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoke_span_holds_one_attempt_span_per_attempt_with_their_outcomes() {
    let spans = Spans::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
        .unwrap();
    let live = Server::start("b_live", false).await;
    let live_addr = live.addr.to_string();
    let c = Cluster::start(
        "metrics_spans",
        &[("a_dead", DEAD.to_owned()), ("b_live", live_addr.clone())],
    )
    .await;
    let ep = c
        .endpoint(&HttpClient::new())
        .retry(RetryPolicy::new(2, Duration::from_secs(5)).no_budget())
        .build()
        .unwrap();
    spans.take();

    // Round robin starts at a_dead: refused, then answered by b_live.
    assert_eq!(ep.invoke("/ok").await.unwrap(), "b_live");
    let seen = spans.take();
    let names: Vec<_> = seen.iter().map(|s| s.name).collect();
    assert_eq!(names, ["invoke", "attempt", "attempt"], "{seen:#?}");
    let (invoke, attempts) = (&seen[0], &seen[1..]);
    assert_eq!(
        fields(invoke, &["service", "picker", "outcome"]),
        ["metrics_spans", "round_robin", "ok"]
    );
    assert!(
        attempts.iter().all(|a| a.parent == Some(invoke.id)),
        "{seen:#?}"
    );
    assert_eq!(
        fields(&attempts[0], &["attempt", "instance", "outcome"]),
        ["1", DEAD, "transport"]
    );
    assert_eq!(
        fields(&attempts[1], &["attempt", "instance", "outcome"]),
        ["2", live_addr.as_str(), "ok"]
    );

    // A 500 (not retried) is one attempt, and the call's outcome is `status`.
    ep.invoke("/fail").await.unwrap_err();
    let seen = spans.take();
    let names: Vec<_> = seen.iter().map(|s| s.name).collect();
    assert_eq!(names, ["invoke", "attempt"], "{seen:#?}");
    assert_eq!(fields(&seen[0], &["outcome"]), ["status"]);
    assert_eq!(
        fields(&seen[1], &["attempt", "instance", "outcome"]),
        ["1", live_addr.as_str(), "status"]
    );
    assert_eq!(seen[1].parent, Some(seen[0].id));
}
