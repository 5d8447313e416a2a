//! Acked JetStream publishes with `Nats-Msg-Id` and `traceparent`, retried on transient failures.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, Context};
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use trustmesh_events::Subject;
use trustmesh_events::headers::NATS_MSG_ID;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message id is empty or contains characters a header value cannot hold.
    #[error("invalid message id {0:?}")]
    InvalidMsgId(String),
    /// The subject is not a concrete NATS subject (empty token, wildcard or whitespace).
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// The server refused the message or did not ack it, after the retries the policy allows.
    #[error("publish to {subject} failed")]
    Nats {
        /// The subject published to.
        subject: String,
        /// The last error.
        #[source]
        source: jetstream::context::PublishError,
    },
}

impl PublishError {
    /// Whether trying again later may succeed (no ack, no connection, no stream yet).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::InvalidMsgId(_) | Self::InvalidSubject(_) => false,
            Self::Nats { source, .. } => is_transient_kind(source.kind()),
        }
    }
}

fn is_transient_kind(kind: PublishErrorKind) -> bool {
    match kind {
        // NOTE: "no stream" is transient because during a server restart JetStream answers
        // "no responders" until its streams are loaded; subjects come from `trustmesh-events`, whose
        // streams are ensured at start, so a truly missing stream also ends after the bounded retries.
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::Other => true,
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxPayloadExceeded => false,
    }
}

/// How often and how long a publish is retried: exponential backoff with jitter, bounded by attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// The first delay.
    pub min_delay: Duration,
    /// The largest delay (before jitter).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six retries from 100 ms up to 5 s: about 10-20 s in all, enough to ride out a server restart.
    fn default() -> Self {
        Self {
            max_retries: 6,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The backon builder of this policy (factor 2, jitter on).
    #[must_use]
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// Publishes events to JetStream and awaits each ack; cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    jetstream: Context,
    retry: RetryPolicy,
}

impl Publisher {
    /// A publisher on `jetstream` with the default [`RetryPolicy`].
    #[must_use]
    pub fn new(jetstream: Context) -> Self {
        Self {
            jetstream,
            retry: RetryPolicy::default(),
        }
    }

    /// The same publisher with another retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The JetStream context it publishes with.
    #[must_use]
    pub fn jetstream(&self) -> &Context {
        &self.jetstream
    }

    /// Publishes a protobuf `message` on `subject` with `Nats-Msg-Id: msg_id` (see
    /// `trustmesh_events::msg_id`) and the current `traceparent`, and returns the stream's ack;
    /// `ack.duplicate` is true when the stream already had `msg_id`.
    ///
    /// # Errors
    ///
    /// [`PublishError`] when the message id is unusable, or the server does not ack the message after
    /// the retries of the [`RetryPolicy`].
    pub async fn publish(
        &self,
        subject: &Subject,
        message: &impl prost::Message,
        msg_id: &str,
    ) -> Result<PublishAck, PublishError> {
        self.publish_bytes(subject, Bytes::from(message.encode_to_vec()), msg_id)
            .await
    }

    /// [`Publisher::publish`] with an already encoded payload.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish`].
    pub async fn publish_bytes(
        &self,
        subject: &Subject,
        payload: Bytes,
        msg_id: &str,
    ) -> Result<PublishAck, PublishError> {
        self.publish_raw(subject.as_str(), HeaderMap::new(), payload, msg_id)
            .await
    }

    /// Publishes on a subject string with extra `headers`; `Nats-Msg-Id` is set to `msg_id`, and
    /// the trace headers to the current span's unless `headers` has a `traceparent`. For the outbox relay and dead
    /// letters, whose subjects were validated when they were built.
    pub(crate) async fn publish_raw(
        &self,
        subject: &str,
        mut headers: HeaderMap,
        payload: Bytes,
        msg_id: &str,
    ) -> Result<PublishAck, PublishError> {
        validate_subject(subject)?;
        validate_msg_id(msg_id)?;
        headers.insert(NATS_MSG_ID, msg_id);
        crate::trace::inject(&mut headers);
        let attempt = || async {
            let ack = self
                .jetstream
                .publish_with_headers(subject.to_owned(), headers.clone(), payload.clone())
                .await?;
            ack.await
        };
        attempt
            .retry(self.retry.backoff())
            .sleep(tokio::time::sleep)
            .when(|e: &jetstream::context::PublishError| is_transient_kind(e.kind()))
            .notify(|e, delay| {
                tracing::warn!(
                    messaging.destination.name = subject,
                    messaging.message.id = msg_id,
                    error = %e,
                    retry_in_ms = delay.as_millis(),
                    "Publish was not acked; retrying."
                );
            })
            .await
            .map_err(|source| PublishError::Nats {
                subject: subject.to_owned(),
                source,
            })
    }
}

/// Checks that `msg_id` can be a `Nats-Msg-Id`: 1 to 1024 printable ASCII characters.
pub(crate) fn validate_msg_id(msg_id: &str) -> Result<(), PublishError> {
    let valid =
        !msg_id.is_empty() && msg_id.len() <= 1024 && msg_id.chars().all(|c| c.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(PublishError::InvalidMsgId(msg_id.to_owned()))
    }
}

fn validate_subject(subject: &str) -> Result<(), PublishError> {
    let valid = !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        });
    if valid {
        Ok(())
    } else {
        Err(PublishError::InvalidSubject(subject.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_must_be_concrete() {
        assert!(validate_subject("tm.acme.dataset.ingested").is_ok());
        for bad in [
            "",
            "tm..x",
            "tm.*.dataset",
            "tm.acme.>",
            "tm.a b.x",
            "tm.acme.\r\n",
        ] {
            assert!(validate_subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn msg_ids_must_be_printable_ascii() {
        assert!(
            validate_msg_id("acme.dataset.ingested:01900000-0000-7000-8000-000000000001").is_ok()
        );
        for bad in ["", "a b", "a\r\nb", "é", &"a".repeat(1025)] {
            assert!(validate_msg_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_transient_kinds_are_retried() {
        assert!(is_transient_kind(PublishErrorKind::TimedOut));
        assert!(is_transient_kind(PublishErrorKind::StreamNotFound));
        assert!(!is_transient_kind(PublishErrorKind::MaxPayloadExceeded));
        assert!(!is_transient_kind(PublishErrorKind::WrongLastSequence));
    }

    #[test]
    fn the_default_policy_is_bounded_and_jittered() {
        let delays: Vec<Duration> =
            backon::BackoffBuilder::build(RetryPolicy::default().backoff()).collect();
        assert_eq!(delays.len(), 6);
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
    }
}
