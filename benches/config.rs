//! The config center's latency against a real etcd on loopback, five rounds each:
//!
//! - `watch`: put one key → a `ConfigWatch::changed()` in another registry client returns the
//!   new value. Measured from just before the put is sent (what a user waits for) and from
//!   when the put returned. Target p99 ≤ 5 ms.
//! - `confd`: put one key → `svckit confd --watch`'s engine (`Confd::watch`) has rewritten
//!   `dest` and started `reload_cmd` (which appends `date +%s%N` to a file). Target p99 ≤ 50 ms;
//!   the renderer waits for 20 ms without a new revision before it renders (coalescing), so
//!   that is the floor.
//!
//! Prints `CONFIG ...` lines per round and the medians over rounds (BENCHMARKS.md).
//! Run with: `cargo bench --bench config` (or `-- watch` / `-- confd`). Needs `etcd` on the
//! PATH (`apt-get install -y etcd-server`).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use svckit::config::confd::Confd;
use svckit::config::ConfigWatch;
use svckit::registry::{EtcdOptions, EtcdRegistry, Keyspace, Registry};
use svckit_testing::Etcd;
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 5;
const WATCH_SAMPLES: usize = 300;
const CONFD_SAMPLES: usize = 40;

#[derive(Debug, Deserialize)]
struct Settings {
    greeting: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

async fn keyspace(etcd: &Etcd) -> Keyspace {
    EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
        .await
        .expect("connect to the bench etcd")
        .keyspace()
}

/// p50/p99 in ms of `samples`.
fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

async fn watch_round(
    writer: &Keyspace,
    config: &mut ConfigWatch<Settings>,
    round: usize,
) -> [f64; 4] {
    let (mut from_send, mut from_reply) = (Vec::new(), Vec::new());
    for i in 0..WATCH_SAMPLES {
        let value = format!("r{round}-{i}");
        let sent = Instant::now();
        writer.put("/bench/watch/greeting", &value).await.unwrap();
        let replied = Instant::now();
        loop {
            let seen = config.changed().await.unwrap();
            if seen.greeting == value {
                break;
            }
        }
        let seen = Instant::now();
        from_send.push((seen - sent).as_secs_f64() * 1e3);
        from_reply.push(seen.saturating_duration_since(replied).as_secs_f64() * 1e3);
    }
    let (p50, p99) = summary(from_send);
    let (r50, r99) = summary(from_reply);
    println!(
        "CONFIG watch round={round} samples={WATCH_SAMPLES} put_to_changed_p50_ms={p50:.3} p99_ms={p99:.3} after_reply_p50_ms={r50:.3} after_reply_p99_ms={r99:.3}"
    );
    [p50, p99, r50, r99]
}

fn write_confdir(dir: &Path, dest: &Path, reloads: &Path) {
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("templates/app.conf.tmpl"),
        "greeting = {{getv \"/greeting\"}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("conf.d/app.toml"),
        format!(
            "[template]\nsrc = \"app.conf.tmpl\"\ndest = \"{}\"\nprefix = \"/bench/confd\"\nkeys = [\"/greeting\"]\nreload_cmd = \"date +%s%N >> {}\"\n",
            dest.display(),
            reloads.display()
        ),
    )
    .unwrap();
}

async fn confd_round(writer: &Keyspace, dest: &Path, reloads: &Path, round: usize) -> [f64; 4] {
    let (mut rewritten, mut reloaded) = (Vec::new(), Vec::new());
    for i in 0..CONFD_SAMPLES {
        let value = format!("r{round}-{i}");
        let expect = format!("greeting = {value}\n");
        let lines_before = std::fs::read_to_string(reloads)
            .unwrap_or_default()
            .lines()
            .count();
        let sent_ns = now_ns();
        let sent = Instant::now();
        writer.put("/bench/confd/greeting", &value).await.unwrap();
        // Poll every 0.2 ms: when dest has the new content, then when reload_cmd wrote its line.
        let mut dest_at = None;
        let reload_ns = loop {
            if dest_at.is_none() && std::fs::read_to_string(dest).is_ok_and(|c| c == expect) {
                dest_at = Some(sent.elapsed());
            }
            let log = std::fs::read_to_string(reloads).unwrap_or_default();
            if let Some(line) = log.lines().nth(lines_before) {
                break line.trim().parse::<i128>().unwrap();
            }
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "no reload for {value}"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let dest_at = dest_at.unwrap_or_else(|| sent.elapsed());
        rewritten.push(dest_at.as_secs_f64() * 1e3);
        reloaded.push((reload_ns - sent_ns) as f64 / 1e6);
        // Let the burst window close so each sample is one change.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (d50, d99) = summary(rewritten);
    let (r50, r99) = summary(reloaded);
    println!(
        "CONFIG confd round={round} samples={CONFD_SAMPLES} put_to_dest_p50_ms={d50:.2} p99_ms={d99:.2} put_to_reload_started_p50_ms={r50:.2} p99_ms={r99:.2}"
    );
    [d50, d99, r50, r99]
}

fn print_medians(what: &str, names: [&str; 4], rounds: &[[f64; 4]]) {
    let line: Vec<String> = (0..4)
        .map(|k| {
            format!(
                "{}={:.3}",
                names[k],
                median(rounds.iter().map(|r| r[k]).collect())
            )
        })
        .collect();
    println!(
        "CONFIG {what} median_of_{} {}",
        rounds.len(),
        line.join(" ")
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let etcd = Etcd::builder().arg("--unsafe-no-fsync=true").start();
    let writer = keyspace(&etcd).await;

    if want("watch") {
        writer.put("/bench/watch/greeting", "start").await.unwrap();
        let reader = keyspace(&etcd).await;
        let mut config = ConfigWatch::<Settings>::start(&reader, "/bench/watch/")
            .await
            .unwrap();
        let rounds: Vec<[f64; 4]> = {
            let mut out = Vec::new();
            for round in 0..ROUNDS {
                out.push(watch_round(&writer, &mut config, round).await);
            }
            out
        };
        print_medians(
            "watch",
            [
                "put_to_changed_p50_ms",
                "p99_ms",
                "after_reply_p50_ms",
                "after_reply_p99_ms",
            ],
            &rounds,
        );
    }

    if want("confd") {
        let dir = tempfile::tempdir().unwrap();
        let (dest, reloads) = (dir.path().join("app.conf"), dir.path().join("reloads.log"));
        write_confdir(&dir.path().join("confd"), &dest, &reloads);
        writer.put("/bench/confd/greeting", "start").await.unwrap();
        let reader = keyspace(&etcd).await;
        let confd = Confd::load(dir.path().join("confd"), "").unwrap();
        let cancel = CancellationToken::new();
        let running = {
            let (confd, reader, cancel) = (confd.clone(), reader.clone(), cancel.clone());
            tokio::spawn(async move { confd.watch(&reader, cancel).await })
        };
        let started = Instant::now();
        while !std::fs::read_to_string(&dest).is_ok_and(|c| c.contains("start")) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "confd never rendered"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            rounds.push(confd_round(&writer, &dest, &reloads, round).await);
        }
        print_medians(
            "confd",
            [
                "put_to_dest_p50_ms",
                "p99_ms",
                "put_to_reload_started_p50_ms",
                "p99_ms",
            ],
            &rounds,
        );
        cancel.cancel();
        let _ = running.await;
    }
}
