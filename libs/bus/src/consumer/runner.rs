//! The consumer runner: pull, hand each delivery to the handler behind an ack guard, settle by result.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::Acker;
use backon::BackoffBuilder;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use trustmesh_events::ConsumerSpec;
use trustmesh_telemetry::{ConsumerMetrics, ConsumerOutcome};

use super::advisory;
use super::dead_letter::{DeadLetter, Origin};
use super::{AckGuard, Delivery, Handler, HandlerError};
use crate::publisher::Publisher;

/// How a [`ConsumerRunner`] pulls and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Handlers running at once in this replica (the consumer's `max_ack_pending` bounds all replicas).
    pub max_in_flight: usize,
    /// Nak delay after the first failed delivery; it doubles (with jitter) with each delivery.
    pub retry_min_delay: Duration,
    /// Largest nak delay (before jitter).
    pub retry_max_delay: Duration,
    /// How long one pull request waits on the server for messages.
    pub pull_expires: Duration,
    /// How often the consumer's lag (pending and unacknowledged messages) is read from the server
    /// into `trustmesh_consumer_pending` / `trustmesh_consumer_ack_pending`.
    pub lag_interval: Duration,
}

impl Default for RunnerOptions {
    /// 16 in flight, retries from 1 s to 60 s, 30 s pulls, lag read every 5 s.
    fn default() -> Self {
        Self {
            max_in_flight: 16,
            retry_min_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            pull_expires: Duration::from_secs(30),
            lag_interval: Duration::from_secs(5),
        }
    }
}

impl RunnerOptions {
    /// The nak delay before delivery `delivered + 1`: exponential from `retry_min_delay`, capped at
    /// `retry_max_delay`, with up to 100 % jitter so that failed messages do not come back in lockstep.
    #[must_use]
    pub fn nak_delay(&self, delivered: i64) -> Duration {
        // Past 64 doublings every delay is capped anyway; the cap keeps `nth` short.
        let n = usize::try_from(delivered.saturating_sub(1).min(64)).unwrap_or(0);
        backon::ExponentialBuilder::default()
            .with_min_delay(self.retry_min_delay)
            .with_max_delay(self.retry_max_delay)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(n)
            .unwrap_or(self.retry_max_delay)
    }
}

/// Why a runner stopped other than by its shutdown token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunnerError {
    /// A handler returned [`HandlerError::Fatal`]; the consumer must not go on in this process.
    #[error("consumer {consumer} stopped: {reason}")]
    Fatal {
        /// The durable consumer's name.
        consumer: &'static str,
        /// The handler's reason.
        reason: String,
    },
}

/// Runs a [`Handler`] over a durable pull consumer until shut down or a fatal error.
///
/// Each delivery is guarded by an [`AckGuard`] and settled by the handler's result: `Ok` acks;
/// [`HandlerError::Retryable`] naks with a delay, or dead-letters once the consumer's `max_deliver` is
/// reached; [`HandlerError::Poison`] publishes to the dead-letter subject, then terminates;
/// [`HandlerError::Fatal`] naks and stops the runner. A panicking or aborted handler drops its guard,
/// which naks.
///
/// Every settled delivery is counted in the process-wide [`ConsumerMetrics`] (by outcome, with
/// redeliveries and dead letters apart), and a side task samples the consumer's lag from the server.
#[derive(Debug)]
pub struct ConsumerRunner<H> {
    consumer: PullConsumer,
    spec: &'static ConsumerSpec,
    publisher: Publisher,
    handler: Arc<H>,
    options: RunnerOptions,
}

impl<H: Handler> ConsumerRunner<H> {
    /// A runner of `handler` over `consumer` (bound with [`crate::ensure_consumer`] from `spec`);
    /// dead letters go out through `publisher`.
    #[must_use]
    pub fn new(
        consumer: PullConsumer,
        spec: &'static ConsumerSpec,
        publisher: Publisher,
        handler: H,
    ) -> Self {
        Self {
            consumer,
            spec,
            publisher,
            handler: Arc::new(handler),
            options: RunnerOptions::default(),
        }
    }

    /// The same runner with other options.
    #[must_use]
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Pulls and handles messages until `shutdown` is cancelled (then stops pulling, lets in-flight
    /// handlers finish, and returns `Ok`) or a handler fails fatally. Dropping the returned future
    /// (aborting its task) aborts the in-flight handlers, whose deliveries are nak'ed.
    ///
    /// # Errors
    ///
    /// [`RunnerError::Fatal`] after a handler returned [`HandlerError::Fatal`] (in-flight handlers
    /// have finished by then).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let stop = shutdown.child_token();
        let metrics = ConsumerMetrics::new(self.spec.stream.name, self.spec.durable_name);
        let shared = Arc::new(Shared {
            handler: self.handler,
            publisher: self.publisher,
            spec: self.spec,
            options: self.options,
            stop: stop.clone(),
            fatal: Mutex::new(None),
            metrics: metrics.clone(),
        });
        let permits = Arc::new(Semaphore::new(self.options.max_in_flight.max(1)));
        // The runner owns its handler tasks: aborting the runner (a crash, in tests) aborts them, and
        // their guards nak.
        let mut tasks = JoinSet::new();
        match shared
            .publisher
            .jetstream()
            .client()
            .subscribe(advisory::subject(self.spec))
            .await
        {
            Ok(subscriber) => {
                tasks.spawn(advisory::watch(
                    subscriber,
                    self.spec,
                    shared.publisher.clone(),
                    metrics.clone(),
                    stop.clone(),
                ));
            }
            Err(e) => tracing::warn!(
                messaging.consumer.group.name = self.spec.durable_name,
                error = %e,
                "Cannot listen for max-deliveries advisories; unsettled last deliveries will not be dead-lettered."
            ),
        }
        tasks.spawn(sample_lag(
            self.consumer.clone(),
            metrics,
            self.options.lag_interval,
            stop.clone(),
        ));
        let mut pull_failures = 0_i64;
        tracing::info!(
            messaging.consumer.group.name = self.spec.durable_name,
            "Consumer started."
        );

        'pull: while !stop.is_cancelled() {
            while let Some(done) = tasks.try_join_next() {
                reap(done);
            }
            let first = tokio::select! {
                () = stop.cancelled() => break 'pull,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break 'pull,
                },
            };
            let mut batch_permits = vec![first];
            while let Ok(permit) = permits.clone().try_acquire_owned() {
                batch_permits.push(permit);
            }
            let request = self
                .consumer
                .batch()
                .max_messages(batch_permits.len())
                .expires(self.options.pull_expires)
                .messages();
            let failure = match request.await {
                Ok(mut batch) => loop {
                    // NOTE: stopping drops the batch at once; a message the server sent for it but the
                    // client had not yet handed out comes back after the ack wait (at-least-once holds).
                    let next = tokio::select! {
                        () = stop.cancelled() => break 'pull,
                        next = batch.next() => next,
                    };
                    match next {
                        None => break None,
                        Some(Ok(message)) => {
                            pull_failures = 0;
                            let Some(permit) = batch_permits.pop() else {
                                // More messages than asked for: never expected; the guard naks it.
                                drop(AckGuard::new(message.split().1));
                                continue;
                            };
                            tasks.spawn(process(shared.clone(), message, permit));
                        }
                        Some(Err(e)) => break Some(e.to_string()),
                    }
                },
                Err(e) => Some(e.to_string()),
            };
            if let Some(error) = failure {
                // Back off, so that a server without JetStream (or without the consumer) is not
                // hammered with pull requests.
                pull_failures += 1;
                let delay = self.options.nak_delay(pull_failures.min(8));
                tracing::warn!(
                    messaging.consumer.group.name = self.spec.durable_name,
                    error,
                    retry_in_ms = delay.as_millis(),
                    "Pull request failed; retrying."
                );
                tokio::select! {
                    () = stop.cancelled() => break 'pull,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }

        // Stops the advisory watcher too (the loop only ends once `stop` is cancelled, but be explicit).
        stop.cancel();
        while let Some(done) = tasks.join_next().await {
            reap(done);
        }
        let fatal = shared
            .fatal
            .lock()
            .map(|mut f| f.take())
            .unwrap_or_else(|poisoned| poisoned.into_inner().take());
        match fatal {
            Some(reason) => Err(RunnerError::Fatal {
                consumer: self.spec.durable_name,
                reason,
            }),
            None => {
                tracing::info!(
                    messaging.consumer.group.name = self.spec.durable_name,
                    "Consumer stopped."
                );
                Ok(())
            }
        }
    }
}

/// Reads the consumer's pending and unacknowledged counts from the server every `interval` until
/// `stop`; a failed read keeps the last values.
async fn sample_lag(
    mut consumer: PullConsumer,
    metrics: ConsumerMetrics,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match consumer.info().await {
            Ok(info) => metrics.set_pending(
                info.num_pending,
                u64::try_from(info.num_ack_pending).unwrap_or_default(),
            ),
            Err(e) => tracing::debug!(error = %e, "Cannot read the consumer's lag."),
        }
    }
}

fn reap(done: Result<(), JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!("A message handler panicked; its delivery was nak'ed.");
    }
}

struct Shared<H> {
    handler: Arc<H>,
    publisher: Publisher,
    spec: &'static ConsumerSpec,
    options: RunnerOptions,
    stop: CancellationToken,
    fatal: Mutex<Option<String>>,
    metrics: ConsumerMetrics,
}

async fn process<H: Handler>(
    shared: Arc<Shared<H>>,
    message: jetstream::Message,
    _permit: OwnedSemaphorePermit,
) {
    let (stream, consumer, stream_sequence, delivered) = match message.info() {
        Ok(info) => (
            info.stream.to_owned(),
            info.consumer.to_owned(),
            info.stream_sequence,
            info.delivered,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "Received a message without JetStream metadata; ignoring it.");
            return;
        }
    };
    let progress = Acker::new(message.context.clone(), message.message.reply.clone());
    let (message, acker) = message.split();
    let guard = AckGuard::new(acker);
    let origin = Origin {
        subject: message.subject.as_str().to_owned(),
        headers: message.headers.clone(),
        stream: stream.clone(),
        sequence: stream_sequence,
        delivered,
    };
    let payload = message.payload.clone();
    let delivery = Delivery {
        message,
        stream,
        consumer,
        stream_sequence,
        delivered,
        progress,
    };
    let span = tracing::info_span!(
        "bus.consume",
        messaging.system = "nats",
        messaging.destination.name = %origin.subject,
        messaging.consumer.group.name = shared.spec.durable_name,
        messaging.message.id = delivery.msg_id().unwrap_or_default(),
        messaging.nats.delivered = delivered,
        tenant.id = origin.subject.split('.').nth(1).unwrap_or_default(),
        trace_id = tracing::field::Empty,
    );
    crate::trace::set_remote_parent(&span, delivery.headers());
    async move {
        let result = shared.handler.handle(delivery).await;
        settle(&shared, guard, &origin, payload, result).await;
    }
    .instrument(span)
    .await;
}

async fn settle<H>(
    shared: &Shared<H>,
    guard: AckGuard,
    origin: &Origin,
    payload: bytes::Bytes,
    result: Result<(), HandlerError>,
) {
    let max_deliver = shared.spec.max_deliver;
    let counted = match &result {
        Ok(()) => ConsumerOutcome::Acked,
        Err(HandlerError::Retryable { .. })
            if max_deliver > 0 && origin.delivered >= max_deliver =>
        {
            ConsumerOutcome::DeadLettered
        }
        Err(HandlerError::Retryable { .. }) => ConsumerOutcome::Retried,
        Err(HandlerError::Poison { .. }) => ConsumerOutcome::DeadLettered,
        Err(HandlerError::Fatal { .. }) => ConsumerOutcome::Stopped,
    };
    shared.metrics.delivered(origin.delivered, counted);
    tracing::debug!(outcome = ?counted, "Delivery handled.");
    let outcome = match result {
        Ok(()) => guard.ack().await,
        Err(HandlerError::Retryable { reason, .. })
            if max_deliver > 0 && origin.delivered >= max_deliver =>
        {
            let reason = format!("gave up after {} deliveries: {reason}", origin.delivered);
            dead_letter(shared, guard, origin, payload, &reason).await
        }
        Err(HandlerError::Retryable { reason, delay }) => {
            let delay = delay.unwrap_or_else(|| shared.options.nak_delay(origin.delivered));
            tracing::info!(
                reason,
                retry_in_ms = delay.as_millis(),
                "Handler failed; the message will be redelivered."
            );
            guard.nak(Some(delay)).await
        }
        Err(HandlerError::Poison { reason }) => {
            dead_letter(shared, guard, origin, payload, &reason).await
        }
        Err(HandlerError::Fatal { reason }) => {
            tracing::error!(reason, "Handler failed fatally; stopping the consumer.");
            if let Ok(mut fatal) = shared.fatal.lock() {
                fatal.get_or_insert(reason);
            }
            shared.stop.cancel();
            guard.nak(Some(shared.options.retry_min_delay)).await
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "Could not settle a delivery; the server will redeliver it.");
    }
}

async fn dead_letter<H>(
    shared: &Shared<H>,
    guard: AckGuard,
    origin: &Origin,
    payload: bytes::Bytes,
    reason: &str,
) -> Result<(), async_nats::Error> {
    let dead = DeadLetter::new(origin, shared.spec, reason);
    match shared
        .publisher
        .publish_raw(&dead.subject, dead.headers.clone(), payload, &dead.msg_id)
        .await
    {
        Ok(_) => {
            shared.metrics.dead_lettered();
            dead.audit(&shared.publisher, shared.spec).await;
            tracing::warn!(
                reason,
                dead_letter.subject = dead.subject,
                "Message moved to the dead-letter subject."
            );
            guard.term().await
        }
        Err(e) => {
            // NOTE: keep the message rather than lose it; after max_deliver the server stops
            // redelivering and it stays in the stream, visible in the consumer's advisories.
            tracing::error!(error = %e, "Could not publish a dead letter; the message will be redelivered.");
            guard.nak(Some(shared.options.retry_max_delay)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delays_grow_and_stay_bounded() {
        let options = RunnerOptions {
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(2),
            ..RunnerOptions::default()
        };
        let first = options.nak_delay(1);
        assert!(
            first >= Duration::from_millis(100) && first < Duration::from_millis(200),
            "{first:?}"
        );
        let fourth = options.nak_delay(4);
        assert!(
            fourth >= Duration::from_millis(800) && fourth < Duration::from_millis(1600),
            "{fourth:?}"
        );
        for delivered in [10, 50, i64::MAX] {
            let delay = options.nak_delay(delivered);
            assert!(
                delay >= Duration::from_secs(2) && delay < Duration::from_secs(4),
                "{delivered}: {delay:?}"
            );
        }
        assert!(options.nak_delay(0) < Duration::from_millis(200));
    }
}
