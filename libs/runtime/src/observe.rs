//! Per-RPC telemetry for the gRPC server: a `rpc` span around every call (its parent taken from the
//! request headers by a caller-supplied hook) and one record per finished call with its method,
//! status code and duration, fed to a caller-supplied recorder (e.g. the service's RPC metrics) and
//! logged at debug level inside the span (so the line carries the span's `trace_id`).
//!
//! The status code comes from the response headers for trailers-only responses and from the
//! trailers otherwise; a call whose response is dropped before it ends counts as `CANCELLED`.
//! Method labels stay low-cardinality: a path outside the registered services is `unknown`.
//! Each call runs in its [`CallOrigin`] scope (peer address and user agent), which audit entries read.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::http::header::USER_AGENT;
use tonic::codegen::http::{HeaderMap, HeaderValue, Request, Response};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument as _;
use trustmesh_telemetry::CallOrigin;

/// Receives every finished RPC: method path (`/trustmesh.v1.DatasetService/GetDataset`, or
/// `unknown`), status code and duration (for streams: until the stream ended).
pub type RpcRecorder = Arc<dyn Fn(&str, Code, Duration) + Send + Sync>;

/// Sets an RPC span's parent from the request headers (e.g. `traceparent`, with
/// `trustmesh_telemetry::continue_trace`, which also records the span's `trace_id` field).
pub type SpanParent = Arc<dyn Fn(&tracing::Span, &HeaderMap) + Send + Sync>;

/// Label of a method outside the registered services.
pub const UNKNOWN_METHOD: &str = "unknown";

/// What the layer does with each call.
pub(crate) struct Observer {
    pub(crate) recorder: Option<RpcRecorder>,
    pub(crate) span_parent: Option<SpanParent>,
    /// Path prefixes (`/<service name>/`) whose methods are labelled by their path.
    pub(crate) known_prefixes: Vec<String>,
}

impl Observer {
    fn method_label(&self, path: &str) -> String {
        if self
            .known_prefixes
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
        {
            path.to_owned()
        } else {
            UNKNOWN_METHOD.to_owned()
        }
    }
}

/// The tower layer the gRPC server wraps its routes in.
#[derive(Clone)]
pub(crate) struct RpcLayer {
    observer: Arc<Observer>,
}

impl RpcLayer {
    pub(crate) fn new(observer: Observer) -> Self {
        Self {
            observer: Arc::new(observer),
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            observer: Arc::clone(&self.observer),
        }
    }
}

/// The routes, observed.
#[derive(Clone)]
pub(crate) struct RpcService<S> {
    inner: S,
    observer: Arc<Observer>,
}

impl<S> Service<Request<Body>> for RpcService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = self.observer.method_label(request.uri().path());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        if let Some(span_parent) = &self.observer.span_parent {
            span_parent(&span, request.headers());
        }
        let recording = Recording {
            observer: Arc::clone(&self.observer),
            method,
            started: Instant::now(),
            span: span.clone(),
            done: false,
        };
        // The ready service handles this call; a fresh clone takes its place (tower's pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let origin = origin_of(&request);
        let call = origin.scope(inner.call(request)).instrument(span);
        Box::pin(async move {
            let response = call.await?;
            if let Some(code) = grpc_status(response.headers()) {
                // Trailers-only: the call is over.
                recording.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(ObservedBody {
                    inner: body,
                    recording: Some(recording),
                })
            }))
        })
    }
}

/// The peer address (plain TCP or under TLS) and user agent of `request`.
fn origin_of(request: &Request<Body>) -> CallOrigin {
    let extensions = request.extensions();
    let peer = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        });
    CallOrigin::new(
        peer.map(|addr| addr.ip().to_canonical()),
        request.headers().get(USER_AGENT).map(HeaderValue::as_bytes),
    )
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// One call being observed; records exactly once (`CANCELLED` if dropped unfinished).
struct Recording {
    observer: Arc<Observer>,
    method: String,
    started: Instant,
    span: tracing::Span,
    done: bool,
}

impl Recording {
    fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.span.record("rpc.grpc.status_code", code as i32);
        let elapsed = self.started.elapsed();
        self.span.in_scope(|| {
            tracing::debug!(
                rpc.grpc.status_code = code_name(code),
                duration_ms = elapsed.as_millis(),
                "RPC finished."
            );
        });
        if let Some(recorder) = &self.observer.recorder {
            recorder(&self.method, code, elapsed);
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

/// A response body that reports the status in its trailers.
struct ObservedBody {
    inner: Body,
    recording: Option<Recording>,
}

impl ObservedBody {
    fn finish(&mut self, code: Code) {
        if let Some(recording) = self.recording.take() {
            recording.finish(code);
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(status))) => self.finish(status.code()),
            // A gRPC response without a status is an error (gRPC over HTTP/2 spec).
            Poll::Ready(None) => self.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Returns the canonical name of a gRPC status code (`OK`, `NOT_FOUND`, ...), the metric label value.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::code_name;

    #[test]
    fn code_names_are_the_canonical_ones() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        for value in 0..=16 {
            let name = code_name(Code::from_i32(value));
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
    }
}
