//! Applying a rendered file as confd's `sync` does: a stage file beside `dest` with the
//! wanted mode and owner, compared with `dest`; only when they differ, `check_cmd` on the
//! stage file, an atomic rename over `dest`, then `reload_cmd`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{one_line, ConfdError};
use super::render::check_command;
use super::resource::Resource;

/// What applying a resource did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// `dest` already had the rendered content, mode and owner: nothing was run.
    Unchanged,
    /// `dest` was replaced (after `check_cmd` passed) and `reload_cmd` ran.
    Updated,
    /// `dest` differs but was left alone (noop mode).
    WouldUpdate,
}

/// How to apply (confd's `--noop` and `--sync-only`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ApplyOptions {
    /// Compare only; never write `dest` or run a command.
    pub(crate) noop: bool,
    /// Write `dest` without running `check_cmd` or `reload_cmd`.
    pub(crate) sync_only: bool,
}

/// Writes `content` to `resource.dest` when it differs, as confd does; see the module docs.
/// Every failure before the rename leaves `dest` untouched and removes the stage file.
pub(crate) fn apply(
    resource: &Resource,
    content: &str,
    options: ApplyOptions,
) -> Result<Outcome, ConfdError> {
    let dest = &resource.dest;
    let current = match fs::metadata(dest) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(write_error(resource, dest, e)),
    };
    // confd's default mode: dest's own, else 0644. Go applies the permission bits only.
    let mode = resource
        .mode
        .or_else(|| current.as_ref().map(MetadataExt::mode))
        .unwrap_or(0o644)
        & 0o777;

    let stage = Stage::create(resource, content, mode)?;
    let staged = fs::metadata(&stage.path).map_err(|e| write_error(resource, &stage.path, e))?;
    let changed = match &current {
        None => true,
        Some(meta) => {
            meta.mode() & 0o777 != mode
                || meta.uid() != staged.uid()
                || meta.gid() != staged.gid()
                || fs::read(dest).map_or(true, |old| old != content.as_bytes())
        }
    };
    if !changed {
        tracing::debug!(resource = %resource.file.display(), dest = %dest.display(), "in sync");
        return Ok(Outcome::Unchanged);
    }
    if options.noop {
        tracing::warn!(resource = %resource.file.display(), dest = %dest.display(), "noop mode: dest out of sync, not modified");
        return Ok(Outcome::WouldUpdate);
    }
    if let (Some(command), false) = (&resource.check_cmd, options.sync_only) {
        let stage_path = stage.path.to_string_lossy();
        let command = check_command(command, &stage_path).map_err(|reason| ConfdError::Check {
            resource: resource.file.clone(),
            command: command.clone(),
            reason,
        })?;
        run(&command).map_err(|reason| ConfdError::Check {
            resource: resource.file.clone(),
            command,
            reason,
        })?;
    }
    stage.replace(resource)?;
    tracing::info!(resource = %resource.file.display(), dest = %dest.display(), "dest updated");
    if let (Some(command), false) = (&resource.reload_cmd, options.sync_only) {
        run(command).map_err(|reason| ConfdError::Reload {
            resource: resource.file.clone(),
            command: command.clone(),
            reason,
        })?;
    }
    Ok(Outcome::Updated)
}

/// The stage file, removed when dropped unless it was renamed over `dest`.
struct Stage {
    path: PathBuf,
    renamed: bool,
}

impl Stage {
    /// `.<dest name><n>` in dest's directory (same file system, so the rename is atomic),
    /// holding `content` with `mode` and the resource's owner.
    fn create(resource: &Resource, content: &str, mode: u32) -> Result<Self, ConfdError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dest = &resource.dest;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (file, path) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".{name}{}{n}", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(write_error(resource, &path, e)),
            }
        };
        let stage = Self {
            path,
            renamed: false,
        };
        let mut file = file;
        file.write_all(content.as_bytes())
            .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
            .map_err(|e| write_error(resource, &stage.path, e))?;
        if resource.uid.is_some() || resource.gid.is_some() {
            let meta = file
                .metadata()
                .map_err(|e| write_error(resource, &stage.path, e))?;
            let (uid, gid) = (
                resource.uid.unwrap_or(meta.uid()),
                resource.gid.unwrap_or(meta.gid()),
            );
            if (uid, gid) != (meta.uid(), meta.gid()) {
                std::os::unix::fs::chown(&stage.path, Some(uid), Some(gid)).map_err(|source| {
                    ConfdError::Owner {
                        resource: resource.file.clone(),
                        path: stage.path.clone(),
                        uid,
                        gid,
                        source,
                    }
                })?;
            }
        }
        Ok(stage)
    }

    /// Renames the stage file over `dest`; when `dest` is a mount point (EBUSY), writes it in
    /// place instead, as confd does.
    fn replace(mut self, resource: &Resource) -> Result<(), ConfdError> {
        const EBUSY: i32 = 16;
        match fs::rename(&self.path, &resource.dest) {
            Ok(()) => {
                self.renamed = true;
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(EBUSY) => {
                let content =
                    fs::read(&self.path).map_err(|e| write_error(resource, &self.path, e))?;
                let mode = fs::metadata(&self.path).map(|m| m.mode()).unwrap_or(0o644);
                fs::write(&resource.dest, content)
                    .and_then(|()| {
                        fs::set_permissions(
                            &resource.dest,
                            fs::Permissions::from_mode(mode & 0o777),
                        )
                    })
                    .map_err(|e| write_error(resource, &resource.dest, e))
            }
            Err(e) => Err(write_error(resource, &resource.dest, e)),
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Runs `command` with `/bin/sh -c`; on failure, the exit status and output on one line.
fn run(command: &str) -> Result<(), String> {
    tracing::debug!(command, "running");
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .output()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let text = one_line(&text, 400);
    let status = match output.status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    Err(if text.is_empty() {
        status
    } else {
        format!("{status}: {text}")
    })
}

fn write_error(resource: &Resource, path: &Path, source: io::Error) -> ConfdError {
    ConfdError::Write {
        resource: resource.file.clone(),
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(dir: &Path, extra: &str) -> Resource {
        let text = format!(
            "[template]\nsrc = \"t.tmpl\"\ndest = \"{}\"\n{extra}",
            dir.join("dest.conf").display()
        );
        Resource::parse(Path::new("conf.d/t.toml"), &text, dir, "").unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn modes_default_to_0644_then_dest_and_a_mode_change_alone_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let plain = resource(dir.path(), "");
        let dest = &plain.dest;
        assert_eq!(
            apply(&plain, "a", ApplyOptions::default()).unwrap(),
            Outcome::Updated
        );
        assert_eq!(mode(dest), 0o644);
        fs::set_permissions(dest, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            apply(&plain, "a", ApplyOptions::default()).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(mode(dest), 0o600, "dest's own mode is kept");
        let strict = resource(dir.path(), "mode = \"0640\"\n");
        assert_eq!(
            apply(&strict, "a", ApplyOptions::default()).unwrap(),
            Outcome::Updated
        );
        assert_eq!(mode(dest), 0o640);
        let noop = ApplyOptions {
            noop: true,
            sync_only: false,
        };
        assert_eq!(apply(&plain, "b", noop).unwrap(), Outcome::WouldUpdate);
        assert_eq!(fs::read_to_string(dest).unwrap(), "a");
        // Only dest is left in the directory: no stage file.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn another_owner_without_the_right_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let me = fs::metadata(dir.path()).unwrap().uid();
        if me == 0 {
            return; // root may give files away
        }
        let other = resource(dir.path(), "uid = 0\n");
        let err = apply(&other, "a", ApplyOptions::default()).unwrap_err();
        assert!(matches!(err, ConfdError::Owner { uid: 0, .. }), "{err}");
        assert!(err.to_string().contains("run as root"), "{err}");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written"
        );
    }
}
