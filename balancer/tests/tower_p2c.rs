//! The registry's tower `Discover` adapter drives `tower::balance::p2c::Balance`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use svckit_registry::Instance;
use tower::balance::p2c::Balance;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
use tower::{service_fn, BoxError, Service, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_plugs_into_tower_p2c() {
    let servers = servers(3, Duration::ZERO).await;
    let discovery = static_discovery(&servers);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let discover = discovery
        .discover(SERVICE, move |instance: &Instance| {
            let (client, uri) = (client.clone(), format!("http://{}/id", instance.addr()));
            service_fn(move |()| {
                let (client, uri) = (client.clone(), uri.clone());
                async move {
                    let req = http::Request::get(uri).body(Full::new(Bytes::new()))?;
                    let body = client.request(req).await?.into_body().collect().await?;
                    Ok::<_, BoxError>(String::from_utf8(body.to_bytes().to_vec())?)
                }
            })
        })
        .unwrap();
    let mut balance = Balance::new(PendingRequestsDiscover::new(
        discover,
        CompleteOnResponse::default(),
    ));
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..300 {
        let id = balance.ready().await.unwrap().call(()).await.unwrap();
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["s0", "s1", "s2"],
        "{seen:?}"
    );
    assert_eq!(balance.len(), 3);
}
