//! Traces in tests (feature `otel`): an OpenTelemetry SDK that keeps every finished span in
//! memory, behind the process's global `tracing` subscriber, with the W3C propagator svckit's
//! hops inject and extract through.
//!
//! ```no_run
//! # #[cfg(feature = "otel")] {
//! let finished = svckit_testing::otel::FinishedSpans::install_global(tracing::Level::INFO);
//! // ... calls ...
//! let server = finished.one("http.server");
//! # drop(server);
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanProcessor};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

pub use opentelemetry_sdk::trace::SpanData;

/// Every span finished since [`install_global`](Self::install_global).
#[derive(Debug, Clone, Default)]
pub struct FinishedSpans(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for FinishedSpans {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl FinishedSpans {
    /// Installs the W3C trace-context propagator and, as the global `tracing` subscriber, an
    /// OpenTelemetry layer for spans up to `max_level` whose finished spans are kept here.
    /// Once per test binary: a test using it should be the only one in its file.
    ///
    /// # Panics
    /// When a global subscriber is already set.
    pub fn install_global(max_level: tracing::Level) -> FinishedSpans {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let finished = FinishedSpans::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(finished.clone())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("svckit-test"))
            .with_filter(LevelFilter::from_level(max_level));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in this test binary");
        finished
    }

    /// Every finished span, in the order they ended.
    pub fn all(&self) -> Vec<SpanData> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The finished spans called `name`.
    pub fn named(&self, name: &str) -> Vec<SpanData> {
        self.all().into_iter().filter(|s| s.name == name).collect()
    }

    /// The one finished span called `name`.
    ///
    /// # Panics
    /// When there is none or more than one.
    pub fn one(&self, name: &str) -> SpanData {
        let mut named = self.named(name);
        assert_eq!(named.len(), 1, "`{name}` spans: {named:?}");
        named.remove(0)
    }
}

/// The value of attribute `key` of `span`, as a string.
pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_owned()))
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        })
}
