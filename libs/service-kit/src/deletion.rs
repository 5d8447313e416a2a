//! [`ResourceDeletion`]: the `deletion.requested` handler of a service whose tenant data is one
//! table of resources (analysis's `jobs`, trust-scoring's `reports`), each with its encrypted
//! objects in one folder, on a dataset. It deletes a dataset's resources and their objects (or a
//! tenant's, crypto-shredding its DEKs first), scans for residue and answers with a
//! `deletion.receipt`, once per deletion however often the request is delivered.
//!
//! [`CheckedDeletion`] is what every deletion consumer (these, and ingest's, tenancy's, the
//! notifier's and audit's own) starts from: the request checked against its subject's tenant, and
//! [`CheckedDeletion::answer`], the receipt and audit event each of them ends with.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{PgPool, Postgres, Transaction};
use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::schema::rls::{set_tenant, tenant_tx};
use trustmesh_bus::{Delivery, Handler, HandlerError, Outbox, Processed, ProcessedMessages};
use trustmesh_crypto::DekStore;
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{
    ActorType, DeletionReceipt, DeletionRequested, DeletionScope, EventMeta,
};
use trustmesh_store::{EncryptedObjects, ObjectPrefix, ObjectStore, PgDekStore, TenantScope};
use uuid::Uuid;

/// The resources a service deletes.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    /// The owning service.
    pub service: Service,
    /// Their table (with `id`, `tenant` and `dataset` columns), also their object folder: a
    /// resource's objects are `<table>/<id>/...`, and its deletion removes all of them.
    pub table: &'static str,
    /// The audit action of their deletion (`jobs.delete`).
    pub action: &'static str,
}

/// The `<service>-deletion` handler of [`Resources`].
#[derive(Debug, Clone)]
pub struct ResourceDeletion {
    /// What is deleted.
    pub resources: Resources,
    /// The service's pool.
    pub pool: PgPool,
    /// Its encrypted objects.
    pub objects: EncryptedObjects,
    /// The raw store under them, for the residue scan.
    pub store: Arc<dyn ObjectStore>,
    /// Its wrapped DEKs, for the residue scan.
    pub deks: PgDekStore,
    /// Deletions already applied.
    pub processed: ProcessedMessages,
    /// The outbox the receipt and the audit event go through.
    pub outbox: Outbox,
}

fn retry(error: impl std::fmt::Display) -> HandlerError {
    HandlerError::retryable(error)
}

/// A `deletion.requested` checked against the tenant of its subject, as every deletion consumer
/// checks it before acting: the target is the subject's tenant or one of its datasets, and the
/// deletion is named under that tenant. Anything else is poison (never retried, dead-lettered).
#[derive(Debug, Clone)]
pub struct CheckedDeletion {
    /// The tenant the subject names.
    pub tenant: TenantId,
    /// The request.
    pub request: DeletionRequested,
    /// The dataset of a dataset-scope deletion; `None` for the whole tenant.
    pub dataset: Option<Uuid>,
}

/// What one service did for one deletion: its receipt's content.
#[derive(Debug, Default)]
pub struct Answer {
    /// Records deleted, by kind (`rows:<table>`, `objects`, ...).
    pub deleted: HashMap<String, u64>,
    /// Records of the scope still there after the deletion, by kind; empty when clean.
    pub residue: HashMap<String, u64>,
    /// The tenant's DEKs destroyed (crypto-shredding).
    pub deks_destroyed: u64,
}

/// The dataset `target` (`tenants/{tenant}/datasets/{id}`) names, of `tenant`.
fn dataset_of(tenant: &TenantId, target: &str) -> Result<Uuid, HandlerError> {
    let not_a_dataset = || HandlerError::poison("the target is not a dataset name");
    let rest = target.strip_prefix("tenants/").ok_or_else(not_a_dataset)?;
    let (owner, rest) = rest.split_once('/').ok_or_else(not_a_dataset)?;
    let id = rest.strip_prefix("datasets/").ok_or_else(not_a_dataset)?;
    let id = Uuid::try_parse(id).map_err(|_| not_a_dataset())?;
    if TenantId::parse(owner).map_err(|_| not_a_dataset())? != *tenant {
        return Err(HandlerError::poison("the target belongs to another tenant"));
    }
    Ok(id)
}

impl CheckedDeletion {
    /// Decodes and checks the request a delivery carries.
    ///
    /// # Errors
    ///
    /// Poison if the message does not decode, the subject names no tenant, or [`Self::new`] refuses it.
    pub fn from_delivery(delivery: &Delivery) -> Result<Self, HandlerError> {
        let request: DeletionRequested = delivery.decode()?;
        let tenant = delivery
            .tenant()
            .ok_or_else(|| HandlerError::poison("the subject carries no valid tenant"))?;
        Self::new(tenant, request)
    }

    /// Checks `request`, delivered on a subject of `tenant`.
    ///
    /// # Errors
    ///
    /// Poison if the scope is unspecified, the target is not `tenant` or one of its datasets, or
    /// the deletion is not named `tenants/{tenant}/deletions/{id}`.
    pub fn new(tenant: TenantId, request: DeletionRequested) -> Result<Self, HandlerError> {
        let dataset = match request.scope() {
            DeletionScope::Dataset => Some(dataset_of(&tenant, &request.target)?),
            DeletionScope::Tenant if request.target == format!("tenants/{tenant}") => None,
            DeletionScope::Tenant => {
                return Err(HandlerError::poison(
                    "the target is not the subject's tenant",
                ));
            }
            DeletionScope::Unspecified => {
                return Err(HandlerError::poison("the deletion scope is unspecified"));
            }
        };
        let id = request
            .deletion
            .strip_prefix(&format!("tenants/{tenant}/deletions/"))
            .ok_or_else(|| {
                HandlerError::poison("the deletion name is not of the subject's tenant")
            })?;
        if id.is_empty() || id.contains('/') {
            return Err(HandlerError::poison("the deletion name is invalid"));
        }
        Ok(Self {
            tenant,
            request,
            dataset,
        })
    }

    /// The request id the deletion service gave the request (empty if none).
    #[must_use]
    pub fn request_id(&self) -> String {
        self.request
            .meta
            .as_ref()
            .map(|m| m.request_id.clone())
            .unwrap_or_default()
    }

    /// `service`'s receipt for this deletion, as event `event_id`.
    #[must_use]
    pub fn receipt(&self, service: Service, event_id: Uuid, answer: Answer) -> DeletionReceipt {
        let meta = EventMeta {
            event_id: event_id.to_string(),
            tenant: self.tenant.as_str().to_owned(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            producer: service.as_str().to_owned(),
            request_id: self.request_id(),
        };
        DeletionReceipt {
            meta: Some(meta),
            deletion: self.request.deletion.clone(),
            service: service.as_str().to_owned(),
            scope: self.request.scope,
            residue_found: !answer.residue.is_empty(),
            deleted: answer.deleted,
            residue: answer.residue,
            deks_destroyed: u32::try_from(answer.deks_destroyed).unwrap_or(u32::MAX),
        }
    }

    /// Queues, in `tx`, `service`'s receipt and its audit event: `action` on the target by the
    /// deletion service, with `records_affected`.
    ///
    /// # Errors
    ///
    /// Retryable if the outbox refuses either message.
    pub async fn answer(
        self,
        outbox: &Outbox,
        tx: &mut Transaction<'_, Postgres>,
        service: Service,
        action: &str,
        records_affected: u64,
        answer: Answer,
    ) -> Result<(), HandlerError> {
        let event_id = Uuid::now_v7();
        let subject = Subject::deletion_receipt(&self.tenant);
        let receipt = self.receipt(service, event_id, answer);
        outbox
            .enqueue(tx, &subject, &receipt, &msg_id(&subject, event_id))
            .await
            .map_err(retry)?;
        let request_id = self.request_id();
        let mut entry = AuditEntry::new(service, self.tenant, action, self.request.target);
        entry.actor_type = ActorType::Service;
        Service::Deletion.as_str().clone_into(&mut entry.actor_id);
        entry.request_id = request_id;
        entry.records_affected = records_affected;
        audit::enqueue(outbox, tx, entry).await.map_err(retry)
    }
}

/// Logs what [`ProcessedMessages::process_once`] did with a deletion.
pub fn log_outcome(outcome: &Processed<()>) {
    match outcome {
        Processed::Applied(()) => tracing::info!("Deletion applied and its receipt queued."),
        Processed::AlreadyProcessed => {
            tracing::info!("Deletion already applied; nothing more to do.");
        }
    }
}

impl ResourceDeletion {
    /// The object-store prefix of a resource's objects (or all the tenant's), as
    /// `EncryptedObjects` lays them out (`<service>/<tenant>/<object>/v<version>`).
    fn residue_prefix(
        &self,
        tenant: &TenantId,
        id: Option<Uuid>,
    ) -> Result<ObjectPrefix, HandlerError> {
        let service = self.resources.service.as_str();
        let prefix = match id {
            Some(id) => format!("{service}/{tenant}/{}/{id}/", self.resources.table),
            None => format!("{service}/{tenant}/"),
        };
        ObjectPrefix::new(prefix).map_err(HandlerError::poison)
    }

    /// The tenant's resources on `dataset` (all of them for `None`).
    async fn ids(
        &self,
        scope: &TenantScope,
        dataset: Option<Uuid>,
    ) -> Result<Vec<Uuid>, HandlerError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let ids = sqlx::query_scalar(&format!(
            "SELECT id FROM {} WHERE tenant = $1 AND ($2::uuid IS NULL OR dataset = $2)",
            self.resources.table
        ))
        .bind(scope.as_str())
        .bind(dataset)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

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

        let Resources {
            service,
            table,
            action,
        } = self.resources;
        let tenant = checked.tenant.clone();
        let dataset = checked.dataset;
        let scope = TenantScope::new(tenant.clone());
        let ids = self.ids(&scope, dataset).await?;
        let mut answer = Answer::default();
        if dataset.is_some() {
            let mut objects = 0;
            let mut left = 0;
            for id in &ids {
                // The resource's whole folder, every version: its `object`, what it kept beside it
                // (analysis's folds) and what a crash left unrecorded (see `delete_prefix`).
                objects += self
                    .objects
                    .delete_prefix(&scope, &format!("{table}/{id}/"))
                    .await
                    .map_err(retry)?;
                left += self
                    .store
                    .count_versions(&self.residue_prefix(&tenant, Some(*id))?)
                    .await
                    .map_err(retry)?;
            }
            answer.deleted.insert("objects".to_owned(), objects);
            if left > 0 {
                answer.residue.insert("objects".to_owned(), left);
            }
        } else {
            let purge = self.objects.delete_tenant(&scope).await.map_err(retry)?;
            answer.deks_destroyed = purge.deks_destroyed;
            answer
                .deleted
                .insert("objects".to_owned(), purge.objects_deleted);
            answer
                .deleted
                .insert("rows:objects".to_owned(), purge.rows_deleted);
            let left = self
                .store
                .count_versions(&self.residue_prefix(&tenant, None)?)
                .await
                .map_err(retry)?;
            if left > 0 {
                answer.residue.insert("objects".to_owned(), left);
            }
            if self
                .deks
                .current(service.as_str(), tenant.as_str())
                .await
                .map_err(retry)?
                .is_some()
            {
                answer.residue.insert("deks".to_owned(), 1);
            }
        }

        let outbox = self.outbox.clone();
        let rows_key = format!("rows:{table}");
        let deletion = checked.request.deletion.clone();
        let outcome = self
            .processed
            .process_once(&deletion, move |tx| {
                Box::pin(async move {
                    set_tenant(tx, scope.as_str()).await?;
                    let rows = sqlx::query(&format!(
                        "DELETE FROM {table} WHERE tenant = $1 AND ($2::uuid IS NULL OR dataset = $2)"
                    ))
                    .bind(scope.as_str())
                    .bind(dataset)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    answer.deleted.insert(rows_key.clone(), rows);
                    let remaining: i64 = sqlx::query_scalar(&format!(
                        "SELECT count(*) FROM {table} WHERE tenant = $1 AND ($2::uuid IS NULL OR dataset = $2)"
                    ))
                    .bind(scope.as_str())
                    .bind(dataset)
                    .fetch_one(&mut **tx)
                    .await?;
                    if remaining > 0 {
                        answer
                            .residue
                            .insert(rows_key, u64::try_from(remaining).unwrap_or_default());
                    }
                    checked
                        .answer(&outbox, tx, service, action, rows, answer)
                        .await
                })
            })
            .await?;
        log_outcome(&outcome);
        Ok(())
    }
}

impl Handler for ResourceDeletion {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.apply(delivery).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATASET: &str = "tenants/acme/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c";

    fn request(scope: DeletionScope, target: &str, deletion: &str) -> DeletionRequested {
        DeletionRequested {
            deletion: deletion.to_owned(),
            scope: scope.into(),
            target: target.to_owned(),
            ..DeletionRequested::default()
        }
    }

    #[test]
    fn only_requests_of_the_subjects_tenant_are_accepted() {
        let acme = TenantId::parse("acme").unwrap();
        let dataset = CheckedDeletion::new(
            acme.clone(),
            request(DeletionScope::Dataset, DATASET, "tenants/acme/deletions/x"),
        )
        .unwrap();
        assert_eq!(
            dataset.dataset.map(|id| id.to_string()).as_deref(),
            DATASET.rsplit('/').next()
        );
        let tenant = CheckedDeletion::new(
            acme.clone(),
            request(
                DeletionScope::Tenant,
                "tenants/acme",
                "tenants/acme/deletions/x",
            ),
        )
        .unwrap();
        assert_eq!(tenant.dataset, None);

        let other_dataset = DATASET.replace("acme", "other");
        let refused = [
            (
                DeletionScope::Dataset,
                other_dataset.as_str(),
                "tenants/acme/deletions/x",
            ),
            (
                DeletionScope::Dataset,
                "tenants/acme/datasets/d1",
                "tenants/acme/deletions/x",
            ),
            (
                DeletionScope::Dataset,
                "tenants/acme/datasets/",
                "tenants/acme/deletions/x",
            ),
            (
                DeletionScope::Tenant,
                "tenants/other",
                "tenants/acme/deletions/x",
            ),
            (
                DeletionScope::Tenant,
                "tenants/acme",
                "tenants/other/deletions/x",
            ),
            (
                DeletionScope::Tenant,
                "tenants/acme",
                "tenants/acme/deletions/",
            ),
            (
                DeletionScope::Tenant,
                "tenants/acme",
                "tenants/acme/deletions/x/y",
            ),
            (
                DeletionScope::Unspecified,
                "tenants/acme",
                "tenants/acme/deletions/x",
            ),
        ];
        for (scope, target, deletion) in refused {
            let result = CheckedDeletion::new(acme.clone(), request(scope, target, deletion));
            assert!(
                matches!(result, Err(HandlerError::Poison { .. })),
                "{scope:?} {target} {deletion}"
            );
        }
    }

    #[test]
    fn the_receipt_carries_the_answer() {
        let acme = TenantId::parse("acme").unwrap();
        let checked = CheckedDeletion::new(
            acme,
            request(DeletionScope::Dataset, DATASET, "tenants/acme/deletions/x"),
        )
        .unwrap();
        let id = Uuid::now_v7();
        let answer = Answer {
            deleted: HashMap::from([("objects".to_owned(), 2)]),
            residue: HashMap::from([("rows:jobs".to_owned(), 1)]),
            deks_destroyed: 0,
        };
        let receipt = checked.receipt(Service::Analysis, id, answer);
        assert_eq!(receipt.service, "analysis");
        assert_eq!(receipt.deletion, "tenants/acme/deletions/x");
        assert_eq!(receipt.scope(), DeletionScope::Dataset);
        assert!(receipt.residue_found);
        assert_eq!(receipt.deleted["objects"], 2);
        assert_eq!(receipt.meta.unwrap().event_id, id.to_string());
    }
}
