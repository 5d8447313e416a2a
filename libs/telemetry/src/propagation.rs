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
/// Implemented for `HashMap<String, String>`, gRPC `tonic::metadata::MetadataMap` and HTTP headers; for NATS
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

impl HeaderCarrier for tonic::codegen::http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }

    fn set_header(&mut self, name: &'static str, value: String) {
        if let Ok(value) = tonic::codegen::http::HeaderValue::try_from(value) {
            self.insert(name, value);
        }
    }
}

/// A tonic client interceptor that sends the current span's trace context with every call:
/// `SomeClient::with_interceptor(channel, inject_trace_context)`.
///
/// # Errors
/// Never; the signature is the one tonic's `Interceptor` expects.
#[allow(clippy::result_large_err)] // NOTE: tonic's `Interceptor` signature returns `Status` by value.
pub fn inject_trace_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    inject_current(request.metadata_mut());
    Ok(request)
}

/// The trace id of `span` (32 lowercase hex digits), if it belongs to a valid trace: recorded as the
/// `trace_id` field of RPC and consumer spans, so that every log line inside them carries it.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Makes `span` a child of the trace context in `carrier` and records the resulting trace id as its
/// `trace_id` field (the span must declare it, e.g. `trace_id = tracing::field::Empty`).
pub fn continue_trace(span: &tracing::Span, carrier: &(impl HeaderCarrier + ?Sized)) {
    set_parent_from(span, carrier);
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id);
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
