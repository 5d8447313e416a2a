//! Telemetry configuration (the `telemetry` section of every service's settings).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (production default).
    #[default]
    Json,
    /// Multi-line human-readable output (development).
    Pretty,
}

/// Logs, traces and metrics settings; `Default` is JSON logs at `info`, no OTLP export.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Log line format.
    pub log_format: LogFormat,
    /// `tracing-subscriber` env-filter directives (e.g. `info,trustmesh_bus=debug`); when unset,
    /// `RUST_LOG`, else `info`.
    pub log_filter: Option<String>,
    /// OTLP/gRPC collector endpoint (e.g. `http://otel-collector:4317`) spans and metrics are
    /// exported to; unset: nothing is exported (`/metrics` is served either way).
    pub otlp_endpoint: Option<String>,
    /// Seconds between two metrics exports over OTLP (at least 1; metrics are also exported at
    /// shutdown). Default 60.
    pub metrics_export_interval_secs: u64,
    /// A file log lines are appended to instead of stderr (created if missing).
    pub log_file: Option<PathBuf>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            log_filter: None,
            otlp_endpoint: None,
            metrics_export_interval_secs: 60,
            log_file: None,
        }
    }
}

impl TelemetrySettings {
    /// The time between two metrics exports over OTLP.
    #[must_use]
    pub fn metrics_export_interval(&self) -> Duration {
        Duration::from_secs(self.metrics_export_interval_secs.max(1))
    }
}
