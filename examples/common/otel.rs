//! Traces for the examples (`--features otel`): the W3C trace-context propagator svckit's hops
//! inject and extract through, and an OpenTelemetry tracer that, when `SVCKIT_OTEL_SPANS` names
//! a file, appends every finished span to it as one JSON line (`trace_id`, `span_id`,
//! `parent_span_id`, `name`, `service`, `attributes`).
//!
//! A deployment would export to its collector instead (the `opentelemetry-otlp` crate's
//! exporter in place of `JsonLines`); the file keeps the examples free of a collector while a
//! test or a person can still follow one trace across processes.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_subscriber::Layer;

/// The layer that turns `tracing` spans into OpenTelemetry spans (exported only when
/// `SVCKIT_OTEL_SPANS` is set), after installing the W3C propagator.
pub(crate) fn layer<S>(service: &str) -> Option<Box<dyn Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let path = std::env::var_os("SVCKIT_OTEL_SPANS")?;
    let file = match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!(
                "SVCKIT_OTEL_SPANS: cannot open {}: {e}",
                path.to_string_lossy()
            );
            return None;
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .with_simple_exporter(JsonLines {
            file: Mutex::new(file),
            service: service.to_owned(),
        })
        .build();
    let tracer = provider.tracer("svckit-examples");
    opentelemetry::global::set_tracer_provider(provider);
    // svckit's spans are at info (a cache hit records none); the logs' filter does not apply.
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
            .boxed(),
    )
}

/// Appends each finished span to a file as one JSON line.
struct JsonLines {
    file: Mutex<File>,
    service: String,
}

impl fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLines").finish_non_exhaustive()
    }
}

impl SpanExporter for JsonLines {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let mut out = String::new();
        for span in batch {
            let attributes: serde_json::Map<String, serde_json::Value> = span
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string().into()))
                .collect();
            let line = serde_json::json!({
                "trace_id": span.span_context.trace_id().to_string(),
                "span_id": span.span_context.span_id().to_string(),
                "parent_span_id": span.parent_span_id.to_string(),
                "name": span.name,
                "service": self.service,
                "attributes": attributes,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // A span file that cannot be written loses spans, never the request.
        let _ = file.write_all(out.as_bytes());
        std::future::ready(Ok(()))
    }
}
