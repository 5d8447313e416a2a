//! Checks on the JetStream streams and durable consumers the services use.

// NOTE: each test binary uses a part of this module.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt as _;
use trustmesh_events::ALL_CONSUMERS;

/// Waits until every registered durable consumer has nothing pending and nothing unacknowledged.
///
/// # Panics
///
/// If a consumer is not deployed, or some are still busy after `timeout` (they are named).
pub(crate) async fn consumers_idle(js: &Context, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut busy = Vec::new();
    loop {
        busy.clear();
        for spec in ALL_CONSUMERS {
            let mut consumer: PullConsumer = js
                .get_consumer_from_stream(spec.durable_name, spec.stream.name)
                .await
                .unwrap_or_else(|e| panic!("consumer {} is not deployed: {e}", spec.durable_name));
            match consumer.info().await {
                Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
                Ok(info) => busy.push(format!(
                    "{} ({} pending, {} unacknowledged)",
                    spec.durable_name, info.num_pending, info.num_ack_pending
                )),
                Err(e) => busy.push(format!("{}: {e}", spec.durable_name)),
            }
        }
        if busy.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "consumers still busy after {timeout:?}: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Messages on `subject` (wildcards allowed) in `stream`.
pub(crate) async fn messages_on(js: &Context, stream: &str, subject: &str) -> usize {
    let stream = js.get_stream(stream).await.unwrap();
    let mut subjects = stream.info_with_subjects(subject).await.unwrap();
    let mut total = 0;
    while let Some(entry) = subjects.next().await {
        total += entry.unwrap().1;
    }
    total
}
