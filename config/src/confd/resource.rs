//! confd's template resources (`conf.d/*.toml`): what to render, from which keys, to where.

use std::path::{Component, Path, PathBuf};

use super::error::ConfdError;
use super::gopath;

/// One parsed `[template]` resource, prefix and keys resolved as confd resolves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    /// The resource file.
    pub(crate) file: PathBuf,
    /// `src` as written.
    pub(crate) src: String,
    /// `<confdir>/templates`.
    pub(crate) templates_dir: PathBuf,
    /// `<confdir>/templates/<src>` (checked lexically; symlinks are checked at each render).
    pub(crate) template: PathBuf,
    /// The file to write.
    pub(crate) dest: PathBuf,
    /// The prefix, starting with `/` (the global prefix when one was given, as confd does).
    pub(crate) prefix: String,
    /// The keys, each joined to the prefix (`path.Join(prefix, key)`).
    pub(crate) keys: Vec<String>,
    /// `mode`, parsed as Go's `strconv.ParseUint(mode, 0, 32)`; `None`: keep dest's, or 0644.
    pub(crate) mode: Option<u32>,
    /// `uid`, when given (confd's -1 means not given).
    pub(crate) uid: Option<u32>,
    /// `gid`, when given.
    pub(crate) gid: Option<u32>,
    /// `check_cmd`, a Go template over `{{.src}}`.
    pub(crate) check_cmd: Option<String>,
    /// `reload_cmd`.
    pub(crate) reload_cmd: Option<String>,
}

impl Resource {
    /// Reads the resource file `file`. `global_prefix` (confd's `--prefix`), when not empty,
    /// replaces the resource's own `prefix`, as confd has done since 0.12.
    pub(crate) fn load(
        file: &Path,
        templates_dir: &Path,
        global_prefix: &str,
    ) -> Result<Self, ConfdError> {
        let text = std::fs::read_to_string(file).map_err(|e| invalid(file, e.to_string()))?;
        Self::parse(file, &text, templates_dir, global_prefix)
    }

    pub(crate) fn parse(
        file: &Path,
        text: &str,
        templates_dir: &Path,
        global_prefix: &str,
    ) -> Result<Self, ConfdError> {
        let doc: toml::Table = toml::from_str(text)
            .map_err(|e| invalid(file, format!("not valid TOML: {}", e.message())))?;
        // Go's TOML decoder matches field names case-insensitively; unknown fields
        // (`keep_stage_file`, ...) are ignored, as confd ignores them.
        let table = lookup(&doc, "template")
            .ok_or_else(|| invalid(file, "no [template] table".to_owned()))?
            .as_table()
            .ok_or_else(|| invalid(file, "`template` is not a table".to_owned()))?;
        let string = |name: &str| -> Result<Option<String>, ConfdError> {
            match lookup(table, name) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(
                    file,
                    format!("`{name}` must be a string, not {}", other.type_str()),
                )),
            }
        };
        let id = |name: &str| -> Result<Option<u32>, ConfdError> {
            match lookup(table, name) {
                None => Ok(None),
                Some(toml::Value::Integer(-1)) => Ok(None),
                Some(toml::Value::Integer(n)) => u32::try_from(*n)
                    .map(Some)
                    .map_err(|_| invalid(file, format!("`{name}` {n} is not a valid id"))),
                Some(other) => Err(invalid(
                    file,
                    format!("`{name}` must be an integer, not {}", other.type_str()),
                )),
            }
        };

        let src = string("src")?.unwrap_or_default();
        if src.is_empty() {
            return Err(invalid(file, "empty src template".to_owned()));
        }
        let template = template_path(file, templates_dir, &src)?;
        let dest = string("dest")?.unwrap_or_default();
        if dest.is_empty() {
            return Err(invalid(file, "empty dest".to_owned()));
        }

        let mut prefix = if global_prefix.is_empty() {
            string("prefix")?.unwrap_or_default()
        } else {
            global_prefix.to_owned()
        };
        if !prefix.starts_with('/') {
            prefix.insert(0, '/');
        }
        let keys = match lookup(table, "keys") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(key) => Ok(gopath::join(&[&prefix, key])),
                    other => Err(invalid(
                        file,
                        format!("`keys` must hold strings, not {}", other.type_str()),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(invalid(
                    file,
                    format!("`keys` must be an array, not {}", other.type_str()),
                ))
            }
        };
        let mode = match string("mode")? {
            None => None,
            Some(m) if m.is_empty() => None,
            Some(m) => Some(parse_mode(&m).ok_or_else(|| {
                invalid(
                    file,
                    format!("mode {m:?} is not a number (write it as \"0644\")"),
                )
            })?),
        };
        if let Some(m) = mode {
            if m > 0o7777 {
                tracing::warn!(resource = %file.display(), mode = format!("{m:o}"), "mode has bits beyond 07777 (a mode without a leading 0 is decimal, as in confd)");
            }
        }
        let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        Ok(Self {
            file: file.to_owned(),
            src,
            templates_dir: templates_dir.to_owned(),
            template,
            dest: PathBuf::from(dest),
            prefix,
            keys,
            mode,
            uid: id("uid")?,
            gid: id("gid")?,
            check_cmd: nonempty(string("check_cmd")?),
            reload_cmd: nonempty(string("reload_cmd")?),
        })
    }

    /// The one prefix to read and watch: the longest common prefix of the keys (`/` when
    /// they share nothing more), so that a render sees all of its keys at one revision. The
    /// keys are picked from it by [`KvStore::from_entries`](super::store::KvStore).
    pub(crate) fn read_prefix(&self) -> String {
        let mut keys = self.keys.iter();
        let Some(first) = keys.next() else {
            return self.prefix.clone();
        };
        let mut common: &str = first;
        for key in keys {
            let n = common
                .char_indices()
                .zip(key.chars())
                .take_while(|((_, x), y)| x == y)
                .last()
                .map_or(0, |((i, c), _)| i + c.len_utf8());
            common = &common[..n];
        }
        if common.is_empty() {
            "/".to_owned()
        } else {
            common.to_owned()
        }
    }
}

/// `<templates>/<src>`, refusing what could lead out of the templates directory.
fn template_path(file: &Path, templates_dir: &Path, src: &str) -> Result<PathBuf, ConfdError> {
    let refuse = |reason: &str| ConfdError::SrcOutsideTemplates {
        resource: file.to_owned(),
        src: src.to_owned(),
        reason: reason.to_owned(),
    };
    let rel = Path::new(src);
    if rel.is_absolute() {
        return Err(refuse(
            "an absolute path; src is relative to <confdir>/templates",
        ));
    }
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refuse("`..` leads out of <confdir>/templates"));
    }
    let path = templates_dir.join(rel);
    if path.exists() {
        check_inside(file, templates_dir, &path, src)?;
    }
    Ok(path)
}

/// Refuses `path` unless, symlinks resolved, it lies inside `templates_dir`.
pub(crate) fn check_inside(
    file: &Path,
    templates_dir: &Path,
    path: &Path,
    src: &str,
) -> Result<PathBuf, ConfdError> {
    let refuse = |reason: String| ConfdError::SrcOutsideTemplates {
        resource: file.to_owned(),
        src: src.to_owned(),
        reason,
    };
    let root = templates_dir.canonicalize().map_err(|e| {
        refuse(format!(
            "templates directory {}: {e}",
            templates_dir.display()
        ))
    })?;
    let real = path
        .canonicalize()
        .map_err(|e| refuse(format!("{}: {e}", path.display())))?;
    if real.starts_with(&root) {
        Ok(real)
    } else {
        Err(refuse(format!(
            "a symlink leading out of <confdir>/templates (to {})",
            real.display()
        )))
    }
}

/// Go's `strconv.ParseUint(s, 0, 32)`: `0x`/`0o`/`0b` prefixes, a leading `0` for octal,
/// decimal otherwise, `_` between digits.
pub(crate) fn parse_mode(s: &str) -> Option<u32> {
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(rest) = lower.strip_prefix("0x") {
        (rest, 16)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (rest, 8)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (rest, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    let digits = digits.replace('_', "");
    if digits.is_empty() {
        return None;
    }
    u32::from_str_radix(&digits, radix).ok()
}

/// A key of `table`, matched as Go's TOML decoder matches struct fields: exactly, else
/// case-insensitively.
fn lookup<'a>(table: &'a toml::Table, name: &str) -> Option<&'a toml::Value> {
    table.get(name).or_else(|| {
        table
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn invalid(file: &Path, reason: String) -> ConfdError {
    ConfdError::Resource {
        resource: file.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, prefix: &str) -> Result<Resource, ConfdError> {
        Resource::parse(
            Path::new("conf.d/app.toml"),
            text,
            Path::new("/nonexistent/templates"),
            prefix,
        )
    }

    #[test]
    fn a_full_confd_resource_parses() {
        let r = parse(
            r#"
[template]
src = "nginx.conf.tmpl"
dest = "/etc/nginx/nginx.conf"
prefix = "app"
uid = 0
gid = -1
mode = "0640"
keys = ["/nginx", "/upstream/"]
check_cmd = "/usr/sbin/nginx -t -c {{.src}}"
reload_cmd = "/usr/sbin/service nginx restart"
keep_stage_file = true
[other]
x = 1
"#,
            "",
        )
        .unwrap();
        assert_eq!(
            r.template,
            Path::new("/nonexistent/templates/nginx.conf.tmpl")
        );
        assert_eq!(r.dest, Path::new("/etc/nginx/nginx.conf"));
        assert_eq!(r.prefix, "/app");
        assert_eq!(r.keys, vec!["/app/nginx", "/app/upstream"]);
        assert_eq!(r.mode, Some(0o640));
        assert_eq!((r.uid, r.gid), (Some(0), None));
        assert_eq!(
            r.check_cmd.as_deref(),
            Some("/usr/sbin/nginx -t -c {{.src}}")
        );
        assert_eq!(
            r.reload_cmd.as_deref(),
            Some("/usr/sbin/service nginx restart")
        );
        assert_eq!(r.read_prefix(), "/app/");
    }

    #[test]
    fn the_global_prefix_replaces_the_resources_and_fields_are_case_insensitive() {
        let r = parse(
            "[template]\nSRC = \"a.tmpl\"\nDest = \"/tmp/a\"\nprefix = \"/mine\"\nkeys = [\"/db\", \"/cache\"]\n",
            "/global",
        )
        .unwrap();
        assert_eq!(r.prefix, "/global");
        assert_eq!(r.keys, vec!["/global/db", "/global/cache"]);
        assert_eq!(r.read_prefix(), "/global/");
        let r = parse(
            "[template]\nsrc = \"a\"\ndest = \"/tmp/a\"\nkeys = [\"/db\", \"/cache\", \"/db/x\"]\n",
            "",
        )
        .unwrap();
        assert_eq!(r.prefix, "/");
        assert_eq!(r.read_prefix(), "/");
    }

    #[test]
    fn bad_resources_are_refused_with_the_file_and_reason() {
        for (text, want) in [
            ("[template]\ndest = \"/x\"\n", "conf.d/app.toml: empty src template"),
            ("[template]\nsrc = \"a\"\n", "conf.d/app.toml: empty dest"),
            ("src = 1", "conf.d/app.toml: no [template] table"),
            ("[template]\nsrc = \"a\"\ndest = \"/x\"\nmode = \"rw\"\n", "conf.d/app.toml: mode \"rw\" is not a number (write it as \"0644\")"),
            ("[template]\nsrc = \"a\"\ndest = \"/x\"\nkeys = \"/a\"\n", "conf.d/app.toml: `keys` must be an array, not string"),
            ("[template]\nsrc = \"../x\"\ndest = \"/x\"\n", "conf.d/app.toml: src \"../x\" is refused: `..` leads out of <confdir>/templates"),
            ("[template]\nsrc = \"/etc/passwd\"\ndest = \"/x\"\n", "conf.d/app.toml: src \"/etc/passwd\" is refused: an absolute path; src is relative to <confdir>/templates"),
        ] {
            let err = parse(text, "").unwrap_err().to_string();
            assert_eq!(err, want);
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn modes_parse_as_go_parse_uint_base_0() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        assert_eq!(parse_mode("0x1A4"), Some(0o644));
        // Without a leading 0 the mode is decimal, as in confd.
        assert_eq!(parse_mode("644"), Some(644));
        assert_eq!(parse_mode("0"), Some(0));
        assert_eq!(parse_mode("0_644"), Some(0o644));
        assert_eq!(parse_mode("08"), None);
        assert_eq!(parse_mode(""), None);
    }
}
