//! Transactional outbox: an event is written in the same transaction as the state it announces, and a
//! relay publishes committed events afterwards.
//!
//! A rolled-back transaction leaves no event; a committed one is published at least once, however
//! the relay dies: rows are marked sent only after the stream acked them, and a republished row
//! carries the same `Nats-Msg-Id`, so the stream drops it within its duplicate window (and consumers
//! are idempotent beyond it).

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use trustmesh_events::Subject;
use trustmesh_events::headers::{TRACEPARENT, TRACESTATE};

use crate::publisher::{PublishError, Publisher, validate_msg_id};
use crate::schema::SchemaName;

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The message id cannot be a `Nats-Msg-Id`.
    #[error("invalid outbox message id")]
    InvalidMsgId(#[source] PublishError),
    /// The payload is larger than the subject's stream accepts.
    #[error("payload of {len} bytes exceeds the {max} bytes stream {stream} accepts")]
    TooLarge {
        /// The payload's size.
        len: usize,
        /// The stream's limit.
        max: i32,
        /// The stream.
        stream: &'static str,
    },
    /// Postgres refused a statement or could not be reached.
    #[error("outbox database error")]
    Database(#[from] sqlx::Error),
    /// A publish was not acked after the publisher's retries; the row stays pending.
    #[error("outbox publish failed")]
    Publish(#[source] PublishError),
}

/// Writes events into a service schema's `outbox` table (created by [`crate::ensure_schema`]).
#[derive(Debug, Clone)]
pub struct Outbox {
    table: String,
    channel: String,
}

impl Outbox {
    /// The outbox of `schema`.
    #[must_use]
    pub fn new(schema: &SchemaName) -> Self {
        Self {
            table: schema.table("outbox"),
            channel: channel(schema),
        }
    }

    /// Writes a protobuf event for `subject` with `Nats-Msg-Id: msg_id` (see `trustmesh_events::msg_id`)
    /// and the current trace context inside the caller's transaction; it is published once that
    /// transaction commits, and never if it rolls back.
    ///
    /// # Errors
    ///
    /// [`OutboxError::InvalidMsgId`], [`OutboxError::TooLarge`] (checked here, so that a row the
    /// relay can never publish is never written), or a database error.
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        subject: &Subject,
        message: &impl prost::Message,
        msg_id: &str,
    ) -> Result<(), OutboxError> {
        self.enqueue_bytes(tx, subject, &message.encode_to_vec(), msg_id)
            .await
    }

    /// [`Outbox::enqueue`] with an already encoded payload.
    ///
    /// # Errors
    ///
    /// As [`Outbox::enqueue`].
    pub async fn enqueue_bytes(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        subject: &Subject,
        payload: &[u8],
        msg_id: &str,
    ) -> Result<(), OutboxError> {
        validate_msg_id(msg_id).map_err(OutboxError::InvalidMsgId)?;
        let stream = subject.stream();
        if usize::try_from(stream.max_message_bytes).is_ok_and(|max| payload.len() > max) {
            return Err(OutboxError::TooLarge {
                len: payload.len(),
                max: stream.max_message_bytes,
                stream: stream.name,
            });
        }
        let trace = crate::trace::current_trace_headers();
        let trace_header = |name: &str| {
            trace
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        sqlx::query(&format!(
            "INSERT INTO {} (msg_id, subject, payload, traceparent, tracestate) VALUES ($1, $2, $3, $4, $5)",
            self.table
        ))
        .bind(msg_id)
        .bind(subject.as_str())
        .bind(payload)
        .bind(trace_header(TRACEPARENT))
        .bind(trace_header(TRACESTATE))
        .execute(&mut **tx)
        .await?;
        // Delivered to the relay's LISTEN only when the transaction commits.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&self.channel)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// `error` and its sources, `: `-separated, for `last_error`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

fn channel(schema: &SchemaName) -> String {
    format!("trustmesh_outbox_{schema}")
}

/// How an [`OutboxRelay`] batches and waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOptions {
    /// Rows locked and published per transaction.
    pub batch_size: i64,
    /// Longest wait between two passes when no commit notification arrives.
    pub poll_interval: Duration,
    /// Largest wait after a failed pass (a pass is retried with jittered exponential backoff).
    pub max_error_backoff: Duration,
}

impl Default for RelayOptions {
    /// Batches of 100, a pass at least every second, at most 30 s between failed passes.
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            max_error_backoff: Duration::from_secs(30),
        }
    }
}

/// A row of the outbox being relayed.
#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    msg_id: String,
    subject: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

/// Publishes a schema's committed outbox rows in `seq` order and marks each sent after its ack.
///
/// Several relays (replicas) may run at once: each locks its batch with `FOR UPDATE SKIP LOCKED`,
/// so a row is published by one relay at a time (order then holds per relay, not globally).
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    table: String,
    channel: String,
    publisher: Publisher,
    options: RelayOptions,
}

impl OutboxRelay {
    /// The relay of `schema`'s outbox, publishing through `publisher`.
    #[must_use]
    pub fn new(pool: PgPool, schema: &SchemaName, publisher: Publisher) -> Self {
        Self {
            pool,
            table: schema.table("outbox"),
            channel: channel(schema),
            publisher,
            options: RelayOptions::default(),
        }
    }

    /// The same relay with other options.
    #[must_use]
    pub fn with_options(mut self, options: RelayOptions) -> Self {
        self.options = options;
        self
    }

    /// Publishes up to `batch_size` pending rows in one transaction and returns how many it handled
    /// (published or, if the server refused them for good, marked failed).
    ///
    /// # Errors
    ///
    /// A database error, or [`OutboxError::Publish`] when a publish was not acked after retries; rows
    /// published before it are still marked sent.
    pub async fn relay_batch(&self) -> Result<usize, OutboxError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT seq, msg_id, subject, payload, traceparent, tracestate FROM {}
             WHERE published_at IS NULL AND failed_at IS NULL
             ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            self.table
        ))
        .bind(self.options.batch_size.max(1))
        .fetch_all(&mut *tx)
        .await?;

        let mut published = Vec::with_capacity(rows.len());
        let mut failed = Vec::new();
        let mut error = None;
        for row in rows {
            let mut headers = HeaderMap::new();
            if let Some(traceparent) = &row.traceparent {
                headers.insert(TRACEPARENT, traceparent.as_str());
                if let Some(tracestate) = &row.tracestate {
                    headers.insert(TRACESTATE, tracestate.as_str());
                }
            }
            match self
                .publisher
                .publish_raw(&row.subject, headers, Bytes::from(row.payload), &row.msg_id)
                .await
            {
                Ok(_) => published.push(row.seq),
                Err(e) if !e.is_transient() => {
                    tracing::error!(outbox.seq = row.seq, error = %e, "The server refused an outbox event for good; marking it failed.");
                    failed.push((row.seq, error_chain(&e)));
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }

        sqlx::query(&format!(
            "UPDATE {} SET published_at = now() WHERE seq = ANY($1)",
            self.table
        ))
        .bind(&published)
        .execute(&mut *tx)
        .await?;
        for (seq, reason) in &failed {
            sqlx::query(&format!(
                "UPDATE {} SET failed_at = now(), last_error = $2 WHERE seq = $1",
                self.table
            ))
            .bind(seq)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        match error {
            Some(e) => Err(OutboxError::Publish(e)),
            None => Ok(published.len() + failed.len()),
        }
    }

    /// Publishes every pending row, batch after batch, and returns how many it handled.
    ///
    /// # Errors
    ///
    /// As [`OutboxRelay::relay_batch`].
    pub async fn relay_pending(&self) -> Result<usize, OutboxError> {
        let batch = usize::try_from(self.options.batch_size.max(1)).unwrap_or(usize::MAX);
        let mut total = 0;
        loop {
            let n = self.relay_batch().await?;
            total += n;
            if n < batch {
                return Ok(total);
            }
        }
    }

    /// Rows not yet published (nor failed).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn pending(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE published_at IS NULL AND failed_at IS NULL",
            self.table
        ))
        .fetch_one(&self.pool)
        .await
    }

    /// Deletes rows published more than `older_than` ago and returns how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn prune_published(&self, older_than: Duration) -> Result<u64, sqlx::Error> {
        let result = sqlx::query(&format!(
            "DELETE FROM {} WHERE published_at < now() - make_interval(secs => $1)",
            self.table
        ))
        .bind(older_than.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Relays until `shutdown` is cancelled: a pass on every commit notification (`LISTEN`) and at
    /// least every `poll_interval`; failed passes are retried with jittered backoff. Cancelling
    /// between a commit and its publish loses nothing: the next relay publishes the row.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = self.listen().await;
        let mut failures = 0_usize;
        tracing::info!(outbox.table = self.table, "Outbox relay started.");
        loop {
            let wait = match self.relay_pending().await {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(
                            outbox.table = self.table,
                            count = n,
                            "Outbox events published."
                        );
                    }
                    failures = 0;
                    None
                }
                Err(e) => {
                    failures += 1;
                    let delay = self.error_backoff(failures);
                    tracing::warn!(outbox.table = self.table, error = %e, retry_in_ms = delay.as_millis(), "Outbox relay pass failed; retrying.");
                    Some(delay)
                }
            };
            match (wait, listener.as_mut()) {
                (Some(delay), _) => {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                (None, Some(l)) => {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(self.options.poll_interval) => {}
                        notification = l.recv() => {
                            if let Err(e) = notification {
                                tracing::debug!(error = %e, "Outbox LISTEN connection lost; polling until it is back.");
                                listener = None;
                            }
                        }
                    }
                }
                (None, None) => {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(self.options.poll_interval) => {}
                    }
                    listener = self.listen().await;
                }
            }
        }
        tracing::info!(outbox.table = self.table, "Outbox relay stopped.");
    }

    async fn listen(&self) -> Option<PgListener> {
        let attempt = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(&self.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match attempt.await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::debug!(error = %e, "Cannot LISTEN for outbox commits; polling instead.");
                None
            }
        }
    }

    fn error_backoff(&self, failures: usize) -> Duration {
        let n = failures.saturating_sub(1).min(64);
        backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(self.options.max_error_backoff)
                .with_jitter()
                .without_max_times(),
        )
        .nth(n)
        .unwrap_or(self.options.max_error_backoff)
    }
}
