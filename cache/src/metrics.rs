//! The groups' counters in the [`metrics`] facade, written when the application asks
//! ([`publish_metrics`]) rather than on every get; the families are listed in the crate docs
//! ("Metrics and traces").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

use crate::stats::Stats;

/// What [`publish_metrics`] reads of a group. The group implements it, so this module does
/// not depend on the group's module (which registers itself here).
pub(crate) trait Counted: Send + Sync {
    /// The group's name.
    fn name(&self) -> &str;
    /// A snapshot of its counters.
    fn stats(&self) -> Stats;
    /// Its byte budget.
    fn budget(&self) -> usize;
}

/// The groups of the process, held weakly (a dropped group leaves), and the last counts of
/// dropped groups by name: a group's counters do not fall when one of several groups of its
/// name is dropped, or when a group is dropped and built again.
struct Live {
    groups: Vec<Weak<dyn Counted>>,
    retired: BTreeMap<String, Stats>,
}

/// The cache's only process-wide state: what [`publish_metrics`] walks.
static LIVE: Mutex<Live> = Mutex::new(Live {
    groups: Vec::new(),
    retired: BTreeMap::new(),
});

fn live() -> MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a group just built to the groups [`publish_metrics`] walks.
pub(crate) fn register(group: &Arc<impl Counted + 'static>) {
    let group: Arc<dyn Counted> = group.clone();
    let mut live = live();
    live.groups.retain(|g| g.strong_count() > 0);
    live.groups.push(Arc::downgrade(&group));
}

/// Keeps the counts of a group being dropped.
pub(crate) fn retire(name: &str, stats: Stats) {
    let mut live = live();
    let sum = live.retired.entry(name.to_owned()).or_default();
    *sum = sum.plus(stats);
}

/// Writes the current counters of every live group of the process into the [`metrics`]
/// facade (counters with `absolute`, gauges with `set`); the families are listed in the
/// [crate docs](crate#metrics-and-traces).
///
/// Call it right before the recorder renders, e.g. in the `/metrics` route:
///
/// ```no_run
/// # fn render() -> String { String::new() }
/// svckit_cache::publish_metrics();
/// let body = render(); // e.g. metrics_exporter_prometheus::PrometheusHandle::render
/// # drop(body);
/// ```
///
/// An exporter that pushes instead (OTLP, StatsD) must call it on a timer of its own, about
/// as often as it pushes:
///
/// ```no_run
/// # async fn demo() {
/// let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
/// loop {
///     every.tick().await;
///     svckit_cache::publish_metrics();
/// }
/// # }
/// ```
///
/// Costs a snapshot of each group ([`Group::stats`](crate::Group::stats): a sum over its
/// counter stripes and one short lock of each of its shards), never a walk of the entries.
pub fn publish_metrics() {
    // One publish at a time: gauges are set, so two scrapes at once could leave the older
    // snapshot as the last written; and a publish holds its groups until it ends, so one
    // running beside another could show a group just dropped elsewhere as still live.
    static PUBLISHING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = PUBLISHING.lock().unwrap_or_else(|e| e.into_inner());
    let (groups, retired) = {
        let mut live = live();
        live.groups.retain(|g| g.strong_count() > 0);
        let groups: Vec<Arc<dyn Counted>> = live.groups.iter().filter_map(Weak::upgrade).collect();
        (groups, live.retired.clone())
    };
    // Published after the lock is released: dropping the last handle on a group (ours, if
    // every other went meanwhile) retires it, which takes the lock. A group whose last handle
    // is dropped by another thread between the copy of `retired` above and the upgrade is
    // missing from this one publish only; counters only ever rise (`absolute` keeps the
    // highest value in the usual recorders) and the next publish counts it as retired.
    let mut by_name: BTreeMap<&str, Sums> = BTreeMap::new();
    for (name, stats) in &retired {
        by_name.entry(name).or_default().counted = *stats;
    }
    for g in &groups {
        let stats = g.stats();
        let sums = by_name.entry(g.name()).or_default();
        sums.counted = sums.counted.plus(stats);
        sums.live = sums.live.plus(stats);
        sums.budget += g.budget() as u64;
    }
    describe();
    for (name, sums) in by_name {
        sums.publish(name);
    }
}

/// The counts of the groups of one name: `counted` with those dropped, for the counters;
/// `live` and `budget` without, for the gauges.
#[derive(Default)]
struct Sums {
    counted: Stats,
    live: Stats,
    budget: u64,
}

impl Sums {
    fn publish(&self, group: &str) {
        let (c, l) = (&self.counted, &self.live);
        let group = group.to_owned();
        let counters = [
            ("svckit_cache_gets_total", c.gets),
            ("svckit_cache_loads_deduped_total", c.loads_deduped),
            ("svckit_cache_getter_errors_total", c.local_load_errors),
            ("svckit_cache_handoff_loads_total", c.handoff_loads),
            ("svckit_cache_peer_requests_served_total", c.server_requests),
        ];
        for (name, v) in counters {
            counter!(name, "group" => group.clone()).absolute(v);
        }
        // Unreachable (refused, reset, timed out) apart from answered with an error (the
        // owner's getter failed): only the first says a peer is in trouble.
        let unreachable = c.peer_unreachable.min(c.peer_errors);
        for (kind, v) in [
            ("unreachable", unreachable),
            ("answered", c.peer_errors - unreachable),
        ] {
            counter!("svckit_cache_peer_errors_total", "group" => group.clone(), "kind" => kind)
                .absolute(v);
        }
        for (source, v) in [("peer", c.peer_loads), ("local", c.local_loads)] {
            counter!("svckit_cache_loads_total", "group" => group.clone(), "source" => source)
                .absolute(v);
        }
        for (tier, c, l) in [
            ("main", c.main_cache, l.main_cache),
            ("hot", c.hot_cache, l.hot_cache),
        ] {
            let labels = [("group", group.clone()), ("tier", tier.to_owned())];
            counter!("svckit_cache_hits_total", &labels).absolute(c.hits);
            counter!("svckit_cache_evictions_total", &labels).absolute(c.evictions);
            gauge!("svckit_cache_bytes", &labels).set(l.bytes as f64);
            gauge!("svckit_cache_items", &labels).set(l.items as f64);
        }
        gauge!("svckit_cache_budget_bytes", "group" => group).set(self.budget as f64);
    }
}

/// The help texts (a recorder installed after an earlier publish gets them too).
fn describe() {
    let counters = [
        ("svckit_cache_gets_total", "Gets, from callers on this node and from peers."),
        ("svckit_cache_hits_total", "Gets answered from memory, by tier (main: keys this node owns or loaded; hot: copies of popular keys owned elsewhere)."),
        ("svckit_cache_loads_total", "Values loaded on a miss, by source (peer: fetched from the key's owner; local: from this node's getter)."),
        ("svckit_cache_loads_deduped_total", "Loads actually run after concurrent misses of one key were merged."),
        ("svckit_cache_peer_errors_total", "Failed fetches from a peer, each followed by a local load."),
        ("svckit_cache_getter_errors_total", "Failed or panicked calls of the getter."),
        ("svckit_cache_handoff_loads_total", "Values a key's new owner took from its previous owner's memory after the ring changed."),
        ("svckit_cache_peer_requests_served_total", "Requests served to peers over the peer protocol."),
        ("svckit_cache_evictions_total", "Entries evicted to stay within the budget, by tier."),
    ];
    for (name, help) in counters {
        describe_counter!(name, help);
    }
    describe_gauge!(
        "svckit_cache_bytes",
        Unit::Bytes,
        "Bytes held, as the budget counts them, by tier."
    );
    describe_gauge!("svckit_cache_items", "Entries held, by tier.");
    describe_gauge!(
        "svckit_cache_budget_bytes",
        Unit::Bytes,
        "The byte budget of the group (main and hot tier together)."
    );
}
