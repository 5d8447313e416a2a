//! Server reflection lists the services of the descriptor sets given to the builder.

use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use trustmesh_runtime::{GrpcServer, Readiness, connect_channel};

use crate::helpers::{BOUND, Pki};

#[tokio::test]
async fn reflection_lists_the_trustmesh_health_and_reflection_services() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let server = GrpcServer::builder(pki.grpc_settings(), Readiness::new())
        .file_descriptor_set(trustmesh_proto::FILE_DESCRIPTOR_SET)
        .build()
        .await?;
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run_until_stopped(shutdown.clone()));

    let channel = connect_channel(&format!("https://{addr}"), &pki.client_tls()).await?;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = tokio::time::timeout(BOUND, responses.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no reflection response"))??;
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        anyhow::bail!("unexpected reflection response: {response:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in [
        "trustmesh.v1.DatasetService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
    shutdown.cancel();
    Ok(())
}
