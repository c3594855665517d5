//! The etcd backend against a real etcd with user/password authentication and with TLS
//! (server-only and mutual), certificates generated at test time.

use std::error::Error as _;
use std::time::Duration;

use etcd_client::Client;
use svckit_registry::{Error, EtcdOptions, EtcdRegistry, Instance, Instances, Registry};
use svckit_testing::tls::TestCa;
use svckit_testing::Etcd;

const ROOT_PASSWORD: &str = "s3cret-root";

fn options(endpoint: impl Into<String>) -> EtcdOptions {
    EtcdOptions::new([endpoint.into()])
        .ttl(Duration::from_secs(5))
        .dial_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(2))
}

/// The error and all its sources, one line.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Registers an instance of `name` through `registry` and waits until `observer`'s discovery
/// lists it; then deregisters it and waits until it is gone.
async fn register_and_discover(registry: &EtcdRegistry, observer: &EtcdRegistry, name: &str) {
    let mut watch = observer.discovery().watch(name).unwrap();
    let registration = registry
        .register(Instance::with_random_id(name, "127.0.0.1:9001").unwrap())
        .await
        .unwrap();
    let id = registration.instance().id().to_owned();
    let seen = |instances: &Instances| instances.iter().any(|i| i.id() == id);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen(&watch.snapshot()) {
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("the registered instance is discovered");
    let found = watch.snapshot();
    let instance = found.iter().find(|i| i.id() == id).unwrap();
    assert_eq!(instance.addr(), "127.0.0.1:9001");

    registration.deregister().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while seen(&watch.snapshot()) {
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("the deregistered instance disappears");
}

/// Adds `root` with [`ROOT_PASSWORD`], gives it the root role and enables authentication,
/// as `etcdctl user add root && etcdctl user grant-role root root && etcdctl auth enable`.
async fn enable_auth(etcd: &Etcd) {
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    raw.user_add("root", ROOT_PASSWORD, None).await.unwrap();
    raw.user_grant_role("root", "root").await.unwrap();
    raw.auth_enable().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_root_with_password_registers_and_discovers() {
    let etcd = Etcd::start();
    enable_auth(&etcd).await;

    let registry = EtcdRegistry::connect(options(etcd.endpoint()).auth("root", ROOT_PASSWORD))
        .await
        .unwrap();
    let observer = EtcdRegistry::connect(options(etcd.endpoint()).auth("root", ROOT_PASSWORD))
        .await
        .unwrap();
    register_and_discover(&registry, &observer, "authsvc").await;
    assert!(
        !format!("{:?}", registry.options()).contains(ROOT_PASSWORD),
        "Debug never prints the password"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_wrong_password_or_no_credentials_fail_with_typed_errors() {
    let etcd = Etcd::start();
    enable_auth(&etcd).await;

    let err = EtcdRegistry::connect(options(etcd.endpoint()).auth("root", "wrong"))
        .await
        .expect_err("a wrong password is refused");
    assert!(
        matches!(&err, Error::AuthFailed { user, .. } if user == "root"),
        "wrong password: {err:?}"
    );
    assert_eq!(
        chain(&err),
        "etcd authentication failed for user \"root\": wrong user name or password: grpc \
         request error: code: 'Client specified an invalid argument', message: \"etcdserver: \
         authentication failed, invalid user ID or password\"",
        "says who and why"
    );

    let err = EtcdRegistry::connect(options(etcd.endpoint()).auth("nobody", ROOT_PASSWORD))
        .await
        .expect_err("an unknown user is refused");
    assert!(
        matches!(&err, Error::AuthFailed { user, .. } if user == "nobody"),
        "unknown user: {err:?}"
    );

    // A user without a password is refused before anything is sent.
    let err = EtcdRegistry::connect(options(etcd.endpoint()).auth("root", ""))
        .await
        .expect_err("an empty password is refused");
    assert!(
        matches!(&err, Error::MissingPassword { user } if user == "root"),
        "no password: {err:?}"
    );

    // Without credentials every request is refused. `connect` probes etcd with a read, so
    // it fails there already; should it ever stop probing, `register` must fail instead.
    let err = match EtcdRegistry::connect(options(etcd.endpoint())).await {
        Err(err) => err,
        Ok(registry) => registry
            .register(Instance::with_random_id("authsvc", "127.0.0.1:9001").unwrap())
            .await
            .expect_err("an anonymous register is refused"),
    };
    assert!(
        matches!(err, Error::AuthRequired { .. }),
        "no credentials: {err:?}"
    );
    assert!(
        chain(&err).contains("requires authentication")
            && chain(&err).contains("user name is empty"),
        "says why: {}",
        chain(&err)
    );
}

/// etcd's simple tokens expire (`--auth-token-ttl`, 300 s by default; 2 s here). After
/// that, a lost lease is re-registered, discovery works and deregistration revokes at once.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_auth_token_is_refreshed_for_reregistration_discovery_and_deregistration() {
    let etcd = Etcd::builder()
        .auth_token_ttl(Duration::from_secs(2))
        .start();
    enable_auth(&etcd).await;
    let registry = EtcdRegistry::connect(
        options(etcd.endpoint())
            .ttl(Duration::from_secs(30))
            .auth("root", ROOT_PASSWORD),
    )
    .await
    .unwrap();
    let registration = registry
        .register(Instance::with_random_id("tokensvc", "127.0.0.1:9001").unwrap())
        .await
        .unwrap();
    let key = registration.key().to_owned();
    // Let the token expire (etcd checks simple tokens' TTL about once a second).
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Revoke the lease from outside: only a fresh grant and put bring the key back.
    let mut root = Client::connect(
        [etcd.endpoint()],
        Some(
            etcd_client::ConnectOptions::new()
                .with_user("root", ROOT_PASSWORD)
                .with_auto_token_refresh(true),
        ),
    )
    .await
    .unwrap();
    let lease = root.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    root.lease_revoke(lease).await.unwrap();
    let started = tokio::time::Instant::now();
    loop {
        let kvs = root.get(key.as_str(), None).await.unwrap();
        if kvs.kvs().first().is_some_and(|kv| kv.lease() != lease) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not re-registered within 10 s with an expired token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(registration.recoveries(), 1);

    // Discovery (a watch opened with the expired token) and deregistration still work.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut watch = registry.discovery().watch("tokensvc").unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while watch.snapshot().is_empty() {
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("discovered with an expired token");
    tokio::time::sleep(Duration::from_secs(3)).await;
    registration
        .deregister()
        .await
        .expect("deregistered with an expired token");
    assert_eq!(
        root.get(key.as_str(), None).await.unwrap().count(),
        0,
        "key gone at once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_the_ca_registers_and_discovers() {
    let ca = TestCa::new();
    let etcd = Etcd::builder()
        .tls_pem(ca.server_cert_pem(), ca.server_key_pem())
        .start();
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));

    let registry = EtcdRegistry::connect(options(etcd.endpoint()).tls_ca_pem(ca.ca_pem()))
        .await
        .unwrap();
    // A `host:port` endpoint with TLS options talks TLS too.
    let observer = EtcdRegistry::connect(options(etcd.addr()).tls_ca_pem(ca.ca_pem()))
        .await
        .unwrap();
    register_and_discover(&registry, &observer, "tlssvc").await;

    // The certificate is verified against the name set with `tls_domain`.
    let by_name = EtcdRegistry::connect(
        options(etcd.endpoint())
            .tls_ca_pem(ca.ca_pem())
            .tls_domain("localhost"),
    )
    .await
    .unwrap();
    register_and_discover(&by_name, &observer, "tlssvc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_refuses_an_untrusted_server_a_wrong_name_and_plaintext() {
    let ca = TestCa::new();
    let etcd = Etcd::builder()
        .tls_pem(ca.server_cert_pem(), ca.server_key_pem())
        .start();

    // (what, options, what the error says; None where the transport only reports a closed
    // connection).
    let cases = [
        (
            "a CA that did not sign the server",
            options(etcd.endpoint()).tls_ca_pem(TestCa::new().ca_pem()),
            Some("invalid peer certificate"),
        ),
        // No system roots are compiled in (etcd-client/tls = rustls without native roots),
        // and they would not trust the test CA anyway.
        (
            "https without any CA",
            options(etcd.endpoint()),
            Some("invalid peer certificate"),
        ),
        (
            "a name the certificate is not for",
            options(etcd.endpoint())
                .tls_ca_pem(ca.ca_pem())
                .tls_domain("not-the-server.example"),
            Some("not valid for name"),
        ),
        ("plaintext to the TLS port", options(etcd.addr()), None),
    ];
    for (what, options, says) in cases {
        let err = EtcdRegistry::connect(options).await.expect_err(what);
        assert_connect_refused(what, &err, says);
    }
}

/// `err` is the typed refusal of `connect`, mentioning `says` if given.
fn assert_connect_refused(what: &str, err: &Error, says: Option<&str>) {
    assert!(
        matches!(
            err,
            Error::Etcd { op: "connect", .. } | Error::Unreachable { .. }
        ),
        "{what}: {err:?}"
    );
    if let Some(says) = says {
        assert!(chain(err).contains(says), "{what}: {}", chain(err));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_needs_the_client_identity() {
    let ca = TestCa::new();
    let etcd = Etcd::builder()
        .tls_pem(ca.server_cert_pem(), ca.server_key_pem())
        .client_cert_auth_pem(ca.ca_pem())
        .start();
    let with_identity = || {
        options(etcd.endpoint())
            .tls_ca_pem(ca.ca_pem())
            .tls_identity_pem(ca.client_cert_pem(), ca.client_key_pem())
    };

    let registry = EtcdRegistry::connect(with_identity()).await.unwrap();
    let observer = EtcdRegistry::connect(with_identity()).await.unwrap();
    register_and_discover(&registry, &observer, "mtlssvc").await;

    let err = EtcdRegistry::connect(options(etcd.endpoint()).tls_ca_pem(ca.ca_pem()))
        .await
        .expect_err("no client certificate is refused");
    // TLS 1.3: the server checks the client certificate after the client finished the
    // handshake, so the client only sees the connection closed.
    assert_connect_refused("no identity", &err, None);

    // A client certificate from another CA is refused too.
    let stranger = TestCa::new();
    let err = EtcdRegistry::connect(
        options(etcd.endpoint())
            .tls_ca_pem(ca.ca_pem())
            .tls_identity_pem(stranger.client_cert_pem(), stranger.client_key_pem()),
    )
    .await
    .expect_err("a client certificate from another CA is refused");
    assert_connect_refused("stranger identity", &err, None);
}
