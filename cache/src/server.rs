//! The server side of the peer protocol, as a tower [`Service`] and an axum [`Router`].
//!
//! `GET <base><group>/<key>`: group and key are decoded from the raw request path with
//! golang/groupcache's query-unescape rules, so keys arrive byte-exact whatever they contain.
//! The value is loaded on this node (memory or getter) and never forwarded to another peer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use prost::Message;
use tower::Service;

use crate::error::{Chain, Error};
use crate::group::Groups;
use crate::peers::{Cluster, SECRET_HEADER};
use crate::protocol::{parse_path, GetResponse, PathError, UnescapeError, CONTENT_TYPE};

/// Serves golang/groupcache's peer protocol for every group of a [`Cache`](crate::Cache).
///
/// A tower `Service` over any request body (the body is not read); from
/// [`Cache::service`](crate::Cache::service). Mount it with
/// [`Cache::router`](crate::Cache::router) or wrap it in layers of your own.
#[derive(Clone, Debug)]
pub struct PeerService {
    groups: Arc<Groups>,
    cluster: Arc<Cluster>,
}

/// The future of [`PeerService`].
pub type PeerFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(msg.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Compares without stopping at the first difference, so timing does not reveal the secret.
fn secret_matches(got: &[u8], want: &[u8]) -> bool {
    if got.len() != want.len() {
        return false;
    }
    got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

impl PeerService {
    /// The peer protocol for `groups`, reached through `cluster`'s base path and secret.
    pub(crate) fn new(groups: Arc<Groups>, cluster: Arc<Cluster>) -> Self {
        Self { groups, cluster }
    }

    async fn serve(
        groups: Arc<Groups>,
        path: String,
        group: String,
        key: String,
    ) -> Response<Full<Bytes>> {
        let Some(g) = groups.get(&group) else {
            tracing::debug!(%path, %group, "peer asked for an unknown group");
            return text(StatusCode::NOT_FOUND, format!("no such group: {group}"));
        };
        match g.get_for_peer(&key).await {
            Ok(value) => {
                let body = GetResponse {
                    value: Some(value),
                    minute_qps: None,
                }
                .encode_to_vec();
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
                resp
            }
            Err(e) => {
                let status = match e {
                    Error::KeyTooLong { .. } => StatusCode::BAD_REQUEST,
                    Error::Closed { .. } => StatusCode::SERVICE_UNAVAILABLE,
                    // Any getter error, as golang/groupcache answers it; the body says why.
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                text(status, Chain(&e).to_string())
            }
        }
    }
}

impl<B> Service<Request<B>> for PeerService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = PeerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cluster = &self.cluster;
        if let Some(secret) = &cluster.secret {
            let ok = req
                .headers()
                .get(SECRET_HEADER)
                .is_some_and(|got| secret_matches(got.as_bytes(), secret.as_bytes()));
            if !ok {
                return Box::pin(async { Ok(text(StatusCode::FORBIDDEN, "forbidden")) });
            }
        }
        if req.method() != Method::GET {
            return Box::pin(async {
                let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
                Ok(resp)
            });
        }
        // The raw path, still escaped: `%2F` inside a key must not become a separator.
        let path = req.uri().path().to_owned();
        let (group, key) = match parse_path(&path, &cluster.base_path) {
            Ok(parts) => parts,
            Err(e) => {
                let msg = match e {
                    PathError::Shape => "bad request: expected <base><group>/<key>",
                    PathError::Escape(UnescapeError::BadEscape) => "bad request: malformed escape",
                    PathError::Escape(UnescapeError::NotUtf8) => {
                        "bad request: group or key is not UTF-8"
                    }
                };
                return Box::pin(async move { Ok(text(StatusCode::BAD_REQUEST, msg)) });
            }
        };
        let groups = self.groups.clone();
        Box::pin(async move { Ok(Self::serve(groups, path, group, key).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{getter_fn, BoxError, Cache};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A getter's error with a source of its own, as an application's would be.
    #[derive(Debug, thiserror::Error)]
    #[error("key refused")]
    struct Refused(#[source] std::io::Error);

    #[tokio::test]
    async fn a_getter_error_is_answered_with_its_reasons() {
        let cache = Cache::builder("http://127.0.0.1:1").build().unwrap();
        let getter = getter_fn(|_key: String| async {
            Err::<Bytes, BoxError>(Box::new(Refused(std::io::Error::other(
                "it must not contain `..`",
            ))))
        });
        cache.new_group("g", 1 << 20, getter).build().unwrap();
        let req = Request::get("/_groupcache/g/a%2F..b").body(()).unwrap();
        let resp = cache.service().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            "getter of group \"g\" failed for key \"a/..b\": key refused: \
             it must not contain `..`"
        );
    }

    #[test]
    fn secret_comparison() {
        assert!(secret_matches(b"abc", b"abc"));
        assert!(!secret_matches(b"abd", b"abc"));
        assert!(!secret_matches(b"ab", b"abc"));
    }
}
