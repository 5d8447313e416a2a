//! With an OTLP endpoint configured, init needs a Tokio runtime, and spans and metrics reach the
//! collector (a real OTLP/gRPC server on loopback): metrics every interval, spans and the last
//! metrics by the time the guard shuts down.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::mpsc;
use trustmesh_telemetry::{
    Metrics, TelemetryError, TelemetrySettings, WebhookMetrics, WebhookOutcome, init,
};

#[derive(Clone)]
struct Collector {
    spans: mpsc::UnboundedSender<ExportTraceServiceRequest>,
    metrics: mpsc::UnboundedSender<ExportMetricsServiceRequest>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.spans.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let _ = self.metrics.send(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

fn service_name(resource: Option<&Resource>) -> Option<&Value> {
    resource?
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn has_attribute(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    attributes.iter().any(|kv| {
        kv.key == key
            && kv.value.as_ref().and_then(|v| v.value.as_ref())
                == Some(&Value::StringValue(value.to_owned()))
    })
}

/// The metrics of one export request, by name.
fn metrics_of(request: &ExportMetricsServiceRequest) -> Vec<&Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .collect()
}

/// The value of the `method` point of counter `name`.
fn counter(metrics: &[&Metric], name: &str, method: &str) -> Option<i64> {
    let metric = metrics.iter().find(|m| m.name == name)?;
    let Some(metric::Data::Sum(sum)) = &metric.data else {
        return None;
    };
    assert!(sum.is_monotonic, "{name}");
    sum.data_points
        .iter()
        .find(|p| has_attribute(&p.attributes, "method", method))
        .and_then(|p| match p.value? {
            number_data_point::Value::AsInt(n) => Some(n),
            number_data_point::Value::AsDouble(_) => None,
        })
}

#[test]
fn spans_and_metrics_are_exported_over_otlp_when_an_endpoint_is_configured() {
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
        let (spans, mut rx) = mpsc::unbounded_channel();
        let (metrics, mut metrics_rx) = mpsc::unbounded_channel();
        let collector = Collector { spans, metrics };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let settings = TelemetrySettings {
            otlp_endpoint: Some(format!("http://{addr}")),
            metrics_export_interval_secs: 1,
            ..TelemetrySettings::default()
        };
        let guard = init("analysis", &settings).expect("init with OTLP");
        assert!(guard.is_exporting());
        tracing::info_span!("start_analysis", rpc.method = "StartAnalysis")
            .in_scope(|| tracing::info!("A job ran."));
        // What a component records: its host's RPC metrics (the registry named for the service
        // is the guard's) and a process-wide family.
        let method = "/trustmesh.v1.AnalysisService/StartAnalysis";
        Metrics::new("analysis")
            .rpc()
            .record(method, "OK", Duration::from_millis(12));
        WebhookMetrics::attempt(WebhookOutcome::Delivered);

        // Every interval, without waiting for shutdown: the whole registry, counters named the
        // OTLP way (no `_total`), the histogram's unit in UCUM.
        let periodic = tokio::time::timeout(Duration::from_secs(10), metrics_rx.recv())
            .await
            .expect("a periodic metrics export within 10 s")
            .expect("an export");
        assert_eq!(
            service_name(periodic.resource_metrics[0].resource.as_ref()),
            Some(&Value::StringValue("analysis".to_owned()))
        );
        let exported = metrics_of(&periodic);
        let names: Vec<_> = exported.iter().map(|m| m.name.as_str()).collect();
        for expected in [
            "trustmesh_rpc_requests",
            "trustmesh_rpc_duration_seconds",
            "trustmesh_job_transitions",
            "trustmesh_job_duration_seconds",
            "trustmesh_webhook_deliveries",
            "trustmesh_decrypt_failures",
            "trustmesh_audit_events",
            "trustmesh_deletion_receipts",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
        let duration = exported
            .iter()
            .find(|m| m.name == "trustmesh_rpc_duration_seconds")
            .unwrap();
        assert_eq!(duration.unit, "s");
        let Some(metric::Data::Histogram(histogram)) = &duration.data else {
            panic!("{duration:?}");
        };
        let point = &histogram.data_points[0];
        assert!(has_attribute(&point.attributes, "service", "analysis"));
        assert_eq!(point.count, 1);
        assert_eq!(point.bucket_counts.iter().sum::<u64>(), 1);
        assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);

        // At shutdown, the last values go out.
        Metrics::new("analysis")
            .rpc()
            .record(method, "OK", Duration::from_millis(3));
        guard.shutdown().await;
        let mut last = None;
        while let Ok(request) = metrics_rx.try_recv() {
            last = Some(request);
        }
        let last = last.expect("a metrics export at shutdown");
        assert_eq!(
            counter(&metrics_of(&last), "trustmesh_rpc_requests", method),
            Some(2)
        );

        let request = rx.recv().await.expect("an export reached the collector");
        let expected = Value::StringValue("analysis".to_owned());
        assert_eq!(
            service_name(request.resource_spans[0].resource.as_ref()),
            Some(&expected)
        );
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
