//! The sweeper: periodically re-publishes requests whose receipts are late, and fails deletions
//! whose retries are spent (see [`Deletions::sweep`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::service::Deletions;

/// Sweeps every `interval` until `shutdown` is cancelled.
pub(crate) async fn run(deletions: Deletions, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = deletions.sweep().await {
            tracing::warn!(
                error.cause_chain = %trustmesh_runtime::cause_chain(&error),
                "A deletion sweep failed; the next one retries."
            );
        }
    }
    tracing::info!("Deletion sweeper stopped.");
}
