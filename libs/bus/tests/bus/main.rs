//! Bus integration tests against a real nats-server (one per test) and Postgres (a database per test).

mod common;
mod consumer;
mod idempotency;
mod metrics;
mod outbox;
mod publish;
mod topology;
mod trace;
