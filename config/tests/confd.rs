//! The confd renderer against a real etcd: templates render as confd renders them, dest is
//! replaced only on an effective change (reload_cmd once per change), a failed check or a
//! missing key leaves dest untouched, src cannot leave the templates directory, and the
//! watch and interval modes follow changes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use svckit_config::confd::{Confd, ConfdError, Outcome};
use svckit_registry::{EtcdOptions, EtcdRegistry, Keyspace, Registry, Txn};
use svckit_testing::process::wait_until;
use svckit_testing::Etcd;
use tokio_util::sync::CancellationToken;

struct Setup {
    _etcd: Etcd,
    _registry: EtcdRegistry,
    keyspace: Keyspace,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        let etcd = Etcd::start();
        let registry = EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
            .await
            .expect("connect to etcd");
        let keyspace = registry.keyspace();
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("confdir/conf.d")).unwrap();
        fs::create_dir_all(dir.path().join("confdir/templates")).unwrap();
        fs::create_dir_all(dir.path().join("out")).unwrap();
        Self {
            _etcd: etcd,
            _registry: registry,
            keyspace,
            dir,
        }
    }

    fn confdir(&self) -> PathBuf {
        self.dir.path().join("confdir")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }

    /// Writes `conf.d/<name>.toml` (`{out}` in it is replaced by the output directory) and
    /// `templates/<name>.tmpl`.
    fn resource(&self, name: &str, toml: &str, template: &str) {
        let toml = toml.replace("{out}", &self.dir.path().join("out").display().to_string());
        fs::write(self.confdir().join(format!("conf.d/{name}.toml")), toml).unwrap();
        fs::write(
            self.confdir().join(format!("templates/{name}.tmpl")),
            template,
        )
        .unwrap();
    }

    async fn put(&self, key: &str, value: &str) {
        self.keyspace.put(key, value).await.expect("put");
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn lines(path: &Path) -> usize {
    read(path).lines().count()
}

const ALL_FUNCTIONS: &str = r#"host={{getv "/db/host"}}
port={{getv "/db/port" "5432"}}
user={{getv "/db/user" "nobody"}}
{{with get "/db/host"}}{{.Key}}={{.Value}}{{end}}
{{- range gets "/upstream/*"}}
upstream {{base .Key}} {{.Value}};
{{- else}}
no upstreams
{{- end}}
values={{join (getvs "/upstream/*") ","}}
{{if exists "/db/host"}}exists{{end}} {{if exists "/nope"}}nope{{end}}
ls={{join (ls "/services") ","}} lsdir={{join (lsdir "/services") ","}} leaves={{join (ls "/services/web") ","}}
{{$addr := split (getv "/upstream/a") ":"}}ip={{index $addr 0}} p={{index $addr 1}}
{{toUpper "shop"}} {{toLower "SHOP"}} {{dir "/services/web/1"}}
{{$j := json (getv "/json")}}id={{$j.id}} port={{$j.port}} tags={{join $j.tags "+"}}
{{range $k, $v := json (getv "/json")}}{{$k}} {{end}}
{{range jsonArray (getv "/list")}}[{{.}}]{{end}}
{{replace "a.b.c" "." "/" -1}} {{contains "abc" "b"}} {{trimSuffix "x.conf" ".conf"}} {{add 2 (atoi "40")}} {{base64Encode "svckit"}} {{base64Decode "c3Zja2l0"}} {{parseBool "1"}}
{{range seq 1 3}}{{.}}{{end}} {{join (reverse (split "a,b,c" ",")) ""}} {{getenv "SVCKIT_CONFD_TEST_UNSET" "env-default"}}
"#;

const ALL_FUNCTIONS_WANT: &str = "host=10.0.0.5
port=5432
user=app
/db/host=10.0.0.5
upstream a 10.0.1.10:8080;
upstream b 10.0.1.11:8080;
values=10.0.1.10:8080,10.0.1.11:8080
exists 
ls=db,web lsdir=db,web leaves=1,2
ip=10.0.1.10 p=8080
SHOP shop /services/web
id=7 port=8080 tags=x+y
id port tags 
[c][a][b]
a/b/c true x 42 c3Zja2l0 svckit true
123 cba env-default
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_as_confd_with_the_prefix_stripped() {
    let s = Setup::new().await;
    s.resource(
        "app",
        r#"[template]
src = "app.tmpl"
dest = "{out}/app.conf"
prefix = "/shop"
keys = ["/db", "/upstream", "/services", "/json", "/list"]
mode = "0640"
keep_stage_file = false
"#,
        ALL_FUNCTIONS,
    );
    for (k, v) in [
        ("/shop/db/host", "10.0.0.5"),
        ("/shop/db/user", "app"),
        ("/shop/upstream/b", "10.0.1.11:8080"),
        ("/shop/upstream/a", "10.0.1.10:8080"),
        ("/shop/services/web/1", "w1"),
        ("/shop/services/web/2", "w2"),
        ("/shop/services/db/1", "d1"),
        (
            "/shop/json",
            r#"{"port": 8080, "id": "7", "tags": ["x", "y"]}"#,
        ),
        ("/shop/list", r#"["c", "a", "b"]"#),
        // Outside the resource's keys: invisible.
        ("/shop/dbx/host", "no"),
        ("/shopping/db/host", "no"),
    ] {
        s.put(k, v).await;
    }
    let confd = Confd::load(s.confdir(), "").unwrap();
    let report = confd.run_once(&s.keyspace).await;
    assert!(
        report.is_ok(),
        "{:?}",
        report.errors().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert_eq!(report.updated(), 1);
    let dest = s.out("app.conf");
    assert_eq!(read(&dest), ALL_FUNCTIONS_WANT);
    assert_eq!(
        fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // No stage file left behind.
    assert_eq!(fs::read_dir(s.dir.path().join("out")).unwrap().count(), 1);

    // Again: nothing changed, nothing written.
    let report = confd.run_once(&s.keyspace).await;
    assert!(matches!(report.outcomes()[0].1, Ok(Outcome::Unchanged)));

    // The global prefix replaces the resource's (confd >= 0.12).
    for (k, v) in [
        ("/other/db/host", "10.9.9.9"),
        ("/other/json", "{}"),
        ("/other/list", "[]"),
        ("/other/upstream/a", "h:1"),
    ] {
        s.put(k, v).await;
    }
    s.resource(
        "app",
        r#"[template]
src = "app.tmpl"
dest = "{out}/app.conf"
prefix = "/shop"
keys = ["/db", "/upstream", "/json", "/list"]
"#,
        r#"{{getv "/db/host"}} {{getv "/db/user" "none"}} {{range gets "/upstream/*"}}{{.Key}}{{end}}"#,
    );
    let report = Confd::load(s.confdir(), "/other")
        .unwrap()
        .run_once(&s.keyspace)
        .await;
    assert!(report.is_ok());
    assert_eq!(read(&dest), "10.9.9.9 none /upstream/a");
    // dest's mode is kept when the resource names none.
    assert_eq!(
        fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_or_a_missing_key_leaves_dest_untouched() {
    let s = Setup::new().await;
    let seen = s.out("seen");
    s.resource(
        "checked",
        &format!(
            r#"[template]
src = "checked.tmpl"
dest = "{{out}}/checked.conf"
keys = ["/checked"]
check_cmd = "echo {{{{.src}}}} > {seen}; grep -q good {{{{.src}}}}"
reload_cmd = "echo reload >> {{out}}/reloads"
"#,
            seen = seen.display()
        ),
        r#"value={{getv "/checked/value"}} extra={{getv "/checked/extra"}}"#,
    );
    let dest = s.out("checked.conf");
    fs::write(&dest, "old").unwrap();
    let confd = Confd::load(s.confdir(), "").unwrap();

    // A missing key: one line naming the resource file, the key and the reason.
    s.put("/checked/value", "good").await;
    let report = confd.run_once(&s.keyspace).await;
    let err = report.errors().next().expect("a missing key is an error");
    let message = err.to_string();
    assert!(
        matches!(err, ConfdError::MissingKey { key, .. } if key == "/checked/extra"),
        "{message}"
    );
    assert!(
        message.contains("checked.toml")
            && message.contains("/checked/extra")
            && message.contains("does not exist"),
        "{message}"
    );
    assert!(!message.contains('\n'));
    assert_eq!(read(&dest), "old");

    // A failing check_cmd, which saw the stage file beside dest as {{.src}}.
    s.put("/checked/extra", "1").await;
    s.put("/checked/value", "bad").await;
    let report = confd.run_once(&s.keyspace).await;
    let err = report.errors().next().expect("a failed check is an error");
    assert!(matches!(err, ConfdError::Check { .. }), "{err}");
    assert!(err.to_string().contains("exit status 1"), "{err}");
    assert!(!err.to_string().contains('\n'));
    assert_eq!(read(&dest), "old");
    let stage = PathBuf::from(read(&seen).trim());
    assert_eq!(stage.parent(), dest.parent());
    assert!(
        stage
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".checked.conf"),
        "{stage:?}"
    );
    assert!(!stage.exists(), "the stage file is removed");
    assert_eq!(lines(&s.out("reloads")), 0);

    // A passing check: dest replaced, reload run.
    s.put("/checked/value", "good").await;
    let report = confd.run_once(&s.keyspace).await;
    assert!(
        report.is_ok(),
        "{:?}",
        report.errors().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert_eq!(read(&dest), "value=good extra=1");
    assert_eq!(lines(&s.out("reloads")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn src_outside_the_templates_directory_is_refused() {
    let s = Setup::new().await;
    let outside = s.dir.path().join("secret.tmpl");
    fs::write(&outside, "secret").unwrap();
    for src in ["../../secret.tmpl", "/etc/passwd", "a/../../secret.tmpl"] {
        fs::write(
            s.confdir().join("conf.d/bad.toml"),
            format!("[template]\nsrc = \"{src}\"\ndest = \"/tmp/x\"\n"),
        )
        .unwrap();
        let err = Confd::load(s.confdir(), "").unwrap_err();
        assert!(
            matches!(err, ConfdError::SrcOutsideTemplates { .. }),
            "{src}: {err}"
        );
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }
    // A symlink leading out, present at load...
    std::os::unix::fs::symlink(&outside, s.confdir().join("templates/link.tmpl")).unwrap();
    fs::write(
        s.confdir().join("conf.d/bad.toml"),
        format!(
            "[template]\nsrc = \"link.tmpl\"\ndest = \"{}\"\n",
            s.out("link").display()
        ),
    )
    .unwrap();
    let err = Confd::load(s.confdir(), "").unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    // ... or made after it: refused at render, nothing written.
    fs::remove_file(s.confdir().join("templates/link.tmpl")).unwrap();
    fs::write(s.confdir().join("templates/link.tmpl"), "inside").unwrap();
    let confd = Confd::load(s.confdir(), "").unwrap();
    fs::remove_file(s.confdir().join("templates/link.tmpl")).unwrap();
    std::os::unix::fs::symlink(&outside, s.confdir().join("templates/link.tmpl")).unwrap();
    let report = confd.run_once(&s.keyspace).await;
    let err = report.errors().next().expect("refused");
    assert!(
        matches!(err, ConfdError::SrcOutsideTemplates { .. }),
        "{err}"
    );
    assert!(!s.out("link").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_once_per_effective_change_and_coalesces_bursts() {
    let s = Setup::new().await;
    let reloads = s.out("reloads");
    s.resource(
        "watched",
        &format!(
            r#"[template]
src = "watched.tmpl"
dest = "{{out}}/watched.conf"
keys = ["/w/value", "/w/list"]
reload_cmd = "echo reload >> {}"
"#,
            reloads.display()
        ),
        r#"value={{getv "/w/value"}}{{range getvs "/w/list/*"}} {{.}}{{end}}"#,
    );
    let dest = s.out("watched.conf");
    s.put("/w/value", "1").await;
    let confd = Confd::load(s.confdir(), "").unwrap();
    let cancel = CancellationToken::new();
    let watcher = {
        let (confd, keyspace, cancel) = (confd.clone(), s.keyspace.clone(), cancel.clone());
        tokio::spawn(async move { confd.watch(&keyspace, cancel).await })
    };
    let timeout = Duration::from_secs(10);
    wait_until("the first render", timeout, || read(&dest) == "value=1").await;
    wait_until("the first reload", timeout, || lines(&reloads) == 1).await;

    // A put of the same value, a key outside the resource, and a key of the resource that
    // the template does not print: the rendered content is unchanged, so no reload.
    s.put("/w/value", "1").await;
    s.put("/w/valueless", "x").await;
    s.put("/w/value/unused", "x").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(lines(&reloads), 1, "an unchanged value does not reload");

    // One change, one reload.
    s.put("/w/value", "2").await;
    wait_until("the change", timeout, || read(&dest) == "value=2").await;
    wait_until("the change's reload", timeout, || lines(&reloads) == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lines(&reloads), 2, "one change reloads once");

    // A transaction is one change.
    s.keyspace
        .commit(
            Txn::new()
                .put("/w/value", "3")
                .put("/w/list/a", "x")
                .put("/w/list/b", "y"),
        )
        .await
        .unwrap();
    wait_until("the transaction", timeout, || read(&dest) == "value=3 x y").await;
    wait_until("the transaction's reload", timeout, || lines(&reloads) == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lines(&reloads), 3, "a transaction reloads once");

    // A burst of 50 puts, sent at once (sent one after another, each could take longer
    // than the watcher's quiet period on a loaded machine): a few renders at most, and the
    // last value in the end.
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..50 {
        let keyspace = s.keyspace.clone();
        burst.spawn(async move { keyspace.put("/w/value", &format!("burst{i}")).await });
    }
    while let Some(put) = burst.join_next().await {
        put.unwrap().expect("put");
    }
    s.put("/w/value", "burst").await;
    wait_until("the burst's end", timeout, || {
        read(&dest) == "value=burst x y"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let burst = lines(&reloads) - 3;
    assert!(
        (1..=5).contains(&burst),
        "{burst} reloads for a burst of 50 puts"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watch ends when cancelled")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_mode_picks_up_a_change() {
    let s = Setup::new().await;
    s.resource(
        "polled",
        r#"[template]
src = "polled.tmpl"
dest = "{out}/polled.conf"
keys = ["/p"]
"#,
        r#"{{getv "/p/v"}}"#,
    );
    s.put("/p/v", "before").await;
    let confd = Confd::load(s.confdir(), "").unwrap();
    let cancel = CancellationToken::new();
    let poller = {
        let (keyspace, cancel) = (s.keyspace.clone(), cancel.clone());
        tokio::spawn(async move {
            confd
                .poll(&keyspace, Duration::from_millis(200), cancel)
                .await
        })
    };
    let dest = s.out("polled.conf");
    wait_until("the first poll", Duration::from_secs(10), || {
        read(&dest) == "before"
    })
    .await;
    s.put("/p/v", "after").await;
    wait_until("a later poll", Duration::from_secs(10), || {
        read(&dest) == "after"
    })
    .await;
    cancel.cancel();
    poller.await.unwrap().unwrap();
}

const GO_SEMANTICS: &str = r#"{{get "/app/name"}}
{{getvs "/app/list/*"}}
{{gets "/app/list/*"}}
{{json (getv "/app/json")}}
{{if eq (getv "/app/name") "web" "shop"}}multi-eq{{end}} {{if eq "a" "b" "c"}}wrong{{else}}no-match{{end}} {{lt "a" "b"}} {{ge 3 2}} {{ne 1 2}}
[{{printf "%05.2f" 1.5}}] [{{printf "%5s" "ab"}}] [{{printf "%-5s" "ab"}}] {{printf "%q" (getv "/app/name")}} {{printf "%+d|%x|%e|%v" 5 255 1234.5 (getvs "/app/list/*")}}
{{html "<a&b>"}} {{js "it's"}} {{urlquery "a b&c"}} {{slice (getv "/app/name") 1 3}} {{slice (getvs "/app/list/*") 1}}
"#;

/// Go's text/template and fmt on the same keys (expected outputs from their documentation).
const GO_SEMANTICS_WANT: &str = r#"{/app/name shop}
[1 2]
[{/app/list/a 1} {/app/list/b 2}]
map[k:v k2:v2]
multi-eq no-match true true true
[01.50] [   ab] [ab   ] "shop" +5|ff|1.234500e+03|[1 2]
&lt;a&amp;b&gt; it\'s a+b%26c ho [2]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_template_semantics_and_errors_are_gos() {
    let s = Setup::new().await;
    s.resource(
        "gosem",
        r#"[template]
src = "gosem.tmpl"
dest = "{out}/gosem.conf"
keys = ["/app"]
"#,
        GO_SEMANTICS,
    );
    // An unterminated string on line 11.
    s.resource(
        "broken",
        r#"[template]
src = "broken.tmpl"
dest = "{out}/broken.conf"
keys = ["/app"]
"#,
        &format!("{}x {{{{getv \"/app/name}}}}\n", "text\n".repeat(10)),
    );
    // An execution error.
    s.resource(
        "failing",
        r#"[template]
src = "failing.tmpl"
dest = "{out}/failing.conf"
keys = ["/app"]
"#,
        "{{range $i := seq 1 2}}\n{{slice (getv \"/app/name\") 3 9}}{{end}}",
    );
    for (k, v) in [
        ("/app/name", "shop"),
        ("/app/list/b", "2"),
        ("/app/list/a", "1"),
        ("/app/json", r#"{"k2": "v2", "k": "v"}"#),
    ] {
        s.put(k, v).await;
    }
    let confd = Confd::load(s.confdir(), "").unwrap();
    let report = confd.run_once(&s.keyspace).await;
    assert_eq!(read(&s.out("gosem.conf")), GO_SEMANTICS_WANT);

    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let broken = errors.iter().find(|e| e.contains("broken.toml")).unwrap();
    assert!(
        broken.ends_with("template: broken.tmpl:11: unterminated quoted string"),
        "{broken}"
    );
    let failing = errors.iter().find(|e| e.contains("failing.toml")).unwrap();
    assert!(
        failing.contains(r#"template: failing.tmpl: executing "failing.tmpl": error calling slice: index out of range: 9"#),
        "{failing}"
    );
    assert!(!s.out("broken.conf").exists() && !s.out("failing.conf").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_without_a_common_prefix_are_watched_as_one_and_render_whole_transactions() {
    let s = Setup::new().await;
    let log = s.out("log");
    s.resource(
        "pair",
        &format!(
            r#"[template]
src = "pair.tmpl"
dest = "{{out}}/pair.conf"
keys = ["/alpha", "/beta"]
reload_cmd = "cat {{out}}/pair.conf >> {log}"
"#,
            log = log.display()
        ),
        "{{getv \"/alpha\"}}={{getv \"/beta\"}}\n",
    );
    let commit_pair = |i: usize| {
        let keyspace = s.keyspace.clone();
        async move {
            let v = i.to_string();
            keyspace
                .commit(Txn::new().put("/alpha", &v).put("/beta", &v))
                .await
                .unwrap();
        }
    };
    commit_pair(0).await;
    let confd = Confd::load(s.confdir(), "").unwrap();
    let cancel = CancellationToken::new();
    let watcher = {
        let (confd, keyspace, cancel) = (confd.clone(), s.keyspace.clone(), cancel.clone());
        tokio::spawn(async move { confd.watch(&keyspace, cancel).await })
    };
    let timeout = Duration::from_secs(10);
    wait_until("the first render", timeout, || lines(&log) == 1).await;
    // One prefix watch ("/") for the resource, not one per key.
    let keyspace = format!("{:?}", s.keyspace);
    assert!(keyspace.contains("watches: 1"), "{keyspace}");

    // Transactions touching both keys, some far enough apart to render each.
    for i in 1..=12 {
        commit_pair(i).await;
        tokio::time::sleep(Duration::from_millis(if i % 2 == 0 { 200 } else { 3 })).await;
    }
    wait_until("the last transaction", timeout, || {
        read(&s.out("pair.conf")) == "12=12\n"
    })
    .await;
    let rendered = read(&log);
    assert!(lines(&log) >= 4, "{rendered}");
    for line in rendered.lines() {
        let (a, b) = line.split_once('=').unwrap();
        assert_eq!(a, b, "a half-applied transaction was rendered: {rendered}");
    }
    cancel.cancel();
    watcher.await.unwrap().unwrap();
}
