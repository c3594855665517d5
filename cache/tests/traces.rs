//! The spans of a cache get, recorded by a tracing layer while two nodes on loopback serve
//! each other.
//!
//! Alone in its test binary: a thread-local subscriber misses the spans of a callsite that
//! another test's thread was registering (without a subscriber) at the moment it was set,
//! since tracing caches that callsite's interest as "never".

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use common::{named_cluster, owner_index, TestGetter};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as recorded: its name, level, fields, and whether an event of the test getter
/// happened inside it.
#[derive(Debug, Clone)]
struct SpanRecord {
    name: &'static str,
    level: Level,
    fields: BTreeMap<String, String>,
    getter_inside: bool,
}

/// Records every span (all levels) and which spans the test getter's events happen in.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<BTreeMap<u64, SpanRecord>>>);

impl Recorder {
    fn take(&self) -> Vec<SpanRecord> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_values()
            .collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let span = SpanRecord {
            name: attrs.metadata().name(),
            level: *attrs.metadata().level(),
            fields,
            getter_inside: false,
        };
        self.0.lock().unwrap().insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        if fields.get("message").map(String::as_str) != Some("test getter called") {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let mut spans = self.0.lock().unwrap();
        for span in scope {
            if let Some(s) = spans.get_mut(&span.id().into_u64()) {
                s.getter_inside = true;
            }
        }
    }
}

/// The `cache_get` spans among `spans`, as (peer_request, outcome, getter inside).
fn cache_gets(spans: &[SpanRecord], group: &str) -> Vec<(String, String, bool)> {
    let mut gets: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "cache_get")
        .map(|s| {
            assert_eq!(s.level, Level::INFO);
            assert_eq!(s.fields["group"], group, "{s:?}");
            (
                s.fields["peer_request"].clone(),
                s.fields.get("outcome").cloned().unwrap_or_default(),
                s.getter_inside,
            )
        })
        .collect();
    gets.sort();
    gets
}

// One thread: the servers, the loads' tasks and the test share the thread's subscriber.
#[tokio::test]
async fn a_miss_makes_a_cache_get_span_with_its_outcome_and_a_hit_makes_none() {
    const GROUP: &str = "traced";
    let recorder = Recorder::default();
    // As an application logging at info: debug spans (a load's `flight`) are off, so what
    // runs in a load's task must be in its get's span without them. Events all pass (the
    // test getter's is at debug).
    let info = filter_fn(|m| m.is_event() || *m.level() <= Level::INFO);
    let subscriber = tracing_subscriber::registry()
        .with(info)
        .with(recorder.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let getter = TestGetter::default();
    let nodes = named_cluster(&getter, 2, GROUP, 1 << 20, 1).await;
    let key_of = |prefix: &str, owner: usize| {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| owner_index(&nodes, k) == owner)
            .unwrap()
    };
    let (mine, theirs, failing) = (key_of("t", 0), key_of("t", 1), key_of("f", 0));
    let yes = |s: &str| s.to_owned();
    recorder.take();

    // A miss of a key node 0 owns: one span, loaded locally, the getter called inside it.
    nodes[0].group.get(&mine).await.unwrap();
    assert_eq!(
        cache_gets(&recorder.take(), GROUP),
        [(yes("false"), yes("local"), true)]
    );

    // A miss of a key node 1 owns: node 0's span says peer, and node 1 serving the fetch
    // loads it in a span of its own.
    nodes[0].group.get(&theirs).await.unwrap();
    assert_eq!(
        cache_gets(&recorder.take(), GROUP),
        [
            (yes("false"), yes("peer"), false),
            (yes("true"), yes("local"), true),
        ]
    );

    // Hits, from the main and the hot tier: no span at all.
    assert_eq!(nodes[0].group.stats().hot_cache.items, 1);
    for _ in 0..3 {
        nodes[0].group.get(&mine).await.unwrap();
        nodes[0].group.get(&theirs).await.unwrap();
        nodes[0].group.get_with(&mine, |v| v.len()).await.unwrap();
    }
    let spans = recorder.take();
    assert!(spans.is_empty(), "hits made spans: {spans:?}");
    assert_eq!(nodes[0].group.stats().cache_hits, 9);

    // A failing getter: outcome error.
    getter.fail.store(true, Ordering::SeqCst);
    nodes[0].group.get(&failing).await.unwrap_err();
    assert_eq!(
        cache_gets(&recorder.take(), GROUP),
        [(yes("false"), yes("error"), true)]
    );
}
