//! Shared helpers of the bus integration tests: real servers, a test tenant, polling with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use trustmesh_bus::RunnerOptions;
use trustmesh_events::{ConsumerAudit, ConsumerSpec, Service, TM_DATASET, TenantId};
use trustmesh_testkit::nats::NatsServer;

/// A consumer of every dataset event that gives up after three deliveries.
pub(crate) static TEST_CONSUMER: ConsumerSpec = ConsumerSpec {
    durable_name: "test-dataset",
    service: Service::Notifier,
    stream: &TM_DATASET,
    filter_subject: "tm.*.dataset.>",
    max_deliver: 3,
    ack_wait: Duration::from_secs(30),
    max_ack_pending: 64,
    description: "bus integration tests",
    audit: ConsumerAudit::Nothing("a test consumer of no tenant's data."),
};

/// Runner options with short retry delays, so redeliveries come quickly.
pub(crate) fn fast_options() -> RunnerOptions {
    RunnerOptions {
        max_in_flight: 4,
        retry_min_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(50),
        pull_expires: Duration::from_secs(2),
        lag_interval: Duration::from_millis(100),
    }
}

/// The tenant every test publishes for.
pub(crate) fn acme() -> TenantId {
    TenantId::parse("acme").expect("valid tenant")
}

/// A fresh nats-server with every trustmesh stream ensured.
pub(crate) async fn nats_with_streams() -> (NatsServer, Context) {
    let nats = NatsServer::start().await;
    let jetstream = nats.jetstream().await;
    trustmesh_bus::ensure_streams(&jetstream)
        .await
        .expect("streams");
    (nats, jetstream)
}

/// Waits until `check` returns `Some`, polling; panics naming `what` after 30 s (a bound for a broken
/// test, never a speed expectation).
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many messages `stream` holds.
pub(crate) async fn stream_len(jetstream: &Context, stream: &str) -> u64 {
    let mut stream = jetstream.get_stream(stream).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
}

/// Waits until the durable consumer has nothing pending and nothing unacked.
pub(crate) async fn consumer_drained(jetstream: &Context, stream: &str, consumer: &str) {
    eventually("the consumer to drain", || async {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
            .get_stream(stream)
            .await
            .ok()?
            .get_consumer(consumer)
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
}
