//! `init` installs logs and traces once; spans carry trace context across a carrier.
//!
//! One test function: the subscriber is process-global, so the steps must run in order.

use std::collections::HashMap;

use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use trustmesh_telemetry::{
    LogFormat, TRACEPARENT, TelemetryError, TelemetrySettings, init, inject_current,
    set_parent_from, trace_headers,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_once_then_spans_propagate_through_headers() {
    // A bad filter is refused before anything is installed.
    let bad = TelemetrySettings {
        log_filter: Some("info,=[".into()),
        ..TelemetrySettings::default()
    };
    assert!(matches!(
        init("ingest", &bad),
        Err(TelemetryError::InvalidFilter(_))
    ));

    let settings = TelemetrySettings {
        log_format: LogFormat::Pretty,
        ..TelemetrySettings::default()
    };
    let guard = init("ingest", &settings).expect("first init");
    assert!(!guard.is_exporting());
    // A second init does not panic and leaves the first one in place.
    assert!(matches!(
        init("ingest", &TelemetrySettings::default()),
        Err(TelemetryError::AlreadyInitialized)
    ));

    // Outgoing: the current span's context goes into the headers.
    let publish = tracing::info_span!(
        "publish",
        messaging.destination.name = "tm.acme.dataset.ingested"
    );
    let sent_trace_id = publish.context().span().span_context().trace_id();
    let mut headers = HashMap::new();
    publish.in_scope(|| inject_current(&mut headers));
    let traceparent = headers
        .get(TRACEPARENT)
        .expect("traceparent injected")
        .clone();
    assert!(
        traceparent.starts_with(&format!("00-{sent_trace_id}-")),
        "{traceparent}"
    );
    assert_eq!(
        publish.in_scope(trace_headers),
        vec![(TRACEPARENT, traceparent)]
    );

    // Incoming: a consumer span continues the same trace.
    let consume = tracing::info_span!("consume");
    assert!(set_parent_from(&consume, &headers));
    assert_eq!(
        consume.context().span().span_context().trace_id(),
        sent_trace_id
    );
    // Without headers there is nothing to continue.
    assert!(!set_parent_from(
        &tracing::info_span!("orphan"),
        &HashMap::new()
    ));

    // A gRPC client call made inside the span carries its trace context.
    let request = publish
        .in_scope(|| trustmesh_telemetry::inject_trace_context(tonic::Request::new(())).unwrap());
    let sent = request
        .metadata()
        .get(TRACEPARENT)
        .expect("traceparent metadata")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(sent.starts_with(&format!("00-{sent_trace_id}-")), "{sent}");

    guard.metrics().rpc().record(
        "/trustmesh.v1.DatasetService/GetDataset",
        "OK",
        std::time::Duration::ZERO,
    );
    assert!(guard.metrics().render().contains("service=\"ingest\""));
    guard.shutdown().await;
}
