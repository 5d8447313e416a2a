//! Consuming a durable pull consumer: deliveries, handler errors, the ack guard and the runner.
//!
//! - [`Delivery`]: one delivered message, what a [`Handler`] sees.
//! - [`HandlerError`]: retryable (nak with delay), poison (term + dead letter) or fatal (stop).
//! - [`AckGuard`] (`guard.rs`): naks on drop unless acked, so a crashed or aborted handler never
//!   leaves a message waiting for its ack timeout.
//! - [`ConsumerRunner`] (`runner.rs`): pulls, runs handlers with bounded concurrency, dead-letters,
//!   stops gracefully.
//! - [`dead_letter`]: the dead-letter subject and headers; `advisory.rs` dead-letters messages whose
//!   last delivery was never settled, from the server's `MAX_DELIVERIES` advisory.

mod advisory;
pub mod dead_letter;
mod guard;
mod runner;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::Acker;
use bytes::Bytes;
use trustmesh_events::headers::{NATS_MSG_ID, TRACEPARENT};
use trustmesh_events::{Subject, SubjectError, TenantId};

pub use guard::AckGuard;
pub use runner::{ConsumerRunner, RunnerError, RunnerOptions};

/// How a handler failed, which decides what happens to the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Try again later (a dependency is down, a lock is held): the message is nak'ed with `delay`, or
    /// with the runner's exponential backoff when `None`; after the consumer's `max_deliver`
    /// deliveries it goes to the dead-letter subject.
    #[error("retryable: {reason}")]
    Retryable {
        /// Why, for logs and the dead letter; never customer content.
        reason: String,
        /// How long to wait before the redelivery.
        delay: Option<Duration>,
    },
    /// The message can never be processed (undecodable, invalid): it is terminated and published to
    /// the dead-letter subject with the reason in its headers.
    #[error("poison: {reason}")]
    Poison {
        /// Why, for logs and the dead letter; never customer content.
        reason: String,
    },
    /// The consumer cannot work at all (lost credentials, schema mismatch): the message is nak'ed, the
    /// runner stops pulling, finishes what is in flight and returns [`RunnerError::Fatal`], so the
    /// service can fail readiness.
    #[error("fatal: {reason}")]
    Fatal {
        /// Why, for logs and the operator.
        reason: String,
    },
}

impl HandlerError {
    /// A retryable error redelivered after the runner's backoff.
    pub fn retryable(reason: impl fmt::Display) -> Self {
        Self::Retryable {
            reason: reason.to_string(),
            delay: None,
        }
    }

    /// A retryable error redelivered after `delay`.
    pub fn retry_after(reason: impl fmt::Display, delay: Duration) -> Self {
        Self::Retryable {
            reason: reason.to_string(),
            delay: Some(delay),
        }
    }

    /// A poison message.
    pub fn poison(reason: impl fmt::Display) -> Self {
        Self::Poison {
            reason: reason.to_string(),
        }
    }

    /// A fatal error.
    pub fn fatal(reason: impl fmt::Display) -> Self {
        Self::Fatal {
            reason: reason.to_string(),
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    /// Integrity violations (SQLSTATE class 23) and data errors (class 22) are poison: the same
    /// message fails the same way every time. Everything else (connection, pool, serialization
    /// failure, deadlock) is retryable.
    fn from(error: sqlx::Error) -> Self {
        let class = error
            .as_database_error()
            .and_then(|db| db.code())
            .map(|code| code.chars().take(2).collect::<String>());
        match class.as_deref() {
            Some("22" | "23") => Self::poison(format!("database rejected the effect: {error}")),
            Some(_) | None => Self::retryable(format!("database error: {error}")),
        }
    }
}

impl From<crate::outbox::OutboxError> for HandlerError {
    /// Database errors are classed as in `From<sqlx::Error>`; an event the outbox refuses (bad id,
    /// too large) is poison; a failed publish is retryable.
    fn from(error: crate::outbox::OutboxError) -> Self {
        use crate::outbox::OutboxError;
        match error {
            OutboxError::Database(e) => Self::from(e),
            e @ (OutboxError::InvalidMsgId(_) | OutboxError::TooLarge { .. }) => {
                Self::poison(format!("the outbox refused the event: {e}"))
            }
            OutboxError::Publish(e) => Self::retryable(format!("outbox publish failed: {e}")),
        }
    }
}

impl From<crate::publisher::PublishError> for HandlerError {
    /// A transient publish failure is retryable; any other (bad subject or id, too large) is poison.
    fn from(error: crate::publisher::PublishError) -> Self {
        if error.is_transient() {
            Self::retryable(format!("publish failed: {error}"))
        } else {
            Self::poison(format!("publish refused: {error}"))
        }
    }
}

/// A delivered message, handed to a [`Handler`]; the runner acks it according to the handler's result.
pub struct Delivery {
    message: async_nats::Message,
    stream: String,
    consumer: String,
    stream_sequence: u64,
    delivered: i64,
    progress: Acker,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload is left out: it is the handler's business what it may log.
        f.debug_struct("Delivery")
            .field("subject", &self.subject())
            .field("msg_id", &self.msg_id())
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("stream_sequence", &self.stream_sequence)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// The subject it was published on.
    #[must_use]
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// The subject parsed into tenant and event kind.
    ///
    /// # Errors
    ///
    /// [`SubjectError`] if the subject is not one `trustmesh-events` builds.
    pub fn parsed_subject(&self) -> Result<Subject, SubjectError> {
        Subject::parse(self.subject())
    }

    /// The tenant of the subject (`tm.<tenant>. ...`), if it is a valid tenant id.
    #[must_use]
    pub fn tenant(&self) -> Option<TenantId> {
        self.subject()
            .split('.')
            .nth(1)
            .and_then(|t| TenantId::parse(t).ok())
    }

    /// The raw payload.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        &self.message.payload
    }

    /// Decodes the payload as the protobuf message `M`.
    ///
    /// # Errors
    ///
    /// [`HandlerError::Poison`] if it does not decode: a redelivery would fail the same way.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, HandlerError> {
        M::decode(self.message.payload.as_ref()).map_err(|e| {
            HandlerError::poison(format!(
                "payload is not a valid {}: {e}",
                std::any::type_name::<M>()
            ))
        })
    }

    /// The message headers.
    #[must_use]
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.message.headers.as_ref()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .and_then(|h| h.get(name))
            .map(async_nats::HeaderValue::as_str)
    }

    /// The publisher's `Nats-Msg-Id`.
    #[must_use]
    pub fn msg_id(&self) -> Option<&str> {
        self.header(NATS_MSG_ID)
    }

    /// The `traceparent` header.
    #[must_use]
    pub fn traceparent(&self) -> Option<&str> {
        self.header(TRACEPARENT)
    }

    /// The id to record in `processed_messages`: the `Nats-Msg-Id`, or `<stream>:<sequence>` for a
    /// message published without one (stable across redeliveries either way).
    #[must_use]
    pub fn idempotency_key(&self) -> String {
        self.msg_id().map_or_else(
            || format!("{}:{}", self.stream, self.stream_sequence),
            str::to_owned,
        )
    }

    /// The stream it is stored in.
    #[must_use]
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The durable consumer that delivered it.
    #[must_use]
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Its sequence number in the stream.
    #[must_use]
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// How many times it has been delivered, this time included (1 the first time).
    #[must_use]
    pub fn delivered(&self) -> i64 {
        self.delivered
    }

    /// Tells the server the handler is still working, which restarts the ack wait; long handlers call
    /// it well within the consumer's `ack_wait`.
    ///
    /// # Errors
    ///
    /// The client error if the progress ack could not be sent.
    pub async fn in_progress(&self) -> Result<(), async_nats::Error> {
        self.progress
            .ack_with(async_nats::jetstream::AckKind::Progress)
            .await
    }
}

/// Processes deliveries; implemented by services, and by any `Fn(Delivery) -> impl Future`.
pub trait Handler: Send + Sync + 'static {
    /// Applies `delivery`'s effect durably (see [`crate::ProcessedMessages`]) and says how it went.
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutboxError;
    use crate::publisher::PublishError;

    #[test]
    fn refusals_are_poison_and_outages_are_retryable() {
        let too_large = OutboxError::TooLarge {
            len: 10,
            max: 5,
            stream: "TM_DATASET",
        };
        assert!(matches!(
            HandlerError::from(too_large),
            HandlerError::Poison { .. }
        ));
        let bad_id = PublishError::InvalidMsgId(String::new());
        assert!(matches!(
            HandlerError::from(bad_id),
            HandlerError::Poison { .. }
        ));
        let pool = sqlx::Error::PoolTimedOut;
        assert!(matches!(
            HandlerError::from(pool),
            HandlerError::Retryable { delay: None, .. }
        ));
        assert!(matches!(
            HandlerError::from(OutboxError::Database(sqlx::Error::PoolClosed)),
            HandlerError::Retryable { .. }
        ));
    }
}
