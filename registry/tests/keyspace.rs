//! The keyspace against a real etcd where deployments differ from the defaults: a user
//! allowed to read only its own config keys, a prefix larger than gRPC's default message
//! limit, and a transaction with more writes than etcd takes.

use std::time::Duration;

use etcd_client::{Client, Permission};
use svckit_registry::{Error, EtcdOptions, EtcdRegistry, Registry, Txn};
use svckit_testing::Etcd;

async fn connect(etcd: &Etcd, user: Option<(&str, &str)>) -> Result<EtcdRegistry, Error> {
    let mut options = EtcdOptions::new([etcd.endpoint()]).dial_timeout(Duration::from_secs(3));
    if let Some((user, password)) = user {
        options = options.auth(user, password);
    }
    EtcdRegistry::connect(options).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_that_may_only_read_its_config_connects_and_reads_it() {
    let etcd = Etcd::start();
    let mut root = Client::connect([etcd.endpoint()], None).await.unwrap();
    root.put("/cfg/app/name", "shop", None).await.unwrap();
    root.user_add("root", "rootpw", None).await.unwrap();
    root.user_grant_role("root", "root").await.unwrap();
    root.role_add("app_reader").await.unwrap();
    root.role_grant_permission("app_reader", Permission::read("/cfg/app/").with_prefix())
        .await
        .unwrap();
    root.user_add("reader", "readerpw", None).await.unwrap();
    root.user_grant_role("reader", "app_reader").await.unwrap();
    root.auth_enable().await.unwrap();

    // It may not read /services (the connect probe's key), yet it connects.
    let registry = connect(&etcd, Some(("reader", "readerpw"))).await.unwrap();
    let keys = registry.keyspace();
    let got = keys.get("/cfg/app/").await.unwrap();
    assert_eq!(got.get("/cfg/app/name"), Some(&b"shop"[..]));
    let mut watch = keys.watch("/cfg/app/").unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .expect("the watch lists the prefix")
        .unwrap();
    assert_eq!(first.len(), 1);
    // What it may not do is refused by name, not as a connection problem.
    let refused = keys.put("/cfg/app/name", "x").await.unwrap_err();
    assert!(
        format!("{:?}", refused).contains("permission denied"),
        "{refused:?}"
    );
    // Wrong passwords are still refused at connect.
    assert!(matches!(
        connect(&etcd, Some(("reader", "wrong"))).await,
        Err(Error::AuthFailed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_larger_than_four_mebibytes_is_listed_and_watched() {
    let etcd = Etcd::start();
    let registry = connect(&etcd, None).await.unwrap();
    let keys = registry.keyspace();
    let value = vec![b'x'; 1_400_000];
    for i in 0..4 {
        keys.put(&format!("/big/v{i}"), &value).await.unwrap();
    }
    let got = keys.get("/big/").await.unwrap();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|(_, v)| v.len() == value.len()));
    let mut watch = keys.watch("/big/").unwrap();
    let listed = tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("listed")
        .unwrap();
    assert_eq!(listed.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_over_etcds_limit_is_refused_by_name_and_writes_nothing() {
    let etcd = Etcd::start();
    let registry = connect(&etcd, None).await.unwrap();
    let keys = registry.keyspace();
    let txn = (0..200).fold(Txn::new(), |t, i| t.put(format!("/many/k{i}"), "v"));
    let refused = keys.commit(txn).await;
    assert!(
        matches!(refused, Err(Error::TxnTooLarge { .. })),
        "{refused:?}"
    );
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("--max-txn-ops, 128 by default"));
    assert!(keys.get("/many/").await.unwrap().is_empty());
}
