//! Trace context crosses the bus: a handler's span continues the publisher's trace.

use bytes::Bytes;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use trustmesh_bus::{ConsumerRunner, Delivery, Publisher, ensure_consumer};
use trustmesh_events::Subject;

use crate::common::{TEST_CONSUMER, acme, fast_options, nats_with_streams};

fn current_trace_id() -> opentelemetry::trace::TraceId {
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
}

// A current-thread runtime, so the thread-local subscriber below sees the runner's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn a_handler_span_continues_the_publishers_trace() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bus-test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let (_nats, jetstream) = nats_with_streams().await;
    let request = tracing::info_span!("request");
    let published_in = request.context().span().span_context().trace_id();
    assert_ne!(published_in, opentelemetry::trace::TraceId::INVALID);
    Publisher::new(jetstream.clone())
        .publish_bytes(
            &Subject::dataset_ingested(&acme()),
            Bytes::from_static(b"x"),
            "m-traced",
        )
        .instrument(request)
        .await
        .expect("publish");

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let consumer = ensure_consumer(&jetstream, &TEST_CONSUMER)
        .await
        .expect("consumer");
    let runner = ConsumerRunner::new(
        consumer,
        &TEST_CONSUMER,
        Publisher::new(jetstream.clone()),
        {
            move |_delivery: Delivery| {
                let seen_tx = seen_tx.clone();
                async move {
                    let _ = seen_tx.send(current_trace_id());
                    Ok(())
                }
            }
        },
    )
    .with_options(fast_options());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    assert_eq!(
        seen.recv().await,
        Some(published_in),
        "the handler runs in the publisher's trace"
    );
    shutdown.cancel();
    running.await.expect("task").expect("clean stop");
}
