//! W3C trace context across hops: [`inject`] writes the current span's context into an
//! outgoing request's headers (`traceparent`, `tracestate`), [`extract`] makes an incoming
//! request's context the parent of a server span.
//!
//! Both go through the OpenTelemetry API (`opentelemetry::global`'s text-map propagator and
//! `tracing-opentelemetry`'s span extension), and only with the `otel` feature. The application
//! brings the SDK: it installs a propagator (`TraceContextPropagator`) and a
//! `tracing_opentelemetry` layer with its exporter, as OpenTelemetry asks of libraries.
//! Without the feature both functions are empty and inlined away: no header is read or
//! written and no context is built.
//!
//! Every svckit hop uses them: an Endpoint's attempt and the cache's peer fetch inject (through
//! the one HTTP transport), and the server of [`Lifecycle::serve`](crate::Lifecycle::serve)
//! extracts, so one trace spans client → service → cache peer.

use http::HeaderMap;

/// Whether this build carries trace context (`otel` feature).
pub const ENABLED: bool = cfg!(feature = "otel");

/// Writes the current `tracing` span's OpenTelemetry context into `headers`, through the
/// global text-map propagator. Does nothing without the `otel` feature, or when the
/// application installed no propagator.
#[inline]
pub fn inject(headers: &mut HeaderMap) {
    #[cfg(feature = "otel")]
    otel::inject(headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
}

/// Makes the context carried by `headers` (if any) the parent of `span`. Does nothing without
/// the `otel` feature.
#[inline]
pub fn extract(headers: &HeaderMap, span: &tracing::Span) {
    #[cfg(feature = "otel")]
    otel::extract(headers, span);
    #[cfg(not(feature = "otel"))]
    let _ = (headers, span);
}

#[cfg(feature = "otel")]
mod otel {
    use http::header::{HeaderName, HeaderValue};
    use http::HeaderMap;
    use opentelemetry::propagation::{Extractor, Injector};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    struct HeaderInjector<'a>(&'a mut HeaderMap);

    impl Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }

    struct HeaderExtractor<'a>(&'a HeaderMap);

    impl Extractor for HeaderExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(HeaderName::as_str).collect()
        }
    }

    pub(super) fn inject(headers: &mut HeaderMap) {
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(headers));
        });
    }

    pub(super) fn extract(headers: &HeaderMap, span: &tracing::Span) {
        let cx = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(headers))
        });
        // A span no OpenTelemetry layer records has no context to set: nothing to do.
        let _ = span.set_parent(cx);
    }
}
