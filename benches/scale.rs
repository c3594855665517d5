//! Discovery at scale against a real etcd on loopback: what following a churn costs a client
//! whatever the size of the set, and what a cold start costs at 50,000 instances.
//!
//! The client runs in a child process (this same binary, `client` mode) so that its CPU time
//! (every thread's, from `/proc/self/task/*/schedstat`) and resident memory are its own. The
//! parent loads etcd, writes the churn, and reads back, per change, when the child saw it:
//! lag = wall clock when the change was visible in the child's snapshot − wall clock when the
//! parent's put or delete returned (negative when the watch event beat the put's reply; counted
//! as 0).
//!
//! Scenarios (all printed as `SCALE ...` lines, summarised in BENCHMARKS.md):
//! - `target`: 2,000 single registrations on a service of 5,000 → 7,000 (plus 95 services of 50),
//!   written one after another: client CPU for the whole churn, lag of the last change, p99.
//! - `cold`: 50,000 instances (one service of 20,000, 600 of 50): time until the view is
//!   complete, resident memory per instance.
//! - `matrix`: 1k / 10k / 50k instances in the watched service × 100 / 1,000 changes per
//!   second (half joins, half leaves): CPU per change, lag p50/p99, resident memory.
//! - `endpoint`: a consistent-hash Endpoint (160 points per instance) over 5,000 instances
//!   serving calls while 1,000 changes per second hit its service, against the same churn on
//!   another service (same etcd load): calls per second, interleaved, median of 5 rounds.
//!
//! Run with: `cargo bench --bench scale` (all), or `cargo bench --bench scale -- target cold`
//! (some). Needs `etcd` on the PATH (`apt-get install -y etcd-server`). etcd runs with
//! `--unsafe-no-fsync` so the writer, not the disk, sets the pace.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use etcd_client::{Client, Txn, TxnOp};
use svckit::balancer::{ConsistentHash, HttpClient};
use svckit::registry::{
    DiscoveryState, EtcdOptions, EtcdRegistry, InstanceChange, Instances, Registry,
};
use svckit_testing::Etcd;

const BIG: &str = "big";
const OTHER: &str = "other";
/// The address of instances nobody calls.
const NOWHERE: &str = "127.0.0.1:9";

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// CPU time of every live thread of this process, in ns.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        return client(&args[1..]);
    }
    // `cargo bench` passes `--bench`; anything else names scenarios.
    let wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.contains(&name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if run("target") {
            target().await;
        }
        if run("cold") {
            cold().await;
        }
        if run("matrix") {
            matrix().await;
        }
        if run("endpoint") {
            endpoint().await;
        }
    });
}

// ---------------------------------------------------------------------------------------
// The parent: etcd, the load, the churn, the figures.

fn start_etcd() -> Etcd {
    Etcd::builder()
        .arg("--unsafe-no-fsync=true")
        .arg("--quota-backend-bytes=8589934592")
        .start()
}

fn key(id: &str, name: &str) -> String {
    format!("/services/{id}/{name}")
}

/// Puts `n` instances of `name` (ids `<tag><i>`) in transactions of 128.
async fn load(etcd: &mut Client, name: &str, tag: &str, n: usize, addr: &str) {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}{i:06}")).collect();
    for chunk in ids.chunks(128) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|id| TxnOp::put(key(id, name), addr, None))
            .collect();
        etcd.txn(Txn::new().and_then(ops)).await.unwrap();
    }
}

/// The child process and its pipes.
struct ClientProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ClientProcess {
    fn spawn(endpoint: &str, expect: usize, serve: Option<SocketAddr>) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.arg("client").arg(endpoint).arg(expect.to_string());
        if let Some(addr) = serve {
            cmd.arg(addr.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line that starts with `tag`, split in words after it.
    fn expect(&mut self, tag: &str) -> Vec<String> {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "client exited waiting for {tag}"
            );
            if let Some(rest) = line.trim_end().strip_prefix(tag) {
                return rest.split_whitespace().map(str::to_owned).collect();
            }
        }
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A churn's record: when each change's request returned, by id and kind.
#[derive(Default)]
struct Written {
    /// (id, joined?) → wall clock ns when the put/delete returned.
    at: HashMap<(String, bool), i64>,
}

/// A churn to write: `changes` changes to `name` at `rate` per second (0: one after another,
/// as fast as they return), alternately a new instance (id `<tag><n>`, address `addr`) and the
/// removal of the oldest existing one; `joins_only` writes only new instances.
struct Churn {
    name: &'static str,
    changes: usize,
    rate: u32,
    joins_only: bool,
    tag: String,
    addr: &'static str,
}

/// Writes `plan` over `existing` (which the new instances join). Returns what was written
/// when, and the instances left.
async fn churn(
    etcd: Client,
    mut existing: VecDeque<String>,
    plan: Churn,
) -> (Written, VecDeque<String>) {
    let Churn {
        name,
        changes,
        rate,
        joins_only,
        tag,
        addr,
    } = plan;
    let written = Arc::new(std::sync::Mutex::new(Written::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = (rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    for c in 0..changes {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let join = joins_only || c % 2 == 0;
        let id = if join {
            let id = format!("{tag}{c:06}");
            existing.push_back(id.clone());
            id
        } else {
            existing.pop_front().expect("an instance to remove")
        };
        let mut etcd = etcd.clone();
        let key = key(&id, name);
        let written = written.clone();
        let write = async move {
            if join {
                etcd.put(key, addr, None).await.unwrap();
            } else {
                etcd.delete(key, None).await.unwrap();
            }
            written.lock().unwrap().at.insert((id, join), now_ns());
        };
        if rate == 0 {
            write.await;
        } else {
            tasks.spawn(write);
            // Bound the writes in flight.
            while tasks.len() > 64 {
                tasks.join_next().await;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let written = Arc::try_unwrap(written)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_default();
    (written, existing)
}

/// What the child reported for a churn: lags in ms (sorted), CPU, RSS, and the last lag.
struct Seen {
    lags_ms: Vec<f64>,
    last_ms: f64,
    cpu_s: f64,
    rss_kib: u64,
    missing: usize,
}

/// Tells the child to mark the start, runs `write`, waits until the child saw all of it,
/// and collects the figures.
async fn observe<F: std::future::Future<Output = (Written, VecDeque<String>)>>(
    child: &mut ClientProcess,
    write: F,
) -> (Seen, VecDeque<String>) {
    child.send("mark");
    child.expect("marked");
    let (written, left) = write.await;
    child.send(&format!("until {}", written.at.len()));
    let done = child.expect("done");
    let (cpu_ns, rss): (u64, u64) = (done[0].parse().unwrap(), done[1].parse().unwrap());
    let mut seen: HashMap<(String, bool), i64> = HashMap::new();
    loop {
        let words = child.expect("");
        match words.first().map(String::as_str) {
            Some("end") => break,
            Some("+") | Some("-") => {
                seen.insert(
                    (words[1].clone(), words[0] == "+"),
                    words[2].parse().unwrap(),
                );
            }
            _ => {}
        }
    }
    let mut lags = Vec::with_capacity(written.at.len());
    let mut missing = 0;
    let mut last = (0i64, 0.0f64);
    for (k, at) in &written.at {
        match seen.get(k) {
            Some(&v) => {
                let lag = (v - at).max(0) as f64 / 1e6;
                lags.push(lag);
                if *at > last.0 {
                    last = (*at, lag);
                }
            }
            None => missing += 1,
        }
    }
    lags.sort_by(f64::total_cmp);
    let seen = Seen {
        lags_ms: lags,
        last_ms: last.1,
        cpu_s: cpu_ns as f64 / 1e9,
        rss_kib: rss,
        missing,
    };
    (seen, left)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Target: 2,000 registrations one after another on a service of 5,000 (plus 95 × 50).
async fn target() {
    let etcd = start_etcd();
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    load(&mut raw, BIG, "b", 5_000, NOWHERE).await;
    for s in 0..95 {
        load(&mut raw, &format!("s{s:03}"), "i", 50, NOWHERE).await;
    }
    for round in 0..5 {
        let mut child = ClientProcess::spawn(&etcd.endpoint(), 5_000, None);
        child.expect("ready");
        let tag = format!("t{round}x");
        let (seen, _) = observe(
            &mut child,
            churn(
                raw.clone(),
                VecDeque::new(),
                Churn {
                    name: BIG,
                    changes: 2_000,
                    rate: 0,
                    joins_only: true,
                    tag: tag.clone(),
                    addr: NOWHERE,
                },
            ),
        )
        .await;
        drop(child);
        // Back to 5,000 for the next round.
        let ids: Vec<String> = (0..2_000).map(|c| format!("{tag}{c:06}")).collect();
        for chunk in ids.chunks(128) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|id| TxnOp::delete(key(id, BIG), None))
                .collect();
            raw.txn(Txn::new().and_then(ops)).await.unwrap();
        }
        println!(
            "SCALE target round={round} service=5000->7000 changes=2000 client_cpu_s={:.3} last_visible_ms={:.2} lag_p50_ms={:.2} lag_p99_ms={:.2} lag_max_ms={:.2} missing={} rss_mib={:.1}",
            seen.cpu_s,
            seen.last_ms,
            pct(&seen.lags_ms, 0.5),
            pct(&seen.lags_ms, 0.99),
            pct(&seen.lags_ms, 1.0),
            seen.missing,
            seen.rss_kib as f64 / 1024.0
        );
    }
}

/// Cold start with 50,000 instances: one service of 20,000, 600 services of 50.
async fn cold() {
    let etcd = start_etcd();
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    load(&mut raw, BIG, "b", 20_000, NOWHERE).await;
    for s in 0..600 {
        load(&mut raw, &format!("s{s:03}"), "i", 50, "10.1.2.3:8080").await;
    }
    for round in 0..5 {
        // The floor: the same listing by a bare etcd client, nothing parsed.
        let listed = Instant::now();
        let all = raw
            .get(
                "/services/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        println!(
            "SCALE cold round={round} bare_get_ms={:.1} keys={}",
            listed.elapsed().as_secs_f64() * 1e3,
            all.kvs().len()
        );
        let mut child = ClientProcess::spawn(&etcd.endpoint(), 20_000, None);
        let ready = child.expect("ready");
        let complete_ms: f64 = ready[0].parse().unwrap();
        let (rss_before, rss_after, total): (u64, u64, usize) = (
            ready[1].parse().unwrap(),
            ready[2].parse().unwrap(),
            ready[3].parse().unwrap(),
        );
        let connected_ms: f64 = ready[4].parse().unwrap();
        println!(
            "SCALE cold round={round} instances={total} complete_ms={complete_ms:.1} of_which_connect_ms={connected_ms:.1} rss_before_mib={:.1} rss_after_mib={:.1} bytes_per_instance={:.0}",
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0,
            (rss_after.saturating_sub(rss_before) * 1024) as f64 / total as f64
        );
    }
}

/// 1k / 10k / 50k instances in the watched service × 100 / 1,000 changes per second.
async fn matrix() {
    for n in [1_000usize, 10_000, 50_000] {
        let etcd = start_etcd();
        let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
        load(&mut raw, BIG, "b", n, NOWHERE).await;
        let mut existing: VecDeque<String> = (0..n).map(|i| format!("b{i:06}")).collect();
        for (k, rate) in [100u32, 1_000].into_iter().enumerate() {
            let changes = if rate == 100 { 400 } else { 3_000 };
            // Half joins, half leaves: the service stays at n instances.
            let mut child = ClientProcess::spawn(&etcd.endpoint(), n, None);
            child.expect("ready");
            let tag = format!("m{k}x");
            let (seen, left) = observe(
                &mut child,
                churn(
                    raw.clone(),
                    existing,
                    Churn {
                        name: BIG,
                        changes,
                        rate,
                        joins_only: false,
                        tag,
                        addr: NOWHERE,
                    },
                ),
            )
            .await;
            existing = left;
            println!(
                "SCALE matrix instances={n} rate={rate}/s changes={changes} cpu_per_change_us={:.1} client_cpu_s={:.3} lag_p50_ms={:.2} lag_p99_ms={:.2} missing={} rss_mib={:.1}",
                seen.cpu_s * 1e6 / changes as f64,
                seen.cpu_s,
                pct(&seen.lags_ms, 0.5),
                pct(&seen.lags_ms, 0.99),
                seen.missing,
                seen.rss_kib as f64 / 1024.0
            );
        }
    }
}

/// A consistent-hash Endpoint over 5,000 instances serving calls while its service churns
/// at 1,000 changes per second, against the same churn on another service.
async fn endpoint() {
    let server = serve().await;
    let etcd = start_etcd();
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    let addr: &'static str = server.to_string().leak();
    load(&mut raw, BIG, "b", 5_000, addr).await;
    load(&mut raw, OTHER, "o", 5_000, addr).await;
    let mut child = ClientProcess::spawn(&etcd.endpoint(), 5_000, Some(server));
    child.expect("ready");
    let mut left_big: VecDeque<String> = (0..5_000).map(|i| format!("b{i:06}")).collect();
    let mut left_other: VecDeque<String> = (0..5_000).map(|i| format!("o{i:06}")).collect();
    let mut ratios = Vec::new();
    let secs = 3;
    let changes = 3_000;
    for round in 0..5 {
        let mut figures = [(0f64, 0u64); 2];
        // Interleaved: churn elsewhere (control), then churn on the Endpoint's service.
        for (phase, on_big) in [false, true].into_iter().enumerate() {
            let tag = format!("e{round}{phase}x");
            child.send(&format!("calls {secs}"));
            let (name, leaving) = if on_big {
                (BIG, &mut left_big)
            } else {
                (OTHER, &mut left_other)
            };
            let writer = tokio::spawn(churn(
                raw.clone(),
                std::mem::take(leaving),
                Churn {
                    name,
                    changes,
                    rate: 1_000,
                    joins_only: false,
                    tag,
                    addr,
                },
            ));
            let calls = tokio::task::block_in_place(|| child.expect("calls"));
            *leaving = writer.await.unwrap().1;
            let (n, failed): (f64, u64) = (calls[0].parse().unwrap(), calls[1].parse().unwrap());
            figures[phase] = (n / secs as f64, failed);
        }
        let ratio = figures[1].0 / figures[0].0;
        ratios.push(ratio);
        println!(
            "SCALE endpoint round={round} instances=5000 vnodes=160 churn=1000/s calls_per_s_control={:.0} calls_per_s_churn={:.0} ratio={ratio:.3} failed={}/{}",
            figures[0].0, figures[1].0, figures[0].1, figures[1].1
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("SCALE endpoint median_ratio={:.3}", ratios[2]);
}

/// A plain HTTP/1 server answering every request with its path, on its own runtime thread.
async fn serve() -> SocketAddr {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    rx.await.unwrap()
}

// ---------------------------------------------------------------------------------------
// The child: one registry client following everything, reporting what it saw.

/// One change as the child saw it: joined (or left), the id, wall clock ns when visible.
type Visible = (bool, Arc<str>, i64);

fn client(args: &[String]) {
    let endpoint = args[0].clone();
    let expect: usize = args[1].parse().unwrap();
    let serve: Option<String> = args.get(2).cloned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let rss_before = rss_kib();
        let started = Instant::now();
        let registry = EtcdRegistry::connect(EtcdOptions::new([endpoint]))
            .await
            .unwrap();
        let connected_ms = started.elapsed().as_secs_f64() * 1e3;
        let discovery = registry.discovery();
        let mut watch = discovery.watch(BIG).unwrap();
        // The view publishes the listing, then says Live: wake on either.
        let mut state = discovery.state_watch();
        while !(discovery.state() == DiscoveryState::Live && watch.snapshot().len() >= expect) {
            tokio::select! {
                _ = watch.changed() => {}
                _ = state.changed() => {}
            }
        }
        let complete_ms = started.elapsed().as_secs_f64() * 1e3;
        let total = discovery.all().len();
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "ready {complete_ms:.2} {rss_before} {} {total} {connected_ms:.2}",
            rss_kib()
        )
        .unwrap();
        out.flush().unwrap();
        drop(out);

        // Per change: when it became visible (recorded by a task that follows the watch).
        let log: Arc<std::sync::Mutex<Vec<Visible>>> = Arc::default();
        let follower = {
            let log = log.clone();
            let mut watch = discovery.watch(BIG).unwrap();
            let mut seen: Instances = watch.mark_seen();
            tokio::spawn(async move {
                while let Ok(next) = watch.changed().await {
                    let at = now_ns();
                    let mut log = log.lock().unwrap();
                    for change in next.changes_since(&seen) {
                        match change {
                            InstanceChange::Added(i) => log.push((true, i.shared_id().clone(), at)),
                            InstanceChange::Removed(i) => {
                                log.push((false, i.shared_id().clone(), at))
                            }
                            InstanceChange::Updated { .. } => {}
                        }
                    }
                    drop(log);
                    seen = next;
                }
            })
        };
        let ep = serve.map(|_| {
            HttpClient::new()
                .endpoint(
                    &discovery,
                    BIG,
                    |k: u64| http::Request::get(format!("/k/{k}")).body(Bytes::new()),
                    |r: http::Response<Bytes>| Ok::<_, Infallible>(r.into_body()),
                )
                .picker(ConsistentHash::new())
                .hash_key(|k: &u64| k.to_le_bytes())
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap()
        });

        let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(std::io::stdin()).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut cpu_mark = 0u64;
        while let Some(line) = commands.recv().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut out = std::io::stdout().lock();
            match words.as_slice() {
                ["mark"] => {
                    log.lock().unwrap().clear();
                    cpu_mark = cpu_ns();
                    writeln!(out, "marked").unwrap();
                }
                ["until", n] => {
                    // Until every change written was seen (or 30 s).
                    let n: usize = n.parse().unwrap();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while log.lock().unwrap().len() < n && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let cpu = cpu_ns().saturating_sub(cpu_mark);
                    writeln!(out, "done {cpu} {}", rss_kib()).unwrap();
                    for (joined, id, at) in log.lock().unwrap().drain(..) {
                        writeln!(out, "{} {id} {at}", if joined { "+" } else { "-" }).unwrap();
                    }
                    writeln!(out, "end").unwrap();
                }
                ["calls", secs] => {
                    let ep = ep.as_ref().expect("started with a server");
                    let secs: u64 = secs.parse().unwrap();
                    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
                    let until = Instant::now() + Duration::from_secs(secs);
                    let mut callers = tokio::task::JoinSet::new();
                    for c in 0..16u64 {
                        let (ep, ok, failed) = (ep.clone(), ok.clone(), failed.clone());
                        callers.spawn(async move {
                            let mut k = c.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                            while Instant::now() < until {
                                k = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
                                match ep.invoke(k).await {
                                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                                    Err(e) => {
                                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                            eprintln!("first failed call: {e}");
                                        }
                                        0
                                    }
                                };
                            }
                        });
                    }
                    while callers.join_next().await.is_some() {}
                    writeln!(
                        out,
                        "calls {} {}",
                        ok.load(Ordering::Relaxed),
                        failed.load(Ordering::Relaxed)
                    )
                    .unwrap();
                }
                _ => {}
            }
            out.flush().unwrap();
        }
        follower.abort();
    });
}
