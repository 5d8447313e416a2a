//! The consumer runner: crash redelivery processed once, dead letters, retries, fatal stop, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use futures::StreamExt;
use sqlx::{Postgres, Transaction};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use trustmesh_bus::consumer::dead_letter;
use trustmesh_bus::{
    ConsumerRunner, Delivery, HandlerError, Processed, ProcessedMessages, Publisher, RunnerError,
    RunnerOptions, SchemaName, ensure_consumer, ensure_schema,
};
use trustmesh_events::{Subject, TM_DATASET, TM_DLQ};
use trustmesh_testkit::postgres::TestDatabase;

use crate::common::{
    TEST_CONSUMER, acme, consumer_drained, eventually, fast_options, nats_with_streams,
};

async fn consumer(jetstream: &Context) -> PullConsumer {
    ensure_consumer(jetstream, &TEST_CONSUMER)
        .await
        .expect("consumer")
}

async fn publish(jetstream: &Context, payload: &'static [u8], msg_id: &str) {
    Publisher::new(jetstream.clone())
        .publish_bytes(
            &Subject::dataset_ingested(&acme()),
            Bytes::from_static(payload),
            msg_id,
        )
        .await
        .expect("publish");
}

/// Subscribes to the tenant's dead letters of the test consumer (an ordered consumer on `TM_DLQ`).
async fn dead_letters(jetstream: &Context) -> async_nats::jetstream::consumer::pull::Ordered {
    let stream = jetstream.get_stream(TM_DLQ.name).await.expect("dlq stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "tm.acme.dlq.test-dataset".to_owned(),
            ..Default::default()
        })
        .await
        .expect("dlq consumer");
    consumer.messages().await.expect("dlq messages")
}

/// The test consumer's DB effect: one row per applied message.
async fn record_effect(
    tx: &mut Transaction<'static, Postgres>,
    key: String,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO notifier.effects (msg_id) VALUES ($1)")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_message_redelivered_after_a_consumer_crash_is_processed_once() {
    let (_nats, jetstream) = nats_with_streams().await;
    let db = TestDatabase::create().await;
    let schema = SchemaName::new("notifier").expect("schema");
    ensure_schema(db.pool(), &schema).await.expect("bus tables");
    sqlx::query("CREATE TABLE notifier.effects (msg_id text NOT NULL)")
        .execute(db.pool())
        .await
        .expect("effects");
    let processed = ProcessedMessages::new(db.pool().clone(), &schema, TEST_CONSUMER.durable_name);
    publish(&jetstream, b"once", "m-crash").await;

    // First run: the effect commits, then the process "crashes" before the ack (the handler hangs and
    // the runner's task is aborted).
    let committed = Arc::new(Notify::new());
    let crashing = ConsumerRunner::new(
        consumer(&jetstream).await,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            let processed = processed.clone();
            let committed = committed.clone();
            move |delivery: Delivery| {
                let processed = processed.clone();
                let committed = committed.clone();
                async move {
                    let key = delivery.idempotency_key();
                    processed
                        .process_once(&key.clone(), move |tx| Box::pin(record_effect(tx, key)))
                        .await?;
                    committed.notify_one();
                    std::future::pending::<()>().await;
                    Ok(())
                }
            }
        },
    )
    .with_options(fast_options());
    let crashed = tokio::spawn(crashing.run(CancellationToken::new()));
    committed.notified().await;
    crashed.abort();
    assert!(crashed.await.expect_err("aborted").is_cancelled());

    // Second run: the redelivery finds the id recorded and only acks.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let runner = ConsumerRunner::new(
        consumer(&jetstream).await,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            let processed = processed.clone();
            move |delivery: Delivery| {
                let processed = processed.clone();
                let seen_tx = seen_tx.clone();
                async move {
                    let key = delivery.idempotency_key();
                    let outcome = processed
                        .process_once(&key.clone(), move |tx| Box::pin(record_effect(tx, key)))
                        .await?;
                    let _ = seen_tx.send((delivery.delivered(), outcome));
                    Ok::<_, HandlerError>(())
                }
            }
        },
    )
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    let (delivered, outcome) = seen.recv().await.expect("redelivery");
    assert_eq!(delivered, 2, "it is the redelivery");
    assert_eq!(outcome, Processed::AlreadyProcessed);
    consumer_drained(&jetstream, TM_DATASET.name, TEST_CONSUMER.durable_name).await;
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM notifier.effects")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(effects, 1, "the effect happened exactly once");
    assert!(processed.is_processed("m-crash").await.expect("lookup"));

    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn a_poison_message_lands_in_the_dead_letter_subject_and_does_not_block_the_next() {
    let (_nats, jetstream) = nats_with_streams().await;
    let mut dlq = dead_letters(&jetstream).await;
    publish(&jetstream, b"poison", "m-poison").await;
    publish(&jetstream, b"fine", "m-fine").await;

    let (done_tx, mut done) = mpsc::unbounded_channel();
    let runner = ConsumerRunner::new(
        consumer(&jetstream).await,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            move |delivery: Delivery| {
                let done_tx = done_tx.clone();
                async move {
                    if delivery.payload().as_ref() == b"poison" {
                        return Err(HandlerError::poison("payload is not a dataset event"));
                    }
                    let _ = done_tx.send(delivery.msg_id().map(str::to_owned));
                    Ok(())
                }
            }
        },
    )
    .with_options(RunnerOptions {
        max_in_flight: 1,
        ..fast_options()
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    assert_eq!(
        done.recv().await.expect("next message").as_deref(),
        Some("m-fine")
    );
    let dead = dlq.next().await.expect("a dead letter").expect("message");
    assert_eq!(dead.subject.as_str(), "tm.acme.dlq.test-dataset");
    assert_eq!(dead.payload.as_ref(), b"poison");
    let header = |name: &str| {
        dead.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    assert_eq!(
        header(dead_letter::REASON).as_deref(),
        Some("payload is not a dataset event")
    );
    assert_eq!(
        header(dead_letter::ORIGINAL_SUBJECT).as_deref(),
        Some("tm.acme.dataset.ingested")
    );
    assert_eq!(
        header(dead_letter::ORIGINAL_MSG_ID).as_deref(),
        Some("m-poison")
    );
    assert_eq!(
        header(dead_letter::CONSUMER).as_deref(),
        Some("test-dataset")
    );
    assert_eq!(
        header(dead_letter::DELIVERIES).as_deref(),
        Some("1"),
        "poison is not retried"
    );
    assert!(
        header("traceparent").is_some(),
        "the trace goes on in the dead letter"
    );

    consumer_drained(&jetstream, TM_DATASET.name, TEST_CONSUMER.durable_name).await;
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn an_undecodable_payload_is_poison() {
    let (_nats, jetstream) = nats_with_streams().await;
    let mut dlq = dead_letters(&jetstream).await;
    // Field 1 as a varint with its continuation bit set and nothing after it: not a protobuf message.
    publish(&jetstream, b"\x08\xff", "m-garbage").await;

    let runner = ConsumerRunner::new(
        consumer(&jetstream).await,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            move |delivery: Delivery| async move {
                let _event: prost_types::Duration = delivery.decode()?;
                Ok(())
            }
        },
    )
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    let dead = dlq.next().await.expect("a dead letter").expect("message");
    let reason = dead
        .headers
        .as_ref()
        .and_then(|h| h.get(dead_letter::REASON))
        .expect("reason")
        .as_str()
        .to_owned();
    assert!(
        reason.starts_with("payload is not a valid prost_types::"),
        "{reason}"
    );
    consumer_drained(&jetstream, TM_DATASET.name, TEST_CONSUMER.durable_name).await;
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn retryable_errors_are_redelivered_and_succeed() {
    let (_nats, jetstream) = nats_with_streams().await;
    publish(&jetstream, b"flaky", "m-flaky").await;

    let attempts = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let runner = ConsumerRunner::new(
        consumer(&jetstream).await,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            let attempts = attempts.clone();
            move |delivery: Delivery| {
                let attempts = attempts.clone();
                let done_tx = done_tx.clone();
                async move {
                    if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(HandlerError::retryable("dependency unavailable"));
                    }
                    let _ = done_tx.send(delivery.delivered());
                    Ok(())
                }
            }
        },
    )
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    assert_eq!(done.recv().await, Some(2), "handled on the second delivery");
    consumer_drained(&jetstream, TM_DATASET.name, TEST_CONSUMER.durable_name).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn a_message_failing_max_deliver_times_is_dead_lettered() {
    let (_nats, jetstream) = nats_with_streams().await;
    let mut dlq = dead_letters(&jetstream).await;
    publish(&jetstream, b"always fails", "m-stuck").await;

    let attempts = Arc::new(AtomicUsize::new(0));
    let runner = ConsumerRunner::new(
        consumer(&jetstream).await,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            let attempts = attempts.clone();
            move |_delivery: Delivery| {
                let attempts = attempts.clone();
                async move {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    Err(HandlerError::retry_after(
                        "still down",
                        Duration::from_millis(10),
                    ))
                }
            }
        },
    )
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    let dead = dlq.next().await.expect("a dead letter").expect("message");
    let header = |name: &str| {
        dead.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    assert_eq!(header(dead_letter::DELIVERIES).as_deref(), Some("3"));
    assert_eq!(
        header(dead_letter::REASON).as_deref(),
        Some("gave up after 3 deliveries: still down")
    );
    consumer_drained(&jetstream, TM_DATASET.name, TEST_CONSUMER.durable_name).await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "max_deliver bounds the attempts"
    );
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn a_message_whose_deliveries_all_crash_is_dead_lettered_from_the_server_advisory() {
    let (_nats, jetstream) = nats_with_streams().await;
    let mut dlq = dead_letters(&jetstream).await;
    publish(&jetstream, b"crashes the handler", "m-crashy").await;
    publish(&jetstream, b"fine", "m-after").await;

    let attempts = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let runner = ConsumerRunner::new(
        consumer(&jetstream).await,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            let attempts = attempts.clone();
            move |delivery: Delivery| {
                let attempts = attempts.clone();
                let done_tx = done_tx.clone();
                async move {
                    if delivery.payload().as_ref() == b"crashes the handler" {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        // Never settled: the guard naks as the task unwinds, like a crash mid-handler.
                        panic!("handler bug (expected in this test)");
                    }
                    let _ = done_tx.send(delivery.msg_id().map(str::to_owned));
                    Ok(())
                }
            }
        },
    )
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    assert_eq!(
        done.recv().await.flatten().as_deref(),
        Some("m-after"),
        "the crashing message does not block"
    );
    let dead = dlq.next().await.expect("a dead letter").expect("message");
    let header = |name: &str| {
        dead.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    assert_eq!(dead.payload.as_ref(), b"crashes the handler");
    assert_eq!(
        header(dead_letter::ORIGINAL_MSG_ID).as_deref(),
        Some("m-crashy")
    );
    assert_eq!(
        header(dead_letter::REASON).as_deref(),
        Some("exceeded 3 deliveries without being settled")
    );
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "max_deliver bounds the attempts"
    );
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn a_fatal_error_stops_the_runner_and_keeps_the_message() {
    let (_nats, jetstream) = nats_with_streams().await;
    publish(&jetstream, b"x", "m-fatal").await;

    let runner = ConsumerRunner::new(consumer(&jetstream).await, &TEST_CONSUMER, Publisher::new(jetstream.clone()), {
        move |_delivery: Delivery| async move { Err(HandlerError::fatal("credentials revoked")) }
    })
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let result = runner.run(shutdown.clone()).await;

    assert_eq!(
        result,
        Err(RunnerError::Fatal {
            consumer: "test-dataset",
            reason: "credentials revoked".to_owned()
        })
    );
    assert!(
        !shutdown.is_cancelled(),
        "the caller's token is left to the caller"
    );
    let mut bound = consumer(&jetstream).await;
    assert_eq!(
        bound.info().await.expect("info").ack_floor.stream_sequence,
        0,
        "the message was not acked"
    );

    // A healthy replica gets it.
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let healthy = ConsumerRunner::new(bound, &TEST_CONSUMER, Publisher::new(jetstream.clone()), {
        move |delivery: Delivery| {
            let done_tx = done_tx.clone();
            async move {
                let _ = done_tx.send(delivery.msg_id().map(str::to_owned));
                Ok(())
            }
        }
    })
    .with_options(fast_options());
    let running = tokio::spawn(healthy.run(shutdown.clone()));
    assert_eq!(done.recv().await.flatten().as_deref(), Some("m-fatal"));
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn shutdown_lets_in_flight_handlers_finish_and_ack() {
    let (_nats, jetstream) = nats_with_streams().await;
    publish(&jetstream, b"slow", "m-slow").await;

    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let runner = ConsumerRunner::new(
        consumer(&jetstream).await,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            let (started, release, finished) = (started.clone(), release.clone(), finished.clone());
            move |_delivery: Delivery| {
                let (started, release, finished) =
                    (started.clone(), release.clone(), finished.clone());
                async move {
                    started.notify_one();
                    release.notified().await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        },
    )
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    started.notified().await;
    shutdown.cancel();
    // The runner waits for the handler rather than dropping it.
    tokio::task::yield_now().await;
    assert!(
        !running.is_finished(),
        "the runner waits for its in-flight handler"
    );
    release.notify_one();
    running.await.expect("task").expect("clean stop");
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    consumer_drained(&jetstream, TM_DATASET.name, TEST_CONSUMER.durable_name).await;
}

#[tokio::test]
async fn no_more_handlers_run_at_once_than_allowed() {
    let (_nats, jetstream) = nats_with_streams().await;
    for i in 0..20 {
        Publisher::new(jetstream.clone())
            .publish_bytes(
                &Subject::dataset_ingested(&acme()),
                Bytes::from_static(b"n"),
                &format!("m-{i}"),
            )
            .await
            .expect("publish");
    }

    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let runner = ConsumerRunner::new(
        consumer(&jetstream).await,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            let (in_flight, peak, handled) = (in_flight.clone(), peak.clone(), handled.clone());
            move |_delivery: Delivery| {
                let (in_flight, peak, handled) = (in_flight.clone(), peak.clone(), handled.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        },
    )
    .with_options(RunnerOptions {
        max_in_flight: 3,
        ..fast_options()
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    eventually("all 20 handled", || async {
        (handled.load(Ordering::SeqCst) == 20).then_some(())
    })
    .await;
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(peak.load(Ordering::SeqCst) >= 1);
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}
