//! The confd renderer's error: one line naming the resource file, the key or command, and
//! the reason (what a confd user greps its log for).

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong loading or applying a confd resource. Each message is one
/// line and starts with the resource file it concerns. A failed resource leaves its `dest`
/// untouched (except [`Reload`](Self::Reload), which happens after `dest` was replaced).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfdError {
    /// The confd directory or its `conf.d` cannot be read.
    #[error("cannot read confd directory {}: {source}", path.display())]
    ConfDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A resource file cannot be read or is not a valid confd resource.
    #[error("{}: {reason}", resource.display())]
    Resource {
        /// The resource file (`conf.d/*.toml`).
        resource: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The resource's `src` is not a file inside `<confdir>/templates`.
    #[error("{}: src {src:?} is refused: {reason}", resource.display())]
    SrcOutsideTemplates {
        /// The resource file.
        resource: PathBuf,
        /// The `src` as written.
        src: String,
        /// Why (absolute, `..`, a symlink leading out).
        reason: String,
    },
    /// The keys of a resource could not be read from the key space.
    #[error("{}: reading keys under {prefix}: {source}", resource.display())]
    Keys {
        /// The resource file.
        resource: PathBuf,
        /// The key prefix being read.
        prefix: String,
        /// The registry's error.
        #[source]
        source: svckit_registry::Error,
    },
    /// A template reads a key that does not exist (`getv` without a default, `get`).
    #[error("{}: template {}: key {key} does not exist ({reason})", resource.display(), template.display())]
    MissingKey {
        /// The resource file.
        resource: PathBuf,
        /// The template file.
        template: PathBuf,
        /// The missing key, as the template names it (prefix stripped).
        key: String,
        /// The template engine's message.
        reason: String,
    },
    /// The template cannot be read, parsed or executed.
    #[error("{}: template {}: {reason}", resource.display(), template.display())]
    Template {
        /// The resource file.
        resource: PathBuf,
        /// The template file.
        template: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Writing the stage file or replacing `dest` failed.
    #[error("{}: writing {}: {source}", resource.display(), path.display())]
    Write {
        /// The resource file.
        resource: PathBuf,
        /// The file being written (the stage file or `dest`).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The stage file cannot be given the `uid`/`gid` the resource asks for (only root may
    /// give a file away).
    #[error("{}: cannot set owner {uid}:{gid} on {}: {source} (run as root, or drop uid/gid from the resource)", resource.display(), path.display())]
    Owner {
        /// The resource file.
        resource: PathBuf,
        /// The stage file.
        path: PathBuf,
        /// The uid asked for.
        uid: u32,
        /// The gid asked for.
        gid: u32,
        /// The I/O error (usually "operation not permitted").
        #[source]
        source: io::Error,
    },
    /// `check_cmd` failed: `dest` was left untouched.
    #[error("{}: check_cmd `{command}` failed: {reason}", resource.display())]
    Check {
        /// The resource file.
        resource: PathBuf,
        /// The command as run (`{{.src}}` replaced by the stage file).
        command: String,
        /// Exit status and output, on one line.
        reason: String,
    },
    /// `reload_cmd` failed (after `dest` was replaced).
    #[error("{}: reload_cmd `{command}` failed: {reason}", resource.display())]
    Reload {
        /// The resource file.
        resource: PathBuf,
        /// The command.
        command: String,
        /// Exit status and output, on one line.
        reason: String,
    },
}

/// `text` on one line: line breaks become ` | `, and at most `max` characters are kept.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if joined.chars().count() <= max {
        joined
    } else {
        let cut: String = joined.chars().take(max).collect();
        format!("{cut}...")
    }
}
