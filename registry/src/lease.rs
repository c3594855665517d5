//! A registration and the task that supervises its lease.
//!
//! Register = grant a lease, put the key with it, keep the lease alive every TTL/3. The
//! supervisor also watches its own key, so a lease revoked by someone else (or a key deleted)
//! is noticed at once rather than at the next keepalive. Whenever the lease is lost — the
//! keepalive answers TTL 0, the key is deleted, or no keepalive succeeded for a whole TTL
//! (store unreachable) — it re-grants and re-puts with jittered exponential backoff, forever,
//! until the registration is deregistered or dropped.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::{Chain, Error};
use crate::instance::Instance;
use crate::store::{timed, KeepAlive, LeaseId, Range, Store, WatchMessage, WatchStream};
use crate::task::{sleep_or_cancel, OwnedTask};
use crate::telemetry::{KEEPALIVE_FAILURES, REGISTERED, REREGISTRATIONS};

/// Where a [`Registration`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// The key is in the store and its lease is being kept alive.
    Registered,
    /// The lease was lost; the key is being granted and put again (with backoff).
    Recovering,
}

/// What the supervisor and the handle share.
struct Shared {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    instance: Instance,
    key: String,
    /// The lease the key is attached to now (0 while none).
    lease: AtomicI64,
    recoveries: AtomicU64,
    state: watch::Sender<RegistrationState>,
    /// `svckit_registry_lease_keepalive_failures_total{service}`.
    keepalive_failures: Counter,
    /// `svckit_registry_reregistrations_total{service}`.
    reregistrations: Counter,
}

/// Holds `svckit_registry_registered{service}` one higher for as long as the [`Registration`]
/// lives (recovering included), whichever way it ends: deregistered or dropped.
struct Held(Gauge);

impl Held {
    fn new(service: &str) -> Self {
        let gauge = metrics::gauge!(REGISTERED, "service" => service.to_owned());
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A registered instance. It owns the task that keeps the lease alive and re-registers
/// when the lease is lost.
///
/// Call [`deregister`](Self::deregister) on shutdown: the lease is revoked and the key
/// disappears at once. Dropping the handle instead only stops the keepalive: the key then
/// stays until its lease expires, at most one TTL later (what happens when a process dies).
pub struct Registration {
    shared: Arc<Shared>,
    task: OwnedTask<()>,
    _held: Held,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.shared.key)
            .field("addr", &self.shared.instance.addr())
            .field("lease", &self.shared.lease.load(Ordering::Relaxed))
            .field("state", &self.state())
            .field("recoveries", &self.recoveries())
            .field("task", &self.task)
            .finish()
    }
}

impl Registration {
    /// Grants the first lease and puts the key, then hands the lease to a supervisor task.
    pub(crate) async fn start(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        instance: Instance,
    ) -> Result<Self, Error> {
        let key = instance.key(&config.prefix);
        // The span of the registration's whole life: its first put, then its supervisor.
        let span = tracing::info_span!(
            "registration",
            service = %instance.name(),
            id = %instance.id(),
            addr = %instance.addr(),
        );
        let (lease, revision) = establish(&*store, &config, &key, instance.addr())
            .instrument(span.clone())
            .await?;
        span.in_scope(|| tracing::info!(key = %key, lease, ttl = ?config.ttl, "registered"));
        let service = instance.name();
        let shared = Arc::new(Shared {
            keepalive_failures: metrics::counter!(KEEPALIVE_FAILURES, "service" => service.to_owned()),
            reregistrations: metrics::counter!(REREGISTRATIONS, "service" => service.to_owned()),
            store,
            config,
            key,
            instance,
            lease: AtomicI64::new(lease),
            recoveries: AtomicU64::new(0),
            state: watch::Sender::new(RegistrationState::Registered),
        });
        let for_task = shared.clone();
        let task = OwnedTask::spawn("lease supervisor", span, move |cancel| {
            supervise(for_task, revision, cancel)
        });
        Ok(Self {
            _held: Held::new(shared.instance.name()),
            shared,
            task,
        })
    }

    /// The registered instance.
    pub fn instance(&self) -> &Instance {
        &self.shared.instance
    }

    /// The key in the store: `<prefix>/<id>/<name>`.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.shared.config.ttl
    }

    /// Where the registration stands now.
    pub fn state(&self) -> RegistrationState {
        *self.shared.state.borrow()
    }

    /// A receiver that sees every change of [`state`](Self::state).
    pub fn state_watch(&self) -> watch::Receiver<RegistrationState> {
        self.shared.state.subscribe()
    }

    /// How many times the lease was lost and the registration recovered (or began to).
    pub fn recoveries(&self) -> u64 {
        self.shared.recoveries.load(Ordering::Relaxed)
    }

    /// Stops the keepalive and revokes the lease: the key disappears at once. Bounded by
    /// the registry's deregister timeout (default 2 s) so an unreachable store cannot block
    /// exit; on [`Error::Timeout`] the key expires with its TTL instead.
    pub async fn deregister(self) -> Result<(), Error> {
        let Self {
            shared,
            task,
            _held,
        } = self;
        let after = shared.config.deregister_timeout;
        let result = timed("deregister", after, async {
            task.stop().await;
            match shared.lease.load(Ordering::SeqCst) {
                0 => Ok(()),
                lease => shared.store.revoke(lease).await,
            }
        })
        .await;
        let (service, id) = (shared.instance.name(), shared.instance.id());
        match &result {
            Ok(()) => tracing::info!(service, id, key = %shared.key, "deregistered"),
            Err(error) => tracing::warn!(
                service,
                id,
                key = %shared.key,
                error = %error,
                "deregistration failed; the key expires with its lease TTL"
            ),
        }
        result
    }
}

/// Grants a lease and puts the key with it; returns the lease and the put's revision.
async fn establish(
    store: &dyn Store,
    config: &Config,
    key: &str,
    addr: &str,
) -> Result<(LeaseId, i64), Error> {
    let lease = timed("grant", config.request_timeout, store.grant(config.ttl)).await?;
    let revision = timed(
        "put",
        config.request_timeout,
        store.put(key.as_bytes(), addr.as_bytes(), lease),
    )
    .await?;
    Ok((lease, revision))
}

async fn supervise(shared: Arc<Shared>, mut revision: i64, cancel: CancellationToken) {
    loop {
        let lease = shared.lease.load(Ordering::SeqCst);
        let reason = tokio::select! {
            () = cancel.cancelled() => return,
            reason = keep(&shared, lease, revision + 1) => reason,
        };
        let recoveries = shared.recoveries.fetch_add(1, Ordering::Relaxed) + 1;
        shared.state.send_replace(RegistrationState::Recovering);
        tracing::warn!(
            lease,
            reason,
            recoveries,
            "registration lost; re-registering"
        );
        let config = &shared.config;
        let mut backoff = Backoff::new(config.backoff_base, config.recovery_backoff_max());
        loop {
            let attempt = tokio::select! {
                () = cancel.cancelled() => return,
                a = grant_and_put(&shared) => a,
            };
            match attempt {
                Ok(put_revision) => {
                    revision = put_revision;
                    shared.reregistrations.increment(1);
                    shared.state.send_replace(RegistrationState::Registered);
                    tracing::info!(
                        lease = shared.lease.load(Ordering::SeqCst),
                        recoveries,
                        attempts = backoff.attempts() + 1,
                        "re-registered"
                    );
                    break;
                }
                Err(error) => {
                    tracing::warn!(
                        error = %Chain(&error),
                        attempt = backoff.attempts() + 1,
                        "re-registration failed; retrying"
                    );
                    if !sleep_or_cancel(backoff.next_delay(), &cancel).await {
                        return;
                    }
                }
            }
        }
    }
}

/// One recovery attempt. The new lease is recorded as soon as it exists so that a
/// deregistration racing with it revokes the right one.
async fn grant_and_put(shared: &Shared) -> Result<i64, Error> {
    let config = &shared.config;
    let lease = timed(
        "grant",
        config.request_timeout,
        shared.store.grant(config.ttl),
    )
    .await?;
    shared.lease.store(lease, Ordering::SeqCst);
    timed(
        "put",
        config.request_timeout,
        shared.store.put(
            shared.key.as_bytes(),
            shared.instance.addr().as_bytes(),
            lease,
        ),
    )
    .await
}

/// Keeps `lease` alive until it is lost; returns why.
async fn keep(shared: &Shared, lease: LeaseId, watch_from: i64) -> &'static str {
    let config = &shared.config;
    let interval = (config.ttl / 3).max(Duration::from_millis(50));
    // A keepalive round trip must not take longer than the interval between them.
    let op_timeout = config.request_timeout.min(interval);
    let key = shared.key.as_bytes();
    let mut keepalive: Option<Box<dyn KeepAlive>> = None;
    let mut own_key: Option<Box<dyn WatchStream>> = None;
    let mut watch_from = watch_from;
    let mut last_ok = Instant::now();
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Open the own-key watch right away so an early revoke is seen.
    if let Ok(w) = timed(
        "watch",
        op_timeout,
        shared.store.watch(key, Range::Key, watch_from),
    )
    .await
    {
        own_key = Some(w);
    }
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if last_ok.elapsed() >= config.ttl {
                    return "no keepalive succeeded for a whole TTL (store unreachable)";
                }
                let mut reachable = false;
                // A stream that broke (its member died) is reopened at once, on another
                // endpoint, and the keepalive tried again within this tick.
                for _ in 0..2 {
                    if keepalive.is_none() {
                        match timed("keepalive", op_timeout, shared.store.keepalive(lease)).await {
                            Ok(k) => keepalive = Some(k),
                            Err(Error::LeaseNotFound { .. }) => {
                                return "the lease is gone (lease not found)";
                            }
                            Err(error) => {
                                shared.keepalive_failures.increment(1);
                                tracing::warn!(lease, error = %Chain(&error), "opening the keepalive stream failed");
                                break;
                            }
                        }
                    }
                    let Some(k) = keepalive.as_mut() else { break };
                    match timed("keepalive", op_timeout, k.keep_alive()).await {
                        Ok(ttl) if ttl > 0 => {
                            last_ok = Instant::now();
                            reachable = true;
                            break;
                        }
                        Ok(_) => return "the lease expired or was revoked (keepalive answered TTL 0)",
                        Err(error) => {
                            shared.keepalive_failures.increment(1);
                            tracing::warn!(lease, error = %Chain(&error), "keepalive failed");
                            keepalive = None;
                        }
                    }
                }
                if last_ok.elapsed() >= config.ttl {
                    return "no keepalive succeeded for a whole TTL (store unreachable)";
                }
                if reachable && own_key.is_none() {
                    if let Ok(w) = timed("watch", op_timeout, shared.store.watch(key, Range::Key, watch_from)).await {
                        own_key = Some(w);
                    }
                }
            }
            message = next_message(&mut own_key) => match message {
                Ok(WatchMessage::Events(events)) => {
                    for event in events {
                        watch_from = watch_from.max(event.revision() + 1);
                        if matches!(event, crate::store::WatchEvent::Delete { .. }) {
                            return "the key was deleted (lease revoked or key removed by someone else)";
                        }
                    }
                }
                // Missed events on our own key: the keepalive tells whether the lease lives.
                Ok(WatchMessage::Compacted { .. } | WatchMessage::Cancelled { .. }) => {
                    own_key = None;
                    watch_from = 0;
                }
                Err(_) => own_key = None,
            },
        }
    }
}

async fn next_message(stream: &mut Option<Box<dyn WatchStream>>) -> Result<WatchMessage, Error> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
