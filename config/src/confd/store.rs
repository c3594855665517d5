//! The key space one template sees, with memkv's semantics (confd's in-memory store):
//! `get`, `gets`, `getv`, `getvs`, `exists`, `ls`, `lsdir`.

use std::collections::{BTreeMap, BTreeSet};

use super::gopath::{self, BadPattern};

/// The keys of one resource with its prefix stripped (`/app/db/user` under prefix `/app` is
/// `/db/user`), as confd's `setVars` builds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KvStore {
    map: BTreeMap<String, String>,
}

impl KvStore {
    /// The store of a resource with `prefix` (already starting with `/`) and `keys` already
    /// joined to it (`path.Join(prefix, key)`): a key is kept when it equals one of `keys` or
    /// lies below it (`/db/host` keeps `/db/host` and `/db/host/x`, not `/db/hostname`), as
    /// confd's etcdv3 backend filters its prefix reads. Values that are not UTF-8 are read
    /// lossily.
    pub(crate) fn from_entries<'a>(
        prefix: &str,
        keys: &[String],
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Self {
        let mut map = BTreeMap::new();
        for (key, value) in entries {
            let wanted = keys.iter().any(|k| {
                key == k
                    || key
                        .strip_prefix(k.as_str())
                        .is_some_and(|rest| k.ends_with('/') || rest.starts_with('/'))
            });
            if wanted {
                let stripped = key.strip_prefix(prefix).unwrap_or(key);
                map.insert(
                    gopath::join(&["/", stripped]),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
        Self { map }
    }

    /// A store holding exactly `map` (keys as the template sees them).
    #[cfg(test)]
    pub(crate) fn from_map(map: BTreeMap<String, String>) -> Self {
        Self { map }
    }

    /// memkv's `Get`: the value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// memkv's `GetAll`: every pair whose key matches `pattern` (Go `path.Match`), by key.
    pub(crate) fn gets(&self, pattern: &str) -> Result<Vec<(&str, &str)>, BadPattern> {
        let mut out = Vec::new();
        for (k, v) in &self.map {
            if gopath::matches(pattern, k)? {
                out.push((k.as_str(), v.as_str()));
            }
        }
        Ok(out)
    }

    /// memkv's `GetAllValues`: the values of [`gets`](Self::gets), sorted by value.
    pub(crate) fn getvs(&self, pattern: &str) -> Result<Vec<&str>, BadPattern> {
        let mut values: Vec<&str> = self.gets(pattern)?.into_iter().map(|(_, v)| v).collect();
        values.sort_unstable();
        Ok(values)
    }

    /// memkv's `List`: the names one level below `path` (leaves and directories), sorted and
    /// unique; `path` itself when it is a key.
    pub(crate) fn ls(&self, path: &str) -> Vec<String> {
        let prefix = terms(path);
        let mut names = BTreeSet::new();
        for key in self.map.keys() {
            if key == path {
                names.insert(gopath::base(key));
                continue;
            }
            if same_prefix_terms(&prefix, &terms(&gopath::dir(key))) {
                let stripped = key.strip_prefix(path).unwrap_or(key);
                let stripped = stripped.strip_prefix('/').unwrap_or(stripped);
                names.insert(stripped.split('/').next().unwrap_or_default().to_owned());
            }
        }
        names.into_iter().collect()
    }

    /// memkv's `ListDir`: the names one level below `path` that have keys below them.
    pub(crate) fn lsdir(&self, path: &str) -> Vec<String> {
        let prefix = terms(path);
        let mut names = BTreeSet::new();
        for key in self.map.keys().filter(|k| k.starts_with(path)) {
            let items = terms(&gopath::dir(key));
            if same_prefix_terms(&prefix, &items) && items.len() > prefix.len() {
                names.insert(items[prefix.len()].clone());
            }
        }
        names.into_iter().collect()
    }
}

/// memkv's `pathToTerms`: `path.Clean(p)` split on `/` (`/a/b` -> `["", "a", "b"]`,
/// `/` -> `["", ""]`).
fn terms(path: &str) -> Vec<String> {
    gopath::clean(path).split('/').map(str::to_owned).collect()
}

fn same_prefix_terms(prefix: &[String], test: &[String]) -> bool {
    test.len() >= prefix.len() && prefix.iter().zip(test).all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(pairs: &[(&str, &str)]) -> KvStore {
        KvStore::from_map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn entries_are_filtered_by_key_and_stripped_of_the_prefix() {
        let entries: Vec<(&str, &[u8])> = vec![
            ("/app/db/host", b"h"),
            ("/app/db/hostname", b"no"),
            ("/app/db/host/extra", b"e"),
            ("/app/upstream/a", b"1"),
            ("/app/upstream//b/", b"2"),
            ("/app2/db/host", b"other"),
        ];
        let keys = vec!["/app/db/host".to_owned(), "/app/upstream".to_owned()];
        let got = KvStore::from_entries("/app", &keys, entries);
        let want = store(&[
            ("/db/host", "h"),
            ("/db/host/extra", "e"),
            ("/upstream/a", "1"),
            ("/upstream/b", "2"),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn a_root_prefix_keeps_whole_keys() {
        let entries: Vec<(&str, &[u8])> = vec![("/a/b", b"1"), ("/c", b"2")];
        let keys = vec!["/".to_owned()];
        let got = KvStore::from_entries("/", &keys, entries);
        assert_eq!(got, store(&[("/a/b", "1"), ("/c", "2")]));
    }

    #[test]
    fn gets_getvs_ls_lsdir_as_memkv() {
        let s = store(&[
            ("/app/upstream/b", "10.0.0.2"),
            ("/app/upstream/a", "10.0.0.9"),
            ("/app/upstream/c/deep", "x"),
            ("/app/name", "shop"),
            ("/apple/x", "no"),
            ("/top", "t"),
        ]);
        assert_eq!(
            s.gets("/app/upstream/*").unwrap(),
            vec![
                ("/app/upstream/a", "10.0.0.9"),
                ("/app/upstream/b", "10.0.0.2")
            ]
        );
        // Sorted by value, not by key.
        assert_eq!(
            s.getvs("/app/upstream/*").unwrap(),
            vec!["10.0.0.2", "10.0.0.9"]
        );
        assert_eq!(s.gets("/app/[").unwrap_err(), BadPattern);
        assert_eq!(s.ls("/app/upstream"), vec!["a", "b", "c"]);
        assert_eq!(s.ls("/app/upstream/"), vec!["a", "b", "c"]);
        assert_eq!(s.ls("/app"), vec!["name", "upstream"]);
        assert_eq!(s.ls("/app/name"), vec!["name"]);
        assert_eq!(s.ls("/nothing"), Vec::<String>::new());
        assert_eq!(s.lsdir("/app"), vec!["upstream"]);
        assert_eq!(s.lsdir("/app/upstream"), vec!["c"]);
        // memkv's quirk: at the root, only top-level leaves are listed, and no directory.
        assert_eq!(s.ls("/"), vec!["top"]);
        assert_eq!(s.lsdir("/"), Vec::<String>::new());
    }
}
