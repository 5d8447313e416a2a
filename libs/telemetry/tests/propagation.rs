//! `traceparent` round trips through the carriers.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use trustmesh_telemetry::{
    HeaderCarrier, TRACEPARENT, TRACESTATE, extract_context, inject_context,
};

fn remote_parent() -> (SpanContext, Context) {
    let span = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "opaque")]).unwrap(),
    );
    let cx = Context::new().with_remote_span_context(span.clone());
    (span, cx)
}

fn round_trip(carrier: &mut (impl HeaderCarrier + ?Sized)) {
    let (span, cx) = remote_parent();
    inject_context(&cx, carrier);
    assert_eq!(
        carrier.header(TRACEPARENT),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(carrier.header(TRACESTATE), Some("vendor=opaque"));
    let extracted = extract_context(carrier);
    let got = extracted.span().span_context().clone();
    assert_eq!(got.trace_id(), span.trace_id());
    assert_eq!(got.span_id(), span.span_id());
    assert!(got.is_sampled());
    assert!(got.is_remote());
    assert_eq!(got.trace_state().get("vendor"), Some("opaque"));
}

#[test]
fn traceparent_round_trips_through_a_hash_map() {
    round_trip(&mut HashMap::new());
}

#[test]
fn traceparent_round_trips_through_grpc_metadata() {
    round_trip(&mut tonic::metadata::MetadataMap::new());
}

#[test]
fn an_empty_context_injects_nothing_and_garbage_extracts_nothing() {
    let mut headers = HashMap::new();
    inject_context(&Context::new(), &mut headers);
    assert!(headers.is_empty());

    for bad in [
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        headers.insert(TRACEPARENT.to_owned(), bad.to_owned());
        assert!(
            !extract_context(&headers).span().span_context().is_valid(),
            "{bad:?} was accepted"
        );
    }
}
