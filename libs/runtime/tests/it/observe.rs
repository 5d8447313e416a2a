//! Every RPC is recorded once with a low-cardinality method label and its status code, and its
//! span's parent hook sees the request headers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use trustmesh_proto::v1::GetDatasetRequest;
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_runtime::{GrpcServer, Readiness, UNKNOWN_METHOD, connect_channel};

use crate::helpers::{BOUND, Pki};

type Records = Arc<Mutex<Vec<(String, Code)>>>;

fn snapshot(records: &Records) -> Vec<(String, Code)> {
    records
        .lock()
        .map(|records| records.clone())
        .unwrap_or_default()
}

/// Waits (bounded) until `records` holds `expected`.
async fn wait_for_record(records: &Records, expected: (&str, Code)) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !snapshot(records)
        .iter()
        .any(|(method, code)| (method.as_str(), *code) == expected)
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{expected:?} not in {:?}",
            snapshot(records)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test]
async fn every_rpc_is_recorded_with_its_method_and_status() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let records = Records::default();
    let parents = Arc::new(Mutex::new(Vec::<String>::new()));
    let server = GrpcServer::builder(pki.grpc_settings(), Readiness::new())
        .on_rpc({
            let records = Arc::clone(&records);
            move |method, code, _elapsed| {
                if let Ok(mut records) = records.lock() {
                    records.push((method.to_owned(), code));
                }
            }
        })
        .span_parent({
            let parents = Arc::clone(&parents);
            move |_span, headers| {
                let traceparent = headers
                    .get("traceparent")
                    .and_then(|value| value.to_str().ok());
                if let (Some(traceparent), Ok(mut parents)) = (traceparent, parents.lock()) {
                    parents.push(traceparent.to_owned());
                }
            }
        })
        .build()
        .await?;
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run_until_stopped(shutdown.clone()));
    let channel = connect_channel(&format!("https://{addr}"), &pki.client_tls()).await?;
    let mut health = HealthClient::new(channel.clone());
    let check = "/grpc.health.v1.Health/Check";

    // OK, with trace context.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse()?);
    health.check(request).await?;
    wait_for_record(&records, (check, Code::Ok)).await?;
    assert_eq!(
        parents
            .lock()
            .map(|parents| parents.clone())
            .unwrap_or_default(),
        vec![traceparent.to_owned()]
    );

    // An error answered trailers-only.
    let missing = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await;
    assert_eq!(
        missing.err().map(|status| status.code()),
        Some(Code::NotFound)
    );
    wait_for_record(&records, (check, Code::NotFound)).await?;

    // A path outside the registered services is labelled `unknown`, whatever the caller sends.
    let unknown = DatasetServiceClient::new(channel.clone())
        .get_dataset(GetDatasetRequest::default())
        .await;
    assert_eq!(
        unknown.err().map(|status| status.code()),
        Some(Code::Unimplemented)
    );
    wait_for_record(&records, (UNKNOWN_METHOD, Code::Unimplemented)).await?;

    // A stream the client walks away from counts as cancelled.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    tokio::time::timeout(BOUND, watch.next()).await?;
    drop(watch);
    wait_for_record(&records, ("/grpc.health.v1.Health/Watch", Code::Cancelled)).await?;

    assert_eq!(
        snapshot(&records).len(),
        4,
        "each call recorded once: {:?}",
        snapshot(&records)
    );
    shutdown.cancel();
    Ok(())
}
