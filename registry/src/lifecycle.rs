//! [`Lifecycle`]: register a server once its listener is bound, and shut it down in the
//! right order on SIGINT or SIGTERM: deregister first (clients stop picking it), keep serving
//! the requests in flight, stop accepting, drain with a grace timeout.
//!
//! See [`Lifecycle`] for the usage with axum and hyper.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::error::Error;
use crate::instance::{random_id, Instance};
use crate::layer::{InFlightCounter, InFlightLayer};
use crate::lease::{Registration, RegistrationState};
use crate::registry::Registry;
use crate::serve::{self, Control, ServeOptions};
use crate::task::OwnedTask;
use crate::tracked::ServerMetrics;

/// The grace timeout of [`Lifecycle::drain`] unless configured otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Options for a [`Lifecycle`]; start with [`Lifecycle::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LifecycleBuilder {
    name: String,
    id: Option<String>,
    advertise_host: Option<String>,
    grace: Duration,
    linger: Duration,
    signals: bool,
    serve: ServeOptions,
}

impl LifecycleBuilder {
    /// The instance id. Default: a random UUID in its 32-hex simple form.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The host to register instead of the bound IP, e.g. when bound to `0.0.0.0`.
    /// Default: the bound IP (which then must not be unspecified).
    pub fn advertise_host(mut self, host: impl Into<String>) -> Self {
        self.advertise_host = Some(host.into());
        self
    }

    /// How long [`Lifecycle::drain`] lets the server finish its requests after the shutdown
    /// signal. Default: 30 s ([`DEFAULT_GRACE`]).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long the server keeps serving, new connections included, after it deregistered
    /// and before it stops accepting and drains: for callers that picked it before they saw
    /// the deregistration, and for cache peers that take over its keys and ask it for them
    /// meanwhile (the cache's handoff). A second signal ends it at once. Default: zero.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How [`Lifecycle::serve`] treats clients: header and idle timeouts, the connection cap.
    /// Default: [`ServeOptions::default`] (10 s, 60 s, 4096).
    pub fn serve_options(mut self, options: ServeOptions) -> Self {
        self.serve = options;
        self
    }

    /// Whether SIGINT and SIGTERM (Ctrl-C off Unix) start the shutdown. Default: true.
    /// Without them only [`Lifecycle::shutdown`] does.
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.signals = yes;
        self
    }

    /// Registers the instance at `bound` (the listener's local address) and starts watching
    /// for the shutdown signals. Call it after binding, so the registered address is real.
    pub async fn register<R: Registry + ?Sized>(
        self,
        registry: &R,
        bound: SocketAddr,
    ) -> Result<Lifecycle, Error> {
        let host = match self.advertise_host {
            Some(host) => host,
            None if bound.ip().is_unspecified() => {
                return Err(Error::UnspecifiedAddress {
                    addr: bound.to_string(),
                })
            }
            None => bound.ip().to_string(),
        };
        let addr = match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{host}]:{}", bound.port()),
            Err(_) => format!("{host}:{}", bound.port()),
        };
        let instance = Instance::new(self.id.unwrap_or_else(random_id), self.name, addr)?;
        // Install the signal handlers before registering so no signal is missed.
        let signals = if self.signals {
            Some(Signals::new()?)
        } else {
            None
        };
        let registration = registry.register(instance.clone()).await?;
        let state = registration.state_watch();
        let requested = CancellationToken::new();
        let deregistered = CancellationToken::new();
        let forced = CancellationToken::new();
        let span =
            tracing::info_span!("lifecycle", service = %instance.name(), id = %instance.id());
        let task = {
            let tokens = Tokens {
                requested: requested.clone(),
                deregistered: deregistered.clone(),
                forced: forced.clone(),
            };
            let linger = self.linger;
            OwnedTask::spawn("lifecycle", span, move |cancel| {
                run(registration, signals, tokens, linger, cancel)
            })
        };
        Ok(Lifecycle {
            instance,
            counter: InFlightCounter::new(),
            grace: self.grace,
            serve: self.serve,
            requested,
            deregistered,
            forced,
            state,
            _task: task,
        })
    }
}

/// A registered server's lifecycle: registration, requests in flight, and the ordered
/// shutdown: on SIGINT or SIGTERM it deregisters first (clients stop picking this instance),
/// then releases the server's graceful shutdown (stop accepting, finish the requests in
/// flight), bounded by a grace timeout.
///
/// Dropping it without a shutdown stops the keepalive; the key then expires with its TTL.
///
/// With axum:
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{routing::get, Router};
/// use svckit_registry::{Lifecycle, MemoryRegistry};
///
/// let registry = MemoryRegistry::new(); // or EtcdRegistry::connect(..).await?
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///
/// let lifecycle = Lifecycle::register(&registry, "productservice", listener.local_addr()?).await?;
/// let app = Router::new().route("/", get(|| async { "ok" })).layer(lifecycle.layer());
/// lifecycle.drain(axum::serve(listener, app).with_graceful_shutdown(lifecycle.shutdown_signal())).await??;
/// # Ok(()) }
/// ```
///
/// With hyper-util, select on [`Lifecycle::shutdown_signal`] in the accept loop, then hand
/// `GracefulShutdown::shutdown()` to [`Lifecycle::drain`]:
///
/// ```no_run
/// # async fn demo(lifecycle: svckit_registry::Lifecycle, listener: tokio::net::TcpListener) -> Result<(), svckit_registry::Error> {
/// let graceful = hyper_util::server::graceful::GracefulShutdown::new();
/// let signal = lifecycle.shutdown_signal();
/// tokio::pin!(signal);
/// loop {
///     tokio::select! {
///         Ok((stream, _)) = listener.accept() => {
///             # let _ = stream;
///             // serve the connection with hyper and `graceful.watch(conn)` it
///         }
///         () = &mut signal => break,
///     }
/// }
/// lifecycle.drain(graceful.shutdown()).await?;
/// # Ok(()) }
/// ```
pub struct Lifecycle {
    instance: Instance,
    counter: InFlightCounter,
    grace: Duration,
    serve: ServeOptions,
    requested: CancellationToken,
    deregistered: CancellationToken,
    forced: CancellationToken,
    state: watch::Receiver<RegistrationState>,
    _task: OwnedTask<()>,
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("instance", &self.instance)
            .field("in_flight", &self.counter.get())
            .field("grace", &self.grace)
            .field("shutting_down", &self.requested.is_cancelled())
            .field("deregistered", &self.deregistered.is_cancelled())
            .finish()
    }
}

impl Lifecycle {
    /// Options: id, advertised host, grace timeout, linger, signal handling.
    pub fn builder(name: impl Into<String>) -> LifecycleBuilder {
        LifecycleBuilder {
            name: name.into(),
            id: None,
            advertise_host: None,
            grace: DEFAULT_GRACE,
            linger: Duration::ZERO,
            signals: true,
            serve: ServeOptions::default(),
        }
    }

    /// Registers `name` at `bound` (the listener's local address) with a random id, the
    /// default grace timeout and SIGINT/SIGTERM handling.
    pub async fn register<R: Registry + ?Sized>(
        registry: &R,
        name: impl Into<String>,
        bound: SocketAddr,
    ) -> Result<Self, Error> {
        Self::builder(name).register(registry, bound).await
    }

    /// The registered instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The layer that counts this server's requests in flight. Wrap the whole app in it.
    pub fn layer(&self) -> InFlightLayer {
        InFlightLayer::with_counter(self.counter.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.counter.get()
    }

    /// Where the registration stands (until deregistered).
    pub fn registration_state(&self) -> RegistrationState {
        *self.state.borrow()
    }

    /// Starts the shutdown as a signal would: deregister, then release the server.
    pub fn shutdown(&self) {
        self.requested.cancel();
    }

    /// Stops a drain at once (what a second SIGINT/SIGTERM does): [`drain`](Self::drain)
    /// drops the server and returns [`Error::ShutdownForced`]. Also starts the shutdown if it
    /// had not started.
    pub fn force(&self) {
        self.requested.cancel();
        self.forced.cancel();
    }

    /// True once a signal or [`shutdown`](Self::shutdown) started the shutdown.
    pub fn is_shutting_down(&self) -> bool {
        self.requested.is_cancelled()
    }

    /// A future for the server's graceful-shutdown hook (axum's `with_graceful_shutdown`,
    /// or a `select!` in a hyper accept loop). It resolves after SIGINT, SIGTERM or
    /// [`shutdown`](Self::shutdown) *and* the deregistration that follows, so clients stop
    /// picking this instance before it stops accepting. Any number can be taken.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            inner: self.deregistered.clone().cancelled_owned(),
        }
    }

    /// Serves `app` (an axum `Router`, any tower `Service` of hyper requests) on `listener`
    /// until the shutdown, then drains; the server users of svckit should take. HTTP/1 and
    /// HTTP/2; requests in flight counted from their head to the end of their response body
    /// (no need for [`layer`](Self::layer)); slow and idle clients bounded (as
    /// [`LifecycleBuilder::serve_options`] sets; by default 10 s to send a request's headers,
    /// 60 s idle, 4096 connections).
    ///
    /// On SIGINT/SIGTERM (or [`shutdown`](Self::shutdown)) it deregisters first, then stops
    /// accepting, closes at once every connection with no request in flight (idle, or still
    /// sending its headers), and waits only for the requests in flight, within the grace
    /// timeout. Returns [`Error::GraceExpired`] or [`Error::ShutdownForced`] as
    /// [`drain`](Self::drain) does.
    ///
    /// Each request is served inside an `http.server` span and counted in the
    /// `svckit_http_server_*` metrics (see the crate docs, "Metrics and traces"); wrap an axum
    /// router in [`RouteLayer`](crate::RouteLayer) so they are labelled by route template.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use axum::{routing::get, Router};
    /// use svckit_registry::{Lifecycle, MemoryRegistry, RouteLayer};
    ///
    /// let registry = MemoryRegistry::new(); // or EtcdRegistry::connect(..).await?
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let lifecycle = Lifecycle::register(&registry, "productservice", listener.local_addr()?).await?;
    /// let app = Router::new().route("/", get(|| async { "ok" })).layer(RouteLayer);
    /// lifecycle.serve(listener, app).await?;
    /// # Ok(()) }
    /// ```
    pub async fn serve<S, B>(&self, listener: TcpListener, app: S) -> Result<(), Error>
    where
        S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
            + Clone
            + Send
            + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        S::Future: Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let control = Control {
            counter: self.counter.clone(),
            stop: self.shutdown_signal(),
            forced: self.forced.clone(),
            grace: self.grace,
            metrics: Arc::new(ServerMetrics::new(self.instance.name())),
        };
        serve::serve(listener, app, &self.serve, control).await
    }

    /// Runs `server` (a future that ends when the server has stopped, such as axum's
    /// `serve(..).with_graceful_shutdown(lifecycle.shutdown_signal())`) and bounds its
    /// remaining run after the shutdown signal by the grace timeout. Logs which way the drain
    /// ended and returns the server's output, [`Error::GraceExpired`] when the grace timeout
    /// cut it short, or [`Error::ShutdownForced`] when a second SIGINT/SIGTERM (or
    /// [`force`](Self::force)) did (the server future is dropped then).
    ///
    /// If the server stops on its own first, the instance is deregistered before returning.
    pub async fn drain<F: IntoFuture>(&self, server: F) -> Result<F::Output, Error> {
        let server = server.into_future();
        tokio::pin!(server);
        tokio::select! {
            out = &mut server => {
                if !self.requested.is_cancelled() {
                    tracing::warn!("server stopped before any shutdown signal; deregistering");
                    self.shutdown();
                }
                self.deregistered.cancelled().await;
                return Ok(out);
            }
            () = self.deregistered.cancelled() => {}
        }
        let started = Instant::now();
        tracing::info!(in_flight = self.in_flight(), grace = ?self.grace, "draining");
        let bounded = crate::telemetry::draining(self.instance.name(), async {
            tokio::select! {
                bounded = tokio::time::timeout(self.grace, &mut server) => Some(bounded),
                () = self.forced.cancelled() => None,
            }
        })
        .await;
        let Some(bounded) = bounded else {
            let in_flight = self.in_flight();
            tracing::warn!(
                in_flight,
                "shutdown forced; stopping with requests still in flight"
            );
            return Err(Error::ShutdownForced { in_flight });
        };
        match bounded {
            Ok(out) => {
                tracing::info!(took = ?started.elapsed(), "drained: every request in flight completed");
                Ok(out)
            }
            Err(_) => {
                let in_flight = self.in_flight();
                tracing::warn!(
                    in_flight,
                    grace = ?self.grace,
                    "grace timeout expired; stopping with requests still in flight"
                );
                Err(Error::GraceExpired {
                    grace: self.grace,
                    in_flight,
                })
            }
        }
    }
}

/// The lifecycle's tokens: shutdown requested, instance deregistered, drain forced.
struct Tokens {
    requested: CancellationToken,
    deregistered: CancellationToken,
    forced: CancellationToken,
}

async fn run(
    registration: Registration,
    mut signals: Option<Signals>,
    tokens: Tokens,
    linger: Duration,
    cancel: CancellationToken,
) {
    let reason = tokio::select! {
        () = cancel.cancelled() => return,
        () = tokens.requested.cancelled() => "shutdown requested",
        signal = next_signal(&mut signals) => signal,
    };
    tokens.requested.cancel();
    tracing::info!(reason, "shutting down: deregistering first");
    // Errors are logged by deregister; the key then expires with its TTL.
    let _ = registration.deregister().await;
    if !linger.is_zero() {
        tracing::info!(
            ?linger,
            "deregistered; still serving while callers and peers catch up"
        );
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(linger) => {}
            () = tokens.forced.cancelled() => {}
            signal = next_signal(&mut signals) => {
                tracing::warn!(signal, "second signal: forcing the shutdown");
                tokens.forced.cancel();
            }
        }
    }
    tokens.deregistered.cancel();
    // A second signal while draining: the operator wants out now.
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokens.forced.cancelled() => {}
        signal = next_signal(&mut signals) => {
            tracing::warn!(signal, "second signal: forcing the shutdown");
            tokens.forced.cancel();
        }
    }
}

/// The next SIGINT/SIGTERM, or never without signal handling.
async fn next_signal(signals: &mut Option<Signals>) -> &'static str {
    match signals.as_mut() {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// SIGINT and SIGTERM listeners, installed when the lifecycle starts.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, Error> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let map = |source| Error::Signal { source };
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(map)?,
                terminate: signal(SignalKind::terminate()).map_err(map)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

pin_project_lite::pin_project! {
    /// Resolves once the shutdown started and the instance was deregistered; see
    /// [`Lifecycle::shutdown_signal`].
    pub struct ShutdownSignal {
        #[pin]
        inner: WaitForCancellationFutureOwned,
    }
}

impl fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownSignal").finish_non_exhaustive()
    }
}

impl Future for ShutdownSignal {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().inner.poll(cx)
    }
}
