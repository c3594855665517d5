//! [`EtcdOptions`]: how to reach etcd and how registrations and discovery behave.

use std::fmt;
use std::time::Duration;

use crate::config::{Config, DEFAULT_DIAL_TIMEOUT};
use crate::error::Error;

/// Connect options for [`EtcdRegistry`](crate::EtcdRegistry). Every setter documents its
/// default.
///
/// ```
/// use std::time::Duration;
/// use svckit_registry::EtcdOptions;
///
/// let options = EtcdOptions::new(["127.0.0.1:2379"])
///     .prefix("/services")
///     .ttl(Duration::from_secs(10))
///     .request_timeout(Duration::from_secs(5));
/// # drop(options);
/// ```
#[derive(Clone)]
#[must_use]
pub struct EtcdOptions {
    pub(crate) endpoints: Vec<String>,
    /// Prefix, TTL and timings, shared with the memory registry (defaults in one place).
    /// The prefix is kept as given and checked by [`config`](Self::config).
    pub(crate) shared: Config,
    pub(crate) dial_timeout: Duration,
    pub(crate) user: Option<(String, String)>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Tls>,
}

/// TLS settings, kept as PEM so no TLS library type leaks into the public API.
#[cfg(feature = "tls")]
#[derive(Clone, Default)]
pub(crate) struct Tls {
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) domain: Option<String>,
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("EtcdOptions");
        d.field("endpoints", &self.endpoints)
            .field("prefix", &self.shared.prefix)
            .field("ttl", &self.shared.ttl)
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.shared.request_timeout)
            .field("deregister_timeout", &self.shared.deregister_timeout)
            .field("reconcile_interval", &self.shared.reconcile_interval)
            // Never print the password.
            .field("user", &self.user.as_ref().map(|(name, _)| name));
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls.is_some());
        d.finish()
    }
}

impl EtcdOptions {
    /// Options for the etcd cluster at `endpoints` (`host:port`, or `http://` / `https://`
    /// URLs), with every other setting at its default.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            shared: Config::default(),
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            user: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The key prefix instances live under. Default: `/services`. It must start with `/`;
    /// a trailing `/` is ignored. Keys are `<prefix>/<id>/<name>`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.shared.prefix = prefix.into();
        self
    }

    /// The lease TTL of registrations: how long a key outlives a process that died without
    /// deregistering. Default: 10 s. Rounded up to whole seconds; etcd may raise very short
    /// TTLs to its minimum (about 2 s with default settings).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.shared.ttl = ttl;
        self
    }

    /// How long [`connect`](crate::EtcdRegistry::connect) waits for the first answer from
    /// etcd, and the TCP connect timeout of every (re)connection. Default: 5 s.
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// The bound on every single etcd request (grant, put, get, revoke, opening a watch).
    /// Default: 5 s. Keepalives are additionally bounded by TTL/3.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.shared.request_timeout = timeout;
        self
    }

    /// The bound on [`Registration::deregister`](crate::Registration::deregister), so an
    /// unreachable etcd cannot block a process from exiting. Default: 2 s.
    pub fn deregister_timeout(mut self, timeout: Duration) -> Self {
        self.shared.deregister_timeout = timeout;
        self
    }

    /// How often discovery re-lists the whole prefix in case a watch event was lost.
    /// Default: 30 s.
    pub fn reconcile_interval(mut self, interval: Duration) -> Self {
        self.shared.reconcile_interval = interval;
        self
    }

    /// Authenticate as `user` with `password`. Default: no authentication.
    pub fn auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Verify etcd's certificate against this CA (PEM) and talk TLS. Default: plain HTTP/2
    /// unless an endpoint is an `https://` URL; no roots are built in then, so set this to
    /// trust the server (a connection without it fails with a typed `connect` error).
    #[cfg(feature = "tls")]
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.get_or_insert_with(Tls::default).ca_pem = Some(pem.into());
        self
    }

    /// Present this client certificate and key (both PEM) to etcd (mutual TLS). Default: none.
    #[cfg(feature = "tls")]
    pub fn tls_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls.get_or_insert_with(Tls::default).identity_pem = Some((cert.into(), key.into()));
        self
    }

    /// The name to verify etcd's certificate against. Default: the endpoint's host.
    #[cfg(feature = "tls")]
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.tls.get_or_insert_with(Tls::default).domain = Some(domain.into());
        self
    }

    /// Adds auth and TLS from the environment, the variables every svckit program reads:
    /// `SVCKIT_ETCD_USER` / `SVCKIT_ETCD_PASSWORD`, `SVCKIT_ETCD_CA` (a PEM file; the
    /// endpoints then use `https://`), `SVCKIT_ETCD_CERT` / `SVCKIT_ETCD_KEY` (client
    /// identity, PEM files). Unset or empty variables change nothing. A user without a
    /// password is passed on as such: connecting refuses it by name.
    ///
    /// # Errors
    /// [`Error::ReadFile`] when a named PEM file cannot be read.
    #[cfg(feature = "tls")]
    pub fn with_env(mut self) -> Result<Self, Error> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(user) = env("SVCKIT_ETCD_USER") {
            self = self.auth(user, env("SVCKIT_ETCD_PASSWORD").unwrap_or_default());
        }
        let read = |var: &'static str, path: String| {
            std::fs::read(&path).map_err(|source| Error::ReadFile { var, path, source })
        };
        if let Some(ca) = env("SVCKIT_ETCD_CA") {
            self = self.tls_ca_pem(read("SVCKIT_ETCD_CA", ca)?);
        }
        if let (Some(cert), Some(key)) = (env("SVCKIT_ETCD_CERT"), env("SVCKIT_ETCD_KEY")) {
            self = self.tls_identity_pem(
                read("SVCKIT_ETCD_CERT", cert)?,
                read("SVCKIT_ETCD_KEY", key)?,
            );
        }
        Ok(self)
    }

    /// Checks the options and derives the shared configuration.
    pub(crate) fn config(&self) -> Result<Config, Error> {
        let trimmed = self.shared.prefix.trim_end_matches('/');
        if !trimmed.starts_with('/') || trimmed.len() < 2 {
            return Err(Error::InvalidPrefix {
                prefix: self.shared.prefix.clone(),
            });
        }
        Ok(Config {
            prefix: trimmed.to_owned(),
            ..self.shared.clone()
        })
    }
}
