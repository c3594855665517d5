//! The server side of the peer protocol ([`crate::protocol`]), as a tower [`Service`] and an
//! axum [`Router`](axum::Router).
//!
//! `GET <base><group>/<key>`: group and key are decoded from the raw request path with
//! golang/groupcache's query-unescape rules, so keys arrive byte-exact whatever they contain.
//! The value is loaded on this node (memory or getter) and never forwarded to another peer.
//! `PUT` and `DELETE` are mailgun/groupcache's writes; a `PUT` body is read up to the
//! cache's request limit ([`CacheBuilder::max_request_bytes`](crate::CacheBuilder::max_request_bytes)), past which it is 413.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use prost::Message;
use tower::Service;

use crate::clock;
use crate::error::{BoxError, Chain, Error};
use crate::getter::Loaded;
use crate::group::{Group, Groups};
use crate::peers::{Cluster, FetchOptions, SECRET_HEADER};
use crate::protocol::{
    parse_path, GetResponse, PathError, SetRequest, UnescapeError, CONTENT_TYPE, GENERATION_HEADER,
    HANDOFF_HEADER,
};

/// Serves golang/groupcache's peer protocol for every group of a [`Cache`](crate::Cache).
///
/// A tower `Service` over any HTTP request body (read only for a `PUT`); from
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

    /// The group named `group`; `None` (logged) when there is none.
    fn group(groups: &Groups, path: &str, group: &str) -> Option<Group> {
        let g = groups.get(group);
        if g.is_none() {
            tracing::debug!(%path, %group, "peer asked for an unknown group");
        }
        g
    }

    async fn get(g: Group, key: String, ask: FetchOptions) -> Response<Full<Bytes>> {
        match g.get_for_peer(&key, ask).await {
            Ok(Some(loaded)) => {
                let expire = loaded.expire_nanos();
                let body = GetResponse {
                    value: Some(loaded.into_value()),
                    minute_qps: None,
                    expire: (expire != clock::NEVER).then_some(expire),
                }
                .encode_to_vec();
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
                resp
            }
            Ok(None) => text(StatusCode::NOT_FOUND, "not in memory"),
            Err(e) => error(&e),
        }
    }

    /// mailgun/groupcache's `PUT`: a `SetRequest` body, whose key is the one set.
    async fn put<B>(g: Group, body: B, limit: usize) -> Response<Full<Bytes>>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        let body = match Limited::new(body, limit).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return too_large(limit);
            }
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("bad request: reading the body failed: {e}"),
                )
            }
        };
        let req = match SetRequest::decode(body) {
            Ok(req) => req,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("bad request: the body is not a SetRequest: {e}"),
                )
            }
        };
        let (Some(_), Some(key)) = (req.group, req.key) else {
            return text(
                StatusCode::BAD_REQUEST,
                "bad request: a SetRequest needs its group and key",
            );
        };
        let loaded = Loaded::from_parts(
            req.value.unwrap_or_default(),
            req.expire.unwrap_or(clock::NEVER),
        );
        match g.set_for_peer(&key, &loaded) {
            Ok(()) => Response::new(Full::new(Bytes::new())),
            Err(e) => error(&e),
        }
    }
}

/// The answer to a failed get, set or remove.
fn error(e: &Error) -> Response<Full<Bytes>> {
    let status = match e {
        Error::KeyTooLong { .. } => StatusCode::BAD_REQUEST,
        Error::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Closed { .. } => StatusCode::SERVICE_UNAVAILABLE,
        // Any getter error, as golang/groupcache answers it; the body says why.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(status, Chain(e).to_string())
}

fn too_large(limit: usize) -> Response<Full<Bytes>> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {limit} bytes"),
    )
}

/// What a get asks besides the key: the sender's flush generation (absent or unreadable: 0)
/// and whether it is a handoff ask.
fn fetch_options(headers: &http::HeaderMap) -> FetchOptions {
    let generation = headers
        .get(GENERATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let handoff = headers.get(HANDOFF_HEADER).is_some_and(|v| v == "1");
    FetchOptions {
        generation,
        handoff,
    }
}

impl<B> Service<Request<B>> for PeerService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
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
        let method = req.method().clone();
        if method != Method::GET && method != Method::PUT && method != Method::DELETE {
            return Box::pin(async {
                let mut resp = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only GET, PUT and DELETE are served",
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, PUT, DELETE"));
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
        let Some(g) = Self::group(&self.groups, &path, &group) else {
            let resp = text(StatusCode::NOT_FOUND, format!("no such group: {group}"));
            return Box::pin(async { Ok(resp) });
        };
        if method == Method::DELETE {
            let resp = match g.remove_for_peer(&key) {
                Ok(()) => Response::new(Full::new(Bytes::new())),
                Err(e) => error(&e),
            };
            return Box::pin(async { Ok(resp) });
        }
        if method == Method::PUT {
            let limit = cluster.max_request_bytes;
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit as u64) {
                return Box::pin(async move { Ok(too_large(limit)) });
            }
            let body = req.into_body();
            return Box::pin(async move { Ok(Self::put(g, body, limit).await) });
        }
        let ask = fetch_options(req.headers());
        Box::pin(async move { Ok(Self::get(g, key, ask).await) })
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
        let req = Request::get("/_groupcache/g/a%2F..b")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
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
