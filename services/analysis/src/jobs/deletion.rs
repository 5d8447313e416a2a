//! The `analysis-deletion` consumer: [`ResourceDeletion`] over the `jobs` table and their objects
//! (a dataset's jobs and outputs, or a tenant's, crypto-shredded; residue scanned; one receipt).
//! A dedicated tenant's jobs, objects and keys are in its replica's database and bucket, so only
//! that replica (`analysis-deletion-<tenant>`) can delete them and vouch for the residue scan: the
//! shared replicas acknowledge its deletions without acting or answering.

use trustmesh_bus::{Delivery, Handler, HandlerError};
use trustmesh_service_kit::{CheckedDeletion, ResourceDeletion};

use crate::jobs::repo::UsageReporter;
use crate::placement::Placement;

/// The `analysis-deletion` handler.
#[derive(Debug, Clone)]
pub(crate) struct DeletionHandler {
    pub(crate) deletion: ResourceDeletion,
    /// Tenants whose deletions dedicated replicas carry out: left to them.
    pub(crate) placement: Placement,
    /// Reports the tenant's active jobs once its deletion is carried out (purges them once the
    /// whole tenant is).
    pub(crate) usage: UsageReporter,
}

impl Handler for DeletionHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let tenant = delivery.tenant();
        if let Some(tenant) = &tenant
            && self.placement.left_to_dedicated(tenant)
        {
            tracing::debug!("The tenant's deletions are carried out by its dedicated replicas.");
            return Ok(());
        }
        let checked = CheckedDeletion::from_delivery(&delivery)?;
        self.deletion.handle(delivery).await?;
        self.usage
            .after_deletion(&checked.tenant, checked.dataset.is_none())
            .await;
        Ok(())
    }
}
