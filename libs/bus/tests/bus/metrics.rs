//! The runner's metrics: a redelivery, a dead letter and the consumer's lag, on `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use trustmesh_bus::{ConsumerRunner, Delivery, HandlerError, Publisher, ensure_consumer};
use trustmesh_events::{ConsumerAudit, ConsumerSpec, Service, Subject, TM_DATASET};
use trustmesh_telemetry::Metrics;

use crate::common::{acme, consumer_drained, eventually, fast_options, nats_with_streams};

/// A consumer of its own (so that no other test moves its series) that gives up after two deliveries.
static METERED: ConsumerSpec = ConsumerSpec {
    durable_name: "test-metered",
    service: Service::Notifier,
    stream: &TM_DATASET,
    filter_subject: "tm.*.dataset.>",
    max_deliver: 2,
    ack_wait: Duration::from_secs(30),
    max_ack_pending: 64,
    description: "bus metrics test",
    audit: ConsumerAudit::Nothing("a test consumer of no tenant's data."),
};

/// The value of the `test-metered` series of `family` (with `extra` labels) in `text`.
fn value(text: &str, family: &str, extra: &str) -> Option<f64> {
    let prefix = format!(
        "{family}{{service=\"bus-test\",stream=\"TM_DATASET\",consumer=\"test-metered\"{extra}}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn redeliveries_dead_letters_and_lag_are_counted() {
    let (_nats, jetstream) = nats_with_streams().await;
    let publisher = Publisher::new(jetstream.clone());
    for (payload, id) in [(&b"flaky"[..], "m-flaky"), (b"stuck", "m-stuck")] {
        publisher
            .publish_bytes(
                &Subject::dataset_ingested(&acme()),
                Bytes::from_static(payload),
                id,
            )
            .await
            .expect("publish");
    }
    let metrics = Metrics::new("bus-test");
    let consumer = ensure_consumer(&jetstream, &METERED)
        .await
        .expect("consumer");
    let flaky_seen = Arc::new(AtomicUsize::new(0));
    let runner = ConsumerRunner::new(consumer, &METERED, publisher.clone(), {
        let flaky_seen = flaky_seen.clone();
        move |delivery: Delivery| {
            let flaky_seen = flaky_seen.clone();
            async move {
                if delivery.payload().as_ref() == b"stuck" {
                    return Err(HandlerError::retry_after(
                        "still down",
                        Duration::from_millis(10),
                    ));
                }
                if flaky_seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(HandlerError::retryable("dependency unavailable"));
                }
                Ok(())
            }
        }
    })
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));
    consumer_drained(&jetstream, TM_DATASET.name, METERED.durable_name).await;

    eventually("the metrics show the deliveries", || async {
        let text = metrics.render();
        let acked = value(
            &text,
            "trustmesh_consumer_deliveries_total",
            ",outcome=\"Acked\"",
        );
        let retried = value(
            &text,
            "trustmesh_consumer_deliveries_total",
            ",outcome=\"Retried\"",
        );
        let dead = value(
            &text,
            "trustmesh_consumer_deliveries_total",
            ",outcome=\"DeadLettered\"",
        );
        // Both messages were redelivered once: the flaky one succeeded, the stuck one was given up.
        (acked == Some(1.0)
            && retried == Some(2.0)
            && dead == Some(1.0)
            && value(&text, "trustmesh_consumer_redeliveries_total", "") == Some(2.0)
            && value(&text, "trustmesh_dead_letters_total", "") == Some(1.0)
            && value(&text, "trustmesh_consumer_pending", "") == Some(0.0)
            && value(&text, "trustmesh_consumer_ack_pending", "") == Some(0.0))
        .then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}

/// A consumer of its own whose handler never settles (it panics), given up by the server.
static CRASHING: ConsumerSpec = ConsumerSpec {
    durable_name: "test-metered-crash",
    service: Service::Notifier,
    stream: &TM_DATASET,
    filter_subject: "tm.*.dataset.>",
    max_deliver: 2,
    ack_wait: Duration::from_secs(30),
    max_ack_pending: 64,
    description: "bus metrics test: crashing handler",
    audit: ConsumerAudit::Nothing("a test consumer of no tenant's data."),
};

#[tokio::test]
async fn a_dead_letter_from_the_server_advisory_is_counted() {
    let (_nats, jetstream) = nats_with_streams().await;
    let publisher = Publisher::new(jetstream.clone());
    publisher
        .publish_bytes(
            &Subject::dataset_ingested(&acme()),
            Bytes::from_static(b"crashes the handler"),
            "m-crashy",
        )
        .await
        .expect("publish");
    let metrics = Metrics::new("bus-test");
    let consumer = ensure_consumer(&jetstream, &CRASHING)
        .await
        .expect("consumer");
    let runner = ConsumerRunner::new(
        consumer,
        &CRASHING,
        publisher,
        |delivery: Delivery| async move {
            // Never settled: the guard naks as the task unwinds, like a crash mid-handler, so only
            // the server's MAX_DELIVERIES advisory tells the runner to dead-letter it.
            assert!(
                delivery.delivered() == 0,
                "handler bug (expected in this test)"
            );
            Ok::<(), HandlerError>(())
        },
    )
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    let prefix = "trustmesh_dead_letters_total{service=\"bus-test\",stream=\"TM_DATASET\",\
                  consumer=\"test-metered-crash\"} ";
    eventually("the dead letter is counted", || async {
        let text = metrics.render();
        let dead = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.parse::<f64>().ok());
        (dead == Some(1.0)).then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}
