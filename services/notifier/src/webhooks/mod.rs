//! Webhooks: endpoints with sealed secrets (`endpoints.rs`), their deliveries (`deliveries.rs`),
//! the dispatcher that sends them (`dispatcher.rs`), the `WebhookService` tenancy forwards to
//! (`grpc.rs`), event type names (`events.rs`) and errors (`error.rs`).

pub(crate) mod deliveries;
pub(crate) mod dispatcher;
pub(crate) mod endpoints;
mod error;
pub(crate) mod events;
pub(crate) mod grpc;

pub use deliveries::Deliveries;
pub use error::NotifierError;
