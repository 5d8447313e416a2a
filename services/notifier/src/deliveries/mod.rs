//! The delivery log (`log.rs`) and the consumer that fills it and answers deletions (`consumer.rs`).

pub(crate) mod consumer;
mod log;

pub(crate) use log::NewDelivery;
pub use log::{DeliveryLog, DeliveryRecord};
