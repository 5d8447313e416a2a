//! [`PgDekStore`]: wrapped data-encryption keys in the service's Postgres schema.
//!
//! The table is under row-level security (`trustmesh_bus::schema::rls`): a key of one tenant is
//! created, read, rewrapped and destroyed in a `tenant_tx` of that tenant; only the KEK rotation's
//! search across tenants ([`DekStore::list_behind`]) opens a `service_tx`.

use async_trait::async_trait;
use sqlx::PgPool;
use trustmesh_bus::schema::rls::{service_tx, tenant_tx};
use trustmesh_crypto::{DekRecord, DekStore, Error, Result, WrappedKey};

/// A [`DekStore`] on the `deks` table of the service's schema (created by [`crate::pg::MIGRATOR`]).
///
/// Only wrapped keys are stored. Destroying a tenant's keys erases the wrapped bytes and stamps
/// `destroyed_at`, keeping the row as the record of the shredding; a later DEK of the same version
/// (the tenant coming back) replaces the tombstone.
#[derive(Debug, Clone)]
pub struct PgDekStore {
    pool: PgPool,
}

type Row = (String, String, i64, i64, Vec<u8>);

impl PgDekStore {
    /// A store on `pool`, whose `search_path` is the service's schema.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn backend(e: sqlx::Error) -> Error {
    Error::DekStore(Box::new(e))
}

fn record((service, tenant, version, kek_version, wrapped): Row) -> Result<DekRecord> {
    let corrupt = || Error::DekStore("a deks row holds an out-of-range version".into());
    Ok(DekRecord {
        service,
        tenant,
        dek_version: u32::try_from(version).map_err(|_| corrupt())?,
        wrapped: WrappedKey {
            kek_version: u32::try_from(kek_version).map_err(|_| corrupt())?,
            ciphertext: wrapped,
        },
    })
}

#[async_trait]
impl DekStore for PgDekStore {
    async fn insert(&self, rec: &DekRecord) -> Result<()> {
        let mut tx = tenant_tx(&self.pool, &rec.tenant).await.map_err(backend)?;
        let inserted = sqlx::query(
            "INSERT INTO deks (service, tenant, version, kek_version, wrapped)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (service, tenant, version) DO UPDATE
                SET kek_version = EXCLUDED.kek_version, wrapped = EXCLUDED.wrapped,
                    created_at = now(), destroyed_at = NULL
                WHERE deks.destroyed_at IS NOT NULL",
        )
        .bind(&rec.service)
        .bind(&rec.tenant)
        .bind(i64::from(rec.dek_version))
        .bind(i64::from(rec.wrapped.kek_version))
        .bind(&rec.wrapped.ciphertext)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        if inserted.rows_affected() == 0 {
            return Err(Error::DekConflict);
        }
        Ok(())
    }

    async fn current(&self, service: &str, tenant: &str) -> Result<Option<DekRecord>> {
        let mut tx = tenant_tx(&self.pool, tenant).await.map_err(backend)?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT service, tenant, version, kek_version, wrapped FROM deks
             WHERE service = $1 AND tenant = $2 AND destroyed_at IS NULL
             ORDER BY version DESC LIMIT 1",
        )
        .bind(service)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        row.map(record).transpose()
    }

    async fn get(
        &self,
        service: &str,
        tenant: &str,
        dek_version: u32,
    ) -> Result<Option<DekRecord>> {
        let mut tx = tenant_tx(&self.pool, tenant).await.map_err(backend)?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT service, tenant, version, kek_version, wrapped FROM deks
             WHERE service = $1 AND tenant = $2 AND version = $3 AND destroyed_at IS NULL",
        )
        .bind(service)
        .bind(tenant)
        .bind(i64::from(dek_version))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        row.map(record).transpose()
    }

    async fn list_behind(
        &self,
        service: &str,
        kek_version: u32,
        limit: usize,
    ) -> Result<Vec<DekRecord>> {
        // The rotation works through every tenant's keys: the service-wide escape.
        let mut tx = service_tx(&self.pool).await.map_err(backend)?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT service, tenant, version, kek_version, wrapped FROM deks
             WHERE service = $1 AND kek_version < $2 AND destroyed_at IS NULL
             ORDER BY tenant, version LIMIT $3",
        )
        .bind(service)
        .bind(i64::from(kek_version))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        rows.into_iter().map(record).collect()
    }

    async fn rewrap(
        &self,
        service: &str,
        tenant: &str,
        dek_version: u32,
        expected_kek_version: u32,
        wrapped: &WrappedKey,
    ) -> Result<bool> {
        let mut tx = tenant_tx(&self.pool, tenant).await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE deks SET kek_version = $5, wrapped = $6
             WHERE service = $1 AND tenant = $2 AND version = $3 AND kek_version = $4
               AND destroyed_at IS NULL",
        )
        .bind(service)
        .bind(tenant)
        .bind(i64::from(dek_version))
        .bind(i64::from(expected_kek_version))
        .bind(i64::from(wrapped.kek_version))
        .bind(&wrapped.ciphertext)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_tenant(&self, service: &str, tenant: &str) -> Result<u64> {
        let mut tx = tenant_tx(&self.pool, tenant).await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE deks SET wrapped = NULL, destroyed_at = now()
             WHERE service = $1 AND tenant = $2 AND destroyed_at IS NULL",
        )
        .bind(service)
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected())
    }
}
