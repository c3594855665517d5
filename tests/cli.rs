//! The `svckit` binary as a user runs it: a real process against a real etcd, its stdout,
//! stderr and exit code. The engines behind it (confd rendering, watches) are tested in
//! their crates; this checks the command line, the wiring and the messages.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use svckit::registry::{EtcdOptions, EtcdRegistry, Instance, Keyspace, Registry, Txn};
use svckit_testing::process::{signal, terminate, Signal};
use svckit_testing::{free_port, Etcd};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a line or a file change may take to show up.
const WAIT: Duration = Duration::from_secs(10);

/// The environment variables the tool reads; cleared so the caller's never leak in.
const ENV: [&str; 6] = [
    "SVCKIT_ETCD_USER",
    "SVCKIT_ETCD_PASSWORD",
    "SVCKIT_ETCD_CA",
    "SVCKIT_ETCD_CERT",
    "SVCKIT_ETCD_KEY",
    "RUST_LOG",
];

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_svckit"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in ENV {
        command.env_remove(var);
    }
    command
}

/// Runs the tool to completion (at most 20 s).
async fn run(args: &[&str]) -> Output {
    run_with(command(args)).await
}

async fn run_with(mut command: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("svckit finishes within 20 s")
        .expect("run svckit")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status.code(),
        stderr(output)
    );
    stdout(output)
}

/// A running `svckit ... watch` whose stdout is read line by line.
struct Watcher {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Watcher {
    fn spawn(args: &[&str]) -> Self {
        let mut child = command(args).spawn().expect("start svckit");
        let out = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: BufReader::new(out).lines(),
        }
    }

    /// Reads lines until one equals `wanted`; returns every line read, that one included.
    async fn until(&mut self, wanted: &str) -> Vec<String> {
        self.until_match(wanted, |line| line == wanted).await
    }

    /// Reads lines until one starts with `prefix`; returns every line read.
    async fn until_prefix(&mut self, prefix: &str) -> Vec<String> {
        self.until_match(prefix, |line| line.starts_with(prefix))
            .await
    }

    async fn until_match(&mut self, wanted: &str, done: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no line {wanted:?} within {WAIT:?}; saw {seen:?}"))
                .expect("read stdout")
                .unwrap_or_else(|| panic!("stdout closed before {wanted:?}; saw {seen:?}"));
            let found = done(&line);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }

    /// SIGTERM; returns the exit code.
    async fn stop(mut self) -> Option<i32> {
        terminate(&mut self.child, Duration::from_secs(5)).await
    }
}

async fn registry(etcd: &Etcd) -> EtcdRegistry {
    EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]).ttl(Duration::from_secs(10)))
        .await
        .expect("connect to the test etcd")
}

async fn keyspace(etcd: &Etcd) -> Keyspace {
    registry(etcd).await.keyspace()
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("svckit-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A confd directory with one resource `name` rendering `template` to `<dir>/<name>.conf`
/// from the keys under `/db`. Returns the destination.
fn confd_resource(dir: &Path, name: &str, template: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let dest = dir.join(format!("{name}.conf"));
    std::fs::write(dir.join("templates").join(format!("{name}.tmpl")), template).unwrap();
    std::fs::write(
        dir.join("conf.d").join(format!("{name}.toml")),
        format!(
            "[template]\nsrc = \"{name}.tmpl\"\ndest = \"{}\"\nkeys = [\"/db\"]\n",
            dest.display()
        ),
    )
    .unwrap();
    dest
}

async fn wait_for_file(path: &Path, content: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = std::fs::read_to_string(path).unwrap_or_default();
        if now == content {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} is {now:?}, not {content:?}, after {WAIT:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn help_of_every_subcommand_exits_0() {
    let cases: [(&[&str], &str); 10] = [
        (&["--help"], "services"),
        (&["confd", "--help"], "--onetime"),
        (&["config", "--help"], "watch"),
        (&["config", "get", "--help"], "--json"),
        (&["config", "put", "--help"], "revision"),
        (&["config", "watch", "--help"], "# revision N"),
        (&["services", "--help"], "MALFORMED"),
        (&["services", "watch", "--help"], "- NAME ID ADDRESS"),
        (&["cache", "--help"], "flush"),
        (&["cache", "flush", "--help"], "generation"),
    ];
    for (args, expected) in cases {
        let out = ok(&run(args).await);
        assert!(out.contains("Usage: svckit"), "{args:?}: {out}");
        assert!(out.contains(expected), "{args:?} lacks {expected:?}: {out}");
    }
    // Every subcommand takes the etcd flags.
    let out = ok(&run(&["confd", "--help"]).await);
    assert!(out.contains("--node") && out.contains("--etcd"), "{out}");
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let consul = run(&["confd", "--onetime", "--backend", "consul"]).await;
    assert_eq!(consul.status.code(), Some(2));
    let err = stderr(&consul);
    assert!(err.contains("consul") && err.contains("etcdv3"), "{err}");

    for args in [
        &["config", "get", "no-slash"][..],
        &["services", "bad-name"],
        &["services", "--prefix", "/"],
        &["confd", "--interval", "0"],
        &[],
    ] {
        let out = run(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn unreachable_etcd_is_named_within_seconds() {
    let closed = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = run(&["--etcd", &closed, "config", "get", "/x/"]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("svckit: etcd at {closed} is unreachable: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty());
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_the_environment_and_failures_say_so() {
    let etcd = Etcd::start();
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    raw.user_add("root", "s3cret", None).await.unwrap();
    raw.user_grant_role("root", "root").await.unwrap();
    raw.auth_enable().await.unwrap();
    let url = etcd.url();
    let args = ["--node", url.as_str(), "config", "put", "/auth/k", "v"];

    let mut right = command(&args);
    right
        .env("SVCKIT_ETCD_USER", "root")
        .env("SVCKIT_ETCD_PASSWORD", "s3cret");
    let revision = ok(&run_with(right).await);
    assert!(revision.trim().parse::<i64>().is_ok(), "{revision}");

    let mut wrong = command(&args);
    wrong
        .env("SVCKIT_ETCD_USER", "root")
        .env("SVCKIT_ETCD_PASSWORD", "wrong");
    let out = run_with(wrong).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("svckit: connecting to etcd at {url}: ")),
        "{err}"
    );
    assert!(
        err.contains("authentication failed for user \"root\""),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let out = run(&args).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("requires authentication"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_put_get_and_json() {
    let etcd = Etcd::start();
    let e = etcd.endpoint();
    let mut last = 0;
    for (key, value) in [
        ("/app/db/user", "admin"),
        ("/app/db/port", "3306"),
        ("/app/hosts/0", "a"),
        ("/app/hosts/1", "b"),
        ("/application/other", "x"),
    ] {
        let revision: i64 = ok(&run(&["--etcd", &e, "config", "put", key, value]).await)
            .trim()
            .parse()
            .expect("put prints the revision");
        assert!(revision > last, "{revision} after {last}");
        last = revision;
    }

    let listed = ok(&run(&["--etcd", &e, "config", "get", "/app/"]).await);
    assert_eq!(
        listed,
        "/app/db/port = 3306\n/app/db/user = admin\n/app/hosts/0 = a\n/app/hosts/1 = b\n"
    );
    let json = ok(&run(&["--etcd", &e, "config", "get", "/app", "--json"]).await);
    let json: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(
        json,
        serde_json::json!({"db": {"port": "3306", "user": "admin"}, "hosts": ["a", "b"]})
    );
    let empty = run(&["--etcd", &e, "config", "get", "/nothing/"]).await;
    assert_eq!(ok(&empty), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_watch_prints_every_change_then_stops_on_sigterm() {
    let etcd = Etcd::start();
    let keyspace = keyspace(&etcd).await;
    keyspace.put("/w/a", "1").await.unwrap();
    let mut watch = Watcher::spawn(&["--etcd", &etcd.endpoint(), "config", "watch", "/w/"]);
    // The keys present at start come first.
    let first = watch.until("PUT /w/a = 1").await;
    assert!(first[0].starts_with("# revision "), "{first:?}");

    let revision = keyspace.put("/w/a", "2").await.unwrap();
    assert_eq!(
        watch.until("PUT /w/a = 2").await,
        [format!("# revision {revision}"), "PUT /w/a = 2".to_owned()]
    );
    // A transaction is one batch.
    let revision = keyspace
        .commit(Txn::new().put("/w/b", "x").delete("/w/a").put("/w/c", "y"))
        .await
        .unwrap();
    assert_eq!(
        watch.until("PUT /w/c = y").await,
        [
            format!("# revision {revision}"),
            "DELETE /w/a".to_owned(),
            "PUT /w/b = x".to_owned(),
            "PUT /w/c = y".to_owned(),
        ]
    );
    assert_eq!(watch.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn services_lists_instances_with_ttl_and_flags_malformed_keys() {
    let etcd = Etcd::start();
    let registry = registry(&etcd).await;
    let product = registry
        .register(Instance::new("p1", "product", "127.0.0.1:8081").unwrap())
        .await
        .unwrap();
    let _cache = registry
        .register(Instance::new("c1", "cache", "127.0.0.1:9101").unwrap())
        .await
        .unwrap();
    let keyspace = registry.keyspace();
    keyspace
        .put("/services/bad-id/product", "127.0.0.1:1")
        .await
        .unwrap();
    keyspace
        .put("/services/p2/product", "no port")
        .await
        .unwrap();

    let out = ok(&run(&["--etcd", &etcd.endpoint(), "services"]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(cells(lines[0]), ["NAME", "ID", "ADDRESS", "TTL"]);
    let (cache, product_row) = (cells(lines[1]), cells(lines[2]));
    assert_eq!(cache[..3], ["cache", "c1", "127.0.0.1:9101"]);
    assert_eq!(product_row[..3], ["product", "p1", "127.0.0.1:8081"]);
    let ttl: u64 = product_row[3]
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a TTL in seconds: {out}"));
    assert!((1..=10).contains(&ttl), "{out}");
    assert!(
        lines[3].starts_with("MALFORMED /services/bad-id/product: id is not"),
        "{out}"
    );
    assert!(
        lines[4].starts_with("MALFORMED /services/p2/product: value is not"),
        "{out}"
    );

    // One service: its instances and the malformed keys that name it.
    let out = ok(&run(&["--etcd", &etcd.endpoint(), "services", "cache"]).await);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().nth(1).unwrap().starts_with("cache"), "{out}");
    let out = ok(&run(&["--etcd", &etcd.endpoint(), "services", "product"]).await);
    assert_eq!(out.lines().count(), 4, "{out}");

    // A lease that is gone while its key is still listed cannot be shown here; a revoked
    // one removes its key, so the instance simply disappears.
    product.deregister().await.unwrap();
    let out = ok(&run(&["--etcd", &etcd.endpoint(), "services", "product"]).await);
    assert_eq!(out.lines().count(), 3, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_watch_prints_joins_moves_and_leaves() {
    let etcd = Etcd::start();
    let registry = registry(&etcd).await;
    let keyspace = registry.keyspace();
    let _other = registry
        .register(Instance::new("o1", "other", "127.0.0.1:7000").unwrap())
        .await
        .unwrap();
    let mut watch = Watcher::spawn(&["--etcd", &etcd.endpoint(), "services", "watch", "svc"]);
    let joined = registry
        .register(Instance::new("s1", "svc", "127.0.0.1:7001").unwrap())
        .await
        .unwrap();
    let mut seen = watch.until("+ svc s1 127.0.0.1:7001").await;
    keyspace
        .put("/services/s2/svc", "127.0.0.1:7002")
        .await
        .unwrap();
    seen.extend(watch.until("+ svc s2 127.0.0.1:7002").await);
    keyspace
        .put("/services/s2/svc", "127.0.0.1:7003")
        .await
        .unwrap();
    seen.extend(
        watch
            .until("~ svc s2 127.0.0.1:7003 (was 127.0.0.1:7002)")
            .await,
    );
    keyspace
        .put("/services/s-3/svc", "127.0.0.1:1")
        .await
        .unwrap();
    let malformed = watch.until_prefix("MALFORMED /services/s-3/svc: ").await;
    seen.extend(malformed);
    joined.deregister().await.unwrap();
    seen.extend(watch.until("- svc s1 127.0.0.1:7001").await);
    assert!(
        seen.iter().all(|l| !l.contains("other")),
        "another service's instance was printed: {seen:?}"
    );
    assert_eq!(watch.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn confd_onetime_renders_and_reports_each_failure_on_one_line() {
    let etcd = Etcd::start();
    let keyspace = keyspace(&etcd).await;
    keyspace.put("/cfd/db/user", "admin").await.unwrap();
    let dir = TempDir::new("onetime");
    let dest = confd_resource(&dir.0, "app", "user = {{getv \"/db/user\"}}\n");
    let url = etcd.url();
    let confdir = dir.0.display().to_string();
    let args = [
        "confd",
        "--onetime",
        "--backend",
        "etcdv3",
        "--node",
        url.as_str(),
        "--confdir",
        confdir.as_str(),
        "--prefix",
        "/cfd",
        "--log-level",
        "warn",
    ];
    let out = run(&args).await;
    assert_eq!(ok(&out), "");
    assert_eq!(stderr(&out), "");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "user = admin\n");

    // A second resource reads a key that does not exist: it fails, the first still renders.
    let broken = confd_resource(&dir.0, "broken", "pass = {{getv \"/db/pass\"}}\n");
    keyspace.put("/cfd/db/user", "root").await.unwrap();
    let out = run(&args).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("svckit: confd: ")
            && lines[0].contains("broken.toml")
            && lines[0].contains("/db/pass"),
        "{err}"
    );
    assert_eq!(lines[1], "svckit: confd: 1 of 2 resource(s) failed");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "user = root\n");
    assert!(!broken.exists());

    // A confdir without conf.d: one line, before etcd is contacted.
    let out = run(&["confd", "--onetime", "--confdir", "/nonexistent/confd"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("svckit: loading the confd directory /nonexistent/confd: "),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn confd_watch_follows_changes_and_stops_cleanly() {
    let etcd = Etcd::start();
    let keyspace = keyspace(&etcd).await;
    keyspace.put("/cfw/db/user", "a").await.unwrap();
    let dir = TempDir::new("watch");
    let dest = confd_resource(&dir.0, "app", "user = {{getv \"/db/user\"}}\n");
    let confdir = dir.0.display().to_string();
    let url = etcd.url();
    let base = ["confd", "--backend", "etcdv3", "--node", url.as_str()];
    let rest = ["--confdir", confdir.as_str(), "--prefix", "/cfw"];

    let mut watch = command(&[&base[..], &["--watch"], &rest[..]].concat())
        .spawn()
        .unwrap();
    wait_for_file(&dest, "user = a\n").await;
    keyspace.put("/cfw/db/user", "b").await.unwrap();
    wait_for_file(&dest, "user = b\n").await;
    assert_eq!(terminate(&mut watch, Duration::from_secs(5)).await, Some(0));

    // Interval mode picks changes up on its next round; SIGINT stops it too.
    let mut poll = command(&[&base[..], &["--interval", "1"], &rest[..]].concat())
        .spawn()
        .unwrap();
    wait_for_file(&dest, "user = b\n").await;
    keyspace.put("/cfw/db/user", "c").await.unwrap();
    wait_for_file(&dest, "user = c\n").await;
    signal(poll.id().unwrap(), Signal::Int);
    let status = tokio::time::timeout(Duration::from_secs(5), poll.wait())
        .await
        .expect("exits within 5 s of SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_flush_bumps_the_groups_generation() {
    let etcd = Etcd::start();
    let e = etcd.endpoint();
    assert_eq!(
        ok(&run(&["--etcd", &e, "cache", "flush", "thumbs"]).await),
        "1\n"
    );
    assert_eq!(
        ok(&run(&["--etcd", &e, "cache", "flush", "thumbs"]).await),
        "2\n"
    );
    let stored = keyspace(&etcd)
        .await
        .get("/svckit/cache/thumbs/")
        .await
        .unwrap();
    assert_eq!(
        stored.get("/svckit/cache/thumbs/generation"),
        Some(&b"2"[..])
    );
    // A generation that is not a number is named, not overwritten.
    keyspace(&etcd)
        .await
        .put("/svckit/cache/odd/generation", "soon")
        .await
        .unwrap();
    let refused = run(&["--etcd", &e, "cache", "flush", "odd"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("not a decimal number"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(run(&["cache", "flush", "a/b"]).await.status.code(), Some(2));
}
