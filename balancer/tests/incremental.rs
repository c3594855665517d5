//! The incremental updates behind an Endpoint, checked through the public API only: the
//! table's position changes as a picker hears them ([`SetChange`]), the ring made by one
//! merge ([`Ring::with_changes`]) against a ring built afresh, and the consistent-hash
//! Endpoint while instances come and go in a [`MemoryRegistry`], with and without its
//! coalescing window.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use svckit_balancer::{
    xxh3, Candidates, ConsistentHash, Endpoint, HashFn, HttpClient, Pick, Ring, SetChange,
    DEFAULT_COALESCE, DEFAULT_VNODES,
};
use svckit_registry::{Instance, Instances, MemoryRegistry, Registration, Registry, ServiceWatch};

/// SplitMix64: seeded, so every run makes the same sequence of changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// Waits until discovery shows exactly `want` (id → address).
async fn settle(watch: &mut ServiceWatch, want: &BTreeMap<String, String>) {
    let shown = |s: &Instances| -> BTreeMap<String, String> {
        s.iter()
            .map(|i| (i.id().to_owned(), i.addr().to_owned()))
            .collect()
    };
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while shown(&watch.mark_seen()) != *want {
            watch.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "discovery did not show {want:?}, shows {:?}",
        shown(&watch.snapshot())
    );
}

// ---------------------------------------------------------------------------------------
// 1. A picker that keeps its own copy of the table from the changes alone.
// ---------------------------------------------------------------------------------------

/// What [`Mirror`] observed, shared with the test.
#[derive(Debug, Default)]
struct Log {
    violations: Mutex<Vec<String>>,
    builds: AtomicUsize,
    updates: AtomicUsize,
    empty_updates: AtomicUsize,
    changes: AtomicUsize,
    moved: AtomicUsize,
    /// (id, address) of the instance the last pick chose.
    picked: Mutex<Option<(String, String)>>,
    picks: AtomicUsize,
}

/// (id, address) by position, kept only from the [`SetChange`]s it hears.
type Slots = Vec<Option<(String, String)>>;

fn entry(i: &Instance) -> Option<(String, String)> {
    Some((i.id().to_owned(), i.addr().to_owned()))
}

/// Applies each change to its own copy of the table and compares the copy with the set at
/// every update and every pick.
#[derive(Debug)]
struct Mirror {
    log: Arc<Log>,
}

impl Mirror {
    fn violation(&self, what: String) {
        self.log.violations.lock().unwrap().push(what);
    }

    /// The copy must agree with the table at every position, and `position` with both.
    fn check(&self, when: &str, state: &Slots, set: &Candidates<'_>) {
        if state.len() != set.len() || set.iter().len() != set.len() {
            self.violation(format!(
                "{when}: the copy has {} positions, the set {} ({} by iter)",
                state.len(),
                set.len(),
                set.iter().len()
            ));
            return;
        }
        for (i, (slot, by_iter)) in state.iter().zip(set.iter()).enumerate() {
            let inst = set.instance(i);
            if *slot != entry(inst) || by_iter != inst {
                self.violation(format!(
                    "{when}: position {i} is {:?} in the copy, {}@{} in the set ({}@{} by iter)",
                    slot,
                    inst.id(),
                    inst.addr(),
                    by_iter.id(),
                    by_iter.addr()
                ));
            }
            if set.position(inst.id()) != Some(i) {
                self.violation(format!(
                    "{when}: position({}) = {:?}, expected {i}",
                    inst.id(),
                    set.position(inst.id())
                ));
            }
        }
    }
}

impl Pick for Mirror {
    type State = Slots;

    fn build(&self, set: &Candidates<'_>) -> Slots {
        self.log.builds.fetch_add(1, Ordering::SeqCst);
        let ids: Vec<&str> = set.iter().map(Instance::id).collect();
        if ids.windows(2).any(|w| w[0] >= w[1]) {
            self.violation(format!("build: positions not in id order: {ids:?}"));
        }
        let state: Slots = set.iter().map(entry).collect();
        self.check("build", &state, set);
        state
    }

    fn update(
        &self,
        state: &mut Slots,
        set: &Candidates<'_>,
        changes: &[SetChange<'_>],
    ) -> Option<Duration> {
        self.log.updates.fetch_add(1, Ordering::SeqCst);
        self.log.changes.fetch_add(changes.len(), Ordering::SeqCst);
        if changes.is_empty() {
            self.log.empty_updates.fetch_add(1, Ordering::SeqCst);
        }
        for change in changes {
            match *change {
                SetChange::Added { at, instance } => {
                    if at == state.len() {
                        state.push(entry(instance));
                    } else if at < state.len() && state[at].is_none() {
                        // The second half of an address change.
                        state[at] = entry(instance);
                    } else {
                        self.violation(format!(
                            "{change:?}: position taken by {:?} (copy has {})",
                            state.get(at),
                            state.len()
                        ));
                    }
                }
                SetChange::Removed { at, instance } => {
                    match state.get_mut(at) {
                        Some(slot) if *slot == entry(instance) => *slot = None,
                        other => {
                            let other = other.map(|s| s.clone());
                            self.violation(format!("{change:?}: the copy has {other:?} there"));
                        }
                    }
                    // The table pops its last position; a hole in the middle is filled by
                    // the Moved (or the Added of an address change) that follows.
                    while state.last().is_some_and(Option::is_none) {
                        state.pop();
                    }
                }
                SetChange::Moved { from, to, instance } => {
                    self.log.moved.fetch_add(1, Ordering::SeqCst);
                    let ok = from + 1 == state.len()
                        && to < from
                        && state[from] == entry(instance)
                        && state[to].is_none();
                    if ok {
                        state[to] = state.pop().flatten();
                    } else {
                        self.violation(format!(
                            "{change:?}: not from the last position into a hole (copy: from \
                             {:?}, to {:?}, len {})",
                            state.get(from),
                            state.get(to),
                            state.len()
                        ));
                    }
                }
                _ => self.violation(format!("unknown change {change:?}")),
            }
        }
        self.check("after update", state, set);
        None
    }

    fn pick(&self, state: &Slots, set: &Candidates<'_>) -> Option<usize> {
        self.check("pick", state, set);
        if set.is_empty() {
            return None;
        }
        // Spread picks over every position, the moved ones included.
        let n = self.log.picks.fetch_add(1, Ordering::SeqCst);
        let i = n.wrapping_mul(7919) % set.len();
        *self.log.picked.lock().unwrap() = entry(set.instance(i));
        Some(i)
    }
}

/// Instances over a few real servers, registered and deregistered at random. An instance's
/// id is not its server's id, so an answer tells which address the Endpoint used.
struct Churn {
    servers: Vec<TestServer>,
    registry: MemoryRegistry,
    rng: Rng,
    /// id → (registration, index of the server it points at).
    live: BTreeMap<String, (Registration, usize)>,
    next_id: usize,
    added: usize,
    removed: usize,
    readdressed: usize,
}

impl Churn {
    fn wanted(&self) -> BTreeMap<String, String> {
        self.live
            .iter()
            .map(|(id, (_, s))| (id.clone(), self.servers[*s].addr.to_string()))
            .collect()
    }

    async fn register(&mut self, id: String, s: usize) -> Option<Registration> {
        let addr = self.servers[s].addr.to_string();
        let instance = Instance::new(&id, SERVICE, addr).unwrap();
        let reg = self.registry.register(instance).await.unwrap();
        self.live.insert(id, (reg, s)).map(|(old, _)| old)
    }

    async fn add(&mut self) -> String {
        let id = format!("i{:04}", self.next_id);
        self.next_id += 1;
        let s = self.rng.below(self.servers.len());
        self.register(id.clone(), s).await;
        self.added += 1;
        id
    }

    async fn remove(&mut self, id: &str) {
        let (reg, _) = self.live.remove(id).unwrap();
        reg.deregister().await.unwrap();
        self.removed += 1;
    }

    /// Same id, another server: the key is put again with a new lease, then the old lease
    /// (which holds no key any more) is revoked.
    async fn readdress(&mut self, id: &str) {
        let n = self.servers.len();
        let s = (self.live[id].1 + 1 + self.rng.below(n - 1)) % n;
        let old = self.register(id.to_owned(), s).await.unwrap();
        old.deregister().await.unwrap();
        self.readdressed += 1;
    }

    /// One random change, keeping the set between `low` and `high` instances, to an id not
    /// in `touched` (then added to it).
    async fn step(&mut self, low: usize, high: usize, touched: &mut BTreeSet<String>) {
        let untouched: Vec<String> = self
            .live
            .keys()
            .filter(|id| !touched.contains(*id))
            .cloned()
            .collect();
        let len = self.live.len();
        let chance = if len < low {
            75
        } else if len > high {
            20
        } else {
            40
        };
        let grow = self.rng.percent(chance);
        if grow || untouched.is_empty() {
            touched.insert(self.add().await);
            return;
        }
        let id = untouched[self.rng.below(untouched.len())].clone();
        touched.insert(id.clone());
        if self.rng.percent(30) {
            self.readdress(&id).await;
        } else {
            self.remove(&id).await;
        }
    }

    fn changes(&self) -> usize {
        self.added + self.removed + self.readdressed
    }
}

fn violations(log: &Log, when: &str) {
    let violations = log.violations.lock().unwrap();
    assert!(
        violations.is_empty(),
        "{when}: {} violations, first: {:#?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picker_fed_only_changes_agrees_with_every_table() {
    let registry = MemoryRegistry::new();
    let discovery = registry.discovery();
    let mut watch = discovery.watch(SERVICE).unwrap();
    let mut churn = Churn {
        servers: servers(4, Duration::ZERO).await,
        registry,
        rng: Rng(0x5EED),
        live: BTreeMap::new(),
        next_id: 0,
        added: 0,
        removed: 0,
        readdressed: 0,
    };
    for _ in 0..40 {
        churn.add().await;
    }
    settle(&mut watch, &churn.wanted()).await;
    let log = Arc::new(Log::default());
    let ep = builder(&HttpClient::new(), &discovery)
        .picker(Mirror { log: log.clone() })
        .build()
        .unwrap();
    churn.added = 0;

    // Batches of one to four changes, each followed by calls one at a time, so that every
    // batch is one update of the table and every pick is checked against its registration.
    let batches = 150;
    for batch in 0..batches {
        // Each id changes at most once per batch: every registry change is one change of
        // the snapshot the Endpoint sees.
        let mut touched = BTreeSet::new();
        if batch == 60 {
            // Drain to empty in one batch.
            for id in churn.live.keys().cloned().collect::<Vec<_>>() {
                churn.remove(&id).await;
            }
        } else {
            for _ in 0..1 + churn.rng.below(4) {
                churn.step(10, 60, &mut touched).await;
            }
        }
        settle(&mut watch, &churn.wanted()).await;
        for _ in 0..1 + churn.rng.below(3) {
            let result = ep.invoke(Call::get("/id")).await;
            if churn.live.is_empty() {
                assert!(
                    matches!(&result, Err(e) if e.is_no_instances()),
                    "batch {batch}: {result:?}"
                );
                continue;
            }
            let answered = result.unwrap_or_else(|e| panic!("batch {batch}: {e}"));
            let (id, addr) = log.picked.lock().unwrap().take().expect("a pick");
            let server = match churn.live.get(&id) {
                Some((_, s)) => &churn.servers[*s],
                None => panic!("batch {batch}: picked {id}, which is not registered"),
            };
            assert_eq!(server.addr.to_string(), addr, "batch {batch}: {id}");
            assert_eq!(
                answered, server.id,
                "batch {batch}: picked {id}@{addr}, answered by another server"
            );
        }
        violations(&log, &format!("batch {batch}"));
    }

    let (added, removed, readdressed) = (churn.added, churn.removed, churn.readdressed);
    let changes = log.changes.load(Ordering::SeqCst);
    let moved = log.moved.load(Ordering::SeqCst);
    assert!(
        churn.changes() >= 300,
        "{} registry changes",
        churn.changes()
    );
    assert_eq!(log.builds.load(Ordering::SeqCst), 1, "built once");
    assert_eq!(
        log.updates.load(Ordering::SeqCst),
        batches,
        "one update per batch"
    );
    assert_eq!(log.empty_updates.load(Ordering::SeqCst), 0);
    // A join is one change, a leave one or two (the last moves), an address change two:
    // never a change per instance of the set.
    assert!(moved <= removed, "moved {moved}, removed {removed}");
    assert_eq!(
        changes,
        added + removed + moved + 2 * readdressed,
        "changes heard (added {added}, removed {removed}, moved {moved}, readdressed \
         {readdressed})"
    );
    eprintln!(
        "{} registry changes (added {added}, removed {removed}, readdressed {readdressed}) in \
         {batches} batches -> {changes} set changes ({moved} moved)",
        churn.changes()
    );

    // Then calls from four tasks at once while 150 more changes happen without waiting for
    // discovery: every table any call picks from must still agree with its picker state.
    // (At least 150 changes, and on until the callers made 150 calls: on a loaded machine
    // the churn may outrun them.)
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (ep, stop, calls) = (ep.clone(), stop.clone(), calls.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    ep.invoke(Call::get("/id")).await.unwrap();
                    calls.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let mut steps = 0;
    while steps < 150 || calls.load(Ordering::SeqCst) < 150 {
        churn.step(20, 60, &mut BTreeSet::new()).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        steps += 1;
        assert!(
            steps < 5_000,
            "{} calls in {steps} changes",
            calls.load(Ordering::SeqCst)
        );
    }
    settle(&mut watch, &churn.wanted()).await;
    ep.invoke(Call::get("/id")).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.unwrap();
    }
    violations(&log, "with concurrent calls");
    // How many updates and changes the picker heard here is left to
    // `concurrent_calls_hear_each_change_once` (a known race makes it vary).
}

/// Hears which instances joined, to tell whether a join reached the picker twice.
#[derive(Debug, Default)]
struct JoinLog {
    heard: Mutex<BTreeSet<String>>,
    twice: AtomicUsize,
    updates: AtomicUsize,
}

#[derive(Debug)]
struct Joins(Arc<JoinLog>);

impl Pick for Joins {
    type State = ();

    fn build(&self, _: &Candidates<'_>) {}

    fn update(
        &self,
        _: &mut (),
        _: &Candidates<'_>,
        changes: &[SetChange<'_>],
    ) -> Option<Duration> {
        self.0.updates.fetch_add(1, Ordering::SeqCst);
        for change in changes {
            if let SetChange::Added { instance, .. } = change {
                if !self
                    .0
                    .heard
                    .lock()
                    .unwrap()
                    .insert(instance.id().to_owned())
                {
                    self.0.twice.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        None
    }

    fn pick(&self, _: &(), set: &Candidates<'_>) -> Option<usize> {
        (!set.is_empty()).then_some(0)
    }
}

/// Every join has a fresh id, so a picker that hears one twice was updated twice for one
/// change: the second time from a table older than the current one.
///
/// Failed in most runs (1 to 14 of ~1,000 joins heard twice in 5 s) while
/// `Balancer::table` read the current table and the snapshot only *before* taking the
/// `rebuilding` flag: a caller that read table A, then lost the CPU while another caller
/// stored table B and released the flag, took the flag and built from A once more, and the
/// table it stored replaced B.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_calls_hear_each_change_once() {
    let server = TestServer::start("s0", Duration::ZERO).await;
    let registry = MemoryRegistry::new();
    let discovery = registry.discovery();
    let mut watch = discovery.watch(SERVICE).unwrap();
    let instance = |i: usize| Instance::new(format!("i{i}"), SERVICE, server.addr.to_string());
    let mut regs = Vec::new();
    for i in 0..5 {
        regs.push(registry.register(instance(i).unwrap()).await.unwrap());
    }
    while watch.mark_seen().len() < 5 {
        watch.changed().await.unwrap();
    }
    let joins = Arc::new(JoinLog::default());
    let ep = builder(&HttpClient::new(), &discovery)
        .picker(Joins(joins.clone()))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (ep, stop) = (ep.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    ep.invoke(Call::get("/id")).await.unwrap();
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut n = 5;
    while started.elapsed() < Duration::from_secs(5) {
        regs.push(registry.register(instance(n).unwrap()).await.unwrap());
        n += 1;
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.unwrap();
    }
    let twice = joins.twice.load(Ordering::SeqCst);
    let updates = joins.updates.load(Ordering::SeqCst);
    assert_eq!(
        twice,
        0,
        "{twice} of {} joins reached the picker twice ({updates} updates)",
        n - 5
    );
}

// ---------------------------------------------------------------------------------------
// 2. The ring made by one merge equals the ring built afresh.
// ---------------------------------------------------------------------------------------

/// Sixteen positions spread over the ring: points of different nodes collide often.
fn tiny(bytes: &[u8]) -> u64 {
    (xxh3(bytes) % 16).wrapping_mul(0x1111_1111_1111_1111)
}

/// Every point of every node at one position.
fn one_point(_: &[u8]) -> u64 {
    1 << 63
}

/// The documented rule, computed naively: virtual node `i` of `name` sits at
/// `hash("{name}#{i}")`; a position belongs to the first point at or after it (wrapping),
/// and of points at one position the one whose name sorts first.
struct Reference {
    points: Vec<(u64, String)>,
}

impl Reference {
    fn new(names: &[String], vnodes: usize, hash: HashFn) -> Self {
        let mut points: Vec<(u64, String)> = names
            .iter()
            .flat_map(|n| {
                (0..vnodes).map(move |i| (hash(format!("{n}#{i}").as_bytes()), n.clone()))
            })
            .collect();
        points.sort();
        Self { points }
    }

    fn owner(&self, h: u64) -> Option<&str> {
        let i = self.points.partition_point(|(p, _)| *p < h);
        let i = if i == self.points.len() { 0 } else { i };
        self.points.get(i).map(|(_, n)| n.as_str())
    }

    /// Probes at, just before and just after every point, the ends, and `extra` more.
    fn probes(&self, rng: &mut Rng, extra: usize) -> Vec<u64> {
        let mut probes = vec![0, u64::MAX];
        for (p, _) in &self.points {
            probes.extend([*p, p.wrapping_sub(1), p.wrapping_add(1)]);
        }
        probes.extend((0..extra).map(|_| rng.next()));
        probes
    }
}

fn owner_name(ring: &Ring, h: u64) -> Option<&str> {
    ring.owner_of_hash(h).map(|i| ring.name(i))
}

fn all_points(ring: &Ring) -> Vec<&str> {
    ring.walk(0).map(|i| ring.name(i)).collect()
}

/// `merged` and `fresh` are the same ring over `names`, and both follow the documented rule.
fn assert_same_ring(
    merged: &Ring,
    fresh: &Ring,
    names: &[String],
    reference: &Reference,
    probes: &[u64],
    ctx: &str,
) {
    assert_eq!(merged.len(), names.len(), "{ctx}");
    assert_eq!(fresh.len(), names.len(), "{ctx}");
    // A fresh ring numbers its nodes in order; a merged one keeps each node's index (a new
    // node takes a free one), so compare the nodes by name, and each index both ways.
    for (i, name) in names.iter().enumerate() {
        assert_eq!(fresh.name(i), name, "{ctx}: node {i}");
        let m = merged
            .index_of(name)
            .unwrap_or_else(|| panic!("{ctx}: {name} missing"));
        assert_eq!(merged.name(m), name, "{ctx}: node {m}");
    }
    let mut live: Vec<&str> = (0..merged.indices())
        .map(|i| merged.name(i))
        .filter(|n| !n.is_empty())
        .collect();
    live.sort_unstable();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(live, want, "{ctx}");
    // Every point, in ring order: the same points with the same tie-breaks.
    assert_eq!(all_points(merged), all_points(fresh), "{ctx}");
    for &h in probes {
        let want = reference.owner(h);
        assert_eq!(owner_name(fresh, h), want, "{ctx}: fresh ring at {h:#x}");
        assert_eq!(owner_name(merged, h), want, "{ctx}: merged ring at {h:#x}");
    }
}

#[test]
fn a_merged_ring_equals_a_fresh_one_over_random_changes() {
    let cases: [(&str, HashFn, usize); 5] = [
        ("xxh3", xxh3, 40),
        ("tiny", tiny, 1),
        ("tiny", tiny, 3),
        ("tiny", tiny, 7),
        ("one point", one_point, 2),
    ];
    let pool: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    for (seed, (label, hash, vnodes)) in cases.into_iter().enumerate() {
        let mut rng = Rng(seed as u64 + 1);
        let mut names: Vec<String> = Vec::new();
        let mut ring = Ring::with_hash(&names, vnodes, hash);
        for step in 0..80 {
            // Keep most nodes (sometimes none), then add up to five absent ones.
            let keep_none = rng.percent(4);
            let keep: Vec<bool> = (0..names.len())
                .map(|_| !keep_none && rng.percent(75))
                .collect();
            let mut absent: Vec<&String> = pool.iter().filter(|n| !names.contains(n)).collect();
            let mut added: Vec<String> = Vec::new();
            for _ in 0..rng.below(6) {
                if absent.is_empty() {
                    break;
                }
                added.push(absent.swap_remove(rng.below(absent.len())).clone());
            }
            let kept: Vec<&str> = names
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(n, _)| n.as_str())
                .collect();
            let merged = ring.with_changes(
                |i| kept.contains(&ring.name(i)),
                added.iter().map(|n| Arc::<str>::from(n.as_str())),
            );
            let next: Vec<String> = names
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(n, _)| n.clone())
                .chain(added.iter().cloned())
                .collect();
            let fresh = Ring::with_hash(&next, vnodes, hash);
            let reference = Reference::new(&next, vnodes, hash);
            let probes = reference.probes(&mut rng, 500);
            let ctx = format!("{label} x{vnodes}, step {step}, nodes {next:?}");
            assert_same_ring(&merged, &fresh, &next, &reference, &probes, &ctx);
            // The next step merges into the merged ring: errors would accumulate.
            ring = merged;
            names = next;
        }
    }
}

#[test]
fn at_a_shared_point_the_first_name_owns_and_the_next_takes_over() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let none = std::iter::empty::<Arc<str>>;
    let ring = Ring::with_hash(&["b", "c", "a"], 2, one_point);
    assert_eq!(all_points(&ring), ["a", "a", "b", "b", "c", "c"]);
    for h in [0, 1 << 63, u64::MAX] {
        assert_eq!(owner_name(&ring, h), Some("a"));
    }

    // "a" leaves: "b", whose points were behind it, owns the position.
    let without_a = ring.with_changes(|i| ring.name(i) != "a", none());
    assert_eq!(owner_name(&without_a, 0), Some("b"));
    assert_eq!(all_points(&without_a), ["b", "b", "c", "c"]);
    // "a" comes back, then "0" (which sorts before it) joins.
    let back = without_a.with_changes(|_| true, [Arc::from("a")]);
    assert_eq!(owner_name(&back, 0), Some("a"));
    let zero = back.with_changes(|_| true, [Arc::from("0")]);
    assert_eq!(owner_name(&zero, u64::MAX), Some("0"));
    assert_eq!(all_points(&zero), ["0", "0", "a", "a", "b", "b", "c", "c"]);
    // "b" and "0" leave at once: "a" again.
    let two = zero.with_changes(|i| !["b", "0"].contains(&zero.name(i)), none());
    assert_eq!(owner_name(&two, 0), Some("a"));

    for (merged, order) in [
        (&without_a, names(&["b", "c"])),
        (&back, names(&["b", "c", "a"])),
        (&zero, names(&["b", "c", "a", "0"])),
        (&two, names(&["c", "a"])),
    ] {
        let fresh = Ring::with_hash(&order, 2, one_point);
        let reference = Reference::new(&order, 2, one_point);
        let probes = reference.probes(&mut Rng(9), 50);
        assert_same_ring(
            merged,
            &fresh,
            &order,
            &reference,
            &probes,
            &format!("{order:?}"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. The consistent-hash Endpoint while instances come and go.
// ---------------------------------------------------------------------------------------

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("key{k}")).collect()
}

/// Each key's answer (the id of the server that answered it).
async fn answers(ep: &Endpoint<Call, String>, keys: &[String]) -> Vec<String> {
    run(ep, keys.len(), 8, |i| Call::keyed(keys[i].clone()))
        .await
        .into_iter()
        .zip(keys)
        .map(|(r, k)| r.unwrap_or_else(|e| panic!("{k}: {e}")))
        .collect()
}

/// One call on its own, so that it (not one of many concurrent calls, the others of which
/// would keep picking from the previous table meanwhile) brings the table up to date.
async fn touch(ep: &Endpoint<Call, String>) {
    ep.invoke(Call::keyed("touch")).await.unwrap();
}

/// Each key's owner on a ring built afresh over `ids`, as the Endpoint's should be.
fn owners(ids: &[String], keys: &[String]) -> Vec<String> {
    let ring = Ring::new(ids, DEFAULT_VNODES);
    keys.iter()
        .map(|k| ring.name(ring.owner(k.as_bytes()).unwrap()).to_owned())
        .collect()
}

/// Registrations by server index; the instance id is the server's id.
struct Fleet {
    servers: Vec<TestServer>,
    registry: MemoryRegistry,
    watch: ServiceWatch,
    live: BTreeMap<usize, Registration>,
}

impl Fleet {
    async fn new(n: usize) -> Self {
        let registry = MemoryRegistry::new();
        let watch = registry.discovery().watch(SERVICE).unwrap();
        Self {
            servers: servers(n, Duration::ZERO).await,
            registry,
            watch,
            live: BTreeMap::new(),
        }
    }

    async fn join(&mut self, s: usize) {
        let reg = self
            .registry
            .register(self.servers[s].instance())
            .await
            .unwrap();
        assert!(self.live.insert(s, reg).is_none());
    }

    async fn leave(&mut self, s: usize) {
        self.live.remove(&s).unwrap().deregister().await.unwrap();
    }

    /// Waits until discovery shows the live instances.
    async fn settle(&mut self) {
        let want = self
            .live
            .keys()
            .map(|&s| (self.servers[s].id.clone(), self.servers[s].addr.to_string()))
            .collect();
        settle(&mut self.watch, &want).await;
    }

    fn ids(&self) -> Vec<String> {
        self.live
            .keys()
            .map(|&s| self.servers[s].id.clone())
            .collect()
    }

    /// Requests served so far by each server not registered now.
    fn gone_hits(&self) -> Vec<(String, usize)> {
        self.servers
            .iter()
            .enumerate()
            .filter(|(s, _)| !self.live.contains_key(s))
            .map(|(_, srv)| (srv.id.clone(), srv.hits()))
            .collect()
    }

    fn endpoint(&self, picker: ConsistentHash) -> Endpoint<Call, String> {
        builder(&HttpClient::new(), &self.registry.discovery())
            .picker(picker)
            .hash_key(|c: &Call| c.key.clone())
            .build()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_without_a_window_follows_every_change_exactly() {
    let mut fleet = Fleet::new(8).await;
    for s in 0..4 {
        fleet.join(s).await;
    }
    fleet.settle().await;
    let ep = fleet.endpoint(ConsistentHash::new().coalesce(Duration::ZERO));
    let keys = keys(120);
    let mut before = answers(&ep, &keys).await;
    assert_eq!(before, owners(&fleet.ids(), &keys));

    let mut rng = Rng(42);
    let (mut joins, mut leaves) = (0, 0);
    for step in 0..40 {
        let absent: Vec<usize> = (0..fleet.servers.len())
            .filter(|s| !fleet.live.contains_key(s))
            .collect();
        let join = !absent.is_empty() && (fleet.live.len() <= 2 || rng.percent(50));
        let s = if join {
            absent[rng.below(absent.len())]
        } else {
            let present: Vec<usize> = fleet.live.keys().copied().collect();
            present[rng.below(present.len())]
        };
        let id = fleet.servers[s].id.clone();
        if join {
            fleet.join(s).await;
            joins += 1;
        } else {
            fleet.leave(s).await;
            leaves += 1;
        }
        fleet.settle().await;
        // Every server that is not registered stays alive: a call to one would be answered.
        let gone = fleet.gone_hits();
        touch(&ep).await;
        let now = answers(&ep, &keys).await;
        let ctx = format!("step {step}: {} {id}", if join { "join" } else { "leave" });
        for (k, key) in keys.iter().enumerate() {
            if join {
                assert!(
                    now[k] == before[k] || now[k] == id,
                    "{ctx}: {key} moved from {} to {}",
                    before[k],
                    now[k]
                );
            } else {
                assert_ne!(now[k], id, "{ctx}: {key} went to the instance that left");
                if before[k] != id {
                    assert_eq!(now[k], before[k], "{ctx}: {key} moved, its owner stayed");
                }
            }
        }
        assert_eq!(
            now,
            owners(&fleet.ids(), &keys),
            "{ctx}: not the fresh ring's owners"
        );
        assert_eq!(
            fleet.gone_hits(),
            gone,
            "{ctx}: a departed instance was called"
        );
        before = now;
    }
    assert!(
        joins >= 10 && leaves >= 10,
        "joins {joins}, leaves {leaves}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_with_the_default_window_skips_leavers_at_once_and_serves_joiners_soon() {
    let window = DEFAULT_COALESCE;
    let mut fleet = Fleet::new(9).await;
    for s in 0..3 {
        fleet.join(s).await;
    }
    fleet.settle().await;
    let ep = fleet.endpoint(ConsistentHash::new());
    let keys = keys(100);
    let mut stale_rounds = 0;
    let mut next_new = 3;
    for round in 0..3 {
        tokio::time::sleep(window * 2).await;
        assert_eq!(answers(&ep, &keys).await, owners(&fleet.ids(), &keys));
        // A quiet window since the last rebuild: the next change is applied by the first
        // call that sees it (one call, so that the burst below falls within the window).
        let first = next_new;
        next_new += 1;
        fleet.join(first).await;
        fleet.settle().await;
        let ring_ids = fleet.ids();
        let first_id = fleet.servers[first].id.clone();
        let probe = keys
            .iter()
            .zip(owners(&ring_ids, &keys))
            .find(|(_, owner)| *owner == first_id)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| panic!("round {round}: {first_id} owns no key"));
        assert_eq!(
            ep.invoke(Call::keyed(probe)).await.unwrap(),
            first_id,
            "round {round}: the first change after a quiet window waited"
        );

        // Within the window of that rebuild: one instance leaves, another joins.
        let leaver = *fleet.live.keys().next().unwrap();
        let leaver_id = fleet.servers[leaver].id.clone();
        let joiner_id = fleet.servers[next_new].id.clone();
        fleet.leave(leaver).await;
        fleet.join(next_new).await;
        next_new += 1;
        fleet.settle().await;
        let settled = Instant::now();
        let gone = fleet.gone_hits();

        // Until the rebuild, a key of the leaver goes to the next node clockwise on the
        // previous ring; after it, every key goes to its owner on the new one.
        let present: BTreeSet<String> = fleet.ids().into_iter().collect();
        let old = Ring::new(&ring_ids, DEFAULT_VNODES);
        let stale: Vec<String> = keys
            .iter()
            .map(|k| {
                old.walk(xxh3(k.as_bytes()))
                    .map(|m| old.name(m))
                    .find(|n| present.contains(*n))
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let fresh = owners(&fleet.ids(), &keys);
        assert!(
            fresh.contains(&joiner_id),
            "round {round}: {joiner_id} owns no key"
        );
        touch(&ep).await;
        let mut saw_stale = false;
        loop {
            let now = answers(&ep, &keys).await;
            for (k, key) in keys.iter().enumerate() {
                assert_ne!(now[k], leaver_id, "round {round}: {key} went to the leaver");
                assert!(
                    now[k] == stale[k] || now[k] == fresh[k],
                    "round {round}: {key} went to {}, expected {} (previous ring) or {} (new)",
                    now[k],
                    stale[k],
                    fresh[k]
                );
            }
            if now == fresh {
                break;
            }
            saw_stale = true;
            assert!(
                settled.elapsed() < Duration::from_secs(2),
                "round {round}: {joiner_id} still gets none of its keys after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = settled.elapsed();
        assert_eq!(
            fleet.gone_hits(),
            gone,
            "round {round}: a departed instance was called"
        );
        stale_rounds += usize::from(saw_stale);
        eprintln!(
            "round {round}: new ring in use {took:?} after discovery (previous ring seen \
             first: {saw_stale})"
        );
    }
    // The burst came a few milliseconds into a 100 ms window: its rebuild waited at least
    // once (each round, unless the machine stalled for the whole window).
    assert!(
        stale_rounds >= 1,
        "no burst waited for the coalescing window"
    );
}
