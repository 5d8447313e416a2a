//! Publishes are acked, carry `Nats-Msg-Id` and `traceparent`, are deduplicated, and ride out a restart.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::TraceContextExt;
use trustmesh_bus::{Publisher, RetryPolicy};
use trustmesh_events::{Subject, TM_DATASET};

use crate::common::{acme, nats_with_streams, stream_len};

#[tokio::test]
async fn a_duplicate_publish_with_the_same_msg_id_is_dropped_by_the_stream() {
    let (_nats, jetstream) = nats_with_streams().await;
    let publisher = Publisher::new(jetstream.clone());
    let subject = Subject::dataset_ingested(&acme());

    let first = publisher
        .publish_bytes(&subject, Bytes::from_static(b"one"), "m-1")
        .await
        .expect("first");
    let again = publisher
        .publish_bytes(&subject, Bytes::from_static(b"one"), "m-1")
        .await
        .expect("again");
    let other = publisher
        .publish_bytes(&subject, Bytes::from_static(b"two"), "m-2")
        .await
        .expect("other");

    assert!(!first.duplicate);
    assert!(again.duplicate, "the stream reports the duplicate");
    assert_eq!(again.sequence, first.sequence);
    assert!(!other.duplicate);
    assert_eq!(stream_len(&jetstream, TM_DATASET.name).await, 2);
}

#[tokio::test]
async fn a_published_message_carries_its_msg_id_and_a_traceparent() {
    let (_nats, jetstream) = nats_with_streams().await;
    let publisher = Publisher::new(jetstream.clone());
    let subject = Subject::dataset_failed(&acme());
    let payload = prost_types::Duration {
        seconds: 7,
        nanos: 0,
    };

    let ack = publisher
        .publish(&subject, &payload, "acme.dataset.failed:1")
        .await
        .expect("publish");

    let stream = jetstream.get_stream(TM_DATASET.name).await.expect("stream");
    let stored = stream
        .get_raw_message(ack.sequence)
        .await
        .expect("stored message");
    assert_eq!(stored.subject.as_str(), "tm.acme.dataset.failed");
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("acme.dataset.failed:1")
    );
    let traceparent = stored
        .headers
        .get("traceparent")
        .expect("traceparent")
        .as_str()
        .to_owned();
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.clone())]);
    let remote = trustmesh_telemetry::extract_context(&carrier);
    assert!(remote.span().span_context().is_valid(), "{traceparent}");
    let decoded: prost_types::Duration =
        prost::Message::decode(stored.payload).expect("protobuf payload");
    assert_eq!(decoded, payload);
}

#[tokio::test]
async fn a_publish_during_a_server_restart_is_retried_until_acked_once() {
    let (mut nats, jetstream) = nats_with_streams().await;
    // Generous bounds: the test must not depend on how fast the server comes back.
    let publisher = Publisher::new(jetstream.clone()).with_retry(RetryPolicy {
        max_retries: 60,
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
    });
    let subject = Subject::dataset_ingested(&acme());

    nats.kill();
    let publishing = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            publisher
                .publish_bytes(&subject, Bytes::from_static(b"x"), "during-restart")
                .await
        }
    });
    nats.restart().await;

    let ack = publishing
        .await
        .expect("task")
        .expect("acked after the restart");
    assert_eq!(ack.stream, TM_DATASET.name);
    assert_eq!(
        stream_len(&jetstream, TM_DATASET.name).await,
        1,
        "retries reuse the msg id, so no duplicate"
    );
}

#[tokio::test]
async fn invalid_msg_ids_are_refused_before_sending() {
    let (_nats, jetstream) = nats_with_streams().await;
    let publisher = Publisher::new(jetstream.clone());
    let subject = Subject::dataset_ingested(&acme());
    let error = publisher
        .publish_bytes(&subject, Bytes::new(), "bad id\r\n")
        .await
        .expect_err("refused");
    assert!(!error.is_transient());
    assert_eq!(stream_len(&jetstream, TM_DATASET.name).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_publish_to_an_unreachable_server_gives_up_after_the_bounded_retries() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .expect("client");
    let ack_timeout = Duration::from_secs(2);
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(ack_timeout)
        .build(client);
    let policy = RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    let publisher = Publisher::new(jetstream).with_retry(policy);

    let started = tokio::time::Instant::now();
    let error = publisher
        .publish_bytes(&Subject::dataset_ingested(&acme()), Bytes::new(), "m-lost")
        .await
        .expect_err("nobody acks");
    let elapsed = started.elapsed();

    assert!(error.is_transient(), "{error:?}");
    // Four attempts, each waiting out the ack timeout, and three jittered delays of 100, 200 and
    // 400 ms (each up to doubled by jitter): bounded, in virtual time.
    assert!(
        elapsed >= ack_timeout * 4 + Duration::from_millis(700),
        "{elapsed:?}"
    );
    assert!(
        elapsed <= ack_timeout * 4 + Duration::from_millis(1400) + Duration::from_millis(50),
        "{elapsed:?}"
    );
}
