//! The differences between two snapshots of a prefix: what `config watch` and
//! `services watch` print.

use std::cmp::Ordering;

use svckit::registry::KeySnapshot;

/// One key that differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    /// The key is new (`old` is `None`) or has a new value.
    Put {
        key: &'a str,
        value: &'a [u8],
        old: Option<&'a [u8]>,
    },
    /// The key is gone.
    Delete { key: &'a str, old: &'a [u8] },
}

/// What changed from `old` to `new`, sorted by key: a merge of the two sorted listings.
pub(crate) fn changes<'a>(old: &'a KeySnapshot, new: &'a KeySnapshot) -> Vec<Change<'a>> {
    let mut out = Vec::new();
    let (mut before, mut after) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (before.peek(), after.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        match order {
            Ordering::Less => {
                if let Some((key, old)) = before.next() {
                    out.push(Change::Delete { key, old });
                }
            }
            Ordering::Greater => {
                if let Some((key, value)) = after.next() {
                    out.push(Change::Put {
                        key,
                        value,
                        old: None,
                    });
                }
            }
            Ordering::Equal => {
                if let (Some((_, old)), Some((key, value))) = (before.next(), after.next()) {
                    if old != value {
                        out.push(Change::Put {
                            key,
                            value,
                            old: Some(old),
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use svckit::registry::{MemoryRegistry, Registry};

    #[tokio::test]
    async fn puts_updates_and_deletes_in_key_order() {
        let keyspace = MemoryRegistry::new().keyspace();
        for (k, v) in [("/p/a", "1"), ("/p/b", "2"), ("/p/d", "4")] {
            keyspace.put(k, v).await.unwrap();
        }
        let old = keyspace.get("/p/").await.unwrap();
        keyspace.delete("/p/a").await.unwrap();
        keyspace.put("/p/b", "2").await.unwrap();
        keyspace.put("/p/c", "3").await.unwrap();
        keyspace.put("/p/d", "5").await.unwrap();
        keyspace.put("/p/e", "6").await.unwrap();
        let new = keyspace.get("/p/").await.unwrap();
        assert_eq!(
            changes(&old, &new),
            [
                Change::Delete {
                    key: "/p/a",
                    old: b"1"
                },
                Change::Put {
                    key: "/p/c",
                    value: b"3",
                    old: None
                },
                Change::Put {
                    key: "/p/d",
                    value: b"5",
                    old: Some(b"4")
                },
                Change::Put {
                    key: "/p/e",
                    value: b"6",
                    old: None
                },
            ]
        );
        assert!(changes(&new, &new).is_empty());
    }
}
