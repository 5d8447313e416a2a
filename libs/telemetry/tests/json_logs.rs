//! Log lines are JSON objects, one per line, with the event fields and the current span's fields.
//!
//! The subscriber is process-global, so the scenario runs in a child process (this same test binary)
//! whose stderr is inspected.

use std::process::Command;

const CHILD: &str = "TRUSTMESH_TELEMETRY_TEST_CHILD";

#[test]
fn logs_are_one_json_object_per_line() {
    if std::env::var_os(CHILD).is_some() {
        let guard =
            trustmesh_telemetry::init("ingest", &trustmesh_telemetry::TelemetrySettings::default())
                .unwrap();
        tracing::info_span!("upload", tenant.id = "acme").in_scope(|| {
            tracing::warn!(rows = 3, "Rejected rows with a bad column count.");
            tracing::debug!("Not logged at the default level.");
        });
        drop(guard);
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "logs_are_one_json_object_per_line",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "Telemetry is initialized." && l["service"] == "ingest")
    );
    let warn = lines
        .iter()
        .find(|l| l["level"] == "WARN")
        .expect("the warning");
    assert_eq!(warn["message"], "Rejected rows with a bad column count.");
    assert_eq!(warn["rows"], 3);
    assert_eq!(warn["span"]["name"], "upload");
    assert_eq!(warn["span"]["tenant.id"], "acme");
    assert!(!stderr.contains("Not logged"));
    assert!(!stderr.contains('\u{1b}'), "ANSI escapes in JSON logs");
}
