//! `--prometheus`: a real Prometheus (Debian's `prometheus`) scraping every demo process's
//! `/metrics` every 500 ms, and what the demo asks of it through its HTTP query API.
//!
//! The demo adds each process it starts to the targets, so an instance started during the
//! rolling restart is scraped too.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use svckit::balancer::{HttpClient, Limits};

/// The demo's Prometheus (a real one, started by `svckit_testing::Prometheus`) and the
/// queries the demo asks of it.
pub(crate) struct Prometheus {
    server: svckit_testing::Prometheus,
    url: String,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port with an empty target list, scraping every
    /// 500 ms.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let server = svckit_testing::Prometheus::start(Duration::from_millis(500), &[])
            .await
            .map_err(|e| anyhow::anyhow!("{e} (./scripts/demo --prometheus installs it)"))?;
        let url = server.url();
        Ok(Self { server, url })
    }

    /// Its base URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Adds a target (`/metrics` at `addr`) labelled `name`.
    pub(crate) fn scrape(&mut self, name: &str, addr: &str) -> anyhow::Result<()> {
        Ok(self.server.scrape(name, addr)?)
    }

    /// Waits until every target is up.
    pub(crate) async fn wait_scraping(&self) -> anyhow::Result<()> {
        let want = self.server.targets() as f64;
        for _ in 0..100 {
            if self.scalar("count(up == 1)").await? == Some(want) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("prometheus is not scraping all {want} processes")
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let resp = HttpClient::new()
            .get(&format!("{}{path}", self.url), Limits::default())
            .await?;
        let status = resp.status().as_u16();
        Ok((
            status,
            serde_json::from_slice(resp.body().as_ref()).unwrap_or_default(),
        ))
    }

    /// An instant query's single value (None: no series).
    pub(crate) async fn scalar(&self, query: &str) -> anyhow::Result<Option<f64>> {
        let path = format!(
            "/api/v1/query?query={}",
            utf8_percent_encode(query, NON_ALPHANUMERIC)
        );
        let (status, v) = self.get(&path).await?;
        if status != 200 {
            bail!("prometheus answered {status} to {query}: {v}");
        }
        Ok(v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok()))
    }

    /// A range query, by the `process` label: process → [(unix seconds, value)].
    pub(crate) async fn range(
        &self,
        query: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> anyhow::Result<BTreeMap<String, Vec<(f64, f64)>>> {
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        };
        let path = format!(
            "/api/v1/query_range?query={}&start={:.3}&end={:.3}&step={}",
            utf8_percent_encode(query, NON_ALPHANUMERIC),
            secs(start),
            secs(end),
            step.as_secs_f64()
        );
        let (status, v) = self.get(&path).await?;
        if status != 200 {
            bail!("prometheus answered {status} to {query}: {v}");
        }
        let mut series = BTreeMap::new();
        for s in v["data"]["result"].as_array().into_iter().flatten() {
            let name = s["metric"]["process"].as_str().unwrap_or("?").to_owned();
            let points = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.parse().ok()?)))
                .collect();
            series.insert(name, points);
        }
        Ok(series)
    }
}

/// Prints, for every two seconds between `start` and `end`, the product requests each
/// instance served: differences of its request counter as Prometheus scraped it, so the
/// columns add up to what the instances counted (`-`: not running then).
pub(crate) async fn print_requests_per_instance(
    prometheus: &Prometheus,
    start: SystemTime,
    end: SystemTime,
) -> anyhow::Result<()> {
    // The last scrapes of the run must be in before the range is read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let step = Duration::from_secs(2);
    let series = prometheus
        .range(
            "sum by (process) (svckit_http_server_requests_total{service=\"productservice\",route=\"/prod/{id}\"})",
            start,
            end + step,
            step,
        )
        .await?;
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let t0 = secs(start);
    let steps = ((secs(end) - t0) / step.as_secs_f64()).ceil() as usize + 1;
    let mut header = format!("  {:>7}", "t (s)");
    for name in series.keys() {
        header.push_str(&format!(" {name:>9}"));
    }
    println!("{header}   (requests served in the 2 s before t, from Prometheus)");
    let mut totals = vec![0.0; series.len()];
    for i in 1..steps {
        let (t, before) = (t0 + (i * 2) as f64, t0 + ((i - 1) * 2) as f64);
        let mut row = format!("  {:>7}", i * 2);
        for (n, points) in series.values().enumerate() {
            let at = |t: f64| {
                points
                    .iter()
                    .find(|(pt, _)| (pt - t).abs() < 0.01)
                    .map(|p| p.1)
            };
            match at(t) {
                // A counter that was not there before started at 0 in between.
                Some(now) => {
                    let served = now - at(before).unwrap_or(0.0);
                    totals[n] += served;
                    row.push_str(&format!(" {served:>9.0}"));
                }
                None => row.push_str(&format!(" {:>9}", "-")),
            }
        }
        println!("{row}");
    }
    let mut row = format!("  {:>7}", "total");
    for total in totals {
        row.push_str(&format!(" {total:>9.0}"));
    }
    println!("{row}");
    Ok(())
}
