//! W3C trace context (`traceparent`, `tracestate`) in NATS headers, through `trustmesh-telemetry`.
//!
//! Publishers put the current span's context in the headers; consumers make the delivery's span a
//! child of it. Without an OpenTelemetry layer (or outside any span) a publish starts a fresh trace, so
//! every message still carries a well-formed `traceparent`.

use std::collections::HashMap;

use async_nats::HeaderMap;
use trustmesh_events::headers::{TRACEPARENT, TRACESTATE};

/// The current span's trace headers (`traceparent`, and `tracestate` if any), or a fresh root
/// `traceparent` (random ids, sampled) when there is no span context.
#[must_use]
pub fn current_trace_headers() -> Vec<(&'static str, String)> {
    let headers = trustmesh_telemetry::trace_headers();
    if headers.iter().any(|(name, _)| *name == TRACEPARENT) {
        headers
    } else {
        vec![(TRACEPARENT, fresh_traceparent())]
    }
}

/// Adds the current trace headers to `headers`, unless it already carries a `traceparent` (a message
/// relayed or dead-lettered keeps the trace it was published in).
pub fn inject(headers: &mut HeaderMap) {
    if headers.get(TRACEPARENT).is_some() {
        return;
    }
    for (name, value) in current_trace_headers() {
        headers.insert(name, value.as_str());
    }
}

/// Makes `span` a child of the trace carried by `headers`, if they carry a valid one, and records
/// the span's `trace_id` field (when it declares one).
pub fn set_remote_parent(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers else {
        return;
    };
    let carrier: HashMap<String, String> = [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), headers.get(name)?.as_str().to_owned())))
        .collect();
    trustmesh_telemetry::continue_trace(span, &carrier);
}

/// A version-00 `traceparent` of a new trace: random trace and span ids, sampled.
fn fresh_traceparent() -> String {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{trace_id}-{}-01", &span_id[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `value` is a well-formed version-00 `traceparent` with non-zero ids.
    fn well_formed(value: &str) -> bool {
        let parts: Vec<&str> = value.split('-').collect();
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && parts[1].bytes().any(|b| b != b'0')
            && hex(parts[2], 16)
            && parts[2].bytes().any(|b| b != b'0')
            && hex(parts[3], 2)
    }

    #[test]
    fn without_a_span_context_a_publish_starts_a_fresh_trace() {
        let headers = current_trace_headers();
        assert_eq!(headers.len(), 1);
        let (name, value) = &headers[0];
        assert_eq!(*name, TRACEPARENT);
        assert!(well_formed(value), "{value}");
        assert_ne!(
            current_trace_headers()[0].1,
            *value,
            "each root is a new trace"
        );
    }

    #[test]
    fn inject_keeps_an_existing_traceparent() {
        let existing = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, existing);
        inject(&mut headers);
        assert_eq!(
            headers
                .get(TRACEPARENT)
                .map(async_nats::HeaderValue::as_str),
            Some(existing)
        );

        let mut empty = HeaderMap::new();
        inject(&mut empty);
        assert!(
            empty
                .get(TRACEPARENT)
                .is_some_and(|v| well_formed(v.as_str()))
        );
    }
}
