//! The `/metrics` text holds the shared families, with values, once they are touched.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use trustmesh_telemetry::{
    ConsumerMetrics, ConsumerOutcome, JobKind, JobMetrics, JobState, Metrics, WebhookMetrics,
    WebhookOutcome,
};

#[test]
fn rendered_metrics_contain_the_registered_families_after_an_increment() {
    let metrics = Metrics::new("analysis");
    let method = "/trustmesh.v1.AnalysisService/StartAnalysis";
    metrics.rpc().record(method, "OK", Duration::from_millis(3));
    metrics
        .rpc()
        .record(method, "OK", Duration::from_millis(40));
    metrics
        .rpc()
        .record(method, "INVALID_ARGUMENT", Duration::from_millis(1));
    let evaluations = Counter::<u64>::default();
    metrics.register(
        "evaluations",
        "A service-specific family",
        evaluations.clone(),
    );
    evaluations.inc_by(2);

    let text = metrics.clone().render();
    for line in [
        "# TYPE trustmesh_rpc_requests counter",
        &format!(
            "trustmesh_rpc_requests_total{{service=\"analysis\",method=\"{method}\",code=\"OK\"}} 2"
        ),
        &format!(
            "trustmesh_rpc_requests_total{{service=\"analysis\",method=\"{method}\",code=\"INVALID_ARGUMENT\"}} 1"
        ),
        "# TYPE trustmesh_rpc_duration_seconds histogram",
        &format!(
            "trustmesh_rpc_duration_seconds_count{{service=\"analysis\",method=\"{method}\"}} 3"
        ),
        &format!(
            "trustmesh_rpc_duration_seconds_bucket{{service=\"analysis\",le=\"0.004\",method=\"{method}\"}} 2"
        ),
        "trustmesh_evaluations_total{service=\"analysis\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

/// The value of the sample `line_prefix` (everything before the value) in `text`.
fn sample(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn process_wide_families_are_listed_at_zero_and_shared_by_every_registry() {
    let first = Metrics::new("audit");
    let text = first.render();
    // Closed label sets exist before anything happens, so dashboards show 0, not "no data".
    for line in [
        "# TYPE trustmesh_job_transitions counter",
        "# TYPE trustmesh_job_duration_seconds histogram",
        "# TYPE trustmesh_webhook_deliveries counter",
        "# TYPE trustmesh_decrypt_failures counter",
        "# TYPE trustmesh_audit_events counter",
        "# TYPE trustmesh_deletion_receipts counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    let refused = "trustmesh_webhook_deliveries_total{service=\"audit\",outcome=\"Refused\"}";
    let before = sample(&text, refused).unwrap();

    WebhookMetrics::attempt(WebhookOutcome::Refused);
    JobMetrics::of(JobKind::Deletion).finished(JobState::Succeeded, Duration::from_secs(3));
    let consumer = ConsumerMetrics::new("TM_TEST_METRICS", "test-metrics");
    consumer.set_pending(7, 2);
    consumer.delivered(2, ConsumerOutcome::Acked);
    consumer.dead_lettered();

    // A registry made later renders the same, process-wide values, under its own service label.
    let text = Metrics::new("standalone").render();
    let labels = "stream=\"TM_TEST_METRICS\",consumer=\"test-metrics\"";
    for (prefix, at_least) in [
        (
            "trustmesh_webhook_deliveries_total{service=\"standalone\",outcome=\"Refused\"}".to_owned(),
            before + 1.0,
        ),
        (format!("trustmesh_consumer_pending{{service=\"standalone\",{labels}}}"), 7.0),
        (format!("trustmesh_consumer_ack_pending{{service=\"standalone\",{labels}}}"), 2.0),
        (format!("trustmesh_consumer_redeliveries_total{{service=\"standalone\",{labels}}}"), 1.0),
        (format!("trustmesh_dead_letters_total{{service=\"standalone\",{labels}}}"), 1.0),
        (
            format!("trustmesh_consumer_deliveries_total{{service=\"standalone\",{labels},outcome=\"Acked\"}}"),
            1.0,
        ),
        (
            "trustmesh_job_duration_seconds_count{service=\"standalone\",kind=\"Deletion\",state=\"Succeeded\"}".to_owned(),
            1.0,
        ),
    ] {
        let value = sample(&text, &prefix).unwrap_or_else(|| panic!("missing `{prefix}` in:\n{text}"));
        assert!(value >= at_least, "{prefix} = {value}");
    }
}
