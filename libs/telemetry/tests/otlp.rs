//! With an OTLP endpoint configured, init needs a Tokio runtime and spans reach the collector
//! (a real OTLP/gRPC server on loopback) by the time the guard shuts down.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::sync::mpsc;
use trustmesh_telemetry::{TelemetryError, TelemetrySettings, init};

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[test]
fn spans_are_exported_over_otlp_when_an_endpoint_is_configured() {
    let settings = TelemetrySettings {
        otlp_endpoint: Some("http://127.0.0.1:9".into()),
        ..TelemetrySettings::default()
    };
    assert!(matches!(
        init("analysis", &settings),
        Err(TelemetryError::NoRuntime)
    ));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(tx)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let settings = TelemetrySettings {
            otlp_endpoint: Some(format!("http://{addr}")),
            ..TelemetrySettings::default()
        };
        let guard = init("analysis", &settings).expect("init with OTLP");
        assert!(guard.is_exporting());
        tracing::info_span!("start_analysis", rpc.method = "StartAnalysis")
            .in_scope(|| tracing::info!("A job ran."));
        guard.shutdown().await;

        let request = rx.recv().await.expect("an export reached the collector");
        let resource = request.resource_spans[0]
            .resource
            .as_ref()
            .expect("resource");
        let service_name = resource
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref());
        let expected = Value::StringValue("analysis".to_owned());
        assert_eq!(service_name, Some(&expected));
        let names: Vec<_> = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| &s.name)
            .collect();
        assert!(names.iter().any(|n| *n == "start_analysis"), "{names:?}");
    });
}
