//! The `/metrics` text holds the shared families, with values, once they are touched.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use trustmesh_telemetry::{JobState, Metrics};

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
    metrics.jobs().entered(JobState::Running);
    metrics.jobs().set_count(JobState::Queued, 3);
    let decrypt_failures = Counter::<u64>::default();
    metrics.register(
        "decrypt_failures",
        "Ciphertexts that failed to open",
        decrypt_failures.clone(),
    );
    decrypt_failures.inc_by(2);

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
        "trustmesh_jobs{service=\"analysis\",state=\"Queued\"} 3",
        "trustmesh_job_transitions_total{service=\"analysis\",state=\"Running\"} 1",
        "trustmesh_decrypt_failures_total{service=\"analysis\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn families_without_samples_render_nothing_but_the_terminator() {
    assert_eq!(Metrics::new("audit").render(), "# EOF\n");
}
