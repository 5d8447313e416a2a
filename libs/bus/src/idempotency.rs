//! Idempotent consumers: a message's DB effect and its id in `processed_messages` commit together.
//!
//! JetStream delivers at least once, and an ack can be lost after the effect committed (a crash, or the
//! ack applied to a redelivery, nats-server #4786). So a consumer never relies on ack timing: it runs
//! its effect through [`ProcessedMessages::process_once`], which skips an id it already applied.

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::{PgPool, Postgres, Transaction};

use crate::schema::SchemaName;

/// What [`ProcessedMessages::process_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed<T> {
    /// The effect ran and committed, together with the message id.
    Applied(T),
    /// The message id was already recorded: the effect did not run again.
    AlreadyProcessed,
}

/// The `processed_messages` table of one consumer in one service schema.
#[derive(Debug, Clone)]
pub struct ProcessedMessages {
    pool: PgPool,
    table: String,
    consumer: String,
}

impl ProcessedMessages {
    /// The processed ids of `consumer` (its durable name) in `schema`, whose tables
    /// [`crate::ensure_schema`] created.
    #[must_use]
    pub fn new(pool: PgPool, schema: &SchemaName, consumer: impl Into<String>) -> Self {
        Self {
            pool,
            table: schema.table("processed_messages"),
            consumer: consumer.into(),
        }
    }

    /// Begins a transaction that records `msg_id`, or returns `None` if it is already recorded.
    ///
    /// The caller applies its effect in the returned transaction and commits it; if the transaction
    /// is dropped or rolled back, neither the effect nor the id is recorded and the message may be
    /// retried. Two concurrent deliveries of the same id are serialized by the primary key: the second
    /// waits for the first to commit, then gets `None` (or the transaction, if the first rolled back).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn begin(
        &self,
        msg_id: &str,
    ) -> Result<Option<Transaction<'static, Postgres>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO {} (consumer, msg_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            self.table
        ))
        .bind(&self.consumer)
        .bind(msg_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// Runs `effect` in a transaction that also records `msg_id`, and commits both; if `msg_id` is
    /// already recorded, returns [`Processed::AlreadyProcessed`] without running `effect`.
    ///
    /// `effect` gets the transaction and returns a boxed future borrowing it; it owns what it needs
    /// from the delivery, e.g. `move |tx| Box::pin(apply(tx, key))` with
    /// `async fn apply(tx: &mut Transaction<'static, Postgres>, key: String) -> Result<(), E>`.
    ///
    /// # Errors
    ///
    /// `effect`'s error, or a database error (converted with `E::from`); either way the transaction is
    /// rolled back and nothing is recorded.
    pub async fn process_once<T, E, F>(&self, msg_id: &str, effect: F) -> Result<Processed<T>, E>
    where
        F: for<'t> FnOnce(&'t mut Transaction<'static, Postgres>) -> BoxFuture<'t, Result<T, E>>,
        E: From<sqlx::Error>,
    {
        let Some(mut tx) = self.begin(msg_id).await? else {
            return Ok(Processed::AlreadyProcessed);
        };
        let value = effect(&mut tx).await?;
        tx.commit().await?;
        Ok(Processed::Applied(value))
    }

    /// Whether `msg_id` has been applied by this consumer.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn is_processed(&self, msg_id: &str) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE consumer = $1 AND msg_id = $2)",
            self.table
        ))
        .bind(&self.consumer)
        .bind(msg_id)
        .fetch_one(&self.pool)
        .await
    }

    /// Forgets ids recorded more than `older_than` ago and returns how many; keep `older_than` well
    /// beyond the streams' `max_age`, since a message can be redelivered as long as it is stored.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn prune(&self, older_than: Duration) -> Result<u64, sqlx::Error> {
        let seconds = older_than.as_secs_f64();
        let result = sqlx::query(&format!(
            "DELETE FROM {} WHERE consumer = $1 AND processed_at < now() - make_interval(secs => $2)",
            self.table
        ))
        .bind(&self.consumer)
        .bind(seconds)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}
