//! Telemetry configuration (the `telemetry` section of every service's settings).

use std::path::PathBuf;

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

/// Logs, traces and metrics settings; `Default` is JSON logs at `info`, no trace export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Log line format.
    pub log_format: LogFormat,
    /// `tracing-subscriber` env-filter directives (e.g. `info,trustmesh_bus=debug`); when unset,
    /// `RUST_LOG`, else `info`.
    pub log_filter: Option<String>,
    /// OTLP/gRPC collector endpoint (e.g. `http://otel-collector:4317`); unset: spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// A file log lines are appended to instead of stderr (created if missing).
    pub log_file: Option<PathBuf>,
}
