//! Discovery at scale against a real etcd: 10,000 instances, thousands of concurrent changes
//! with compactions every few hundred, an etcd restart, and a watcher cut off while the
//! revisions it missed are compacted away. Afterwards the view equals etcd's state exactly.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, CompactionOptions, GetOptions, Txn, TxnOp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use svckit_registry::{Discovery, DiscoveryState, EtcdOptions, EtcdRegistry, Instance, Registry};
use svckit_testing::{Etcd, Proxy};

use tokio::task::JoinHandle;
use tokio::time::Instant;

const PREFIX: &str = "/services/";
/// Instances of the one big service, `big`.
const BIG: usize = 8_000;
/// Small services `s000..s099` of [`SMALL_SIZE`] instances each.
const SMALL_SERVICES: usize = 100;
const SMALL_SIZE: usize = 20;
/// etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;
const WRITERS: usize = 4;
/// etcd is compacted at its current revision each time this many more keys changed.
const COMPACT_EVERY: u64 = 500;
const SEED: u64 = 0x5ca1_ab1e;
/// A value that is not an address: the writers turn valid keys into entries the view must
/// drop.
const POISON: &str = "not an address";

/// Entries under the prefix that are not instances; none may ever show in the view. The
/// last two have valid keys of `big` with values that are not addresses.
const MALFORMED: [(&str, &str); 5] = [
    ("/services/a-b/c", "127.0.0.1:1"),
    ("/services/x", "127.0.0.1:1"),
    ("/services/a/b/c", "127.0.0.1:1"),
    ("/services/m_empty/big", ""),
    ("/services/m_noport/big", "nonsense"),
];

/// What etcd holds, parsed: name → id → address.
type State = BTreeMap<String, BTreeMap<String, String>>;

fn key(name: &str, id: &str) -> String {
    format!("{PREFIX}{id}/{name}")
}

fn addr(rng: &mut SmallRng) -> String {
    format!(
        "10.{}.{}.{}:{}",
        rng.random_range(0..=255u8),
        rng.random_range(0..=255u8),
        rng.random_range(1..=254u8),
        rng.random_range(1024..=65535u16)
    )
}

fn small_name(j: usize) -> String {
    format!("s{j:03}")
}

/// Parses a listing the way a client in another language would: `/services/(\w+)/(\w+)` →
/// `host:port`, anything else skipped.
fn parse(kvs: &[etcd_client::KeyValue]) -> State {
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let mut state = State::new();
    for kv in kvs {
        let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else {
            continue;
        };
        let Some((id, name)) = k.strip_prefix(PREFIX).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let Some((host, port)) = v.rsplit_once(':') else {
            continue;
        };
        if word(id) && word(name) && !host.is_empty() && port.parse::<u16>().is_ok() {
            state
                .entry(name.to_owned())
                .or_default()
                .insert(id.to_owned(), v.to_owned());
        }
    }
    state
}

fn instances(state: &State) -> Vec<Instance> {
    let mut all: Vec<Instance> = state
        .iter()
        .flat_map(|(name, ids)| {
            ids.iter()
                .map(move |(id, addr)| Instance::new(id, name, addr).unwrap())
        })
        .collect();
    all.sort();
    all
}

/// Counts and the first few differences between two sorted instance lists.
fn diff(expected: &[Instance], actual: &[Instance]) -> String {
    let e: BTreeSet<&Instance> = expected.iter().collect();
    let a: BTreeSet<&Instance> = actual.iter().collect();
    let missing: Vec<_> = e.difference(&a).take(5).collect();
    let extra: Vec<_> = a.difference(&e).take(5).collect();
    format!(
        "expected {} instances, view has {}; {} missing (first: {missing:?}), {} unexpected (first: {extra:?})",
        expected.len(),
        actual.len(),
        e.difference(&a).count(),
        a.difference(&e).count(),
    )
}

async fn revision(client: &mut Client) -> i64 {
    let resp = client
        .get(
            PREFIX,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    resp.header().unwrap().revision()
}

async fn etcd_state(client: &mut Client) -> (State, usize) {
    let resp = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    (parse(resp.kvs()), resp.kvs().len())
}

async fn eventually<F, Fut>(limit: Duration, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if svckit_testing::process::poll_until(limit, cond)
        .await
        .is_none()
    {
        panic!("{what}: not within {limit:?}");
    }
}

/// Waits until the view holds exactly `expected` and follows etcd; fails with a summary of
/// the differences.
async fn converge(discovery: &Discovery, expected: &[Instance], limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let view = discovery.all();
        if view == expected && discovery.state() == DiscoveryState::Live {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: view != etcd after {limit:?} (state {:?}, {:?}): {}",
            discovery.state(),
            discovery.stats(),
            diff(expected, &view)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Compacts etcd at its current revision, one compaction at a time, never going backwards.
#[derive(Clone)]
struct Compactor {
    client: Client,
    last: Arc<tokio::sync::Mutex<i64>>,
    done: Arc<AtomicU64>,
}

impl Compactor {
    async fn compact_now(&self) -> i64 {
        let mut last = self.last.lock().await;
        let mut client = self.client.clone();
        let rev = revision(&mut client).await;
        if rev > *last {
            client
                .compact(rev, Some(CompactionOptions::new()))
                .await
                .unwrap_or_else(|e| panic!("compact at {rev}: {e}"));
            *last = rev;
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        rev
    }
}

/// One of the concurrent writers. It owns a disjoint share of the keys (so its model of
/// them is exact whatever the others do): every `WRITERS`-th instance of `big`, every
/// `WRITERS`-th small service, the new instances it creates and the services `w<i>_new<k>`.
struct Writer {
    rng: SmallRng,
    client: Client,
    prefix_new: String,
    /// (name, id) → address of every valid key this writer owns in etcd.
    owned: BTreeMap<(String, String), String>,
    /// Services new instances may go to (`big` is added on top).
    services: Vec<String>,
    /// Small services deleted whole; never written again, so they must end up empty.
    retired: BTreeSet<String>,
    next_id: u64,
    txns: u64,
}

impl Writer {
    fn new(index: usize, client: Client) -> Self {
        let mut rng = SmallRng::seed_from_u64(SEED);
        let mut owned = BTreeMap::new();
        // The same addresses the bulk load wrote: both draw from the same seeded sequence.
        for i in 0..BIG {
            let a = addr(&mut rng);
            if i % WRITERS == index {
                owned.insert(("big".to_owned(), format!("b{i:05}")), a);
            }
        }
        let mut services = Vec::new();
        for j in 0..SMALL_SERVICES {
            for k in 0..SMALL_SIZE {
                let a = addr(&mut rng);
                if j % WRITERS == index {
                    owned.insert((small_name(j), format!("s{j:03}_{k:02}")), a);
                }
            }
            if j % WRITERS == index {
                services.push(small_name(j));
            }
        }
        services.extend((0..3).map(|k| format!("w{index}_new{k}")));
        Self {
            rng: SmallRng::seed_from_u64(SEED + 1 + index as u64),
            client,
            prefix_new: format!("w{index}_"),
            owned,
            services,
            retired: BTreeSet::new(),
            next_id: 0,
            txns: 0,
        }
    }

    fn new_key(&mut self) -> (String, String) {
        self.next_id += 1;
        let id = format!("{}{}", self.prefix_new, self.next_id);
        let name = if self.rng.random_bool(0.75) {
            "big".to_owned()
        } else {
            self.services[self.rng.random_range(0..self.services.len())].clone()
        };
        (name, id)
    }

    fn existing_key(&mut self) -> Option<(String, String)> {
        let n = self.owned.len();
        (n > 0).then(|| {
            let at = self.rng.random_range(0..n);
            self.owned.keys().nth(at).unwrap().clone()
        })
    }

    /// One transaction of random changes (a few for a service of over 128 keys); returns
    /// how many keys it changed.
    async fn step(&mut self) -> u64 {
        // (name, id, new value or None for a delete); distinct keys (etcd refuses duplicates
        // in one transaction).
        let mut ops: Vec<(String, String, Option<String>)> = Vec::new();
        let mut retire = None;
        let roll = self.rng.random_range(0..1000);
        match roll {
            // A new instance.
            0..320 => {
                let (name, id) = self.new_key();
                ops.push((name, id, Some(addr(&mut self.rng))));
            }
            // An instance leaves.
            320..550 => {
                if let Some((name, id)) = self.existing_key() {
                    ops.push((name, id, None));
                }
            }
            // An instance moves: same key, new address.
            550..750 => {
                if let Some((name, id)) = self.existing_key() {
                    ops.push((name, id, Some(addr(&mut self.rng))));
                }
            }
            // Several changes in one transaction.
            750..988 => {
                for _ in 0..self.rng.random_range(2..=8) {
                    let (name, id, value) = match self.rng.random_range(0..3) {
                        0 => {
                            let (name, id) = self.new_key();
                            (name, id, Some(addr(&mut self.rng)))
                        }
                        1 => match self.existing_key() {
                            Some((name, id)) => (name, id, None),
                            None => continue,
                        },
                        _ => match self.existing_key() {
                            Some((name, id)) => (name, id, Some(addr(&mut self.rng))),
                            None => continue,
                        },
                    };
                    if !ops.iter().any(|(n, i, _)| *n == name && *i == id) {
                        ops.push((name, id, value));
                    }
                }
            }
            // A valid key gets a value that is not an address: it leaves the view.
            988..997 => {
                if let Some((name, id)) = self.existing_key() {
                    ops.push((name, id, Some(POISON.to_owned())));
                }
            }
            // A whole small service is deleted.
            _ => {
                let live: Vec<String> = self
                    .services
                    .iter()
                    .filter(|s| s.starts_with('s'))
                    .cloned()
                    .collect();
                if !live.is_empty() {
                    let name = live[self.rng.random_range(0..live.len())].clone();
                    for (n, id) in self.owned.keys() {
                        if *n == name {
                            ops.push((n.clone(), id.clone(), None));
                        }
                    }
                    retire = Some(name);
                }
            }
        }
        for chunk in ops.chunks(TXN_OPS) {
            let txn_ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(name, id, value)| match value {
                    Some(v) => TxnOp::put(key(name, id), v.as_str(), None),
                    None => TxnOp::delete(key(name, id), None),
                })
                .collect();
            self.client
                .txn(Txn::new().and_then(txn_ops))
                .await
                .unwrap_or_else(|e| panic!("txn of {} ops: {e}", chunk.len()));
            self.txns += 1;
        }
        let changed = ops.len() as u64;
        for (name, id, value) in ops {
            match value {
                Some(v) if v != POISON => self.owned.insert((name, id), v),
                _ => self.owned.remove(&(name, id)),
            };
        }
        if let Some(name) = retire {
            self.services.retain(|s| *s != name);
            self.retired.insert(name);
        }
        changed
    }
}

/// Runs the writers until `stop` is set; each compacts etcd when the shared count of
/// changes crosses a multiple of [`COMPACT_EVERY`].
fn churn(
    writers: Vec<Writer>,
    changes: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
    compactor: &Compactor,
) -> Vec<JoinHandle<Writer>> {
    stop.store(false, Ordering::SeqCst);
    writers
        .into_iter()
        .map(|mut w| {
            let (changes, stop, compactor) = (changes.clone(), stop.clone(), compactor.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let n = w.step().await;
                    let before = changes.fetch_add(n, Ordering::SeqCst);
                    if (before + n) / COMPACT_EVERY > before / COMPACT_EVERY {
                        compactor.compact_now().await;
                    }
                }
                w
            })
        })
        .collect()
}

async fn join(handles: Vec<JoinHandle<Writer>>) -> Vec<Writer> {
    let mut writers = Vec::new();
    for h in handles {
        writers.push(h.await.expect("writer panicked"));
    }
    writers
}

async fn changes_reach(changes: &AtomicU64, n: u64) {
    eventually(Duration::from_secs(30), &format!("{n} changes"), || async {
        changes.load(Ordering::SeqCst) >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_churn_with_compactions_the_view_of_10k_instances_equals_etcd() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let mut etcd = Etcd::start();
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();

    // 1. Bulk load: 10,000 instances in transactions of 128 puts, and the malformed entries.
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut load: Vec<(String, String)> = (0..BIG)
        .map(|i| (key("big", &format!("b{i:05}")), addr(&mut rng)))
        .collect();
    for j in 0..SMALL_SERVICES {
        for k in 0..SMALL_SIZE {
            let id = format!("s{j:03}_{k:02}");
            load.push((key(&small_name(j), &id), addr(&mut rng)));
        }
    }
    load.extend(MALFORMED.map(|(k, v)| (k.to_owned(), v.to_owned())));
    for chunk in load.chunks(TXN_OPS) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        raw.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    let (loaded, keys) = etcd_state(&mut raw).await;
    let loaded = instances(&loaded);
    assert_eq!(keys, BIG + SMALL_SERVICES * SMALL_SIZE + MALFORMED.len());
    assert_eq!(loaded.len(), BIG + SMALL_SERVICES * SMALL_SIZE);
    let writers: Vec<Writer> = (0..WRITERS).map(|i| Writer::new(i, raw.clone())).collect();
    let owned: usize = writers.iter().map(|w| w.owned.len()).sum();
    assert_eq!(owned, loaded.len(), "the writers' shares cover the load");

    // 2. The watcher reaches etcd through a proxy the test can cut.
    let proxy = Proxy::start(etcd.endpoint()).await;
    let registry = EtcdRegistry::connect(
        EtcdOptions::new([proxy.addr().to_string()])
            .dial_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let discovery = registry.discovery();
    let watched: Vec<_> = std::iter::once("big".to_owned())
        .chain((0..SMALL_SERVICES).map(small_name))
        .map(|name| discovery.watch(&name).unwrap())
        .collect();
    eventually(Duration::from_secs(10), "initial view complete", || async {
        discovery.state() == DiscoveryState::Live && discovery.all().len() == loaded.len()
    })
    .await;
    assert!(
        discovery.all() == loaded,
        "{}",
        diff(&loaded, &discovery.all())
    );
    assert_eq!(watched[0].snapshot().len(), BIG);
    let stats = discovery.stats();
    assert_eq!(stats.relists, 1, "{stats:?}");
    assert_eq!(stats.malformed_skipped, MALFORMED.len() as u64, "{stats:?}");
    let loaded_at = started.elapsed();

    // 3a. Churn with compactions.
    let changes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let compacted = Arc::new(AtomicU64::new(0));
    let last_compaction = Arc::new(tokio::sync::Mutex::new(0));
    let compactor = Compactor {
        client: raw.clone(),
        last: last_compaction.clone(),
        done: compacted.clone(),
    };
    let running = churn(writers, &changes, &stop, &compactor);
    changes_reach(&changes, 4_000).await;
    stop.store(true, Ordering::SeqCst);
    let mut writers = join(running).await;

    // 3b. At rest the view has caught up; then etcd is killed and restarted on its data
    // directory: the watch breaks and resumes where it stopped, without a listing.
    let before_stop = (revision(&mut raw).await, etcd_state(&mut raw).await);
    let rest = instances(&before_stop.1 .0);
    converge(&discovery, &rest, Duration::from_secs(20), "mid-churn").await;
    // What the churn cost is not this step's question (a watcher left behind by it may have
    // had to re-list): only what the restart adds is counted below.
    let resting = discovery.stats();
    tokio::task::block_in_place(|| etcd.stop());
    eventually(
        Duration::from_secs(10),
        "watcher notices etcd down",
        || async { discovery.state() == DiscoveryState::Reconnecting },
    )
    .await;
    tokio::task::block_in_place(|| etcd.restart());
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    let after_restart = (revision(&mut raw).await, etcd_state(&mut raw).await);
    assert!(
        after_restart == before_stop,
        "restart kept the data: revision {} → {}, keys {} → {}",
        before_stop.0,
        after_restart.0,
        before_stop.1 .1,
        after_restart.1 .1
    );
    let compactor = Compactor {
        client: raw.clone(),
        last: last_compaction,
        done: compacted.clone(),
    };
    // Nothing changed while etcd was down, so this compaction is behind the revision the
    // watch resumes from and must not force a listing (the cut below does).
    compactor.compact_now().await;
    eventually(
        Duration::from_secs(15),
        "watch resumed after restart",
        || async { discovery.state() == DiscoveryState::Live },
    )
    .await;
    converge(&discovery, &rest, Duration::from_secs(5), "after restart").await;
    let stats = discovery.stats();
    assert_eq!(
        (
            stats.relists - resting.relists,
            stats.compactions - resting.compactions
        ),
        (0, 0),
        "resumed, not re-listed: {stats:?}, before the restart {resting:?}"
    );

    // 3c. More churn; in its middle the watcher is cut off while the changes it misses are
    // compacted away, so it must find its resume revision compacted and re-list.
    for w in &mut writers {
        w.client = raw.clone();
    }
    let running = churn(writers, &changes, &stop, &compactor);
    changes_reach(&changes, 5_500).await;
    proxy.cut();
    eventually(
        Duration::from_secs(10),
        "watcher notices the cut",
        || async { discovery.state() == DiscoveryState::Reconnecting },
    )
    .await;
    let at_cut = changes.load(Ordering::SeqCst);
    changes_reach(&changes, at_cut + 800).await;
    compactor.compact_now().await;
    proxy.heal();
    changes_reach(&changes, 10_000).await;
    stop.store(true, Ordering::SeqCst);
    let writers = join(running).await;
    let churned_at = started.elapsed();

    // 4. etcd's state, as the writers meant it, and the view equal to it.
    let (expected, _) = etcd_state(&mut raw).await;
    let mut model = State::new();
    for w in &writers {
        for ((name, id), a) in &w.owned {
            model
                .entry(name.clone())
                .or_default()
                .insert(id.clone(), a.clone());
        }
    }
    let expected_all = instances(&expected);
    assert!(
        model == expected,
        "etcd differs from what the writers wrote: {}",
        diff(&instances(&model), &expected_all)
    );
    converge(
        &discovery,
        &expected_all,
        Duration::from_secs(20),
        "after churn",
    )
    .await;
    let converged_at = started.elapsed();

    for watch in &watched {
        let want: Vec<Instance> = expected
            .get(watch.name())
            .map(|ids| {
                ids.iter()
                    .map(|(id, a)| Instance::new(id, watch.name(), a).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(watch.snapshot().to_vec(), want, "watch of {}", watch.name());
    }
    for (name, ids) in &expected {
        let got: Vec<(String, String)> = discovery
            .instances(name)
            .iter()
            .map(|i| (i.id().to_owned(), i.addr().to_owned()))
            .collect();
        let want: Vec<(String, String)> = ids.iter().map(|(i, a)| (i.clone(), a.clone())).collect();
        assert!(
            got == want,
            "instances({name}): {} vs {}",
            got.len(),
            want.len()
        );
    }
    let retired: BTreeSet<&String> = writers.iter().flat_map(|w| &w.retired).collect();
    assert!(!retired.is_empty(), "some services were deleted whole");
    for name in &retired {
        assert!(!expected.contains_key(*name), "{name} is gone from etcd");
        let watch = watched.iter().find(|w| w.name() == name.as_str()).unwrap();
        assert!(watch.snapshot().is_empty(), "watch of deleted {name}");
        assert!(discovery.instances(name).is_empty(), "deleted {name}");
    }
    for (bad, _) in MALFORMED {
        let id = bad.trim_start_matches(PREFIX).split('/').next().unwrap();
        assert!(
            !discovery.all().iter().any(|i| i.id() == id),
            "malformed {bad} in the view"
        );
    }

    let stats = discovery.stats();
    assert!(stats.relists >= 2, "only the initial listing: {stats:?}");
    assert!(
        stats.compactions >= 1,
        "no watch met a compaction: {stats:?}"
    );
    let total = changes.load(Ordering::SeqCst);
    let txns: u64 = writers.iter().map(|w| w.txns).sum();
    eprintln!(
        "scale: instances={} (big={}, services={}) changes={total} txns={txns} \
         etcd_compactions={} relists={} watch_compactions={} events={} retired={} \
         loaded={loaded_at:.1?} churned={churned_at:.1?} converged={converged_at:.1?} \
         elapsed={:.1?}",
        expected_all.len(),
        expected.get("big").map_or(0, BTreeMap::len),
        expected.len(),
        compacted.load(Ordering::Relaxed),
        stats.relists,
        stats.compactions,
        stats.events,
        retired.len(),
        started.elapsed()
    );
}
