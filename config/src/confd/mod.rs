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
//! - the keys `prefix + key` are read at one revision, and the template sees them with the
//!   prefix stripped (`/app/db/user` under prefix `/app` is `getv "/db/user"`);
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
//! Where gtmpl (the Go template engine used) differs from Go's text/template, see
//! [Go template differences](#go-template-differences).
//!
//! # Go template differences
//!
//! gtmpl 0.7 covers the text/template syntax confd templates use (actions, pipelines,
//! `if`/`else`/`with`/`range`, variables, `define`/`template`, `{{-`/`-}}` trimming,
//! comments, `printf`, `index`, `len`, `eq`...). Its differences from Go, and what this
//! module does about them:
//! - `{{range}}...{{else}}...{{end}}`: gtmpl runs the `else` branch after a non-empty range
//!   too. Templates are rewritten before parsing so that `else` runs only for an empty range.
//! - ranging over a map: gtmpl visits a map in hash order; Go in key order. The rewrite
//!   makes `range` visit maps (from `json`, `map`) in key order, so a render is stable.
//! - printing a list (`{{ls "/x"}}`) shows gtmpl's debug form, not Go's `[a b]`: range over
//!   it or `join` it instead (as templates usually do).
//! - variable assignment (`{{$x = 1}}`, Go 1.11) and `break`/`continue` are not supported.
//! - JSON numbers (`json`, `jsonArray`) are strings printed as Go prints a float64 (`8080`,
//!   `1e+06`), so they print as confd prints them but do not compare as numbers.
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
