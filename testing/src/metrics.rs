//! Metrics in tests: one Prometheus recorder per test binary ([`install`]), and a parser of the
//! Prometheus text format ([`Scrape`]) for both that recorder and an example's `/metrics`.
//!
//! ```no_run
//! let handle = svckit_testing::metrics::install();
//! // ... traffic ...
//! let scrape = svckit_testing::metrics::Scrape::parse(&handle.render()).unwrap();
//! let ok = scrape.sum("svckit_endpoint_requests_total", &[("service", "products"), ("outcome", "ok")]);
//! # drop(ok);
//! ```

use std::collections::BTreeSet;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets (seconds) of svckit's `_seconds` histograms in tests and examples: 0.5 ms to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs a Prometheus recorder as the global `metrics` recorder, once per process, and
/// returns its handle (render with `handle.render()`).
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("no other recorder in a test binary");
        handle
    })
}

/// Renders the installed recorder and parses it.
pub fn scrape() -> Scrape {
    Scrape::parse(&install().render()).expect("the recorder renders the text format")
}

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`x_total`, `x_bucket`, `x_sum`, ...).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// A parsed Prometheus text exposition.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// The families declared by `# TYPE` lines.
    pub families: BTreeSet<String>,
}

impl Scrape {
    /// Parses the text format. Lines it cannot read are an error naming the line.
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.split_whitespace().next() {
                    scrape.families.insert(name.to_string());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            scrape
                .samples
                .push(parse_sample(line).ok_or_else(|| format!("unreadable sample: {line}"))?);
        }
        Ok(scrape)
    }

    /// The sum of the samples called `name` whose labels include every pair of `labels`, or
    /// `None` when there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in &self.samples {
            if s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// [`get`](Self::get), with 0 for none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            let labels = parse_labels(&line[open + 1..close])?;
            let value = line[close + 1..].split_whitespace().next()?;
            ((line[..open].to_string(), labels), value)
        }
        None => {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            ((name.to_string(), Vec::new()), parts.next()?)
        }
    };
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: head.0,
        labels: head.1,
        value,
    })
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key, value));
        rest = after[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_values_and_families() {
        let text = "# TYPE a_total counter\na_total{service=\"p\",outcome=\"ok\"} 3\na_total{service=\"p\",outcome=\"error\"} 1\n# TYPE g gauge\ng 2.5\nh_bucket{le=\"+Inf\",x=\"a\\\"b\"} 7\n";
        let s = Scrape::parse(text).unwrap();
        assert_eq!(s.sum("a_total", &[("service", "p")]), 4.0);
        assert_eq!(s.get("a_total", &[("outcome", "ok")]), Some(3.0));
        assert_eq!(s.get("g", &[]), Some(2.5));
        assert_eq!(
            s.get("h_bucket", &[("x", "a\"b"), ("le", "+Inf")]),
            Some(7.0)
        );
        assert_eq!(s.get("missing", &[]), None);
        assert!(s.families.contains("a_total") && s.families.contains("g"));
        assert!(Scrape::parse("broken{ 1").is_err());
    }
}
