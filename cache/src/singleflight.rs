//! Singleflight: concurrent loads of one key share one execution (golang/groupcache's
//! `singleflight`), with two differences that matter in async Rust:
//!
//! - The load runs in a task owned by the flight, not inside the caller that started it. A
//!   caller whose future is dropped (timeout, disconnect) does not cancel the load for the
//!   callers waiting beside it.
//! - A load that panics hands its waiters an error instead of leaving them hanging, and the
//!   flight's entry is removed by a guard, so no outcome of the task leaks an entry.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why a flight ended without a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlightError {
    /// The load panicked.
    Panicked,
    /// The load was stopped: its owner (the cache) is shutting down.
    Stopped,
}

type Outcome<V> = Option<Result<V, FlightError>>;

struct Flight<V> {
    id: u64,
    rx: watch::Receiver<Outcome<V>>,
    // The task is owned by its entry (set just after the spawn); the entry is removed when
    // the task ends.
    task: Option<JoinHandle<()>>,
}

type Map<V> = Arc<Mutex<HashMap<Box<str>, Flight<V>>>>;

/// Loads in flight, by key.
pub(crate) struct SingleFlight<V> {
    flights: Map<V>,
    next_id: AtomicU64,
    cancel: CancellationToken,
}

impl<V> std::fmt::Debug for SingleFlight<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight")
            .field("in_flight", &lock(&self.flights).len())
            .finish()
    }
}

fn lock<V>(
    m: &Mutex<HashMap<Box<str>, Flight<V>>>,
) -> MutexGuard<'_, HashMap<Box<str>, Flight<V>>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a flight's entry when its task ends, however it ends (value, panic, abort).
struct RemoveOnDrop<V> {
    flights: Map<V>,
    key: Box<str>,
    id: u64,
}

impl<V> Drop for RemoveOnDrop<V> {
    fn drop(&mut self) {
        let mut map = lock(&self.flights);
        // Only our own entry: a later flight of the same key may have replaced it.
        if map.get(&self.key).is_some_and(|f| f.id == self.id) {
            map.remove(&self.key);
        }
    }
}

impl<V: Clone + Send + Sync + 'static> SingleFlight<V> {
    /// No flights; every load stops when `cancel` is cancelled.
    pub(crate) fn new(cancel: CancellationToken) -> Self {
        Self {
            flights: Arc::default(),
            next_id: AtomicU64::new(0),
            cancel,
        }
    }

    /// Loads in flight now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.flights).len()
    }

    /// Joins the flight of `key`, or starts one running `start()`'s future in a new task.
    /// Returns the outcome and whether this call started the flight. Must be called within
    /// a tokio runtime.
    pub(crate) async fn run<F, Fut>(
        &self,
        key: &str,
        start_load: F,
    ) -> (Result<V, FlightError>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (mut rx, start) = {
            let mut map = lock(&self.flights);
            match map.get(key) {
                Some(f) => (f.rx.clone(), None),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = watch::channel(None);
                    // The entry goes in first, so the task's guard always finds it, however
                    // fast the load finishes; the task's handle is stored once spawned.
                    map.insert(
                        key.into(),
                        Flight {
                            id,
                            rx: rx.clone(),
                            task: None,
                        },
                    );
                    (rx, Some((id, tx)))
                }
            }
        };
        let led = start.is_some();
        if let Some((id, tx)) = start {
            let guard = RemoveOnDrop {
                flights: self.flights.clone(),
                key: key.into(),
                id,
            };
            let fut = start_load();
            let cancel = self.cancel.clone();
            let span = tracing::debug_span!("flight", id);
            // In the span of the caller that started it too (its parent, when the flight span
            // is enabled; else its stand-in): what the load logs, and the trace context of the
            // requests it sends, belong to that caller's get. Only the load is instrumented, so
            // the task lets go of both spans before it publishes: a caller's span ends when
            // its get returns, not whenever this task is next polled.
            let caller = tracing::Span::current();
            // Spawned with the map unlocked: while the runtime shuts down, tokio drops a new
            // task's future inside `spawn`, and the guard's drop then takes the map lock; had
            // we held it here, this thread would deadlock on itself.
            let task = tokio::spawn(async move {
                let out = async {
                    let out = tokio::select! {
                        biased;
                        _ = cancel.cancelled() => None,
                        r = AssertUnwindSafe(fut).catch_unwind() => Some(r),
                    };
                    match out {
                        Some(Ok(v)) => Ok(v),
                        Some(Err(_)) => {
                            tracing::warn!("load panicked");
                            Err(FlightError::Panicked)
                        }
                        None => Err(FlightError::Stopped),
                    }
                }
                .instrument(span)
                .instrument(caller)
                .await;
                // Forget the flight first, then publish. The other order would let a caller
                // arriving after the outcome join a finished flight and receive a stale
                // outcome: an error would in effect be cached. A caller arriving now starts a
                // new flight, which finds a loaded value in the cache (populated inside the
                // load).
                drop(guard);
                tx.send_replace(Some(out));
            });
            // Store the handle only in our own entry: a finished load has removed it already
            // (and a later flight of the key may have replaced it).
            if let Some(flight) = lock(&self.flights).get_mut(key).filter(|f| f.id == id) {
                flight.task = Some(task);
            }
        }
        loop {
            if let Some(out) = rx.borrow_and_update().clone() {
                return (out, led);
            }
            if rx.changed().await.is_err() {
                // The task is gone without publishing (runtime shutting down).
                let out = rx.borrow().clone().unwrap_or(Err(FlightError::Stopped));
                return (out, led);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn runtime_shutdown_while_flights_start_does_not_hang() {
        // Dropping a runtime while its tasks start flights: tokio drops a task spawned during
        // shutdown inside `spawn`, and the flight's guard then takes the map lock. Holding
        // that lock across `spawn` deadlocked the thread on itself; this must finish.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for round in 0..20 {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let sf = Arc::new(SingleFlight::<u32>::new(CancellationToken::new()));
                for worker in 0..4 {
                    let sf = sf.clone();
                    // Keeps starting flights until the runtime goes away under it.
                    rt.spawn(async move {
                        for i in 0.. {
                            let key = format!("k{round}-{worker}-{i}");
                            let sf2 = sf.clone();
                            tokio::spawn(async move {
                                sf2.run(&key, || async {
                                    tokio::time::sleep(Duration::from_secs(60)).await;
                                    1
                                })
                                .await
                            });
                            if i % 16 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
                drop(rt);
            }
            done_tx.send(()).unwrap();
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(60)).is_ok(),
            "dropping a runtime with flights starting hung"
        );
    }

    #[tokio::test]
    async fn concurrent_calls_share_one_run() {
        let sf = Arc::new(SingleFlight::<u32>::new(CancellationToken::new()));
        let runs = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let sf = sf.clone();
            let runs = runs.clone();
            let mut go = go_rx.clone();
            tasks.push(tokio::spawn(async move {
                sf.run("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = go.wait_for(|g| *g).await;
                    7
                })
                .await
            }));
        }
        tokio::task::yield_now().await;
        while sf.len() == 0 {
            tokio::task::yield_now().await;
        }
        go_tx.send_replace(true);
        let mut leaders = 0;
        for t in tasks {
            let (out, led) = t.await.unwrap();
            assert_eq!(out, Ok(7));
            leaders += usize::from(led);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(sf.len(), 0);
    }

    #[tokio::test]
    async fn dropped_leader_does_not_cancel_the_load() {
        let sf = Arc::new(SingleFlight::<u32>::new(CancellationToken::new()));
        let (go_tx, go_rx) = tokio::sync::watch::channel(false);
        let mut go = go_rx.clone();
        let leader = {
            let sf = sf.clone();
            tokio::spawn(async move {
                sf.run("k", || async move {
                    let _ = go.wait_for(|g| *g).await;
                    9
                })
                .await
            })
        };
        while sf.len() == 0 {
            tokio::task::yield_now().await;
        }
        let follower = {
            let sf = sf.clone();
            tokio::spawn(async move { sf.run("k", || async { 0 }).await })
        };
        tokio::task::yield_now().await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        go_tx.send_replace(true);
        assert_eq!(follower.await.unwrap(), (Ok(9), false));
        assert_eq!(sf.len(), 0);
    }

    #[tokio::test]
    async fn panicking_load_gives_an_error_and_leaks_nothing() {
        let sf = SingleFlight::<u32>::new(CancellationToken::new());
        let (out, led) = sf
            .run("k", || async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                panic!("boom")
            })
            .await;
        assert_eq!((out, led), (Err(FlightError::Panicked), true));
        // The guard runs right after publishing; give the task a moment to finish.
        for _ in 0..100 {
            if sf.len() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(sf.len(), 0);
        assert_eq!(sf.run("k", || async { 3 }).await.0, Ok(3));
    }

    #[tokio::test]
    async fn cancelling_the_owner_stops_loads() {
        let cancel = CancellationToken::new();
        let sf = SingleFlight::<u32>::new(cancel.clone());
        let c2 = cancel.clone();
        let out = sf
            .run("k", || async move {
                c2.cancel();
                std::future::pending::<u32>().await
            })
            .await;
        assert_eq!(out, (Err(FlightError::Stopped), true));
    }
}
