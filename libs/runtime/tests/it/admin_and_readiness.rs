//! Readiness drives `grpc.health.v1` (overall and per service) and `/readyz`; shutdown flips both first.

use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use trustmesh_runtime::{
    AdminServer, AdminSettings, GrpcServer, METRICS_CONTENT_TYPE, Readiness, connect_channel, serve,
};

use crate::helpers::{BOUND, Pki, Probe, health_status, http_get, wait_for_health};

#[tokio::test]
async fn health_and_readyz_follow_readiness_and_flip_first_on_shutdown() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let readiness = Readiness::new();
    let nats = readiness.register("nats");
    let postgres = readiness.register("postgres");
    let grpc = GrpcServer::builder(pki.grpc_settings(), readiness.clone())
        .add_service(Probe)
        .build()
        .await?;
    let admin_settings = AdminSettings::any_loopback_port();
    let admin =
        AdminServer::bind(&admin_settings, readiness.clone(), || "# EOF\n".to_owned()).await?;
    let (grpc_addr, admin_addr) = (grpc.local_addr(), admin.local_addr());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(serve(grpc, admin, shutdown.clone()));

    // Before the dependencies are ready.
    let channel = connect_channel(&format!("https://{grpc_addr}"), &pki.client_tls()).await?;
    assert_eq!(
        health_status(&channel, "").await?,
        ServingStatus::NotServing
    );
    assert_eq!(
        health_status(&channel, "trustmesh.test.Probe").await?,
        ServingStatus::NotServing
    );
    let livez = http_get(admin_addr, "/livez").await?;
    assert_eq!(livez.status, 200);
    let readyz = http_get(admin_addr, "/readyz").await?;
    assert_eq!(
        (readyz.status, readyz.body.trim()),
        (503, "not ready: waiting for nats, postgres")
    );
    let metrics = http_get(admin_addr, "/metrics").await?;
    assert_eq!((metrics.status, metrics.body.as_str()), (200, "# EOF\n"));
    assert_eq!(metrics.content_type.as_deref(), Some(METRICS_CONTENT_TYPE));

    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    let mut next_status = async || -> anyhow::Result<ServingStatus> {
        let update = tokio::time::timeout(BOUND, watch.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("watch ended"))??;
        Ok(update.status())
    };
    assert_eq!(next_status().await?, ServingStatus::NotServing);

    // One dependency is not enough.
    nats.set_ready();
    let readyz = http_get(admin_addr, "/readyz").await?;
    assert_eq!(
        (readyz.status, readyz.body.trim()),
        (503, "not ready: waiting for postgres")
    );
    assert_eq!(
        health_status(&channel, "").await?,
        ServingStatus::NotServing
    );

    // All of them: SERVING, overall and per service; /readyz 200.
    postgres.set_ready();
    assert_eq!(next_status().await?, ServingStatus::Serving);
    wait_for_health(&channel, "trustmesh.test.Probe", ServingStatus::Serving).await?;
    assert_eq!(http_get(admin_addr, "/readyz").await?.status, 200);

    // Shutdown: NOT_SERVING first, while the open watch call keeps the gRPC server draining and the
    // admin server still answers probes.
    shutdown.cancel();
    assert_eq!(next_status().await?, ServingStatus::NotServing);
    let readyz = http_get(admin_addr, "/readyz").await?;
    assert_eq!(
        (readyz.status, readyz.body.trim()),
        (503, "not ready: shutting down")
    );
    assert_eq!(http_get(admin_addr, "/livez").await?.status, 200);
    assert!(
        !running.is_finished(),
        "the servers stopped before the in-flight call ended"
    );

    // Ending the last call ends the drain well within the grace period; then the admin port closes.
    drop(watch);
    drop(channel);
    tokio::time::timeout(BOUND, running).await???;
    assert!(
        http_get(admin_addr, "/livez").await.is_err(),
        "the admin server still answers"
    );
    Ok(())
}
