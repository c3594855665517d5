//! Child processes for end-to-end and fault tests: the example binaries, real signals, and
//! waiting with a deadline. One place for what the demo, the end-to-end tests, the fault
//! suite and the registry's process tests all need.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A signal to send to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: shut down gracefully.
    Term,
    /// SIGINT: what Ctrl-C sends.
    Int,
    /// SIGKILL: die at once, no cleanup.
    Kill,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Self::Term => "-TERM",
            Self::Int => "-INT",
            Self::Kill => "-KILL",
        }
    }
}

/// Sends `signal` to process `pid` (with `kill(1)`: the workspace forbids `unsafe`, which
/// `libc::kill` would need).
///
/// # Panics
/// When `kill` cannot be run or refuses (no such process).
pub fn signal(pid: u32, signal: Signal) {
    let status = std::process::Command::new("kill")
        .args([signal.flag(), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {} {pid} failed", signal.flag());
}

/// The built example `name`: `target/<profile>/examples/<name>`, found from the running
/// binary (a test in `target/<profile>/deps/`, or another example beside it).
///
/// # Panics
/// When it is not built, with a message that says how to build it.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running binary's path");
    let dir = exe.parent().expect("the binary's folder");
    let candidates = [
        dir.join(name),
        dir.parent()
            .map(|profile| profile.join("examples").join(name))
            .unwrap_or_default(),
    ];
    candidates
        .into_iter()
        .find(|path| path.is_file() && path != &exe)
        .unwrap_or_else(|| {
            panic!(
                "the example `{name}` is not built next to {}: build the examples first \
                 (`cargo build --examples`; ./scripts/test does)",
                exe.display()
            )
        })
}

/// Starts the example `name` with `args`: stdin closed, stdout discarded, stderr inherited,
/// `RUST_LOG=warn` unless the environment sets it, killed when the handle is dropped.
pub fn spawn_example(name: &str, args: &[&str]) -> Child {
    spawn_example_with_env(name, args, &[])
}

/// [`spawn_example`] with the environment variables `env` set too.
pub fn spawn_example_with_env(
    name: &str,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Child {
    let mut command = Command::new(example_bin(name));
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("start the example {name}: {e}"))
}

/// Sends SIGTERM to `child` and waits up to `timeout` for it to exit; returns its exit code
/// (`None` when a signal ended it).
///
/// # Panics
/// When it has already exited or does not exit in time.
pub async fn terminate(child: &mut Child, timeout: Duration) -> Option<i32> {
    signal(child.id().expect("the child still runs"), Signal::Term);
    tokio::time::timeout(timeout, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the child did not exit within {timeout:?} of SIGTERM"))
        .expect("wait for the child")
        .code()
}

/// Child processes started together and stopped together, each with a label: the demo's
/// and the tests' fleets of example instances. Dropping it kills what still runs.
#[derive(Debug, Default)]
pub struct Fleet {
    children: Vec<(String, Option<Child>)>,
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the example `name` with `args` (see [`spawn_example`]) under `label`; returns
    /// its index.
    pub fn spawn(&mut self, label: &str, name: &str, args: &[&str]) -> usize {
        self.children
            .push((label.to_owned(), Some(spawn_example(name, args))));
        self.children.len() - 1
    }

    /// The process id of child `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.children[index].1.as_ref().and_then(Child::id)
    }

    /// SIGTERM to child `index`, then up to `grace` for it to exit, SIGKILL after that;
    /// returns its exit code (`None` when a signal ended it or it had already been stopped).
    pub async fn terminate(&mut self, index: usize, grace: Duration) -> Option<i32> {
        let mut child = self.children[index].1.take()?;
        if let Some(pid) = child.id() {
            // It may have exited on its own a moment ago: no assert here.
            let _ = std::process::Command::new("kill")
                .args([Signal::Term.flag(), &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// Terminates every child still running, the last started first.
    pub async fn stop_all(&mut self, grace: Duration) {
        for index in (0..self.children.len()).rev() {
            self.terminate(index, grace).await;
        }
    }

    /// The labels of the children still running.
    pub fn running(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(label, child)| {
                let alive = matches!(child.as_mut()?.try_wait(), Ok(None));
                alive.then(|| label.clone())
            })
            .collect()
    }
}

/// Polls `ok` every 50 ms until it holds; returns how long that took.
///
/// # Panics
/// When it does not hold within `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Polls the async `ok` every 50 ms until it holds; how long that took, or `None` when it did
/// not hold within `timeout`.
pub async fn poll_until<F, Fut>(timeout: Duration, mut ok: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if ok().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn terminate_returns_the_exit_code_and_signal_reaches_the_child() {
        let mut sleeper = Command::new("sleep")
            .arg("30")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // `sleep` dies of SIGTERM: no exit code.
        assert_eq!(terminate(&mut sleeper, Duration::from_secs(5)).await, None);
        let mut shell = Command::new("sh")
            .args(["-c", "trap 'exit 7' TERM; echo ready; sleep 30 & wait"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Signalled once its trap is set, as it says.
        let mut ready = String::new();
        let stdout = shell.stdout.take().unwrap();
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut ready)
            .await
            .unwrap();
        assert_eq!(ready, "ready\n");
        assert_eq!(terminate(&mut shell, Duration::from_secs(5)).await, Some(7));
    }

    #[tokio::test]
    async fn waits_end_when_the_condition_holds_or_the_deadline_passes() {
        let start = Instant::now();
        let took = wait_until("a moment", Duration::from_secs(5), || {
            start.elapsed() >= Duration::from_millis(120)
        })
        .await;
        assert!(took >= Duration::from_millis(120));
        let never = poll_until(Duration::from_millis(150), || async { false }).await;
        assert_eq!(never, None);
    }

    #[test]
    #[should_panic(expected = "is not built")]
    fn a_missing_example_says_how_to_build_it() {
        let _ = example_bin("no_such_example_svckit");
    }
}
