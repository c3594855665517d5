//! [`Store`] over a real etcd through etcd-client. No etcd-client type leaves this file.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions,
    WatchStream as EtcdWatchStream,
};

use crate::error::Error;
use crate::etcd::options::EtcdOptions;
use crate::store::{
    timed, ttl_secs, KeepAlive, KeyValue, LeaseId, Listing, Range, Store, WatchEvent, WatchMessage,
    WatchStream,
};

fn etcd_error(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Error {
    move |e| Error::Etcd {
        op,
        source: Box::new(e),
    }
}

fn is_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::NotFound)
}

/// A connected etcd client.
#[derive(Clone)]
pub(crate) struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers within the dial timeout.
    pub(crate) async fn connect(options: &EtcdOptions, prefix: &str) -> Result<Self, Error> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.dial_timeout)
            // Detect dead connections under open streams. etcd refuses pings more often than
            // every 5 s by default.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &options.tls {
            use etcd_client::{Certificate, Identity, TlsOptions};
            let mut config = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity_pem {
                config = config.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &tls.domain {
                config = config.domain_name(domain.clone());
            }
            connect = connect.with_tls(config);
        }
        let dial = options.dial_timeout;
        let client = timed("connect", dial, async {
            Client::connect(&options.endpoints, Some(connect))
                .await
                .map_err(etcd_error("connect"))
        })
        .await?;
        let store = Self {
            client,
            endpoints: options.endpoints.clone(),
        };
        // The channel connects lazily: make one cheap request so a wrong endpoint fails here.
        let mut probe = store.client.clone();
        let count_only = GetOptions::new().with_prefix().with_count_only();
        timed("connect", dial, async {
            probe
                .get(prefix, Some(count_only))
                .await
                .map_err(etcd_error("connect"))
        })
        .await?;
        Ok(store)
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, Error> {
        let mut c = self.client.clone();
        let resp = c
            .lease_grant(ttl_secs(ttl), None)
            .await
            .map_err(etcd_error("grant"))?;
        Ok(resp.id())
    }

    async fn put(&self, key: &[u8], value: &[u8], lease: LeaseId) -> Result<i64, Error> {
        let mut c = self.client.clone();
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let resp = c.put(key, value, options).await.map_err(|e| {
            if is_not_found(&e) {
                Error::LeaseNotFound { lease }
            } else {
                etcd_error("put")(e)
            }
        })?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), Error> {
        let mut c = self.client.clone();
        match c.lease_revoke(lease).await {
            Ok(_) => Ok(()),
            // Already expired or revoked: the key is gone either way.
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(etcd_error("revoke")(e)),
        }
    }

    async fn keepalive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>, Error> {
        let mut c = self.client.clone();
        let (keeper, stream) = c.lease_keep_alive(lease).await.map_err(|e| match e {
            // etcd-client's answer when the first keepalive reports TTL 0: the lease is gone.
            etcd_client::Error::LeaseKeepAliveError(ref m) if m == "lease not found" => {
                Error::LeaseNotFound { lease }
            }
            e if is_not_found(&e) => Error::LeaseNotFound { lease },
            e => etcd_error("keepalive")(e),
        })?;
        Ok(Box::new(EtcdKeepAlive { keeper, stream }))
    }

    async fn get_prefix(&self, prefix: &[u8]) -> Result<Listing, Error> {
        let mut c = self.client.clone();
        let mut resp = c
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd_error("get"))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .take_kvs()
            .into_iter()
            .map(|kv| {
                let (key, value) = kv.into_key_value();
                KeyValue { key, value }
            })
            .collect();
        Ok(Listing { kvs, revision })
    }

    async fn watch(
        &self,
        key: &[u8],
        range: Range,
        start_revision: i64,
    ) -> Result<Box<dyn WatchStream>, Error> {
        let mut options = WatchOptions::new();
        if range == Range::Prefix {
            options = options.with_prefix();
        }
        if start_revision > 0 {
            options = options.with_start_revision(start_revision);
        }
        let mut c = self.client.clone();
        let stream = c
            .watch(key, Some(options))
            .await
            .map_err(etcd_error("watch"))?;
        Ok(Box::new(EtcdWatch { stream }))
    }
}

struct EtcdKeepAlive {
    keeper: etcd_client::LeaseKeeper,
    stream: etcd_client::LeaseKeepAliveStream,
}

impl fmt::Debug for EtcdKeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdKeepAlive")
            .field("lease", &self.keeper.id())
            .finish()
    }
}

#[async_trait]
impl KeepAlive for EtcdKeepAlive {
    async fn keep_alive(&mut self) -> Result<i64, Error> {
        self.keeper
            .keep_alive()
            .await
            .map_err(etcd_error("keepalive"))?;
        match self
            .stream
            .message()
            .await
            .map_err(etcd_error("keepalive"))?
        {
            Some(resp) => Ok(resp.ttl()),
            None => Err(Error::Etcd {
                op: "keepalive",
                source: "the keepalive stream ended".into(),
            }),
        }
    }
}

struct EtcdWatch {
    stream: EtcdWatchStream,
}

impl fmt::Debug for EtcdWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdWatch").finish_non_exhaustive()
    }
}

#[async_trait]
impl WatchStream for EtcdWatch {
    async fn next(&mut self) -> Result<WatchMessage, Error> {
        loop {
            let Some(resp) = self.stream.message().await.map_err(etcd_error("watch"))? else {
                return Err(Error::Etcd {
                    op: "watch",
                    source: "the watch stream ended".into(),
                });
            };
            if resp.compact_revision() > 0 {
                return Ok(WatchMessage::Compacted {
                    compact_revision: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                return Ok(WatchMessage::Cancelled {
                    reason: resp.cancel_reason().to_owned(),
                });
            }
            let events: Vec<WatchEvent> = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    let (key, revision) = (kv.key().to_vec(), kv.mod_revision());
                    Some(match e.event_type() {
                        EventType::Put => WatchEvent::Put {
                            key,
                            value: kv.value().to_vec(),
                            revision,
                        },
                        EventType::Delete => WatchEvent::Delete { key, revision },
                    })
                })
                .collect();
            if !events.is_empty() {
                return Ok(WatchMessage::Events(events));
            }
            // Created or progress notifications carry no events.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn keepalive_of_a_revoked_lease_is_lease_not_found() {
        let etcd = svckit_testing::Etcd::start();
        let options = EtcdOptions::new([etcd.endpoint()]);
        let store = EtcdStore::connect(&options, "/services").await.unwrap();
        let lease = store.grant(Duration::from_secs(10)).await.unwrap();
        store.keepalive(lease).await.unwrap();
        store.revoke(lease).await.unwrap();
        match store.keepalive(lease).await {
            Err(Error::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
            Err(other) => panic!("expected LeaseNotFound, got {other}"),
            Ok(_) => panic!("a revoked lease cannot be kept alive"),
        }
    }
}
