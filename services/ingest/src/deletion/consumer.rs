//! The `ingest-deletion` consumer: on `deletion.requested`, deletes a dataset's objects and row (or a
//! tenant's, crypto-shredding its DEKs first), scans for residue and answers with a
//! `deletion.receipt`, once per deletion however often the request is delivered.

use std::collections::HashMap;
use std::sync::Arc;

use trustmesh_bus::{Delivery, Handler, HandlerError, Outbox, ProcessedMessages};
use trustmesh_crypto::DekStore;
use trustmesh_events::{Service, TenantId};
use trustmesh_service_kit::{Answer, CheckedDeletion, log_outcome};
use trustmesh_store::{EncryptedObjects, ObjectPrefix, ObjectStore, PgDekStore, TenantScope};
use uuid::Uuid;

use crate::datasets::DatasetName;
use crate::datasets::repo::{DatasetRepo, UsageReporter};

/// What the deletion touches.
enum Target {
    Dataset(DatasetName),
    Tenant,
}

/// The `ingest-deletion` handler.
#[derive(Debug, Clone)]
pub(crate) struct DeletionHandler {
    pub(crate) objects: EncryptedObjects,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) deks: PgDekStore,
    pub(crate) processed: ProcessedMessages,
    pub(crate) outbox: Outbox,
    pub(crate) usage: UsageReporter,
}

fn retry(error: impl std::fmt::Display) -> HandlerError {
    HandlerError::retryable(error)
}

/// The object-store prefix of the tenant's objects (or one dataset's), as `EncryptedObjects` lays
/// them out (`<service>/<tenant>/<object>/v<version>`), for the residue scan.
fn residue_prefix(tenant: &TenantId, dataset: Option<Uuid>) -> Result<ObjectPrefix, HandlerError> {
    let prefix = match dataset {
        Some(id) => format!("{}/{tenant}/datasets/{id}/", Service::Ingest.as_str()),
        None => format!("{}/{tenant}/", Service::Ingest.as_str()),
    };
    ObjectPrefix::new(prefix).map_err(HandlerError::poison)
}

impl DeletionHandler {
    async fn apply(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let checked = CheckedDeletion::from_delivery(&delivery)?;
        // NOTE: keyed on the deletion, not the message: a repeated request for the same deletion
        // (any Nats-Msg-Id) has one effect and one receipt, which the outbox delivers durably.
        if self
            .processed
            .is_processed(&checked.request.deletion)
            .await
            .map_err(retry)?
        {
            return Ok(());
        }
        let tenant = checked.tenant.clone();
        let target = match checked.dataset {
            Some(id) => Target::Dataset(DatasetName {
                tenant: tenant.clone(),
                id,
            }),
            None => Target::Tenant,
        };

        let scope = TenantScope::new(tenant.clone());
        let mut deleted: HashMap<String, u64> = HashMap::new();
        let mut deks_destroyed = 0;
        let dataset_id = match &target {
            Target::Dataset(name) => {
                // The dataset's folder (raw upload and rows), every version: also those a crash
                // left unrecorded, which deleting the recorded ones would leave for the scan.
                let objects = self
                    .objects
                    .delete_prefix(&scope, &format!("datasets/{}/", name.id))
                    .await
                    .map_err(retry)?;
                deleted.insert("objects".to_owned(), objects);
                Some(name.id)
            }
            Target::Tenant => {
                let purge = self.objects.delete_tenant(&scope).await.map_err(retry)?;
                deks_destroyed = purge.deks_destroyed;
                deleted.insert("objects".to_owned(), purge.objects_deleted);
                deleted.insert("rows:objects".to_owned(), purge.rows_deleted);
                None
            }
        };
        let mut residue: HashMap<String, u64> = HashMap::new();
        let left = self
            .store
            .count_versions(&residue_prefix(&tenant, dataset_id)?)
            .await
            .map_err(retry)?;
        if left > 0 {
            residue.insert("objects".to_owned(), left);
        }
        if dataset_id.is_none()
            && self
                .deks
                .current(Service::Ingest.as_str(), tenant.as_str())
                .await
                .map_err(retry)?
                .is_some()
        {
            residue.insert("deks".to_owned(), 1);
        }

        let outbox = self.outbox.clone();
        let deletion = checked.request.deletion.clone();
        let usage_tenant = tenant.clone();
        let mut answer = Answer {
            deleted,
            residue,
            deks_destroyed,
        };
        let outcome = self
            .processed
            .process_once(&deletion, move |tx| {
                Box::pin(async move {
                    let rows = DatasetRepo::delete(tx, &scope, dataset_id).await?;
                    answer.deleted.insert("rows:datasets".to_owned(), rows);
                    let remaining = DatasetRepo::count(tx, &scope, dataset_id).await?;
                    if remaining > 0 {
                        answer.residue.insert("rows:datasets".to_owned(), remaining);
                    }
                    checked
                        .answer(
                            &outbox,
                            tx,
                            Service::Ingest,
                            "datasets.delete",
                            rows,
                            answer,
                        )
                        .await
                })
            })
            .await?;
        log_outcome(&outcome);
        self.usage
            .after_deletion(&usage_tenant, dataset_id.is_none())
            .await;
        Ok(())
    }
}

impl Handler for DeletionHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.apply(delivery).await
    }
}
