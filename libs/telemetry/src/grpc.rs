//! A tower layer for tonic servers: continues the caller's trace and records RPC metrics.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::trace::TraceContextExt as _;
use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::Metrics;
use crate::propagation::{HeaderCarrier, set_parent_from};

/// The `method` label for paths the server does not implement (keeps label cardinality bounded).
pub const UNKNOWN_METHOD: &str = "unknown";

/// `Server::builder().layer(RpcTelemetryLayer::new(metrics))`: every RPC runs in an `rpc` span that
/// continues the caller's `traceparent`, and is counted in [`crate::RpcMetrics`] by method and status.
///
/// The span records `rpc.method`, `rpc.grpc.status_code` and `trace_id` (so JSON log lines inside the
/// RPC carry it). The status is the `grpc-status` of the response headers (errors returned by a handler), else `OK`;
/// the latency is the time to the response headers. An error a stream reports later, in its
/// trailers, is not seen here.
#[derive(Clone, Debug)]
pub struct RpcTelemetryLayer {
    metrics: Metrics,
}

impl RpcTelemetryLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;

    fn layer(&self, inner: S) -> RpcTelemetry<S> {
        RpcTelemetry {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcTelemetryLayer`] wraps around each gRPC service.
#[derive(Clone, Debug)]
pub struct RpcTelemetry<S> {
    inner: S,
    metrics: Metrics,
}

impl HeaderCarrier for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }

    fn set_header(&mut self, name: &'static str, value: String) {
        if let Ok(value) = http::HeaderValue::try_from(value) {
            self.insert(name, value);
        }
    }
}

/// A tonic client interceptor that sends the current span's trace context with every call:
/// `SomeClient::with_interceptor(channel, inject_trace_context)`.
///
/// # Errors
/// Never; the signature is the one tonic's `Interceptor` expects.
#[allow(clippy::result_large_err)] // NOTE: tonic's `Interceptor` signature returns `Status` by value.
pub fn inject_trace_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    crate::propagation::inject_current(request.metadata_mut());
    Ok(request)
}

/// gRPC status code names by number (`grpc-status` header values 0–16).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn status_code(headers: &http::HeaderMap) -> &'static str {
    match headers.get("grpc-status") {
        None => CODES[0],
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .and_then(|i| CODES.get(i).copied())
            .unwrap_or("UNKNOWN"),
    }
}

impl<S, B, RB> Service<http::Request<B>> for RpcTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %path,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        set_parent_from(&span, request.headers());
        // So every JSON log line inside the RPC carries the trace id (when tracing is initialized).
        let trace_id = span.context().span().span_context().trace_id();
        if trace_id != opentelemetry::trace::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(trace_id));
        }
        let started = Instant::now();
        let response = self.inner.call(request);
        let metrics = self.metrics.clone();
        let record_span = span.clone();
        Box::pin(
            async move {
                let result = response.await;
                let code = match &result {
                    Ok(response) => status_code(response.headers()),
                    Err(_) => "UNKNOWN",
                };
                record_span.record("rpc.grpc.status_code", code);
                let method = if code == "UNIMPLEMENTED" {
                    UNKNOWN_METHOD
                } else {
                    path.as_str()
                };
                metrics.rpc().record(method, code, started.elapsed());
                result
            }
            .instrument(span),
        )
    }
}
