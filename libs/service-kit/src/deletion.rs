//! [`ResourceDeletion`]: the `deletion.requested` handler of a service whose tenant data is one
//! table of resources (analysis's `jobs`, trust-scoring's `reports`), each with one encrypted
//! object, on a dataset. It deletes a dataset's resources and their objects (or a tenant's,
//! crypto-shredding its DEKs first), scans for residue and answers with a `deletion.receipt`, once
//! per deletion however often the request is delivered.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;
use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::{Delivery, Handler, HandlerError, Outbox, Processed, ProcessedMessages};
use trustmesh_crypto::DekStore;
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{
    ActorType, DeletionReceipt, DeletionRequested, DeletionScope, EventMeta,
};
use trustmesh_store::{
    EncryptedObjects, ObjectKey, ObjectPrefix, ObjectStore, PgDekStore, TenantScope,
};
use uuid::Uuid;

/// The resources a service deletes.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    /// The owning service.
    pub service: Service,
    /// Their table (with `id`, `tenant` and `dataset` columns), also their object-name segment:
    /// a resource's object is `<table>/<id>/<object>`.
    pub table: &'static str,
    /// The name of each resource's object (`outputs`, `rows`).
    pub object: &'static str,
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
        sqlx::query_scalar(&format!(
            "SELECT id FROM {} WHERE tenant = $1 AND ($2::uuid IS NULL OR dataset = $2)",
            self.resources.table
        ))
        .bind(scope.as_str())
        .bind(dataset)
        .fetch_all(&self.pool)
        .await
        .map_err(HandlerError::from)
    }

    async fn apply(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let request: DeletionRequested = delivery.decode()?;
        let tenant = delivery
            .tenant()
            .ok_or_else(|| HandlerError::poison("the subject carries no valid tenant"))?;
        let scope_kind = request.scope();
        let dataset = match scope_kind {
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

        let Resources {
            service,
            table,
            object,
            action,
        } = self.resources;
        let scope = TenantScope::new(tenant.clone());
        let ids = self.ids(&scope, dataset).await?;
        let mut deleted: HashMap<String, u64> = HashMap::new();
        let mut residue: HashMap<String, u64> = HashMap::new();
        let mut deks_destroyed = 0;
        if dataset.is_some() {
            let mut objects = 0;
            let mut left = 0;
            for id in &ids {
                let key = ObjectKey::new(format!("{table}/{id}/{object}")).map_err(retry)?;
                objects += u64::from(self.objects.delete(&scope, &key).await.map_err(retry)?);
                left += self
                    .store
                    .list(&self.residue_prefix(&tenant, Some(*id))?)
                    .await
                    .map_err(retry)?
                    .len() as u64;
            }
            deleted.insert("objects".to_owned(), objects);
            if left > 0 {
                residue.insert("objects".to_owned(), left);
            }
        } else {
            let purge = self.objects.delete_tenant(&scope).await.map_err(retry)?;
            deks_destroyed = purge.deks_destroyed;
            deleted.insert("objects".to_owned(), purge.objects_deleted);
            deleted.insert("rows:objects".to_owned(), purge.rows_deleted);
            let left = self
                .store
                .list(&self.residue_prefix(&tenant, None)?)
                .await
                .map_err(retry)?
                .len() as u64;
            if left > 0 {
                residue.insert("objects".to_owned(), left);
            }
            if self
                .deks
                .current(service.as_str(), tenant.as_str())
                .await
                .map_err(retry)?
                .is_some()
            {
                residue.insert("deks".to_owned(), 1);
            }
        }

        let deletion = request.deletion.clone();
        let outbox = self.outbox.clone();
        let request_id = request.meta.map(|m| m.request_id).unwrap_or_default();
        let rows_key = format!("rows:{table}");
        let outcome = self
            .processed
            .process_once(&request.deletion, move |tx| {
                Box::pin(async move {
                    let rows = sqlx::query(&format!(
                        "DELETE FROM {table} WHERE tenant = $1 AND ($2::uuid IS NULL OR dataset = $2)"
                    ))
                    .bind(scope.as_str())
                    .bind(dataset)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    deleted.insert(rows_key.clone(), rows);
                    let remaining: i64 = sqlx::query_scalar(&format!(
                        "SELECT count(*) FROM {table} WHERE tenant = $1 AND ($2::uuid IS NULL OR dataset = $2)"
                    ))
                    .bind(scope.as_str())
                    .bind(dataset)
                    .fetch_one(&mut **tx)
                    .await?;
                    if remaining > 0 {
                        residue.insert(rows_key, u64::try_from(remaining).unwrap_or_default());
                    }
                    let event_id = Uuid::now_v7();
                    let meta = EventMeta {
                        event_id: event_id.to_string(),
                        tenant: tenant.to_string(),
                        occurred_at: Some(prost_types::Timestamp::from(
                            std::time::SystemTime::now(),
                        )),
                        producer: service.as_str().to_owned(),
                        request_id: request_id.clone(),
                    };
                    let subject = Subject::deletion_receipt(&tenant);
                    let receipt = DeletionReceipt {
                        meta: Some(meta),
                        deletion,
                        service: service.as_str().to_owned(),
                        scope: scope_kind.into(),
                        residue_found: !residue.is_empty(),
                        deleted,
                        residue,
                        deks_destroyed: u32::try_from(deks_destroyed).unwrap_or(u32::MAX),
                    };
                    outbox.enqueue(tx, &subject, &receipt, &msg_id(&subject, event_id)).await?;
                    let mut entry = AuditEntry::new(service, tenant, action, request.target);
                    entry.actor_type = ActorType::Service;
                    Service::Deletion.as_str().clone_into(&mut entry.actor_id);
                    entry.request_id = request_id;
                    entry.records_affected = rows;
                    audit::enqueue(&outbox, tx, entry).await?;
                    Ok::<_, HandlerError>(())
                })
            })
            .await?;
        match outcome {
            Processed::Applied(()) => tracing::info!("Deletion applied and its receipt queued."),
            Processed::AlreadyProcessed => {
                tracing::info!("Deletion already applied; nothing more to do.")
            }
        }
        Ok(())
    }
}

impl Handler for ResourceDeletion {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.apply(delivery).await
    }
}
