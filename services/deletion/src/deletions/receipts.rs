//! The `deletion-receipt` consumer: records each service's receipt once, and completes the deletion
//! when the last expected one arrives.

use trustmesh_bus::{Delivery, Handler, HandlerError};
use trustmesh_proto::events::v1::DeletionReceipt;

use super::service::{Deletions, ReceiptOutcome};
use crate::error::DeletionError;

/// Handles `deletion.receipt`.
#[derive(Debug, Clone)]
pub(crate) struct ReceiptHandler {
    pub(crate) deletions: Deletions,
}

fn classify(error: DeletionError) -> HandlerError {
    match error {
        DeletionError::Database(e) => HandlerError::from(e),
        DeletionError::Outbox(e) => HandlerError::from(e),
        DeletionError::Purge(reason) => HandlerError::retryable(reason),
        e @ (DeletionError::InvalidArgument(_)
        | DeletionError::Denied(_)
        | DeletionError::RequestIdReused
        | DeletionError::NotFound
        | DeletionError::FailedPrecondition(_)
        | DeletionError::Corrupt(_)) => HandlerError::poison(format!("receipt refused: {e}")),
    }
}

impl Handler for ReceiptHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let receipt: DeletionReceipt = delivery.decode()?;
        let tenant = delivery
            .tenant()
            .ok_or_else(|| HandlerError::poison("the subject carries no valid tenant"))?;
        let service = receipt.service.clone();
        let outcome = self
            .deletions
            .record_receipt(&tenant, receipt)
            .await
            .map_err(classify)?;
        match outcome {
            ReceiptOutcome::Unexpected => tracing::warn!(
                tenant.id = %tenant,
                deletion.service = service,
                "A receipt came from a service outside the deletion's expected set; ignored."
            ),
            ReceiptOutcome::Recorded
            | ReceiptOutcome::Duplicate
            | ReceiptOutcome::Late
            | ReceiptOutcome::Completed
            | ReceiptOutcome::Failed => tracing::info!(
                tenant.id = %tenant,
                deletion.service = service,
                deletion.receipt = ?outcome,
                "Deletion receipt handled."
            ),
        }
        Ok(())
    }
}
