//! Between etcd keys and typed values: the keys under a prefix as a tree of strings, one
//! level per path segment (`/config/product/db/user` → `db.user`), and back.
//!
//! Reading builds a `config::Value` tree whose leaves are the strings etcd holds; the
//! `config` crate's deserializer turns `"8080"` into a `u16` and `"true"` into a `bool` on
//! demand, as env-style loaders do. A directory whose children are exactly `0`, `1`, ...
//! is a list. Writing flattens `serde_json`'s view of a value the same way.

use std::collections::BTreeMap;

use config::{Value, ValueKind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use svckit_registry::KeySnapshot;

/// Why a snapshot did not make a value: the key at fault (when one is) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) key: Option<String>,
    pub(crate) reason: String,
}

impl Refusal {
    fn at(key: &str, reason: impl Into<String>) -> Self {
        Self {
            key: Some(key.to_owned()),
            reason: reason.into(),
        }
    }
}

/// A node of the key tree.
enum Node {
    Leaf { key: String, value: String },
    Dir(BTreeMap<String, Node>),
}

/// Builds `T` from the keys of `snapshot` under `prefix` (which ends with `/`).
pub(crate) fn from_snapshot<T: DeserializeOwned>(
    snapshot: &KeySnapshot,
    prefix: &str,
) -> Result<T, Refusal> {
    let mut root = BTreeMap::new();
    for (key, value) in snapshot.iter() {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let value = std::str::from_utf8(value)
            .map_err(|_| Refusal::at(key, "the value is not UTF-8 text"))?;
        insert(&mut root, key, rest, value)?;
    }
    to_value(Node::Dir(root))
        .try_deserialize::<T>()
        .map_err(|e| refusal_of(&e, prefix))
}

fn insert(
    root: &mut BTreeMap<String, Node>,
    key: &str,
    rest: &str,
    value: &str,
) -> Result<(), Refusal> {
    // An empty segment (`a//b`, `a/`) would make two keys one field: refused.
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(Refusal::at(
            key,
            "the key has an empty path segment (`//` or a trailing `/`)",
        ));
    }
    let Some((last, dirs)) = segments.split_last() else {
        return Err(Refusal::at(
            key,
            "the key names the prefix itself, not a field",
        ));
    };
    let mut dir = root;
    for segment in dirs {
        let node = dir
            .entry((*segment).to_owned())
            .or_insert_with(|| Node::Dir(BTreeMap::new()));
        dir = match node {
            Node::Dir(children) => children,
            Node::Leaf { key: other, .. } => {
                return Err(Refusal::at(
                    key,
                    format!("{other} holds a value, so it cannot also be a directory"),
                ))
            }
        };
    }
    match dir.get(*last) {
        Some(Node::Dir(_)) => Err(Refusal::at(
            key,
            "the key is also a directory of other keys; it cannot hold a value",
        )),
        _ => {
            dir.insert(
                (*last).to_owned(),
                Node::Leaf {
                    key: key.to_owned(),
                    value: value.to_owned(),
                },
            );
            Ok(())
        }
    }
}

fn to_value(node: Node) -> Value {
    match node {
        // The origin is the etcd key: the deserializer names it when a value does not fit.
        Node::Leaf { key, value } => Value::new(Some(&key), ValueKind::String(value)),
        Node::Dir(children) => {
            if is_index_set(&children) {
                let mut items: Vec<(usize, Node)> = children
                    .into_iter()
                    .filter_map(|(k, v)| k.parse().ok().map(|i| (i, v)))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::new(
                    None,
                    ValueKind::Array(items.into_iter().map(|(_, v)| to_value(v)).collect()),
                )
            } else {
                let table: config::Map<String, Value> = children
                    .into_iter()
                    .map(|(k, v)| (k, to_value(v)))
                    .collect();
                Value::new(None, ValueKind::Table(table))
            }
        }
    }
}

/// Whether the keys are exactly the decimal indices `0..n` (no leading zeros). A set, not an
/// order: the map sorts `"10"` before `"2"`.
fn is_index_set(children: &BTreeMap<String, Node>) -> bool {
    let n = children.len();
    n > 0
        && children.keys().all(|k| {
            k.parse::<usize>()
                .is_ok_and(|i| i < n && i.to_string() == *k)
        })
}

/// The key and reason of a deserialization error, with the key relative to nothing: the
/// whole etcd key when the error names one.
fn refusal_of(error: &config::ConfigError, prefix: &str) -> Refusal {
    let text = error.to_string();
    // The value's origin is its etcd key: `... in /config/product/price`.
    let key = text
        .rsplit_once(" in ")
        .map(|(_, origin)| origin.trim().to_owned())
        .filter(|origin| origin.starts_with(prefix));
    let key = key.or_else(|| {
        // `... for key `db.port``: a path below the prefix.
        let start = text.find("for key `")? + "for key `".len();
        let end = text[start..].find('`')? + start;
        Some(format!("{prefix}{}", text[start..end].replace('.', "/")))
    });
    Refusal { key, reason: text }
}

/// The keys and values that represent `value` under `prefix` (which ends with `/`).
pub(crate) fn to_keys<T: Serialize>(
    value: &T,
    prefix: &str,
) -> Result<BTreeMap<String, String>, String> {
    let json = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(_) = &json else {
        return Err("the value must serialize to a map of fields (a struct or a map)".into());
    };
    let mut keys = BTreeMap::new();
    flatten(&json, prefix.trim_end_matches('/'), &mut keys)?;
    Ok(keys)
}

fn flatten(
    value: &serde_json::Value,
    path: &str,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    use serde_json::Value as J;
    match value {
        // An absent optional field is an absent key.
        J::Null => {}
        J::Bool(b) => {
            out.insert(path.to_owned(), b.to_string());
        }
        J::Number(n) => {
            out.insert(path.to_owned(), n.to_string());
        }
        J::String(s) => {
            out.insert(path.to_owned(), s.clone());
        }
        J::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(item, &format!("{path}/{i}"), out)?;
            }
        }
        J::Object(fields) => {
            for (name, field) in fields {
                if name.is_empty() || name.contains('/') {
                    return Err(format!(
                        "field name {name:?} under {path} cannot be a key segment"
                    ));
                }
                flatten(field, &format!("{path}/{name}"), out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use svckit_registry::{MemoryRegistry, Registry};

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Db {
        user: String,
        port: u16,
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct App {
        greeting: String,
        factor: f64,
        enabled: bool,
        db: Db,
        tags: Vec<String>,
        note: Option<String>,
    }

    async fn snapshot(pairs: &[(&str, &str)]) -> KeySnapshot {
        let ks = MemoryRegistry::new().keyspace();
        for (k, v) in pairs {
            ks.put(k, v).await.unwrap();
        }
        ks.get("/c/").await.unwrap()
    }

    fn app() -> App {
        App {
            greeting: "hi".into(),
            factor: 1.5,
            enabled: true,
            db: Db {
                user: "u".into(),
                port: 5432,
            },
            tags: (0..12).map(|i| format!("t{i}")).collect(),
            note: None,
        }
    }

    #[tokio::test]
    async fn strings_become_numbers_booleans_structs_and_lists() {
        let keys = to_keys(&app(), "/c/app/").unwrap();
        assert_eq!(keys["/c/app/db/port"], "5432");
        assert_eq!(keys["/c/app/tags/11"], "t11");
        assert!(!keys.contains_key("/c/app/note"));
        let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (&**k, &**v)).collect();
        let back: App = from_snapshot(&snapshot(&pairs).await, "/c/app/").unwrap();
        assert_eq!(back, app());
    }

    #[tokio::test]
    async fn a_value_that_does_not_fit_names_its_key() {
        let mut keys = to_keys(&app(), "/c/app/").unwrap();
        keys.insert("/c/app/db/port".into(), "not a port".into());
        let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (&**k, &**v)).collect();
        let refused = from_snapshot::<App>(&snapshot(&pairs).await, "/c/app/").unwrap_err();
        assert_eq!(
            refused.key.as_deref(),
            Some("/c/app/db/port"),
            "{refused:?}"
        );
        assert!(refused.reason.contains("not a port"), "{refused:?}");
    }

    #[tokio::test]
    async fn a_missing_field_and_a_key_that_is_also_a_directory_are_refused() {
        let refused =
            from_snapshot::<Db>(&snapshot(&[("/c/db/user", "u")]).await, "/c/db/").unwrap_err();
        assert!(refused.reason.contains("port"), "{refused:?}");
        let refused = from_snapshot::<BTreeMap<String, String>>(
            &snapshot(&[("/c/x/a", "1"), ("/c/x/a/b", "2")]).await,
            "/c/x/",
        )
        .unwrap_err();
        assert_eq!(refused.key.as_deref(), Some("/c/x/a/b"), "{refused:?}");
        // `/c/x/a` and `/c/x//a` would be one field: refused.
        for odd in ["/c/x//a", "/c/x/a/"] {
            let refused = from_snapshot::<BTreeMap<String, String>>(
                &snapshot(&[("/c/x/a", "1"), (odd, "2")]).await,
                "/c/x/",
            )
            .unwrap_err();
            assert_eq!(refused.key.as_deref(), Some(odd), "{refused:?}");
        }
    }

    #[test]
    fn only_maps_can_be_written() {
        assert!(to_keys(&5, "/c/").is_err());
        assert!(to_keys(&BTreeMap::from([("a/b", 1)]), "/c/").is_err());
    }
}
