//! Building a Go program against golang/groupcache's source, as the interop test and the
//! cache bench do: the system's Go in GOPATH mode (`GO111MODULE=off`), Debian's
//! `/usr/share/gocode` (package golang-github-golang-groupcache-dev) unless
//! `SVCKIT_GO_GOPATH` says otherwise, no network, no cgo.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to install what [`build_groupcache_program`] needs.
pub const GO_INSTALL_HINT: &str = "install them with `apt-get install -y golang-go \
     golang-github-golang-groupcache-dev` (or run `scripts/install-deps --tests`)";

/// The GOPATH searched: `$SVCKIT_GO_GOPATH`, else Debian's `/usr/share/gocode`.
pub fn gopath() -> String {
    std::env::var("SVCKIT_GO_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into())
}

/// Builds `source` into `dir/<name>` (Go's build cache under `dir/gocache`), and returns the
/// binary. It is built under a name of this process and then renamed, so a concurrent run
/// never sees a half-written binary. The error says what is missing and how to install it.
pub fn build_groupcache_program(source: &Path, dir: &Path, name: &str) -> Result<PathBuf, String> {
    let gopath = gopath();
    match Command::new("go").arg("version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(format!(
                "`go version` failed ({}): {}; {GO_INSTALL_HINT}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
        Err(e) => {
            return Err(format!(
                "the Go toolchain (`go`) is needed: {e}; {GO_INSTALL_HINT}"
            ))
        }
    }
    let groupcache = Path::new(&gopath).join("src/github.com/golang/groupcache");
    if !groupcache.join("http.go").is_file() {
        return Err(format!(
            "golang/groupcache's source is not at {}; {GO_INSTALL_HINT}",
            groupcache.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let partial = dir.join(format!("{name}.{}", std::process::id()));
    let bin = dir.join(name);
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&partial)
        .arg(source)
        .env("GO111MODULE", "off")
        .env("GOPATH", &gopath)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOENV", "off")
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run `go build`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`go build {}` (GOPATH={gopath}, GO111MODULE=off) failed ({}):\n{}\n{GO_INSTALL_HINT}",
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&partial, &bin)
        .map_err(|e| format!("rename {} -> {}: {e}", partial.display(), bin.display()))?;
    Ok(bin)
}
