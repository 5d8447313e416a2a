//! SIGTERM cancels the root token; cancelling it stops the gRPC server: at once when idle, after
//! the grace period at most.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use trustmesh_runtime::{GrpcServer, Readiness, connect_channel, drain_within};

use crate::helpers::{BOUND, Pki, health_status};

#[tokio::test]
async fn an_idle_server_stops_as_soon_as_the_token_is_cancelled() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let server = GrpcServer::builder(pki.grpc_settings(), Readiness::new())
        .grace_period(Duration::from_secs(3600))
        .build()
        .await?;
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run_until_stopped(shutdown.clone()));
    let channel = connect_channel(&format!("https://{addr}"), &pki.client_tls()).await?;
    health_status(&channel, "").await?;

    shutdown.cancel();
    // An hour of grace, yet it returns: nothing was in flight.
    tokio::time::timeout(BOUND, running).await???;
    // The listener is closed.
    assert!(
        connect_channel(&format!("https://{addr}"), &pki.client_tls())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn a_call_that_never_ends_is_cut_off_after_the_grace_period() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let grace = Duration::from_millis(300);
    let server = GrpcServer::builder(pki.grpc_settings(), Readiness::new())
        .grace_period(grace)
        .build()
        .await?;
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run_until_stopped(shutdown.clone()));
    let channel = connect_channel(&format!("https://{addr}"), &pki.client_tls()).await?;
    // A health watch never ends by itself: it holds the drain open.
    let _watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await?;

    let started = tokio::time::Instant::now();
    shutdown.cancel();
    tokio::time::timeout(BOUND, running).await???;
    assert!(
        started.elapsed() >= grace,
        "returned after {:?}, before the grace period",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn drain_within_gives_up_after_the_grace_period() {
    let grace = Duration::from_secs(25);
    assert_eq!(drain_within("test", grace, async { 7 }).await, Some(7));

    let started = tokio::time::Instant::now();
    let never = std::future::pending::<()>();
    assert_eq!(drain_within("test", grace, never).await, None);
    assert_eq!(started.elapsed(), grace);

    let slow = tokio::time::sleep(grace - Duration::from_secs(1));
    assert_eq!(drain_within("test", grace, slow).await, Some(()));
}

#[tokio::test]
async fn sigterm_cancels_the_root_token() -> anyhow::Result<()> {
    let token = CancellationToken::new();
    let mut signal = Box::pin(trustmesh_runtime::shutdown_signal());
    // The first poll installs the SIGTERM and SIGINT handlers (nothing is pending yet).
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut signal)
            .await
            .is_err()
    );
    trustmesh_runtime::cancel_on(signal, token.clone());

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()?;
    assert!(status.success());
    tokio::time::timeout(BOUND, token.cancelled()).await?;
    Ok(())
}
