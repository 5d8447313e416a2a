//! W3C trace context in message headers and gRPC metadata.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";

/// A header map that trace context can be written to and read from.
///
/// Implemented for `HashMap<String, String>` and gRPC `tonic::metadata::MetadataMap`; for NATS
/// headers, implement it on a newtype over `async_nats::HeaderMap` (or go through a `HashMap`).
pub trait HeaderCarrier {
    /// The value of header `name`, if present and valid UTF-8.
    fn header(&self, name: &str) -> Option<&str>;
    /// Sets header `name` (one of [`TRACEPARENT`], [`TRACESTATE`]) to `value`, replacing any value.
    fn set_header(&mut self, name: &'static str, value: String);
}

impl HeaderCarrier for HashMap<String, String> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }

    fn set_header(&mut self, name: &'static str, value: String) {
        self.insert(name.to_owned(), value);
    }
}

impl HeaderCarrier for tonic::metadata::MetadataMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }

    fn set_header(&mut self, name: &'static str, value: String) {
        // A value the propagator produced is always valid ASCII; skip it otherwise.
        if let Ok(value) = value.parse() {
            self.insert(name, value);
        }
    }
}

struct Inject<'a, C: ?Sized>(&'a mut C);

impl<C: HeaderCarrier + ?Sized> Injector for Inject<'_, C> {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        if !value.is_empty() {
            self.0.set_header(name, value);
        }
    }
}

struct Extract<'a, C: ?Sized>(&'a C);

impl<C: HeaderCarrier + ?Sized> Extractor for Extract<'_, C> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header(key)
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|k| self.0.header(k).is_some())
            .collect()
    }
}

/// Writes `cx`'s span context into `carrier` as `traceparent` (and `tracestate` if any); writes
/// nothing when `cx` has no valid span context.
pub fn inject_context(cx: &Context, carrier: &mut (impl HeaderCarrier + ?Sized)) {
    TraceContextPropagator::new().inject_context(cx, &mut Inject(carrier));
}

/// Writes the current `tracing` span's trace context into `carrier` (for an outgoing message or call).
pub fn inject_current(carrier: &mut (impl HeaderCarrier + ?Sized)) {
    inject_context(&tracing::Span::current().context(), carrier);
}

/// The current span's trace context as `(header name, value)` pairs, e.g. to copy into NATS headers.
pub fn trace_headers() -> Vec<(&'static str, String)> {
    let mut headers = HashMap::new();
    inject_current(&mut headers);
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| Some((name, headers.remove(name)?)))
        .collect()
}

/// The remote trace context carried by `carrier` (an empty context if it carries none or a bad one).
pub fn extract_context(carrier: &(impl HeaderCarrier + ?Sized)) -> Context {
    TraceContextPropagator::new().extract(&Extract(carrier))
}

/// Makes `span` a child of the trace context in `carrier` (for an incoming message or call); returns
/// whether the carrier held a valid one.
pub fn set_parent_from(span: &tracing::Span, carrier: &(impl HeaderCarrier + ?Sized)) -> bool {
    let cx = extract_context(carrier);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}
