//! Log lines can go to a file, and a span that continues a remote trace logs that trace's id.

use std::collections::HashMap;

use trustmesh_telemetry::{LogFormat, TRACEPARENT, TelemetrySettings};

#[tokio::test]
async fn lines_in_a_continued_span_carry_the_remote_trace_id_in_the_log_file() {
    let dir = tempfile_dir();
    let path = dir.join("trustmesh.log");
    let guard = trustmesh_telemetry::init(
        "audit",
        &TelemetrySettings {
            log_format: LogFormat::Json,
            log_filter: Some("info".to_owned()),
            log_file: Some(path.clone()),
            ..TelemetrySettings::default()
        },
    )
    .unwrap();
    let remote = "4bf92f3577b34da6a3ce929d0e0e4736";
    let carrier = HashMap::from([(
        TRACEPARENT.to_owned(),
        format!("00-{remote}-00f067aa0ba902b7-01"),
    )]);
    let span = tracing::info_span!("consume", trace_id = tracing::field::Empty);
    trustmesh_telemetry::continue_trace(&span, &carrier);
    assert_eq!(
        trustmesh_telemetry::trace_id(&span).as_deref(),
        Some(remote)
    );
    span.in_scope(|| tracing::info!("Event appended."));
    guard.shutdown().await;

    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["message"] == "Event appended.")
        .unwrap_or_else(|| panic!("no line in {text}"));
    assert_eq!(line["span"]["trace_id"], remote, "{line}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A fresh directory under the system temp dir.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("trustmesh-log-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
