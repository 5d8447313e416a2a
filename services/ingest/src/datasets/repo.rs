//! The `datasets` table, always filtered by tenant, with its sealed columns, and the outbox writes
//! that go with it.

use std::sync::Arc;

use prost::Message;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use trustmesh_auth::{EffectiveQuota, TenantUsage};
use trustmesh_bus::Outbox;
use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::schema::rls::{set_tenant, tenant_tx};
use trustmesh_bus::schema::xact_lock;
use trustmesh_crypto::{Keyring, ObjectRef};
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::DatasetIngested;
use trustmesh_proto::v1::DatasetState;
use trustmesh_service_kit::CountUsage;
use trustmesh_store::TenantScope;
use uuid::Uuid;

use super::{DatasetName, SealedMeta, SealedUpload};
use crate::error::IngestError;

/// One row of `datasets`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct DatasetRow {
    pub(crate) id: Uuid,
    pub(crate) state: i16,
    pub(crate) format: i16,
    pub(crate) size_bytes: i64,
    pub(crate) row_count: i64,
    pub(crate) modality: i16,
    pub(crate) meta_sealed: Vec<u8>,
    pub(crate) upload_sealed: Option<Vec<u8>>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, state, format, size_bytes, row_count, modality, meta_sealed, \
                       upload_sealed, created_at, updated_at";

/// What a finished upload records.
#[derive(Debug)]
pub(crate) struct FinishedUpload {
    pub(crate) format: i32,
    pub(crate) size_bytes: u64,
    pub(crate) row_count: u64,
    pub(crate) column_count: u32,
    pub(crate) modality: i32,
    pub(crate) upload: SealedUpload,
}

/// The dataset repository: rows, their sealed parts and the events written with them.
#[derive(Debug, Clone)]
pub(crate) struct DatasetRepo {
    pool: PgPool,
    keyring: Arc<Keyring>,
    outbox: Outbox,
    usage: UsageReporter,
}

/// Reports a tenant's datasets and stored bytes to `tm_usage` (tenancy's GetQuota reads them).
pub(crate) type UsageReporter = trustmesh_service_kit::UsageReporter<StoredDatasets>;

/// Counts a tenant's datasets (in any state) and the bytes their uploads hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredDatasets;

impl CountUsage for StoredDatasets {
    const TENANTS_TABLE: &'static str = "datasets";

    async fn count(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<TenantUsage, sqlx::Error> {
        let scope = TenantScope::new(tenant.clone());
        let datasets: i64 = sqlx::query_scalar("SELECT count(*) FROM datasets WHERE tenant = $1")
            .bind(scope.as_str())
            .fetch_one(&mut *conn)
            .await?;
        Ok(TenantUsage {
            datasets: u64::try_from(datasets).unwrap_or_default(),
            storage_bytes: stored_bytes(conn, &scope).await?,
            concurrent_jobs: 0,
        })
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A state as stored in the `state` column.
pub(crate) fn state(s: DatasetState) -> i16 {
    i16::try_from(i32::from(s)).unwrap_or_default()
}

fn small(n: i32) -> i16 {
    i16::try_from(n).unwrap_or_default()
}

impl DatasetRepo {
    pub(crate) fn new(
        pool: PgPool,
        keyring: Arc<Keyring>,
        outbox: Outbox,
        usage: UsageReporter,
    ) -> Self {
        Self {
            pool,
            keyring,
            outbox,
            usage,
        }
    }

    pub(crate) fn usage(&self) -> &UsageReporter {
        &self.usage
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Seals `plaintext` as part `part` of dataset `id`: bound to tenant, dataset and part.
    async fn seal(
        &self,
        scope: &TenantScope,
        id: Uuid,
        part: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, IngestError> {
        let object = format!("datasets/{id}/{part}");
        let obj = ObjectRef {
            tenant: scope.as_str(),
            object: &object,
            version: 1,
        };
        Ok(self.keyring.seal(&obj, plaintext).await?)
    }

    async fn open<M: Message + Default>(
        &self,
        scope: &TenantScope,
        id: Uuid,
        part: &str,
        sealed: &[u8],
    ) -> Result<M, IngestError> {
        let object = format!("datasets/{id}/{part}");
        let obj = ObjectRef {
            tenant: scope.as_str(),
            object: &object,
            version: 1,
        };
        let plaintext = self
            .keyring
            .open(&obj, sealed)
            .await
            .inspect_err(|_| trustmesh_telemetry::DecryptMetrics::failed())?;
        M::decode(plaintext.as_slice()).map_err(|_| IngestError::Corrupt("sealed dataset metadata"))
    }

    /// The row's display name and description.
    pub(crate) async fn open_meta(
        &self,
        scope: &TenantScope,
        row: &DatasetRow,
    ) -> Result<SealedMeta, IngestError> {
        self.open(scope, row.id, "meta", &row.meta_sealed).await
    }

    /// The row's upload details, once uploaded.
    pub(crate) async fn open_upload(
        &self,
        scope: &TenantScope,
        row: &DatasetRow,
    ) -> Result<Option<SealedUpload>, IngestError> {
        match &row.upload_sealed {
            Some(sealed) => Ok(Some(self.open(scope, row.id, "upload", sealed).await?)),
            None => Ok(None),
        }
    }

    /// Creates a dataset awaiting its upload, or returns the one created with `request_id`.
    pub(crate) async fn create(
        &self,
        scope: &TenantScope,
        request_id: Option<Uuid>,
        meta: &SealedMeta,
    ) -> Result<DatasetRow, IngestError> {
        let id = Uuid::now_v7();
        let sealed = self.seal(scope, id, "meta", &meta.encode_to_vec()).await?;
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let inserted: Option<DatasetRow> = sqlx::query_as(&format!(
            "INSERT INTO datasets (tenant, id, state, meta_sealed, request_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, request_id) WHERE request_id IS NOT NULL DO NOTHING
             RETURNING {COLUMNS}"
        ))
        .bind(scope.as_str())
        .bind(id)
        .bind(state(DatasetState::AwaitingUpload))
        .bind(&sealed)
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = inserted {
            tx.commit().await?;
            self.usage.report(scope.tenant()).await;
            return Ok(row);
        }
        let earlier: Option<DatasetRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM datasets WHERE tenant = $1 AND request_id = $2"
        ))
        .bind(scope.as_str())
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        earlier.ok_or_else(|| IngestError::NotFound {
            resource: format!("tenants/{}", scope.as_str()),
        })
    }

    /// The tenant's dataset `id`, if any.
    pub(crate) async fn get(
        &self,
        scope: &TenantScope,
        id: Uuid,
    ) -> Result<Option<DatasetRow>, IngestError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let row = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM datasets WHERE tenant = $1 AND id = $2"
        ))
        .bind(scope.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Up to `limit` of the tenant's datasets older than `before` (ids are UUIDv7), newest first,
    /// only those in `state` if given.
    pub(crate) async fn list(
        &self,
        scope: &TenantScope,
        state: Option<i16>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<DatasetRow>, IngestError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let rows = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM datasets
             WHERE tenant = $1 AND ($2::smallint IS NULL OR state = $2)
               AND ($3::uuid IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(scope.as_str())
        .bind(state)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The bytes the tenant's datasets hold: the sum of their uploads' sizes.
    pub(crate) async fn stored_bytes(&self, scope: &TenantScope) -> Result<u64, sqlx::Error> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let stored = stored_bytes(&mut tx, scope).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Marks the dataset READY with its upload, and in the same transaction writes `dataset.ingested`
    /// and the upload's audit event to the outbox. Fails with FAILED_PRECONDITION (writing nothing)
    /// unless it was AWAITING_UPLOAD, and with the quota's RESOURCE_EXHAUSTED when the upload would
    /// take the tenant's stored bytes past `quota`: checked under a per-tenant lock against what the
    /// tenant's finished uploads hold, so uploads finishing together cannot exceed it between them.
    pub(crate) async fn finish_upload(
        &self,
        name: &DatasetName,
        upload: FinishedUpload,
        quota: Option<&EffectiveQuota>,
        request_id: &str,
        audit_entry: AuditEntry,
    ) -> Result<DatasetRow, IngestError> {
        let scope = TenantScope::new(name.tenant.clone());
        let sealed = self
            .seal(&scope, name.id, "upload", &upload.upload.encode_to_vec())
            .await?;
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        if let Some(quota) = quota {
            let key = format!("ingest.datasets/{}/stored-bytes", scope.as_str());
            xact_lock(&mut tx, &key, false).await?;
            let stored = stored_bytes(&mut tx, &scope).await?;
            quota.admit_bytes(stored, upload.size_bytes)?;
        }
        let row: Option<DatasetRow> = sqlx::query_as(&format!(
            "UPDATE datasets SET state = $3, format = $4, size_bytes = $5, row_count = $6,
                column_count = $7, modality = $8, upload_sealed = $9, updated_at = now()
             WHERE tenant = $1 AND id = $2 AND state = $10
             RETURNING {COLUMNS}"
        ))
        .bind(scope.as_str())
        .bind(name.id)
        .bind(state(DatasetState::Ready))
        .bind(small(upload.format))
        .bind(to_i64(upload.size_bytes))
        .bind(to_i64(upload.row_count))
        .bind(i32::try_from(upload.column_count).unwrap_or(i32::MAX))
        .bind(small(upload.modality))
        .bind(&sealed)
        .bind(state(DatasetState::AwaitingUpload))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(IngestError::FailedPrecondition(
                "the dataset is not awaiting an upload",
            ));
        };
        let (event_id, meta) = audit::event_meta(Service::Ingest, &name.tenant, request_id);
        let subject = Subject::dataset_ingested(&name.tenant);
        let event = DatasetIngested {
            meta: Some(meta),
            dataset: name.to_string(),
            row_count: upload.row_count,
            column_count: upload.column_count,
            size_bytes: upload.size_bytes,
        };
        self.outbox
            .enqueue(&mut tx, &subject, &event, &msg_id(&subject, event_id))
            .await?;
        audit::enqueue(&self.outbox, &mut tx, audit_entry).await?;
        tx.commit().await?;
        self.usage.report(&name.tenant).await;
        Ok(row)
    }

    /// Records an audit event on its own (committed before the caller answers).
    pub(crate) async fn audit(&self, entry: AuditEntry) -> Result<(), IngestError> {
        let mut tx = self.pool.begin().await?;
        audit::enqueue(&self.outbox, &mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the tenant's dataset `id` (or, with `None`, every dataset of the tenant) in `tx`;
    /// returns how many rows.
    pub(crate) async fn delete(
        tx: &mut Transaction<'static, Postgres>,
        scope: &TenantScope,
        id: Option<Uuid>,
    ) -> Result<u64, sqlx::Error> {
        set_tenant(tx, scope.as_str()).await?;
        let done =
            sqlx::query("DELETE FROM datasets WHERE tenant = $1 AND ($2::uuid IS NULL OR id = $2)")
                .bind(scope.as_str())
                .bind(id)
                .execute(&mut **tx)
                .await?;
        Ok(done.rows_affected())
    }

    /// How many rows of the tenant's dataset `id` (or of all its datasets) remain, seen from `tx`.
    pub(crate) async fn count(
        tx: &mut Transaction<'static, Postgres>,
        scope: &TenantScope,
        id: Option<Uuid>,
    ) -> Result<u64, sqlx::Error> {
        set_tenant(tx, scope.as_str()).await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM datasets WHERE tenant = $1 AND ($2::uuid IS NULL OR id = $2)",
        )
        .bind(scope.as_str())
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }
}

/// The sum of the tenant's uploads' sizes, in the open transaction of `conn`.
async fn stored_bytes(conn: &mut PgConnection, scope: &TenantScope) -> Result<u64, sqlx::Error> {
    let stored: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(size_bytes), 0)::bigint FROM datasets WHERE tenant = $1",
    )
    .bind(scope.as_str())
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(stored).unwrap_or_default())
}
