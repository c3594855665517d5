//! A service instance and the etcd key layout `<prefix>/<id>/<name>` → `host:port`.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, MalformedEntry};

/// The key prefix instances are registered under unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/services";

/// One running instance of a service: an id, a service name and the address it serves on.
///
/// Both `id` and `name` are ASCII word characters only (`[A-Za-z0-9_]+`) so that clients in
/// other languages can parse keys with `/services/(\w+)/(\w+)`.
///
/// Cloning is cheap (three reference counts): discovery snapshots share their instances.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instance {
    id: Arc<str>,
    name: Arc<str>,
    addr: Arc<str>,
}

impl Instance {
    /// An instance with an explicit id. Fails with [`Error::InvalidIdent`] when `id` or `name`
    /// is not `[A-Za-z0-9_]+`, or [`Error::InvalidAddress`] when `addr` is not `host:port`.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        addr: impl Into<String>,
    ) -> Result<Self, Error> {
        let (id, name, addr): (String, String, String) = (id.into(), name.into(), addr.into());
        validate_ident("id", &id)?;
        validate_ident("name", &name)?;
        validate_addr(&addr)?;
        Ok(Self {
            id: id.into(),
            name: name.into(),
            addr: addr.into(),
        })
    }

    /// An instance with a fresh random id: a UUID v4 in its 32-hex simple form.
    pub fn with_random_id(name: impl Into<String>, addr: impl Into<String>) -> Result<Self, Error> {
        Self::new(random_id(), name, addr)
    }

    /// The instance id, unique per running process.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The service name clients look the instance up by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address, `host:port`, the instance serves on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The etcd key of this instance under `prefix`: `<prefix>/<id>/<name>`.
    pub fn key(&self, prefix: &str) -> String {
        format!("{}/{}/{}", prefix.trim_end_matches('/'), self.id, self.name)
    }

    /// Parses one key/value pair read under `prefix`. The key must be exactly
    /// `<prefix>/<id>/<name>` with valid identifiers and the value a non-empty UTF-8 `host:port`.
    pub fn from_entry(prefix: &str, key: &[u8], value: &[u8]) -> Result<Self, MalformedEntry> {
        let malformed = |reason: &'static str| MalformedEntry {
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
        };
        let key_str = std::str::from_utf8(key).map_err(|_| malformed("key is not UTF-8"))?;
        let rest = key_str
            .strip_prefix(prefix.trim_end_matches('/'))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| malformed("key is not under the prefix"))?;
        let (id, name) = rest
            .split_once('/')
            .ok_or_else(|| malformed("key has no `<id>/<name>` after the prefix"))?;
        if !is_ident(id) {
            return Err(malformed("id is not [A-Za-z0-9_]+"));
        }
        if !is_ident(name) {
            return Err(malformed(
                "name is not [A-Za-z0-9_]+ (or the key has extra segments)",
            ));
        }
        let addr = std::str::from_utf8(value).map_err(|_| malformed("value is not UTF-8"))?;
        if validate_addr(addr).is_err() {
            return Err(malformed("value is not a `host:port` address"));
        }
        Ok(Self {
            id: id.into(),
            name: name.into(),
            addr: addr.into(),
        })
    }

    /// The id as a shared string: cloning it costs a reference count (it is the key of
    /// discovery snapshots, and of Endpoint tables).
    pub fn shared_id(&self) -> &Arc<str> {
        &self.id
    }

    /// The same instance with `name` (equal to its own) shared with the other instances of
    /// the service, so a large set holds the name once.
    pub(crate) fn sharing_name(mut self, name: &Arc<str>) -> Self {
        debug_assert_eq!(*self.name, **name);
        self.name = name.clone();
        self
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instance({}/{} @ {})", self.id, self.name, self.addr)
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} at {}", self.id, self.name, self.addr)
    }
}

/// A fresh random instance id: a UUID v4 in its 32-hex simple form.
pub(crate) fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// True when `s` is a non-empty run of ASCII word characters (`[A-Za-z0-9_]+`).
pub(crate) fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a service name before anything else is done with it (`[A-Za-z0-9_]+`): a program
/// can refuse a bad `--name` at once, before it binds, connects or registers.
///
/// # Errors
/// [`Error::InvalidIdent`] naming the value and what is allowed.
pub fn validate_name(name: &str) -> Result<(), Error> {
    validate_ident("name", name)
}

/// Checks a service name or id, naming the bad value and what is allowed when it fails.
pub(crate) fn validate_ident(what: &'static str, value: &str) -> Result<(), Error> {
    if is_ident(value) {
        Ok(())
    } else {
        Err(Error::InvalidIdent {
            what,
            value: value.to_owned(),
        })
    }
}

fn validate_addr(addr: &str) -> Result<(), Error> {
    let invalid = || Error::InvalidAddress {
        addr: addr.to_owned(),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(invalid());
    }
    port.parse::<u16>().map_err(|_| invalid())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        let i = Instance::new("abc", "productservice", "127.0.0.1:8081").unwrap();
        assert_eq!(i.key("/services"), "/services/abc/productservice");
        assert_eq!(i.key("/services/"), "/services/abc/productservice");
        let parsed = Instance::from_entry(
            "/services",
            b"/services/abc/productservice",
            b"127.0.0.1:8081",
        )
        .unwrap();
        assert_eq!(parsed, i);
    }

    #[test]
    fn random_id_is_simple_uuid() {
        let id = random_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, random_id());
    }

    #[test]
    fn invalid_idents_are_refused_with_the_value() {
        for bad in ["", "a-b", "a/b", "a b", "prodütservice", "."] {
            let err = Instance::new("id1", bad, "127.0.0.1:1").unwrap_err();
            assert!(matches!(&err, Error::InvalidIdent { what: "name", value } if value == bad));
            let msg = err.to_string();
            assert!(msg.contains("[A-Za-z0-9_]+"), "{msg}");
            assert!(Instance::new(bad, "svc", "127.0.0.1:1").is_err());
        }
    }

    #[test]
    fn malformed_entries_are_rejected() {
        let p = "/services";
        for (k, v) in [
            (&b"/services/x"[..], &b"127.0.0.1:1"[..]),
            (b"/services/a/b/c", b"127.0.0.1:1"),
            (b"/services/a-b/c", b"127.0.0.1:1"),
            (b"/services2/a/b", b"127.0.0.1:1"),
            (b"/services/a/b", b""),
            (b"/services/a/b", b"\xff\xfe"),
            (b"/services/a/b", b"no-port"),
            (b"/services/\xff/b", b"127.0.0.1:1"),
        ] {
            assert!(Instance::from_entry(p, k, v).is_err(), "{k:?} {v:?}");
        }
        assert!(Instance::from_entry(p, b"/services/a/b", b"[::1]:80").is_ok());
    }
}
