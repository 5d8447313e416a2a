//! The server layer counts real gRPC calls by method and status, bounding unknown methods.

use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use trustmesh_telemetry::{HeaderCarrier, Metrics, RpcTelemetryLayer, TRACEPARENT};

#[tokio::test]
async fn rpcs_are_counted_by_method_and_status() {
    let metrics = Metrics::new("tenancy");
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>>().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .layer(RpcTelemetryLayer::new(metrics.clone()))
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel.clone());

    // A call carrying a trace context (as a traced client sends it).
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.metadata_mut().set_header(
        TRACEPARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    );
    client.check(request).await.unwrap();
    // A handler error.
    let missing = client
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // Paths the server does not serve share one `unknown` label, whatever the caller sends.
    let mut grpc = tonic::client::Grpc::new(channel);
    for path in ["/attacker.Chosen/Path1", "/attacker.Chosen/Path2"] {
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckRequest>::default();
        let result = grpc
            .unary(
                tonic::Request::new(HealthCheckRequest::default()),
                path.parse().unwrap(),
                codec,
            )
            .await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::Unimplemented);
    }

    let text = metrics.render();
    let check = "/grpc.health.v1.Health/Check";
    for line in [
        format!("trustmesh_rpc_requests_total{{service=\"tenancy\",method=\"{check}\",code=\"OK\"}} 1"),
        format!("trustmesh_rpc_requests_total{{service=\"tenancy\",method=\"{check}\",code=\"NOT_FOUND\"}} 1"),
        "trustmesh_rpc_requests_total{service=\"tenancy\",method=\"unknown\",code=\"UNIMPLEMENTED\"} 2".to_owned(),
        format!("trustmesh_rpc_duration_seconds_count{{service=\"tenancy\",method=\"{check}\"}} 2"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    assert!(!text.contains("attacker"));
}
