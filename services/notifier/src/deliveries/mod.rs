//! The consumer that queues webhook deliveries and answers deletions (`consumer.rs`).

pub(crate) mod consumer;
