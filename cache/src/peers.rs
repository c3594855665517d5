//! The peers of a cache: who owns which key (the ring, and the one before its last change),
//! and talking to them over the peer protocol ([`crate::protocol`]) through svckit's one HTTP
//! transport ([`svckit_balancer::HttpClient`]).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, StatusCode};
use prost::Message;
use svckit_balancer::{HttpClient, Limits, TransportError};
use tokio::time::Instant;

use crate::clock;
use crate::error::{BoxError, Error, PeerError};
use crate::getter::Loaded;
use crate::protocol::{
    peer_url, GetResponse, SetRequest, CONTENT_TYPE, GENERATION_HEADER, HANDOFF_HEADER,
};
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
    /// The largest `PUT` body accepted from a peer.
    pub(crate) max_request_bytes: usize,
}

/// How many earlier rings the handoff remembers. A rolling restart changes the ring twice per
/// node (it leaves, it comes back) and the next node leaves as soon as the last one is back:
/// the owner a key had before this node joined is then two changes old.
const PREVIOUS_RINGS: usize = 4;

/// How many earlier owners a key's new owner asks before its getter.
const MAX_PREVIOUS_OWNERS: usize = 2;

/// The ring of peer base URLs and this node's own URL, and the rings before the last changes
/// (for the handoff: a key's new owner asks its previous ones before its getter).
#[derive(Debug)]
pub(crate) struct Peers {
    self_url: String,
    ring: RwLock<Arc<GroupcacheRing>>,
    /// Newest first, each until its handoff window ends.
    previous: RwLock<std::collections::VecDeque<Previous>>,
    handoff_window: Duration,
}

/// A ring before a change, and until when it counts for the handoff.
#[derive(Debug, Clone)]
struct Previous {
    ring: Arc<GroupcacheRing>,
    until: Instant,
}

impl Peers {
    pub(crate) fn new(
        self_url: String,
        replicas: usize,
        hash: GroupcacheHashFn,
        handoff_window: Duration,
    ) -> Self {
        Self {
            self_url,
            ring: RwLock::new(Arc::new(GroupcacheRing::with_hash(replicas, hash))),
            previous: RwLock::new(std::collections::VecDeque::new()),
            handoff_window,
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
        let old = self.ring();
        // No handoff from the first list: a node that follows the registry before it
        // registers gets the list without itself first, and its keys' previous owners from
        // the change that adds it. (A first list that already holds this node would make
        // every key's "previous" owner another node, golang/groupcache nodes included, which
        // would answer a handoff ask as a plain get.)
        let previous = (!old.peers().is_empty()).then(|| old.clone());
        // Made from the current ring: the points of peers that stay are merged, not
        // computed and sorted again (O(points)).
        let ring = old.with_peers(urls);
        if ring.peers() == old.peers() {
            return Ok(());
        }
        tracing::debug!(peers = ring.peers().len(), "peer list set");
        if let Some(ring) = previous.filter(|_| !self.handoff_window.is_zero()) {
            let mut history = self
                .previous
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            history.retain(|p| p.until > now);
            history.push_front(Previous {
                ring,
                until: now + self.handoff_window,
            });
            history.truncate(PREVIOUS_RINGS);
        }
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

    /// The owners `key` had before the last changes of the ring (newest first, at most
    /// [`MAX_PREVIOUS_OWNERS`]), other than this node and than the current owner, from changes
    /// less than the handoff window old. They may have left the list: a node shutting down
    /// keeps serving through its linger after it deregistered.
    pub(crate) fn previous_owners(&self, key: &str) -> Vec<Arc<str>> {
        let history = self
            .previous
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now = Instant::now();
        let current = self.ring().get(key).cloned();
        let mut owners: Vec<Arc<str>> = Vec::new();
        for previous in history.iter().filter(|p| p.until > now) {
            let Some(owner) = previous.ring.get(key) else {
                continue;
            };
            let known = owners.contains(owner) || current.as_ref() == Some(owner);
            if !known && **owner != *self.self_url {
                owners.push(owner.clone());
                if owners.len() == MAX_PREVIOUS_OWNERS {
                    break;
                }
            }
        }
        owners
    }

    /// Every peer but this node.
    pub(crate) fn others(&self) -> Vec<Arc<str>> {
        let ring = self.ring();
        ring.peers()
            .iter()
            .filter(|p| ***p != *self.self_url)
            .cloned()
            .collect()
    }
}

/// What a fetch asks of the peer besides the key.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FetchOptions {
    /// The asker's flush generation of the group (sent when not 0).
    pub(crate) generation: u64,
    /// From memory only: a key's new owner asking its previous one.
    pub(crate) handoff: bool,
}

/// The longest a handoff ask may take before the new owner calls its getter instead.
pub(crate) const HANDOFF_TIMEOUT: Duration = Duration::from_secs(1);

/// Talks to peers: fetches values, and sets and removes keys.
#[derive(Debug)]
pub(crate) struct PeerClient {
    client: HttpClient,
    base_path: String,
    limits: Limits,
    secret: Option<HeaderValue>,
}

impl PeerClient {
    /// A client whose requests, connecting included, take at most `timeout` and accept
    /// bodies of at most `max_body` bytes.
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
        opts: FetchOptions,
    ) -> Result<Loaded, PeerError> {
        let mut req = Request::get(peer_url(peer, &self.base_path, group, key));
        let mut limits = self.limits;
        if opts.generation != 0 {
            req = req.header(GENERATION_HEADER, opts.generation);
        }
        if opts.handoff {
            req = req.header(HANDOFF_HEADER, "1");
            limits = Limits::new(limits.timeout().min(HANDOFF_TIMEOUT), limits.max_body());
        }
        let body = self.send(peer, req, Bytes::new(), limits).await?;
        let msg = GetResponse::decode(body).map_err(|e| PeerError::Decode {
            peer: peer.to_owned(),
            source: e.into(),
        })?;
        Ok(Loaded::from_parts(
            msg.value.unwrap_or_default(),
            msg.expire.unwrap_or(clock::NEVER),
        ))
    }

    /// `PUT <peer><base><group>/<key>` with a `SetRequest` (mailgun/groupcache's `Set`).
    pub(crate) async fn set(
        &self,
        peer: &str,
        group: &str,
        key: &str,
        loaded: &Loaded,
    ) -> Result<(), PeerError> {
        let expire = loaded.expire_nanos();
        let body = SetRequest {
            group: Some(group.to_owned()),
            key: Some(key.to_owned()),
            value: Some(loaded.value().clone()),
            expire: (expire != clock::NEVER).then_some(expire),
        }
        .encode_to_vec();
        let req = Request::put(peer_url(peer, &self.base_path, group, key))
            .header(header::CONTENT_TYPE, CONTENT_TYPE);
        self.send(peer, req, Bytes::from(body), self.limits).await?;
        Ok(())
    }

    /// `DELETE <peer><base><group>/<key>` (mailgun/groupcache's `Remove`).
    pub(crate) async fn remove(&self, peer: &str, group: &str, key: &str) -> Result<(), PeerError> {
        let req = Request::delete(peer_url(peer, &self.base_path, group, key));
        self.send(peer, req, Bytes::new(), self.limits).await?;
        Ok(())
    }

    /// Sends a request with the secret, and returns the body of a 200 answer.
    async fn send(
        &self,
        peer: &str,
        mut req: http::request::Builder,
        body: Bytes,
        limits: Limits,
    ) -> Result<Bytes, PeerError> {
        let transport = |e: BoxError| PeerError::Transport {
            peer: peer.to_owned(),
            source: e,
        };
        if let Some(secret) = &self.secret {
            req = req.header(HeaderName::from_static(SECRET_HEADER), secret.clone());
        }
        let req = req.body(body).map_err(|e| transport(e.into()))?;
        let resp = match self.client.send(req, limits).await {
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
        Ok(resp.into_body())
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
        let peers = Peers::new(
            "http://a:1".into(),
            50,
            crate::ring::crc32_ieee,
            Duration::from_secs(30),
        );
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
