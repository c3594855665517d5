//! confd-compatible rendering: `conf.d/*.toml` resource files and Go templates.
//!
//! [`Confd::load`] reads a confd directory unchanged: resource files (`[template]` with
//! `src`, `dest`, `keys`, `prefix`, `mode`, `uid`, `gid`, `check_cmd`, `reload_cmd`) in
//! `<confdir>/conf.d`, Go templates in `<confdir>/templates` with confd's functions
//! (`getv`, `getvs`, `get`, `gets`, `exists`, `ls`, `lsdir`, `base`, `dir`, `split`, `join`,
//! `json`, `jsonArray`, `map`, `toUpper`, `toLower`, `contains`, `replace`, `trimSuffix`,
//! `getenv`, `fileExists`, `lookupIP`, `base64Encode`, `base64Decode`, `parseBool`,
//! `reverse`, `sortByLength`, `sortKVByLength`, `add`, `sub`, `mul`, `div`, `mod`, `seq`,
//! `atoi`). Then [`run_once`](Confd::run_once), [`watch`](Confd::watch) or
//! [`poll`](Confd::poll) apply them from a [`Keyspace`](svckit_registry::Keyspace) as
//! confd does:
//!
//! - the keys `prefix + key` are read at one revision (one read, or in watch mode one prefix
//!   watch, over the longest common prefix of the keys, `/` when they share nothing more),
//!   and the template sees them with the prefix stripped (`/app/db/user` under prefix `/app` is `getv "/db/user"`);
//! - the file is rendered to a stage file beside `dest` with the wanted mode (the resource's
//!   `mode`, else dest's current mode, else 0644) and owner; only when it differs from
//!   `dest`, `check_cmd` runs (`/bin/sh -c`, `{{.src}}` = the stage file), the stage file is
//!   renamed over `dest`, and `reload_cmd` runs;
//! - a template error, a missing key or a failed `check_cmd` leaves `dest` untouched and is
//!   reported on one line naming the resource file, the key and the reason ([`ConfdError`]);
//! - `src` must stay inside `<confdir>/templates` (no absolute path, no `..`, no symlink out).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use svckit_config::confd::Confd;
//! use svckit_registry::{EtcdOptions, EtcdRegistry, Registry};
//!
//! let registry = EtcdRegistry::connect(EtcdOptions::new(["127.0.0.1:2379"])).await?;
//! let confd = Confd::load("/etc/confd", "")?;
//! let report = confd.run_once(&registry.keyspace()).await;
//! for error in report.errors() {
//!     eprintln!("{error}");
//! }
//! # Ok(()) }
//! ```
//!
//! Where gtmpl (the Go template engine used) differs from Go's text/template, and what is
//! done about it, see
//! [Go template differences](#go-template-differences).
//!
//! # Go template differences
//!
//! gtmpl 0.7 covers the text/template syntax confd templates use (actions, pipelines,
//! `if`/`else`/`with`/`range`, variables, `define`/`template`, `{{-`/`-}}` trimming,
//! comments, `index`, `len`, `and`, `or`, `not`...). Where it differs from Go, this module
//! makes it behave as Go:
//! - `{{range}}...{{else}}...{{end}}` runs `else` only for an empty range, and ranging over
//!   a map visits it in key order (the template is rewritten before parsing, see
//!   `rewrite.rs`);
//! - an action prints its value as Go's `fmt.Print` does: a `KVPair` as `{/app/name shop}`,
//!   a list as `[a b]`, a map as `map[k:v k2:v2]` (keys sorted), a list of pairs as
//!   `[{/a 1} {/b 2}]`, nil as `<no value>` (the rewrite appends ` | _confdPrint` to the
//!   pipeline of every action that prints);
//! - `eq`, `ne`, `lt`, `le`, `gt`, `ge` are Go's: `eq a b c` is `a == b || a == c`,
//!   integers compare by value, strings with strings, anything else is Go's error;
//! - `print`, `println`, `printf` follow Go's `fmt` (verbs `%v %s %q %d %b %o %x %X %c %U
//!   %e %f %g %t %T %%`, flags `- + # 0` and space, width, precision, `*`, and Go's
//!   `%!d(string=x)` markers); `html`, `js`, `urlquery`, `slice` are Go's;
//! - a string ending in an escaped backslash (`"a\\"`), `\a` and `\v` are read as Go reads
//!   them;
//! - errors name the template as Go does: `template: app.tmpl:11: unterminated quoted
//!   string` on the line where Go finds it, `template: app.tmpl: executing "app.tmpl":
//!   error calling getv: ...`.
//!
//! What remains different:
//! - the reason of a parse error is worded by gtmpl (`unexpected } in operand` where Go
//!   says `unexpected "}" in operand`), and an execution error has no line, column or
//!   failing action (gtmpl does not track them);
//! - an action spanning several lines (allowed since Go 1.16) is an `unclosed action`;
//! - `and` and `or` evaluate all their arguments (they are plain functions in gtmpl), so
//!   `{{if and (exists "/x") (getv "/x")}}` fails when `/x` is missing, where Go stops at
//!   the first false argument;
//! - gtmpl turns a number literal with no fraction into an integer and a negative float
//!   literal into an integer (`-1.5` is `-1`); `printf`'s `%[n]` argument indexes and
//!   `%#v` are not supported, and `%T` names confd's types approximately;
//! - variable assignment (`{{$x = 1}}`, Go 1.11) and `break`/`continue` are not supported;
//! - JSON numbers (`json`, `jsonArray`) are strings printed as Go prints a float64 (`8080`,
//!   `1e+06`), so they print as confd prints them but do not compare as numbers (`eq
//!   $port 8080` is an error; compare with `"8080"`);
//! - not provided: `datetime` (a Go `time.Time` with methods), `lookupSRV`, and the
//!   encrypted `cget`/`cgets`/`cgetv`/`cgetvs`.

mod builtins;
mod error;
mod funcs;
mod gofmt;
mod gopath;
mod render;
mod resource;
mod rewrite;
mod run;
mod stage;
mod store;

pub use error::ConfdError;
pub use run::{Confd, Report};
pub use stage::Outcome;
