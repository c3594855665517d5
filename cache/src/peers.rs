//! The peers of a cache: who owns which key (the ring), and fetching a value from its owner
//! over golang/groupcache's HTTP protocol through svckit's one HTTP transport
//! ([`svckit_balancer::HttpClient`]).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use prost::Message;
use svckit_balancer::{HttpClient, Limits, TransportError};

use crate::error::{BoxError, Error, PeerError};
use crate::protocol::{peer_url, GetResponse};
use crate::ring::{GroupcacheHashFn, GroupcacheRing};

/// The header carrying the optional shared secret between svckit peers.
pub const SECRET_HEADER: &str = "x-svckit-cache-secret";

/// Checks that `url` is a peer base URL: `http://host:port`, with no query or fragment.
/// The string itself is kept as given: it is what the ring hashes, as Go nodes do.
pub(crate) fn validate_peer_url(url: &str) -> Result<(), Error> {
    let bad = |reason| Error::InvalidPeerUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(bad("only http:// peers are supported")),
        None => return Err(bad("missing http:// scheme")),
    }
    let authority = uri.authority().ok_or(bad("missing host"))?;
    if authority.host().is_empty() {
        return Err(bad("missing host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(bad("a query or fragment is not allowed"));
    }
    Ok(())
}

/// What every group of a cache shares to reach the other nodes: who they are, the client
/// that fetches from them and the protocol's settings (base path, optional secret).
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) peers: Peers,
    pub(crate) client: PeerClient,
    pub(crate) base_path: String,
    pub(crate) secret: Option<HeaderValue>,
}

/// The ring of peer base URLs and this node's own URL.
#[derive(Debug)]
pub(crate) struct Peers {
    self_url: String,
    ring: RwLock<Arc<GroupcacheRing>>,
}

impl Peers {
    pub(crate) fn new(self_url: String, replicas: usize, hash: GroupcacheHashFn) -> Self {
        Self {
            self_url,
            ring: RwLock::new(Arc::new(GroupcacheRing::with_hash(replicas, hash))),
        }
    }

    pub(crate) fn self_url(&self) -> &str {
        &self.self_url
    }

    /// Replaces the peer list (golang/groupcache's `HTTPPool.Set`). Validates every URL
    /// first: on an error nothing changes.
    pub(crate) fn set<I, S>(&self, urls: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls: Vec<Arc<str>> = urls.into_iter().map(|u| Arc::from(u.as_ref())).collect();
        for u in &urls {
            validate_peer_url(u)?;
        }
        // Made from the current ring: the points of peers that stay are merged, not
        // computed and sorted again (O(points)).
        let ring = self.ring().with_peers(urls);
        tracing::debug!(peers = ring.peers().len(), "peer list set");
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
        Ok(())
    }

    /// The current ring.
    pub(crate) fn ring(&self) -> Arc<GroupcacheRing> {
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The peer owning `key` when it is not this node (golang/groupcache's `PickPeer`).
    pub(crate) fn pick(&self, key: &str) -> Option<Arc<str>> {
        let ring = self.ring();
        let owner = ring.get(key)?;
        (**owner != *self.self_url).then(|| owner.clone())
    }
}

/// Fetches values from peers.
#[derive(Debug)]
pub(crate) struct PeerClient {
    client: HttpClient,
    base_path: String,
    limits: Limits,
    secret: Option<HeaderValue>,
}

impl PeerClient {
    /// A client whose fetches, connecting included, take at most `timeout` and accept bodies
    /// of at most `max_body` bytes.
    pub(crate) fn new(
        base_path: String,
        timeout: Duration,
        max_body: usize,
        secret: Option<HeaderValue>,
    ) -> Self {
        let client = HttpClient::builder()
            .connect_timeout(timeout)
            .pool_max_idle_per_host(64)
            .build();
        Self {
            client,
            base_path,
            limits: Limits::new(timeout, max_body),
            secret,
        }
    }

    /// `GET <peer><base><group>/<key>` and decode the `GetResponse`.
    pub(crate) async fn fetch(
        &self,
        peer: &str,
        group: &str,
        key: &str,
    ) -> Result<Bytes, PeerError> {
        let url = peer_url(peer, &self.base_path, group, key);
        let transport = |e: BoxError| PeerError::Transport {
            peer: peer.to_owned(),
            source: e,
        };
        let mut req = Request::get(url)
            .body(Bytes::new())
            .map_err(|e| transport(e.into()))?;
        if let Some(secret) = &self.secret {
            req.headers_mut()
                .insert(HeaderName::from_static(SECRET_HEADER), secret.clone());
        }
        let resp = match self.client.send(req, self.limits).await {
            Ok(resp) => resp,
            Err(TransportError::Timeout { after }) => {
                return Err(PeerError::Timeout {
                    peer: peer.to_owned(),
                    after,
                })
            }
            Err(TransportError::BodyTooLarge { status, limit }) if status == StatusCode::OK => {
                return Err(PeerError::TooLarge {
                    peer: peer.to_owned(),
                    limit,
                })
            }
            Err(TransportError::BodyTooLarge { status, .. }) => {
                return Err(PeerError::Status {
                    peer: peer.to_owned(),
                    status,
                })
            }
            Err(e) => return Err(transport(e.into())),
        };
        if resp.status() != StatusCode::OK {
            return Err(PeerError::Status {
                peer: peer.to_owned(),
                status: resp.status(),
            });
        }
        let msg = GetResponse::decode(resp.into_body()).map_err(|e| PeerError::Decode {
            peer: peer.to_owned(),
            source: e.into(),
        })?;
        Ok(msg.value.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_validated() {
        assert!(validate_peer_url("http://127.0.0.1:9101").is_ok());
        assert!(validate_peer_url("http://cache-1:80").is_ok());
        for bad in [
            "127.0.0.1:9101",
            "https://h:1",
            "http://",
            "http://h:1/?q=1",
            "",
            "ftp://x",
        ] {
            assert!(
                matches!(validate_peer_url(bad), Err(Error::InvalidPeerUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pick_skips_self() {
        let peers = Peers::new("http://a:1".into(), 50, crate::ring::crc32_ieee);
        assert!(peers.pick("k").is_none(), "empty ring: load locally");
        peers.set(["http://a:1"]).unwrap();
        assert!(peers.pick("k").is_none());
        peers.set(["http://a:1", "http://b:1"]).unwrap();
        let owners: std::collections::HashSet<_> = (0..100)
            .filter_map(|i| peers.pick(&format!("k{i}")))
            .collect();
        assert_eq!(owners.len(), 1);
        assert!(peers.set(["http://c:1", "nope"]).is_err());
        assert_eq!(
            peers.ring().peers().len(),
            2,
            "a refused list changes nothing"
        );
    }
}
