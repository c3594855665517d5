//! Writing the answer to stdout, and stopping on SIGINT/SIGTERM.

use std::io::Write;

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Failure;

/// Writes `text` (whole lines) to stdout and flushes it, so a reader of a pipe sees every
/// change as it happens. A closed stdout ends the command quietly.
///
/// Writing may block on a slow reader: the worker thread says so to the runtime.
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    if text.is_empty() {
        return Ok(());
    }
    tokio::task::block_in_place(|| {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
    })
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Failure::stdout_closed(),
        _ => Failure::new("writing to stdout", e),
    })
}

/// Writes `svckit: <line>` to stderr (a failure to do so is ignored: there is nowhere left
/// to say it).
pub(crate) fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "svckit: {line}");
}

/// A token cancelled on the first SIGINT or SIGTERM. The handlers are installed when it is
/// created (a signal that arrives right after is not lost); the task waiting for them ends
/// with this value.
#[derive(Debug)]
pub(crate) struct Shutdown {
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl Shutdown {
    /// Installs the handlers.
    pub(crate) fn install() -> Result<Self, Failure> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| Failure::new(format!("installing the {name} handler"), e))
        };
        let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
        let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
        let token = CancellationToken::new();
        let cancel = token.clone();
        let task = tokio::spawn(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!(signal = name, "stopping");
            cancel.cancel();
        });
        Ok(Self { token, task })
    }

    /// The token cancelled by the signal.
    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        self.task.abort();
    }
}
