//! Job changes pushed to `WatchJob` streams: a trigger on `jobs` sends the id of every job a
//! committed transaction inserted or updated on the Postgres channel [`CHANNEL`]
//! (`migrations/20261130040000_job_changes.sql`); each replica listens on one connection and
//! fans the ids out to its streams, which then read the job again. A change made by any replica on
//! the same database reaches every replica's watchers within moments. Notifications missed while
//! the listening connection is down are covered by the streams looking again every second anyway.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The Postgres channel the `jobs` trigger notifies.
const CHANNEL: &str = "analysis_job_changed";

/// Changes buffered per stream before a slow one skips to reading its job again.
const BUFFERED: usize = 1024;

/// How long to wait before listening again after the connection failed to come back.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

/// The ids of changed jobs, for this replica's `WatchJob` streams.
#[derive(Debug, Clone)]
pub(crate) struct JobChanges {
    sender: broadcast::Sender<Uuid>,
}

impl Default for JobChanges {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BUFFERED).0,
        }
    }
}

impl JobChanges {
    /// A receiver of the changes from now on.
    pub(crate) fn subscribe(&self) -> JobChangeReceiver {
        JobChangeReceiver(self.sender.subscribe())
    }

    /// Listens on [`CHANNEL`] with a connection of `pool` until `shutdown`, passing each job id on.
    /// A lost connection is reconnected (sqlx's listener does so on the next receive); while it
    /// cannot be, the streams fall back to looking again on their own.
    pub(crate) async fn run(self, pool: PgPool, shutdown: CancellationToken) {
        shutdown.run_until_cancelled(self.listen(pool)).await;
    }

    async fn listen(&self, pool: PgPool) {
        let mut listener = loop {
            match subscribe(&pool).await {
                Ok(listener) => break listener,
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "Cannot listen for job changes yet; WatchJob streams look on their own."
                    );
                    tokio::time::sleep(RELISTEN_AFTER).await;
                }
            }
        };
        loop {
            match listener.recv().await {
                Ok(notification) => {
                    if let Ok(id) = Uuid::try_parse(notification.payload()) {
                        // No receiver (no stream open) is not an error.
                        let _ = self.sender.send(id);
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "Lost the job-change listener; reconnecting."
                    );
                    tokio::time::sleep(RELISTEN_AFTER).await;
                }
            }
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// One `WatchJob` stream's view of the changes.
#[derive(Debug)]
pub(crate) struct JobChangeReceiver(broadcast::Receiver<Uuid>);

impl JobChangeReceiver {
    /// Waits until job `id` may have changed: a change of it, or changes missed by a lagging
    /// stream. Never returns once the replica stops listening (the caller's fallback wakes it).
    pub(crate) async fn changed(&mut self, id: Uuid) {
        loop {
            match self.0.recv().await {
                Ok(changed) if changed == id => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}
