//! Streams and consumers are ensured idempotently, with the declared configs.

use async_nats::jetstream::stream::StorageType;
use futures::TryStreamExt;
use trustmesh_bus::{ensure_consumer, ensure_streams};
use trustmesh_events::{ALL_CONSUMERS, ALL_STREAMS};
use trustmesh_testkit::nats::NatsServer;

#[tokio::test]
async fn ensuring_streams_and_consumers_twice_is_harmless_and_matches_the_declarations() {
    let nats = NatsServer::start().await;
    let jetstream = nats.jetstream().await;

    for _ in 0..2 {
        ensure_streams(&jetstream).await.expect("streams");
        for spec in ALL_CONSUMERS {
            ensure_consumer(&jetstream, spec).await.expect("consumer");
        }
    }

    let mut names: Vec<String> = jetstream
        .stream_names()
        .try_collect()
        .await
        .expect("stream names");
    names.sort();
    let mut expected: Vec<&str> = ALL_STREAMS.iter().map(|s| s.name).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);

    for spec in ALL_STREAMS {
        let mut stream = jetstream.get_stream(spec.name).await.expect("stream");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.storage, StorageType::File, "{}", spec.name);
        assert_eq!(
            info.config.duplicate_window, spec.duplicate_window,
            "{}",
            spec.name
        );
        assert_eq!(info.config.max_age, spec.max_age, "{}", spec.name);
        assert_eq!(
            info.config.max_message_size, spec.max_message_bytes,
            "{}",
            spec.name
        );
    }
    for spec in ALL_CONSUMERS {
        let stream = jetstream
            .get_stream(spec.stream.name)
            .await
            .expect("stream");
        let mut consumers: Vec<String> = stream
            .consumer_names()
            .try_collect()
            .await
            .expect("consumer names");
        consumers.retain(|c| c == spec.durable_name);
        assert_eq!(consumers.len(), 1, "{} exists once", spec.durable_name);
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(spec.durable_name)
            .await
            .expect("consumer");
        let config = &consumer.cached_info().config;
        assert_eq!(
            config.max_deliver, spec.max_deliver,
            "{}",
            spec.durable_name
        );
        assert_eq!(config.ack_wait, spec.ack_wait, "{}", spec.durable_name);
        assert_eq!(
            config.filter_subject, spec.filter_subject,
            "{}",
            spec.durable_name
        );
    }
}

#[tokio::test]
async fn ensuring_a_stream_restores_its_declared_config() {
    let nats = NatsServer::start().await;
    let jetstream = nats.jetstream().await;
    ensure_streams(&jetstream).await.expect("streams");

    let spec = &trustmesh_events::TM_JOB;
    let mut drifted = trustmesh_bus::stream_config(spec, 1);
    drifted.duplicate_window = std::time::Duration::from_secs(5);
    jetstream
        .update_stream(drifted)
        .await
        .expect("drift the config");

    ensure_streams(&jetstream).await.expect("streams again");
    let mut stream = jetstream.get_stream(spec.name).await.expect("stream");
    assert_eq!(
        stream.info().await.expect("info").config.duplicate_window,
        spec.duplicate_window
    );
}
