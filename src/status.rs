//! `/_svckit/status`: one page that says what this process sees of the cluster.
//!
//! [`StatusPage`] gathers, when asked, the services and instances of the discovery view (with
//! the lease TTL each has left in etcd), this process's own registrations, the calls of every
//! Endpoint built in the process, and per cache group its hit ratio, its bytes against its
//! budget and the share of the ring each peer owns. `GET /_svckit/status` renders it as one
//! HTML page (tables, inline styles, no script, no external asset); `?format=json` gives the
//! same [`Status`] as JSON.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{routing::get, Router};
//! use svckit::registry::{EtcdOptions, EtcdRegistry, Lifecycle, Registry};
//! use svckit::status::StatusPage;
//!
//! let registry = EtcdRegistry::connect(EtcdOptions::new(["127.0.0.1:2379"])).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! let lifecycle = Lifecycle::register(&registry, "productservice", listener.local_addr()?).await?;
//! let status = StatusPage::new(&registry).registration(lifecycle.instance());
//! let app = Router::new()
//!     .route("/prod/{id}", get(|| async { "a product" }))
//!     .merge(status.router()); // GET /_svckit/status
//! lifecycle.serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The page costs nothing until it is fetched. A fetch lists the registry prefix once and asks
//! etcd for the TTL of at most [`MAX_LEASE_LOOKUPS`] leases, all within one second: a page for
//! a larger cluster shows the TTLs it got and says how many it left out.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use svckit_cache::Cache;
use svckit_registry::{Discovery, DiscoveryState, Instance, Keyspace, Registry};

/// The path the page is served at.
pub const PATH: &str = "/_svckit/status";

/// At most this many lease TTLs are asked of etcd per page.
pub const MAX_LEASE_LOOKUPS: usize = 256;

/// How long a page waits for the registry listing and the lease TTLs together.
const LOOKUP_BUDGET: Duration = Duration::from_secs(1);

/// The status page of one process: what to show, gathered anew on every fetch. Cheap to clone.
#[derive(Clone)]
pub struct StatusPage {
    inner: Arc<Inner>,
}

struct Inner {
    title: String,
    discovery: Discovery,
    keyspace: Keyspace,
    registrations: Vec<Instance>,
    caches: Vec<Cache>,
    started: Instant,
}

impl std::fmt::Debug for StatusPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusPage")
            .field("title", &self.inner.title)
            .field("registrations", &self.inner.registrations)
            .finish_non_exhaustive()
    }
}

impl StatusPage {
    /// A page showing what `registry`'s discovery view sees, and every Endpoint of the process.
    pub fn new<R: Registry + ?Sized>(registry: &R) -> Self {
        Self {
            inner: Arc::new(Inner {
                title: String::new(),
                discovery: registry.discovery(),
                keyspace: registry.keyspace(),
                registrations: Vec::new(),
                caches: Vec::new(),
                started: Instant::now(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::get_mut(&mut self.inner).expect("a StatusPage is configured before it is shared"));
        self
    }

    /// The page's heading (default: the names of this process's registrations).
    pub fn title(self, title: impl Into<String>) -> Self {
        self.edit(|i| i.title = title.into())
    }

    /// An instance this process registered (`lifecycle.instance()`): shown as its own, with
    /// whether etcd holds its key and the TTL its lease has left.
    pub fn registration(self, instance: &Instance) -> Self {
        let instance = instance.clone();
        self.edit(|i| i.registrations.push(instance))
    }

    /// A cache node of this process: its groups and its ring.
    pub fn cache(self, cache: &Cache) -> Self {
        let cache = cache.clone();
        self.edit(|i| i.caches.push(cache))
    }

    /// `GET /_svckit/status` (HTML; `?format=json`: JSON), to merge into an app.
    pub fn router(&self) -> Router {
        Router::new()
            .route(PATH, get(serve))
            .with_state(self.clone())
    }

    /// Gathers the status now.
    pub async fn status(&self) -> Status {
        let inner = &self.inner;
        let prefix = inner.discovery.prefix().to_owned();
        let seen = inner.discovery.all();
        let mut notes = Vec::new();
        let leases = match tokio::time::timeout(LOOKUP_BUDGET, lease_ttls(&inner.keyspace, &prefix))
            .await
        {
            Ok(Ok((ttls, left_out))) => {
                if left_out > 0 {
                    notes.push(format!(
                        "lease TTLs of {left_out} instances not asked (at most {MAX_LEASE_LOOKUPS} per page)"
                    ));
                }
                Some(ttls)
            }
            Ok(Err(e)) => {
                notes.push(format!("lease TTLs unavailable: {e}"));
                None
            }
            Err(_) => {
                notes.push("lease TTLs unavailable: etcd did not answer within 1 s".to_owned());
                None
            }
        };
        let ttl_of = |instance: &Instance| -> Option<f64> {
            let key = instance.key(&prefix);
            leases
                .as_ref()
                .and_then(|l| l.get(&key).copied().flatten())
                .map(|d| d.as_secs_f64())
        };
        let mine: Vec<&str> = inner.registrations.iter().map(Instance::id).collect();

        let mut by_name: BTreeMap<String, Vec<InstanceRow>> = BTreeMap::new();
        for instance in &seen {
            by_name
                .entry(instance.name().to_owned())
                .or_default()
                .push(InstanceRow {
                    id: instance.id().to_owned(),
                    address: instance.addr().to_owned(),
                    lease_ttl_seconds: ttl_of(instance),
                    metadata: BTreeMap::new(),
                    this_process: mine.contains(&instance.id()),
                });
        }
        let services = by_name
            .into_iter()
            .map(|(name, instances)| ServiceRow { name, instances })
            .collect();

        let registrations = inner
            .registrations
            .iter()
            .map(|instance| {
                let key = instance.key(&prefix);
                let in_etcd = leases.as_ref().map(|l| l.contains_key(&key));
                RegistrationRow {
                    service: instance.name().to_owned(),
                    id: instance.id().to_owned(),
                    address: instance.addr().to_owned(),
                    key,
                    in_registry: in_etcd,
                    discovered: seen.iter().any(|s| s == instance),
                    lease_ttl_seconds: ttl_of(instance),
                }
            })
            .collect();

        let stats = inner.discovery.stats();
        let discovery = DiscoveryRow {
            prefix,
            state: state_name(inner.discovery.state()).to_owned(),
            services,
            instances: seen.len(),
            relists: stats.relists,
            compactions: stats.compactions,
            malformed_skipped: stats.malformed_skipped,
        };

        let endpoints = svckit_balancer::endpoint_stats()
            .into_iter()
            .map(|e| EndpointRow {
                service: e.service.to_string(),
                picker: e.picker.to_string(),
                requests: e.requests,
                failures: e.failures,
                retries: e.retries,
                ejections: e.ejections,
                in_flight: e.in_flight,
            })
            .collect();

        let caches = inner.caches.iter().map(cache_row).collect();
        let title = if inner.title.is_empty() {
            let mut names: Vec<&str> = inner.registrations.iter().map(Instance::name).collect();
            names.dedup();
            if names.is_empty() {
                "svckit".to_owned()
            } else {
                names.join(", ")
            }
        } else {
            inner.title.clone()
        };
        Status {
            title,
            generated_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            pid: std::process::id(),
            uptime_seconds: inner.started.elapsed().as_secs(),
            registrations,
            discovery,
            endpoints,
            caches,
            notes,
        }
    }
}

fn state_name(state: DiscoveryState) -> &'static str {
    match state {
        DiscoveryState::Connecting => "connecting",
        DiscoveryState::Live => "live",
        DiscoveryState::Reconnecting => "reconnecting (serving the last view)",
        DiscoveryState::Static => "static",
        _ => "unknown",
    }
}

/// The TTL left of each key's lease under `prefix` (None: a key without lease, or a lease
/// etcd no longer knows), and how many keys were left out over [`MAX_LEASE_LOOKUPS`].
async fn lease_ttls(
    keyspace: &Keyspace,
    prefix: &str,
) -> Result<(HashMap<String, Option<Duration>>, usize), svckit_registry::Error> {
    let (_, entries) = keyspace.list(&format!("{prefix}/")).await?;
    let mut leases: Vec<i64> = entries
        .iter()
        .map(|e| e.lease())
        .filter(|l| *l != 0)
        .collect();
    leases.sort_unstable();
    leases.dedup();
    let left_out = leases.len().saturating_sub(MAX_LEASE_LOOKUPS);
    leases.truncate(MAX_LEASE_LOOKUPS);
    let ttls = futures_util::future::join_all(leases.iter().map(|l| keyspace.lease_ttl(*l))).await;
    let ttl_by_lease: HashMap<i64, Option<Duration>> = leases
        .into_iter()
        .zip(ttls)
        .map(|(lease, ttl)| (lease, ttl.ok().flatten()))
        .collect();
    let by_key = entries
        .iter()
        .map(|e| {
            (
                e.key().to_owned(),
                ttl_by_lease.get(&e.lease()).copied().flatten(),
            )
        })
        .collect();
    Ok((by_key, left_out))
}

fn cache_row(cache: &Cache) -> CacheRow {
    let ring = cache
        .ring_shares()
        .into_iter()
        .map(|(peer, share)| RingRow {
            this_node: peer == cache.self_url(),
            peer,
            share,
        })
        .collect();
    let groups = cache
        .groups()
        .into_iter()
        .map(|group| {
            let stats = group.stats();
            let bytes = stats.main_cache.bytes + stats.hot_cache.bytes;
            GroupRow {
                name: group.name().to_owned(),
                gets: stats.gets,
                served_to_peers: stats.server_requests,
                hits: stats.cache_hits,
                hit_ratio: (stats.gets > 0).then(|| stats.cache_hits as f64 / stats.gets as f64),
                peer_loads: stats.peer_loads,
                local_loads: stats.local_loads,
                peer_errors: stats.peer_errors,
                getter_errors: stats.local_load_errors,
                bytes,
                budget_bytes: group.budget_bytes() as u64,
                items: stats.main_cache.items + stats.hot_cache.items,
                evictions: stats.main_cache.evictions + stats.hot_cache.evictions,
            }
        })
        .collect();
    CacheRow {
        node: cache.self_url().to_owned(),
        groups,
        ring,
    }
}

/// What the page shows, as `?format=json` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// The heading: this process's service names, or the configured title.
    pub title: String,
    /// When the page was gathered, in milliseconds since the Unix epoch.
    pub generated_unix_ms: u64,
    /// This process's id.
    pub pid: u32,
    /// Seconds since the page was configured (about the process's uptime).
    pub uptime_seconds: u64,
    /// This process's own registrations.
    pub registrations: Vec<RegistrationRow>,
    /// The discovery view.
    pub discovery: DiscoveryRow,
    /// Every balanced Endpoint built in this process, by service and picker.
    pub endpoints: Vec<EndpointRow>,
    /// This process's cache nodes.
    pub caches: Vec<CacheRow>,
    /// What the page could not show, and why.
    pub notes: Vec<String>,
}

/// One of this process's registrations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegistrationRow {
    /// The service name.
    pub service: String,
    /// The instance id.
    pub id: String,
    /// The registered `host:port`.
    pub address: String,
    /// The key in the registry.
    pub key: String,
    /// Whether the registry holds the key now (None: the registry did not answer).
    pub in_registry: Option<bool>,
    /// Whether this process's discovery view has it.
    pub discovered: bool,
    /// The TTL its lease has left, in seconds.
    pub lease_ttl_seconds: Option<f64>,
}

/// The discovery view.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DiscoveryRow {
    /// The registry prefix (`/services`).
    pub prefix: String,
    /// live, connecting, or stale.
    pub state: String,
    /// Every service with at least one instance, by name.
    pub services: Vec<ServiceRow>,
    /// Instances of every service.
    pub instances: usize,
    /// Full listings so far (start, broken or compacted watches, reconciles).
    pub relists: u64,
    /// Watches restarted because their revision was compacted.
    pub compactions: u64,
    /// Entries skipped because they do not fit the layout.
    pub malformed_skipped: u64,
}

/// A service and its instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceRow {
    /// The service name.
    pub name: String,
    /// Its instances, by id.
    pub instances: Vec<InstanceRow>,
}

/// One instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceRow {
    /// The instance id.
    pub id: String,
    /// Its `host:port`.
    pub address: String,
    /// The TTL its lease has left, in seconds.
    pub lease_ttl_seconds: Option<f64>,
    /// Metadata registered with it. svckit's layout (`<prefix>/<id>/<name>` = `host:port`)
    /// carries none, so this is empty until the layout gains some; the page keeps the column
    /// so that the JSON's shape does not change then.
    pub metadata: BTreeMap<String, String>,
    /// Registered by this process.
    pub this_process: bool,
}

/// The calls of the Endpoints of one service and picker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EndpointRow {
    /// The service called.
    pub service: String,
    /// The picker.
    pub picker: String,
    /// Calls (invokes) completed.
    pub requests: u64,
    /// Calls that failed after their retries.
    pub failures: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Instances set aside after failing.
    pub ejections: u64,
    /// Calls in flight now.
    pub in_flight: u64,
}

/// A cache node of this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CacheRow {
    /// Its own base URL.
    pub node: String,
    /// Its groups.
    pub groups: Vec<GroupRow>,
    /// The share of the hash space each peer owns (sums to 1).
    pub ring: Vec<RingRow>,
}

/// One cache group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupRow {
    /// The group's name.
    pub name: String,
    /// Gets, from callers here and from peers.
    pub gets: u64,
    /// Of `gets`, those peers sent (fetches of keys this node owns, handoff asks).
    pub served_to_peers: u64,
    /// Gets answered from memory.
    pub hits: u64,
    /// `hits / gets` (None before the first get).
    pub hit_ratio: Option<f64>,
    /// Values fetched from their owner.
    pub peer_loads: u64,
    /// Values this node's getter loaded.
    pub local_loads: u64,
    /// Failed fetches from a peer.
    pub peer_errors: u64,
    /// Failed calls of the getter.
    pub getter_errors: u64,
    /// Bytes held, main and hot cache.
    pub bytes: u64,
    /// The group's budget in bytes.
    pub budget_bytes: u64,
    /// Entries held.
    pub items: u64,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
}

/// A peer's share of the ring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RingRow {
    /// The peer's base URL.
    pub peer: String,
    /// The fraction of the hash space it owns.
    pub share: f64,
    /// This node.
    pub this_node: bool,
}

#[derive(Deserialize)]
struct Format {
    format: Option<String>,
}

async fn serve(State(page): State<StatusPage>, Query(query): Query<Format>) -> Response {
    let json = match query
        .format
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("html") => false,
        Some("json") => true,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "format must be html (the default) or json\n",
            )
                .into_response()
        }
    };
    let status = page.status().await;
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    if json {
        (no_store, Json(status)).into_response()
    } else {
        (no_store, Html(render(&status))).into_response()
    }
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ttl_cell(ttl: Option<f64>) -> String {
    match ttl {
        Some(t) => format!("{t:.0} s"),
        None => "–".to_owned(),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn bar(fraction: f64) -> String {
    let pct = (fraction.clamp(0.0, 1.0) * 100.0).round();
    format!(r#"<span class="bar"><span style="width:{pct}%"></span></span>"#)
}

fn percent(f: Option<f64>) -> String {
    f.map_or_else(|| "–".to_owned(), |f| format!("{:.1} %", f * 100.0))
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2430;background:#fff}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde3ea;padding-bottom:4px}\
h3{font-size:14px;margin:16px 0 6px}.meta{color:#5b6675}\
table{border-collapse:collapse;margin:4px 0 8px}th,td{padding:4px 14px 4px 0;text-align:left;vertical-align:top}td{white-space:nowrap}\
th{font-weight:600;color:#5b6675;border-bottom:1px solid #dde3ea}td.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.me td{background:#eef6ee}.ok{color:#1a7f37;font-weight:600}.bad{color:#c0392b;font-weight:600}\
.bar{display:inline-block;width:120px;height:9px;background:#e8edf2;border-radius:4px;vertical-align:middle;margin-right:6px}\
.bar span{display:block;height:9px;background:#4a7bd0;border-radius:4px}\
.cards{display:flex;gap:12px;margin:14px 0}.card{border:1px solid #dde3ea;border-radius:6px;padding:8px 14px}\
.card b{display:block;font-size:20px}code{font-size:13px}";

/// The HTML page: summary cards, then one table per concern.
fn render(s: &Status) -> String {
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · svckit status</title><style>{STYLE}</style></head><body>",
        esc(&s.title)
    );
    let _ = write!(
        h,
        "<h1>{} <span class=\"meta\">· svckit status</span></h1><div class=\"meta\">pid {} · up {} s · <a href=\"?format=json\">JSON</a></div>",
        esc(&s.title),
        s.pid,
        s.uptime_seconds
    );
    let failures: u64 = s.endpoints.iter().map(|e| e.failures).sum();
    let requests: u64 = s.endpoints.iter().map(|e| e.requests).sum();
    let state_class = if s.discovery.state == "live" || s.discovery.state == "static" {
        "ok"
    } else {
        "bad"
    };
    let _ = write!(
        h,
        "<div class=\"cards\"><div class=\"card\">discovery<b class=\"{state_class}\">{}</b></div><div class=\"card\">services<b>{}</b></div><div class=\"card\">instances<b>{}</b></div><div class=\"card\">endpoint calls<b>{requests}</b></div><div class=\"card\">failed calls<b class=\"{}\">{failures}</b></div></div>",
        esc(s.discovery.state.split(' ').next().unwrap_or("")),
        s.discovery.services.len(),
        s.discovery.instances,
        if failures > 0 { "bad" } else { "ok" },
    );
    for note in &s.notes {
        let _ = write!(h, "<p class=\"bad\">{}</p>", esc(note));
    }

    h.push_str("<h2>This process</h2>");
    if s.registrations.is_empty() {
        h.push_str("<p class=\"meta\">registers no service</p>");
    } else {
        h.push_str("<table><tr><th>service</th><th>id</th><th>address</th><th>in registry</th><th>discovered</th><th>lease TTL left</th><th>key</th></tr>");
        for r in &s.registrations {
            let in_registry = match r.in_registry {
                Some(true) => "<span class=\"ok\">yes</span>",
                Some(false) => "<span class=\"bad\">no</span>",
                None => "?",
            };
            let discovered = if r.discovered {
                "<span class=\"ok\">yes</span>"
            } else {
                "<span class=\"bad\">no</span>"
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{in_registry}</td><td>{discovered}</td><td class=\"n\">{}</td><td><code>{}</code></td></tr>",
                esc(&r.service),
                esc(&r.id),
                esc(&r.address),
                ttl_cell(r.lease_ttl_seconds),
                esc(&r.key)
            );
        }
        h.push_str("</table>");
    }

    let _ = write!(
        h,
        "<h2>Services <span class=\"meta\">under <code>{}/</code> · {} relists · {} compactions · {} malformed keys skipped</span></h2>",
        esc(&s.discovery.prefix),
        s.discovery.relists,
        s.discovery.compactions,
        s.discovery.malformed_skipped
    );
    if s.discovery.services.is_empty() {
        h.push_str("<p class=\"meta\">no instance registered</p>");
    }
    for service in &s.discovery.services {
        let _ = write!(
            h,
            "<h3>{} <span class=\"meta\">· {} instance{}</span></h3><table><tr><th>id</th><th>address</th><th>lease TTL left</th><th>metadata</th></tr>",
            esc(&service.name),
            service.instances.len(),
            if service.instances.len() == 1 { "" } else { "s" }
        );
        for i in &service.instances {
            let metadata = if i.metadata.is_empty() {
                "–".to_owned()
            } else {
                i.metadata
                    .iter()
                    .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = write!(
                h,
                "<tr{}><td><code>{}</code>{}</td><td>{}</td><td class=\"n\">{}</td><td>{metadata}</td></tr>",
                if i.this_process { " class=\"me\"" } else { "" },
                esc(&i.id),
                if i.this_process { " (this process)" } else { "" },
                esc(&i.address),
                ttl_cell(i.lease_ttl_seconds),
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Endpoints</h2>");
    if s.endpoints.is_empty() {
        h.push_str("<p class=\"meta\">this process calls no service through an Endpoint</p>");
    } else {
        h.push_str("<table><tr><th>service</th><th>picker</th><th>calls</th><th>failed</th><th>failure ratio</th><th>retries</th><th>ejections</th><th>in flight</th></tr>");
        for e in &s.endpoints {
            let ratio = (e.requests > 0).then(|| e.failures as f64 / e.requests as f64);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&e.service),
                esc(&e.picker),
                e.requests,
                if e.failures > 0 { " bad" } else { "" },
                e.failures,
                percent(ratio),
                e.retries,
                e.ejections,
                e.in_flight
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Cache</h2>");
    if s.caches.is_empty() {
        h.push_str("<p class=\"meta\">this process runs no cache node</p>");
    }
    for c in &s.caches {
        let _ = write!(h, "<h3>node <code>{}</code></h3>", esc(&c.node));
        h.push_str("<table><tr><th>group</th><th>gets</th><th>hit ratio</th><th>bytes / budget</th><th>items</th><th>evictions</th><th>from peers</th><th>loaded here</th><th>served to peers</th><th>peer errors</th><th>getter errors</th></tr>");
        for g in &c.groups {
            let used = if g.budget_bytes > 0 {
                g.bytes as f64 / g.budget_bytes as f64
            } else {
                0.0
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td>{}{}</td><td>{}{} / {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td><td class=\"n{}\">{}</td></tr>",
                esc(&g.name),
                g.gets,
                bar(g.hit_ratio.unwrap_or(0.0)),
                percent(g.hit_ratio),
                bar(used),
                bytes(g.bytes),
                bytes(g.budget_bytes),
                g.items,
                g.evictions,
                g.peer_loads,
                g.local_loads,
                g.served_to_peers,
                if g.peer_errors > 0 { " bad" } else { "" },
                g.peer_errors,
                if g.getter_errors > 0 { " bad" } else { "" },
                g.getter_errors
            );
        }
        h.push_str("</table><table><tr><th>peer</th><th>share of the ring</th></tr>");
        for r in &c.ring {
            let _ = write!(
                h,
                "<tr{}><td><code>{}</code>{}</td><td>{}{:.1} %</td></tr>",
                if r.this_node { " class=\"me\"" } else { "" },
                esc(&r.peer),
                if r.this_node { " (this node)" } else { "" },
                bar(r.share),
                r.share * 100.0
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
