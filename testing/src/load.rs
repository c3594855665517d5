//! [`Load`]: calls from several tasks, paced or as fast as they go, for a number of calls, a
//! time, or until stopped, counting every outcome: what the demo, the product client and the
//! fault suite drive their services with.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A call that did not end in a correct reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A short class for the counts (`timeout`, `no_instances`, `wrong_body`, ...).
    pub kind: String,
    /// What went wrong, for the report's first few errors.
    pub message: String,
}

impl Failure {
    /// A failure of `kind`, saying `message`.
    pub fn new(kind: impl Into<String>, message: impl ToString) -> Self {
        Self {
            kind: kind.into(),
            message: message.to_string(),
        }
    }
}

/// How a [`Load`] runs. Every setter documents its default.
#[derive(Debug, Clone)]
#[must_use]
pub struct LoadOptions {
    workers: usize,
    pace: Option<Duration>,
    calls: Option<u64>,
    duration: Option<Duration>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            workers: 4,
            pace: None,
            calls: None,
            duration: None,
        }
    }
}

impl LoadOptions {
    /// The defaults: 4 workers, unpaced, until stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tasks calling at once. Default: 4.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Each worker starts at most one call per `pace`. Default: none (back to back).
    pub fn pace(mut self, pace: Duration) -> Self {
        self.pace = Some(pace);
        self
    }

    /// Stop after this many calls in all. Default: no limit.
    pub fn calls(mut self, calls: u64) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Stop starting calls after this long. Default: no limit.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }
}

#[derive(Debug, Default)]
struct Tally {
    started: AtomicU64,
    calls: AtomicU64,
    failed: AtomicU64,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    served: BTreeMap<String, u64>,
    failures: BTreeMap<String, u64>,
    errors: Vec<String>,
    latency: Histogram,
    max_latency: Duration,
}

/// Calls running in the background; see the module docs. Dropping it stops the workers.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    workers: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Load {
    /// Starts the workers. Call `n` (0, 1, 2, ... across all workers) returns the label of
    /// what served it (an instance id) or a [`Failure`].
    pub fn start<F, Fut>(options: LoadOptions, call: F) -> Self
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, Failure>> + Send,
    {
        let call = Arc::new(call);
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let until = options.duration.and_then(|d| Instant::now().checked_add(d));
        let workers = (0..options.workers)
            .map(|_| {
                let (call, stop, tally) = (call.clone(), stop.clone(), tally.clone());
                let (pace, limit) = (options.pace, options.calls);
                tokio::spawn(async move {
                    let mut tick = pace.map(|p| {
                        let mut t = tokio::time::interval(p);
                        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        t
                    });
                    loop {
                        if let Some(t) = tick.as_mut() {
                            t.tick().await;
                        }
                        if stop.load(Ordering::Relaxed)
                            || until.is_some_and(|u| Instant::now() >= u)
                        {
                            break;
                        }
                        let n = tally.started.fetch_add(1, Ordering::Relaxed);
                        if limit.is_some_and(|l| n >= l) {
                            break;
                        }
                        let start = Instant::now();
                        let outcome = call(n).await;
                        tally.record(start.elapsed(), outcome);
                    }
                })
            })
            .collect();
        Self {
            stop,
            tally,
            workers,
            started: Instant::now(),
        }
    }

    /// Calls completed so far.
    pub fn calls(&self) -> u64 {
        self.tally.calls.load(Ordering::Relaxed)
    }

    /// Calls that failed so far.
    pub fn failed(&self) -> u64 {
        self.tally.failed.load(Ordering::Relaxed)
    }

    /// Calls served so far by `label`.
    pub fn served_by(&self, label: &str) -> u64 {
        let counts = self.tally.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.served.get(label).copied().unwrap_or(0)
    }

    /// Waits (up to `timeout`) until `more` further calls have completed.
    ///
    /// # Panics
    /// When they do not in time.
    pub async fn run_for_calls(&self, more: u64, timeout: Duration) {
        let target = self.calls() + more;
        crate::process::wait_until("the load to make its calls", timeout, || {
            self.calls() >= target
        })
        .await;
    }

    /// Waits until the workers stop on their own (call count or duration reached).
    pub async fn wait(mut self) -> LoadReport {
        self.join().await
    }

    /// Stops the workers, waits for their calls in flight, and returns the counts.
    pub async fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    async fn join(&mut self) -> LoadReport {
        for worker in std::mem::take(&mut self.workers) {
            worker.await.expect("a load worker panicked");
        }
        let counts =
            std::mem::take(&mut *self.tally.counts.lock().unwrap_or_else(|e| e.into_inner()));
        LoadReport {
            calls: self.calls(),
            failed: self.failed(),
            served: counts.served,
            failures: counts.failures,
            errors: counts.errors,
            latency: counts.latency,
            max_latency: counts.max_latency,
            ran: self.started.elapsed(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Tally {
    fn record(&self, took: Duration, outcome: Result<String, Failure>) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.max_latency = counts.max_latency.max(took);
        match outcome {
            Ok(label) => {
                counts.latency.record(took);
                *counts.served.entry(label).or_default() += 1;
            }
            Err(failure) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *counts.failures.entry(failure.kind).or_default() += 1;
                if counts.errors.len() < 5 {
                    counts.errors.push(failure.message);
                }
            }
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a [`Load`] counted.
#[derive(Debug)]
pub struct LoadReport {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Successful calls by the label of what served them.
    pub served: BTreeMap<String, u64>,
    /// Failed calls by kind.
    pub failures: BTreeMap<String, u64>,
    /// The first five failures' messages.
    pub errors: Vec<String>,
    /// Latencies of the successful calls.
    pub latency: Histogram,
    /// The slowest call, failed or not.
    pub max_latency: Duration,
    /// How long the load ran.
    pub ran: Duration,
}

impl LoadReport {
    /// The counts as one JSON object: `requests`, `successes`, `failures`,
    /// `failures_by_kind`, `per_instance`, `p50_ms`, `p99_ms`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.calls,
            "successes": self.calls - self.failed,
            "failures": self.failed,
            "failures_by_kind": self.failures,
            "per_instance": self.served,
            "p50_ms": self.latency.percentile(0.50) * 1e3,
            "p99_ms": self.latency.percentile(0.99) * 1e3,
        })
    }

    /// Asserts that calls were made and none failed, naming the first failures otherwise.
    ///
    /// # Panics
    /// When no call was made or one failed.
    pub fn assert_no_failures(&self, what: &str) {
        assert!(self.calls > 0, "{what}: the load made no call");
        assert_eq!(
            self.failed, 0,
            "{what}: {} of {} calls failed, first: {:?}",
            self.failed, self.calls, self.errors
        );
    }
}

/// Sub-buckets per power of two: about 1.5 % resolution.
const SUB_BITS: u32 = 6;

/// Latencies in log-linear nanosecond buckets: fixed memory (32 KiB) however long the run.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; 64 << SUB_BITS],
            total: 0,
        }
    }
}

impl Histogram {
    fn index(nanos: u64) -> usize {
        if nanos < 1 << SUB_BITS {
            return nanos as usize;
        }
        let shift = 63 - nanos.leading_zeros() - SUB_BITS;
        let top = (nanos >> shift) as usize; // in 64..128
        ((shift as usize + 1) << SUB_BITS) + top - (1 << SUB_BITS)
    }

    fn lower_bound(index: usize) -> u64 {
        if index < 1 << SUB_BITS {
            return index as u64;
        }
        let shift = (index >> SUB_BITS) - 1;
        let top = (index & ((1 << SUB_BITS) - 1)) + (1 << SUB_BITS);
        (top as u64) << shift
    }

    /// Counts one latency.
    pub fn record(&mut self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
    }

    /// How many latencies were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `p` quantile in seconds (the middle of its bucket); 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total - 1) as f64 * p).round() as u64 + 1;
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, high) = (Self::lower_bound(i), Self::lower_bound(i + 1));
                return (low + high) as f64 / 2e9;
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_every_outcome_up_to_the_call_limit() {
        let load = Load::start(LoadOptions::new().workers(3).calls(100), |n| async move {
            if n % 10 == 0 {
                Err(Failure::new("even_tens", format!("call {n}")))
            } else {
                Ok(format!("inst{}", n % 2))
            }
        });
        let report = load.wait().await;
        assert_eq!(report.calls, 100);
        assert_eq!(report.failed, 10);
        assert_eq!(report.failures["even_tens"], 10);
        assert_eq!(report.errors.len(), 5);
        assert_eq!(report.served["inst1"], 50);
        assert_eq!(report.served["inst0"], 40);
        assert_eq!(report.latency.count(), 90);
        let json = report.to_json();
        assert_eq!(json["requests"], 100);
        assert_eq!(json["successes"], 90);
        assert_eq!(json["per_instance"]["inst1"], 50);
    }

    #[tokio::test]
    async fn runs_until_finished_and_paces_its_workers() {
        let load = Load::start(
            LoadOptions::new()
                .workers(2)
                .pace(Duration::from_millis(20)),
            |_| async { Ok("a".to_owned()) },
        );
        load.run_for_calls(10, Duration::from_secs(5)).await;
        let report = load.finish().await;
        // Two workers, one call per 20 ms each: 10 calls take about 100 ms.
        assert!(report.ran >= Duration::from_millis(80), "{:?}", report.ran);
        assert!(report.calls >= 10);
        report.assert_no_failures("paced");
    }

    #[test]
    fn percentiles() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!((h.percentile(0.50) * 1e3).round(), 51.0);
        assert_eq!((h.percentile(0.99) * 1e3).round(), 99.0);
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1000,
            123_456_789,
            u64::MAX / 3,
        ] {
            let i = Histogram::index(v);
            let (low, high) = (Histogram::lower_bound(i), Histogram::lower_bound(i + 1));
            assert!(low <= v && v < high, "{v} in [{low}, {high})");
            assert!(
                (high - low) as f64 <= (v as f64 / 64.0).max(1.0),
                "{v}: too wide"
            );
        }
        assert_eq!(Histogram::default().percentile(0.5), 0.0);
    }
}
