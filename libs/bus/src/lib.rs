//! NATS JetStream publishing and consuming: acked publishes with dedupe ids, ack-guard consumers, dead letters, outbox relay.
//!
//! The streams and consumers themselves are plain data in `trustmesh-events`; this crate turns them into
//! `async-nats` configs and runs them.
//!
//! - [`topology`]: [`ensure_streams`] and [`ensure_consumer`], idempotent, called at start.
//! - [`publisher`]: [`Publisher`], which sets `Nats-Msg-Id` and `traceparent`, awaits the JetStream ack
//!   and retries transient failures (jittered, bounded).
//! - [`consumer`]: [`ConsumerRunner`], which pulls with bounded concurrency and hands each [`Delivery`]
//!   to a [`Handler`] behind an [`AckGuard`] (nak on drop); a [`HandlerError`] decides between
//!   redelivery, the dead-letter subject and stopping the runner.
//! - [`schema`]: [`ensure_schema`] creates the bus tables in a service's own Postgres schema.
//! - [`idempotency`]: [`ProcessedMessages`] runs a consumer's DB effect and records the message id in
//!   one transaction, so a redelivered message has no second effect.
//! - [`outbox`]: [`Outbox::enqueue`] writes an event in the caller's transaction; [`OutboxRelay`]
//!   publishes committed rows in order and marks them sent after the ack.
//! - [`audit`]: [`audit::AuditEntry`], sent as an `AuditEvent` through the outbox or a publisher.
//! - [`trace`]: W3C trace context in NATS headers (through `trustmesh-telemetry`).
//!
//! A service wires it up at start roughly so: [`ensure_streams`], [`ensure_schema`], then per consumer
//! [`ensure_consumer`] and `tokio::spawn(ConsumerRunner::new(..).run(shutdown))` (its `Err` fails
//! readiness), and `tokio::spawn(OutboxRelay::new(..).run(shutdown))`.
//!
//! The NATS permissions a service's user needs for all this (its subjects, dead letters, pull, ack,
//! advisories, the stream and consumer APIs, its own inbox) are generated from the registries by
//! `trustmesh_events::permissions` into `infra/nats/permissions.conf`, and tested there.

pub mod audit;
pub mod consumer;
pub mod idempotency;
pub mod outbox;
pub mod publisher;
pub mod schema;
pub mod topology;
pub mod trace;

pub use consumer::{
    AckGuard, ConsumerRunner, Delivery, Handler, HandlerError, RunnerError, RunnerOptions,
};
pub use idempotency::{Processed, ProcessedMessages};
pub use outbox::{Outbox, OutboxError, OutboxRelay, RelayOptions};
pub use publisher::{PublishError, Publisher, RetryPolicy};
pub use schema::{SchemaError, SchemaName, ensure_schema};
pub use topology::{
    SetupError, consumer_config, ensure_consumer, ensure_stream, ensure_streams,
    ensure_streams_with_replicas, stream_config,
};
