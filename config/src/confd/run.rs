//! [`Confd`]: the resources of a confd directory, applied once, on every change, or on an
//! interval.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use svckit_registry::{KeySnapshot, Keyspace, PrefixWatch};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::error::ConfdError;
use super::render::render;
use super::resource::Resource;
use super::stage::{apply, ApplyOptions, Outcome};
use super::store::KvStore;

/// After a change, how long the key space must stay quiet before a render.
const SETTLE: Duration = Duration::from_millis(20);
/// The longest a render waits for a busy key space to settle.
const MAX_SETTLE: Duration = Duration::from_millis(200);

/// A confd directory's resources (`<confdir>/conf.d/*.toml`, found recursively as confd
/// does, templates in `<confdir>/templates`), ready to apply from a [`Keyspace`].
#[derive(Debug, Clone)]
pub struct Confd {
    confdir: PathBuf,
    resources: Vec<Arc<Resource>>,
    options: ApplyOptions,
}

impl Confd {
    /// Loads every resource file. `prefix` is confd's `--prefix`: when not empty it replaces
    /// the `prefix` of every resource (as confd does since 0.12).
    ///
    /// # Errors
    /// [`ConfdError::ConfDir`] when `<confdir>/conf.d` cannot be read; the first resource
    /// that is not valid ([`ConfdError::Resource`], [`ConfdError::SrcOutsideTemplates`]):
    /// confd, too, refuses to start with a broken resource.
    pub fn load(confdir: impl AsRef<Path>, prefix: &str) -> Result<Self, ConfdError> {
        let confdir = confdir.as_ref().to_owned();
        let templates = confdir.join("templates");
        let mut files = Vec::new();
        find_resources(&confdir.join("conf.d"), &mut files)?;
        files.sort();
        if files.is_empty() {
            tracing::warn!(confdir = %confdir.display(), "no template resources found");
        }
        let resources = files
            .iter()
            .map(|f| Resource::load(f, &templates, prefix).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            confdir,
            resources,
            options: ApplyOptions::default(),
        })
    }

    /// Noop mode (confd's `--noop`): render and compare, never write `dest` or run a
    /// command; differences are reported as [`Outcome::WouldUpdate`]. Default off.
    #[must_use]
    pub fn noop(mut self, noop: bool) -> Self {
        self.options.noop = noop;
        self
    }

    /// Sync-only mode (confd's `--sync-only`): write `dest` without running `check_cmd` or
    /// `reload_cmd`. Default off.
    #[must_use]
    pub fn sync_only(mut self, sync_only: bool) -> Self {
        self.options.sync_only = sync_only;
        self
    }

    /// The confd directory.
    pub fn confdir(&self) -> &Path {
        &self.confdir
    }

    /// The resource files loaded, sorted.
    pub fn resource_files(&self) -> impl Iterator<Item = &Path> + '_ {
        self.resources.iter().map(|r| r.file.as_path())
    }

    /// Applies every resource once from a fresh read of its keys (confd's `--onetime`).
    /// A failed resource does not stop the others; see [`Report`].
    pub async fn run_once(&self, keyspace: &Keyspace) -> Report {
        let mut outcomes = Vec::with_capacity(self.resources.len());
        for resource in &self.resources {
            let outcome = once(resource, keyspace, self.options).await;
            if let Err(e) = &outcome {
                tracing::error!(resource = %resource.file.display(), error = %e, "resource failed");
            }
            outcomes.push((resource.file.clone(), outcome));
        }
        Report { outcomes }
    }

    /// Applies every resource, then again after every change of its keys (confd's
    /// `--watch`), until `cancel`. A burst of changes is coalesced: a render waits until the
    /// keys have been quiet for 20 ms, at most 200 ms after the first change. A resource
    /// whose keys did not change is not rendered again. Failures are logged and retried at
    /// the next change.
    ///
    /// # Errors
    /// When a watch cannot be opened (a key prefix the key space refuses).
    pub async fn watch(
        &self,
        keyspace: &Keyspace,
        cancel: CancellationToken,
    ) -> Result<(), ConfdError> {
        let mut tasks = JoinSet::new();
        for resource in &self.resources {
            // One watch over all the keys, so that one etcd transaction touching several
            // of them is rendered whole, never half applied.
            let prefix = resource.read_prefix();
            let watch = keyspace.watch(&prefix).map_err(|source| ConfdError::Keys {
                resource: resource.file.clone(),
                prefix,
                source,
            })?;
            let span = tracing::info_span!("confd_watch", resource = %resource.file.display());
            tasks.spawn(tracing::Instrument::instrument(
                follow(resource.clone(), watch, self.options, cancel.clone()),
                span,
            ));
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        Ok(())
    }

    /// Applies every resource every `every` (confd's `--interval`), from a fresh read each
    /// time, until `cancel`. Failures are logged.
    ///
    /// # Errors
    /// None yet; the `Result` leaves room for fatal conditions.
    pub async fn poll(
        &self,
        keyspace: &Keyspace,
        every: Duration,
        cancel: CancellationToken,
    ) -> Result<(), ConfdError> {
        loop {
            let _ = self.run_once(keyspace).await;
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// What [`Confd::run_once`] did, resource by resource.
#[derive(Debug)]
pub struct Report {
    outcomes: Vec<(PathBuf, Result<Outcome, ConfdError>)>,
}

impl Report {
    /// Each resource file with its outcome, in load order.
    pub fn outcomes(&self) -> &[(PathBuf, Result<Outcome, ConfdError>)] {
        &self.outcomes
    }

    /// The errors (confd exits non-zero when there is one).
    pub fn errors(&self) -> impl Iterator<Item = &ConfdError> + '_ {
        self.outcomes.iter().filter_map(|(_, r)| r.as_ref().err())
    }

    /// Whether every resource succeeded.
    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }

    /// How many resources replaced their `dest`.
    pub fn updated(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Outcome::Updated)))
            .count()
    }
}

/// Every `*toml` file below `dir` (confd's `RecursiveFilesLookup(dir, "*toml")`).
fn find_resources(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ConfdError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfdError::ConfDir {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ConfdError::ConfDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            find_resources(&path, out)?;
        } else if entry.file_name().to_string_lossy().ends_with("toml") {
            out.push(path);
        }
    }
    Ok(())
}

/// One resource from a fresh read of its keys.
async fn once(
    resource: &Arc<Resource>,
    keyspace: &Keyspace,
    options: ApplyOptions,
) -> Result<Outcome, ConfdError> {
    let prefix = resource.read_prefix();
    let snapshot = keyspace
        .get(&prefix)
        .await
        .map_err(|source| ConfdError::Keys {
            resource: resource.file.clone(),
            prefix,
            source,
        })?;
    let store = store_of(resource, &snapshot);
    process(resource.clone(), store, options).await
}

/// The resource's key space from a snapshot of its prefix.
fn store_of(resource: &Resource, snapshot: &KeySnapshot) -> KvStore {
    KvStore::from_entries(&resource.prefix, &resource.keys, snapshot.iter())
}

/// Render and apply on a blocking thread: the template functions, file I/O and the
/// commands are synchronous (confd waits for its commands too).
async fn process(
    resource: Arc<Resource>,
    store: KvStore,
    options: ApplyOptions,
) -> Result<Outcome, ConfdError> {
    let task = tokio::task::spawn_blocking(move || {
        let content = render(&resource, store)?;
        apply(&resource, &content, options)
    });
    match task.await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Watch mode for one resource: wait for the prefix's first listing, render, then render
/// again after each settled change of its keys.
async fn follow(
    resource: Arc<Resource>,
    watch: PrefixWatch,
    options: ApplyOptions,
    cancel: CancellationToken,
) {
    // A `Notify` keeps one permit, so the changes that arrive while a render runs fold into
    // one more render, not a queue.
    let changed = Arc::new(Notify::new());
    let mut forwarders = JoinSet::new();
    {
        let (mut watch, changed) = (watch.clone(), changed.clone());
        forwarders.spawn(async move {
            while watch.changed().await.is_ok() {
                changed.notify_one();
            }
        });
    }
    // The first listing (a shared watch may already have it).
    while watch.snapshot().revision() == 0 {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = changed.notified() => {}
        }
    }
    let mut rendered: Option<KvStore> = None;
    loop {
        // One snapshot: every key of the render at one revision.
        let snapshot = watch.snapshot();
        let store = store_of(&resource, &snapshot);
        if rendered.as_ref() != Some(&store) {
            let revision = snapshot.revision();
            match process(resource.clone(), store.clone(), options).await {
                Ok(outcome) => {
                    tracing::debug!(revision, ?outcome, "applied");
                    rendered = Some(store);
                }
                // Retried at the next change of the keys.
                Err(e) => tracing::error!(revision, error = %e, "resource failed"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = changed.notified() => {}
        }
        // Let a burst settle: quiet for SETTLE, at most MAX_SETTLE.
        let deadline = tokio::time::Instant::now() + MAX_SETTLE;
        loop {
            let quiet = tokio::time::Instant::now() + SETTLE;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = changed.notified() => {}
                () = tokio::time::sleep_until(quiet.min(deadline)) => break,
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
    }
}
