//! Dead-lettering messages whose last delivery was never settled (the handler crashed or hung).
//!
//! The runner dead-letters a message itself when its last allowed delivery fails; but when that
//! delivery is lost (a crash, an aborted task), the server gives up on its own and only says so in a
//! `MAX_DELIVERIES` advisory. The runner listens for it, reads the message back from the stream and
//! dead-letters it. Every replica hears the advisory; the dead letter's `Nats-Msg-Id` makes the
//! copies one.

use async_nats::Subscriber;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::dead_letter::{DeadLetter, Origin};
use crate::publisher::Publisher;
use trustmesh_events::ConsumerSpec;
use trustmesh_telemetry::ConsumerMetrics;

/// The advisory subject for `spec`'s consumer.
pub(super) fn subject(spec: &ConsumerSpec) -> String {
    format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
        spec.stream.name, spec.durable_name
    )
}

/// The fields of `io.nats.jetstream.advisory.v1.max_deliver` the runner needs.
#[derive(Debug, serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: i64,
}

/// Dead-letters the message of every advisory on `subscriber` until `stop` is cancelled, counting
/// each in `metrics`.
pub(super) async fn watch(
    mut subscriber: Subscriber,
    spec: &'static ConsumerSpec,
    publisher: Publisher,
    metrics: ConsumerMetrics,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = subscriber.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let advisory: MaxDeliveries = match serde_json::from_slice(&message.payload) {
            Ok(advisory) => advisory,
            Err(e) => {
                tracing::warn!(error = %e, "Ignoring an unreadable max-deliveries advisory.");
                continue;
            }
        };
        if let Err(e) = dead_letter(spec, &publisher, &metrics, &advisory).await {
            tracing::error!(
                messaging.consumer.group.name = spec.durable_name,
                stream_sequence = advisory.stream_seq,
                error = %e,
                "A message exceeded its deliveries and could not be dead-lettered; it stays in the stream."
            );
        }
    }
    let _ = subscriber.unsubscribe().await;
}

async fn dead_letter(
    spec: &'static ConsumerSpec,
    publisher: &Publisher,
    metrics: &ConsumerMetrics,
    advisory: &MaxDeliveries,
) -> Result<(), async_nats::Error> {
    let stream = publisher
        .jetstream()
        .get_stream_no_info(spec.stream.name)
        .await?;
    let stored = stream.get_raw_message(advisory.stream_seq).await?;
    let origin = Origin {
        subject: stored.subject.as_str().to_owned(),
        headers: Some(stored.headers),
        stream: spec.stream.name.to_owned(),
        sequence: advisory.stream_seq,
        delivered: advisory.deliveries,
    };
    let reason = format!(
        "exceeded {} deliveries without being settled",
        advisory.deliveries
    );
    let dead = DeadLetter::new(&origin, spec, &reason);
    let ack = publisher
        .publish_raw(
            &dead.subject,
            dead.headers.clone(),
            stored.payload,
            &dead.msg_id,
        )
        .await?;
    // Every replica hears the advisory; only the one whose dead letter was not a duplicate counts it.
    if !ack.duplicate {
        metrics.dead_lettered();
        dead.audit(publisher, spec).await;
    }
    tracing::warn!(
        messaging.consumer.group.name = spec.durable_name,
        dead_letter.subject = dead.subject,
        "A message exceeded its deliveries; moved to the dead-letter subject."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_advisory() {
        let payload = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-01-01T00:00:00Z","stream":"TM_DATASET","consumer":"notifier-dataset","stream_seq":42,"deliveries":5}"#;
        let advisory: MaxDeliveries = serde_json::from_slice(payload).expect("advisory");
        assert_eq!((advisory.stream_seq, advisory.deliveries), (42, 5));
        assert_eq!(
            subject(&trustmesh_events::NOTIFIER_DATASET),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TM_DATASET.notifier-dataset"
        );
    }
}
