//! Streams and durable pull consumers from `trustmesh-events`, ensured idempotently at start.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer, ReplayPolicy};
use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use trustmesh_events::{ALL_STREAMS, ConsumerSpec, StreamSpec};

/// Why a stream or consumer could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Creating or updating a stream failed.
    #[error("cannot ensure stream {stream}")]
    Stream {
        /// The stream's name.
        stream: &'static str,
        /// What the server or client said.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// Creating or updating a durable consumer failed.
    #[error("cannot ensure consumer {consumer} on stream {stream}")]
    Consumer {
        /// The consumer's durable name.
        consumer: &'static str,
        /// The stream it reads.
        stream: &'static str,
        /// What the server or client said.
        #[source]
        source: jetstream::stream::ConsumerError,
    },
}

/// The JetStream config of a stream: file storage, limits retention, discard old, the spec's age,
/// dedupe window and message size limits, on `replicas` servers.
#[must_use]
pub fn stream_config(spec: &StreamSpec, replicas: usize) -> stream::Config {
    stream::Config {
        name: spec.name.to_owned(),
        subjects: spec.subjects.iter().map(|s| (*s).to_owned()).collect(),
        description: Some(spec.description.to_owned()),
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: spec.max_age,
        duplicate_window: spec.duplicate_window,
        max_message_size: spec.max_message_bytes,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

/// The JetStream config of a durable pull consumer: explicit acks, every message from the start, the
/// spec's filter, ack wait, delivery limit and in-flight limit.
#[must_use]
pub fn consumer_config(spec: &ConsumerSpec) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(spec.durable_name.to_owned()),
        description: Some(spec.description.to_owned()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        max_deliver: spec.max_deliver,
        filter_subject: spec.filter_subject.to_owned(),
        replay_policy: ReplayPolicy::Instant,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    }
}

/// Creates every stream of `trustmesh-events` ([`ALL_STREAMS`]) with one replica, or updates it to
/// the declared config; running it again changes nothing.
///
/// # Errors
///
/// [`SetupError::Stream`] if the server refuses a stream or cannot be reached.
pub async fn ensure_streams(jetstream: &Context) -> Result<(), SetupError> {
    ensure_streams_with_replicas(jetstream, 1).await
}

/// [`ensure_streams`] with `replicas` replicas per stream (3 on a production cluster).
///
/// # Errors
///
/// [`SetupError::Stream`] if the server refuses a stream or cannot be reached.
pub async fn ensure_streams_with_replicas(
    jetstream: &Context,
    replicas: usize,
) -> Result<(), SetupError> {
    for spec in ALL_STREAMS {
        ensure_stream(jetstream, spec, replicas).await?;
    }
    Ok(())
}

/// Creates the stream of `spec`, or updates it to the declared config.
///
/// # Errors
///
/// [`SetupError::Stream`] if the server refuses the stream or cannot be reached.
pub async fn ensure_stream(
    jetstream: &Context,
    spec: &'static StreamSpec,
    replicas: usize,
) -> Result<(), SetupError> {
    let config = stream_config(spec, replicas);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match jetstream.create_or_update_stream(config.clone()).await {
            Ok(_) => {
                tracing::debug!(messaging.destination.name = spec.name, "Stream ensured.");
                return Ok(());
            }
            // NOTE: two replicas starting together can both see "not found" and race to create; the
            // loser gets "already in use" and succeeds by updating on the next attempt.
            Err(e) if attempt < 3 && name_in_use(&e) => {
                tracing::debug!(messaging.destination.name = spec.name, error = %e, "Retrying stream ensure.");
            }
            Err(source) => {
                return Err(SetupError::Stream {
                    stream: spec.name,
                    source,
                });
            }
        }
    }
}

fn name_in_use(error: &jetstream::context::CreateStreamError) -> bool {
    matches!(error.kind(), CreateStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NAME_EXIST)
}

/// Creates the durable pull consumer of `spec` on its stream, or updates it to the declared config,
/// and returns it bound; running it again changes nothing.
///
/// # Errors
///
/// [`SetupError::Consumer`] if the stream is missing or the server refuses the consumer.
pub async fn ensure_consumer(
    jetstream: &Context,
    spec: &'static ConsumerSpec,
) -> Result<PullConsumer, SetupError> {
    jetstream
        .create_consumer_on_stream(consumer_config(spec), spec.stream.name)
        .await
        .map_err(|source| SetupError::Consumer {
            consumer: spec.durable_name,
            stream: spec.stream.name,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_carry_the_declared_limits() {
        let config = stream_config(&trustmesh_events::TM_DATASET, 3);
        assert_eq!(config.name, "TM_DATASET");
        assert_eq!(config.subjects, ["tm.*.dataset.>"]);
        assert_eq!(config.storage, StorageType::File);
        assert_eq!(
            config.duplicate_window,
            trustmesh_events::TM_DATASET.duplicate_window
        );
        assert_eq!(config.num_replicas, 3);
        assert_eq!(
            stream_config(&trustmesh_events::TM_DATASET, 0).num_replicas,
            1
        );

        let consumer = consumer_config(&trustmesh_events::AUDIT_EVENTS);
        assert_eq!(consumer.durable_name.as_deref(), Some("audit-events"));
        assert_eq!(consumer.ack_policy, AckPolicy::Explicit);
        assert_eq!(
            consumer.max_deliver,
            trustmesh_events::AUDIT_EVENTS.max_deliver
        );
        assert_eq!(consumer.filter_subject, "tm.*.audit.>");
    }
}
