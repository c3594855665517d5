//! The HTTP server behind [`Lifecycle::serve`](crate::Lifecycle::serve): hyper-util's
//! HTTP/1 + HTTP/2 server with a Tokio timer, bounded against slow and idle clients, and a
//! shutdown that waits only for requests actually in flight.
//!
//! Written over hyper-util rather than `axum::serve` because that one builds hyper without a
//! timer (so a client sending one header byte a second holds its connection forever), caps
//! nothing, and on shutdown waits for every open connection, idle ones included, until the
//! grace timeout.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::error::Error;
use crate::layer::InFlightCounter;
use crate::tracked::{ServerMetrics, Tracked};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How [`Lifecycle::serve`](crate::Lifecycle::serve) treats clients (set with
/// [`LifecycleBuilder::serve_options`](crate::LifecycleBuilder::serve_options)). Every setter
/// documents its default.
///
/// ```
/// use std::time::Duration;
/// use svckit_registry::ServeOptions;
///
/// let options = ServeOptions::new()
///     .header_read_timeout(Duration::from_secs(10))
///     .idle_timeout(Duration::from_secs(60))
///     .max_connections(4096);
/// # drop(options);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ServeOptions {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

impl ServeOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long an HTTP/1 client may take to send a request's headers; the connection is
    /// closed when it takes longer (a slowloris client). hyper also runs this timer while a
    /// keep-alive connection waits for its next request, so it bounds idle HTTP/1
    /// connections as well. Default: 10 s.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a connection may stay open with no request in flight (HTTP/1 keep-alive,
    /// HTTP/2, or a client that connected and never sent anything) before it is closed.
    /// Default: 60 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The most connections served at once. At the cap, new connections wait in the
    /// listener's backlog until one closes. Default: 4096 (mind the process's open-file
    /// limit, often 1024 soft by default).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }
}

/// What the lifecycle hands the server: its request counter, when to stop accepting, when to
/// give up.
pub(crate) struct Control {
    /// The lifecycle's count of requests in flight (from head to the end of the response body).
    pub(crate) counter: InFlightCounter,
    /// Resolves once the instance is deregistered: stop accepting and drain.
    pub(crate) stop: crate::ShutdownSignal,
    /// A second signal: stop at once.
    pub(crate) forced: CancellationToken,
    /// The bound on the drain.
    pub(crate) grace: Duration,
    /// The server's metric handles (labelled with the service name).
    pub(crate) metrics: Arc<ServerMetrics>,
}

/// Serves `app` on `listener` until `control.stop`, then drains; see the module docs.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    app: S,
    options: &ServeOptions,
    control: Control,
) -> Result<(), Error>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let closing = CancellationToken::new();
    let mut connections = JoinSet::new();
    let Control {
        counter,
        stop,
        forced,
        grace,
        metrics,
    } = control;
    tokio::pin!(stop);

    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = &mut stop => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // Out of file descriptors, say: wait for connections to close.
                        tracing::warn!(error = %error, "accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (busy, idle) = watch::channel(0usize);
        let service = Tracked {
            inner: app.clone(),
            busy: Arc::new(busy),
            counter: counter.clone(),
            metrics: metrics.clone(),
        };
        let builder = builder.clone();
        let closing = closing.clone();
        let idle_timeout = options.idle_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                    return;
                }
                () = idle_for(idle.clone(), idle_timeout) => {
                    tracing::debug!(after = ?idle_timeout, "closing an idle connection");
                    return;
                }
                () = closing.cancelled() => {}
            }
            // Shutting down. A connection with no request in flight (idle, or still sending
            // its request's head) is closed now; one with a request finishes it first.
            if *idle.borrow() == 0 {
                return;
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }

    // Stop accepting: new connections are refused from here on.
    drop(listener);
    closing.cancel();
    let started = Instant::now();
    tracing::info!(
        connections = connections.len(),
        in_flight = counter.get(),
        grace = ?grace,
        "draining: closing idle connections, finishing requests in flight"
    );
    let drained = async { while connections.join_next().await.is_some() {} };
    let drain = async {
        tokio::select! {
        result = tokio::time::timeout(grace, drained) => match result {
            Ok(()) => {
                tracing::info!(took = ?started.elapsed(), "drained: every request in flight completed");
                Ok(())
            }
            Err(_) => {
                let in_flight = counter.get();
                tracing::warn!(in_flight, grace = ?grace, "grace timeout expired; stopping with requests still in flight");
                Err(Error::GraceExpired { grace, in_flight })
            }
        },
        () = forced.cancelled() => {
            let in_flight = counter.get();
            tracing::warn!(in_flight, "shutdown forced; stopping with requests still in flight");
            Err(Error::ShutdownForced { in_flight })
        }
        }
    };
    crate::telemetry::draining(metrics.service(), drain).await
}

/// Errors of one incoming connection, not of the listener: accept the next one.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Resolves once the connection has had no request in flight for `timeout`.
async fn idle_for(mut busy: watch::Receiver<usize>, timeout: Duration) {
    loop {
        if *busy.borrow_and_update() > 0 {
            if busy.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        match tokio::time::timeout(timeout, busy.changed()).await {
            Err(_) => return,
            Ok(Err(_)) => return std::future::pending().await,
            Ok(Ok(())) => {}
        }
    }
}
