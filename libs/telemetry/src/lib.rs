//! One init for logs, traces and metrics of every trustmesh service.
//!
//! [`init`] installs, once per process: a `tracing` subscriber writing JSON (or pretty) log lines to
//! stderr (or a file), filtered by an env-filter (default `info`); an OpenTelemetry tracing layer whose spans are
//! exported over OTLP/gRPC only when an endpoint is configured (off by default); and the W3C
//! trace-context propagator as the global one. It returns a [`TelemetryGuard`] that owns the
//! service's [`Metrics`] (a Prometheus registry rendered for `/metrics`, and with an OTLP endpoint
//! also exported over OTLP every interval) and flushes spans and metrics when shut down or dropped.
//!
//! Trace context crosses process boundaries in `traceparent`/`tracestate` headers: [`inject_current`]
//! and [`extract_context`] work on any [`HeaderCarrier`] (a `HashMap`, gRPC metadata, or a newtype
//! over NATS headers).
//!
//! gRPC servers (`trustmesh-runtime`'s RPC layer) continue the caller's trace with [`continue_trace`]
//! on the request headers; clients add the [`inject_trace_context`] interceptor. NATS consumers
//! (`trustmesh-bus`) continue the publisher's trace the same way from the message headers.
//!
//! Layout: `settings` (configuration), `metrics` (the registry and the RPC families), `families`
//! (the process-wide families: jobs, consumers, webhooks, decrypt failures, audit, deletion),
//! `otlp_metrics` (the registry exported over OTLP), `propagation` (carriers), `origin` (the client
//! address and user agent of the call being served), this file (init and the guard).

mod families;
mod metrics;
mod origin;
mod otlp_metrics;
mod propagation;
mod settings;

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use families::{
    AuditMetrics, ConsumerMetrics, ConsumerOutcome, DecryptMetrics, DeletionMetrics, JobKind,
    JobMetrics, JobState, PurgeOutcome, WebhookMetrics, WebhookOutcome,
};
pub use metrics::{CONTENT_TYPE, Metrics, RpcMetrics};
pub use origin::CallOrigin;
pub use propagation::{
    HeaderCarrier, TRACEPARENT, TRACESTATE, continue_trace, extract_context, inject_context,
    inject_current, inject_trace_context, set_parent_from, trace_headers, trace_id,
};
pub use settings::{LogFormat, TelemetrySettings};

use crate::otlp_metrics::MetricsExport;

/// How long the OTLP exporters wait for the collector on each export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why telemetry could not be initialized.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A global `tracing` subscriber is already installed (by an earlier [`init`] or someone else).
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized,
    /// The log filter does not parse as `tracing-subscriber` env-filter directives.
    #[error("invalid log filter: {0}")]
    InvalidFilter(String),
    /// An OTLP endpoint is configured but `init` was not called inside a Tokio runtime.
    #[error("OTLP export needs init to run inside a Tokio runtime")]
    NoRuntime,
    /// The OTLP exporter could not be built (e.g. a malformed endpoint).
    #[error("cannot build the OTLP exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// The OTLP endpoint is not a valid URI for the metrics export.
    #[error("invalid OTLP endpoint for metrics")]
    MetricsEndpoint(#[source] tonic::transport::Error),
    /// The log file could not be opened for appending.
    #[error("cannot open the log file")]
    LogFile(#[source] std::io::Error),
}

/// Keeps telemetry running: holds the service's [`Metrics`] and flushes pending spans and metrics
/// on [`TelemetryGuard::shutdown`] or drop.
#[must_use = "dropping the guard flushes and stops span and metrics export"]
pub struct TelemetryGuard {
    metrics: Metrics,
    provider: Option<SdkTracerProvider>,
    metrics_export: Option<MetricsExport>,
    exporting: bool,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.exporting)
            .finish_non_exhaustive()
    }
}

impl TelemetryGuard {
    /// The service's metrics registry (cheap to clone; register service-specific families on it).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether spans and metrics are exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.exporting
    }

    /// Exports the metrics one last time, flushes pending spans and stops the exporters, without
    /// blocking the async runtime.
    pub async fn shutdown(mut self) {
        if let Some(export) = self.metrics_export.take() {
            export.stop().await;
        }
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || shutdown_provider(&provider)).await;
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Dropping the export's stop handle makes its task export once more, while the runtime runs
        // (prefer `shutdown().await`, which waits for it).
        drop(self.metrics_export.take());
        let Some(provider) = self.provider.take() else {
            return;
        };
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            // The exporter task runs on this runtime: block this worker only.
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| shutdown_provider(&provider))
            }
            // On a current-thread runtime, blocking here would starve the exporter task it waits
            // for: flush from a helper thread instead, without waiting (prefer `shutdown().await`).
            Ok(_) => {
                std::thread::spawn(move || shutdown_provider(&provider));
            }
            Err(_) => shutdown_provider(&provider),
        }
    }
}

fn shutdown_provider(provider: &SdkTracerProvider) {
    if let Err(error) = provider.shutdown() {
        eprintln!("telemetry: flushing spans at shutdown failed: {error}");
    }
}

/// The configured filter (else `RUST_LOG`, else `info`), with OpenTelemetry's own chatter capped at
/// `warn` unless the directives name those crates.
fn log_filter(settings: &TelemetrySettings) -> Result<EnvFilter, TelemetryError> {
    let directives = match &settings.log_filter {
        Some(directives) => directives.clone(),
        None => std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| "info".to_owned()),
    };
    let mut filter = EnvFilter::try_new(&directives)
        .map_err(|e| TelemetryError::InvalidFilter(e.to_string()))?;
    for quiet in ["opentelemetry", "opentelemetry_sdk", "opentelemetry_otlp"] {
        if !directives.contains(quiet) {
            let directive = format!("{quiet}=warn")
                .parse()
                .map_err(|_| TelemetryError::InvalidFilter(directives.clone()))?;
            filter = filter.add_directive(directive);
        }
    }
    Ok(filter)
}

/// Installs logs, traces and the W3C propagator for `service`, and creates its [`Metrics`]; with an
/// OTLP endpoint, exports spans and (every `metrics_export_interval_secs`) metrics there.
///
/// Call once, early in `main` (inside the Tokio runtime when an OTLP endpoint is configured).
///
/// # Errors
/// [`TelemetryError::AlreadyInitialized`] if a global subscriber exists (a second call is harmless),
/// [`TelemetryError::InvalidFilter`], [`TelemetryError::NoRuntime`], [`TelemetryError::Exporter`],
/// [`TelemetryError::MetricsEndpoint`], [`TelemetryError::LogFile`].
pub fn init(service: &str, settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    if tracing::dispatcher::has_been_set() {
        return Err(TelemetryError::AlreadyInitialized);
    }
    let filter = log_filter(settings)?;

    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    let exporting = settings.otlp_endpoint.is_some();
    let mut metrics_endpoint = None;
    if let Some(endpoint) = &settings.otlp_endpoint {
        if Handle::try_current().is_err() {
            return Err(TelemetryError::NoRuntime);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(TelemetryError::Exporter)?;
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        builder = builder.with_span_processor(processor);
        metrics_endpoint = Some(
            tonic::transport::Endpoint::from_shared(endpoint.clone())
                .map_err(TelemetryError::MetricsEndpoint)?,
        );
    }
    // Spans get real trace ids (for propagation and log correlation) even when nothing exports them.
    let provider = builder.build();
    let otel_layer =
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()));

    let writer = match &settings.log_file {
        Some(path) => BoxMakeWriter::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(TelemetryError::LogFile)?,
        )),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let (json, pretty) = match settings.log_format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            ),
            None,
        ),
        LogFormat::Pretty => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .pretty()
                    .with_writer(writer),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(pretty)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialized)?;

    let metrics = Metrics::new(service);
    let metrics_export = metrics_endpoint.map(|endpoint| {
        MetricsExport::start(
            endpoint,
            settings.metrics_export_interval(),
            service,
            metrics.clone(),
        )
    });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing::info!(service, otlp = exporting, "Telemetry is initialized.");
    Ok(TelemetryGuard {
        metrics,
        provider: Some(provider),
        metrics_export,
        exporting,
    })
}
