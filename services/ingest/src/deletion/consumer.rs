//! The `ingest-deletion` consumer: on `deletion.requested`, deletes a dataset's objects and row (or a
//! tenant's, crypto-shredding its DEKs first), scans for residue and answers with a
//! `deletion.receipt`, once per deletion however often the request is delivered.

use std::collections::HashMap;
use std::sync::Arc;

use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::{Delivery, Handler, HandlerError, Outbox, Processed, ProcessedMessages};
use trustmesh_crypto::DekStore;
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{ActorType, DeletionReceipt, DeletionRequested, DeletionScope};
use trustmesh_store::{EncryptedObjects, ObjectPrefix, ObjectStore, PgDekStore, TenantScope};
use uuid::Uuid;

use crate::datasets::DatasetName;
use crate::datasets::repo::DatasetRepo;

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
        let request: DeletionRequested = delivery.decode()?;
        let tenant = delivery
            .tenant()
            .ok_or_else(|| HandlerError::poison("the subject carries no valid tenant"))?;
        let scope_kind = request.scope();
        let target = match scope_kind {
            DeletionScope::Dataset => {
                let name = DatasetName::parse(&request.target)
                    .map_err(|_| HandlerError::poison("the target is not a dataset name"))?;
                Target::Dataset(name)
            }
            DeletionScope::Tenant if request.target == format!("tenants/{tenant}") => {
                Target::Tenant
            }
            DeletionScope::Tenant => {
                return Err(HandlerError::poison(
                    "the target is not the subject's tenant",
                ));
            }
            DeletionScope::Unspecified => {
                return Err(HandlerError::poison("the deletion scope is unspecified"));
            }
        };
        if let Target::Dataset(name) = &target
            && name.tenant != tenant
        {
            return Err(HandlerError::poison("the target belongs to another tenant"));
        }
        if !request
            .deletion
            .starts_with(&format!("tenants/{tenant}/deletions/"))
        {
            return Err(HandlerError::poison(
                "the deletion name is not of the subject's tenant",
            ));
        }
        // NOTE: keyed on the deletion, not the message: a repeated request for the same deletion
        // (any Nats-Msg-Id) has one effect and one receipt, which the outbox delivers durably.
        if self
            .processed
            .is_processed(&request.deletion)
            .await
            .map_err(retry)?
        {
            return Ok(());
        }

        let scope = TenantScope::new(tenant.clone());
        let mut deleted: HashMap<String, u64> = HashMap::new();
        let mut deks_destroyed = 0;
        let dataset_id = match &target {
            Target::Dataset(name) => {
                let mut objects = 0;
                for key in [name.raw_key(), name.rows_key()] {
                    let key = key.map_err(retry)?;
                    objects += u64::from(self.objects.delete(&scope, &key).await.map_err(retry)?);
                }
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
            .list(&residue_prefix(&tenant, dataset_id)?)
            .await
            .map_err(retry)?
            .len() as u64;
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

        let deletion = request.deletion.clone();
        let outbox = self.outbox.clone();
        let request_id = request.meta.map(|m| m.request_id).unwrap_or_default();
        let outcome = self
            .processed
            .process_once(&request.deletion, move |tx| {
                Box::pin(async move {
                    let rows = DatasetRepo::delete(tx, &scope, dataset_id).await?;
                    deleted.insert("rows:datasets".to_owned(), rows);
                    let remaining = DatasetRepo::count(tx, &scope, dataset_id).await?;
                    if remaining > 0 {
                        residue.insert("rows:datasets".to_owned(), remaining);
                    }
                    let (event_id, meta) = audit::event_meta(Service::Ingest, &tenant, &request_id);
                    let subject = Subject::deletion_receipt(&tenant);
                    let receipt = DeletionReceipt {
                        meta: Some(meta),
                        deletion: deletion.clone(),
                        service: Service::Ingest.as_str().to_owned(),
                        scope: scope_kind.into(),
                        residue_found: !residue.is_empty(),
                        deleted,
                        residue,
                        deks_destroyed: u32::try_from(deks_destroyed).unwrap_or(u32::MAX),
                    };
                    outbox
                        .enqueue(tx, &subject, &receipt, &msg_id(&subject, event_id))
                        .await
                        .map_err(retry)?;
                    let mut entry =
                        AuditEntry::new(Service::Ingest, tenant, "datasets.delete", request.target);
                    entry.actor_type = ActorType::Service;
                    Service::Deletion.as_str().clone_into(&mut entry.actor_id);
                    entry.request_id = request_id;
                    entry.records_affected = rows;
                    audit::enqueue(&outbox, tx, entry).await.map_err(retry)?;
                    Ok::<_, HandlerError>(())
                })
            })
            .await?;
        match outcome {
            Processed::Applied(()) => tracing::info!("Deletion applied and its receipt queued."),
            Processed::AlreadyProcessed => {
                tracing::info!("Deletion already applied; nothing more to do.");
            }
        }
        Ok(())
    }
}

impl Handler for DeletionHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.apply(delivery).await
    }
}
