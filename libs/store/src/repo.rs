//! [`ObjectsRepo`]: the tenant-scoped repository of encrypted objects' metadata (`objects` table).
//!
//! It shows the repository pattern every service follows: each method takes a [`TenantScope`] and
//! binds it as `$1` of a `WHERE tenant = $1`, and customer content (here, the object's name) is stored
//! only sealed.
//!
//! The table is under row-level security (`trustmesh_bus::schema::rls`): every method runs in a
//! `tenant_tx` of its scope's tenant, so the `WHERE tenant = $1` is backed by the database.

use sqlx::PgPool;
use time::OffsetDateTime;
use trustmesh_bus::schema::rls::tenant_tx;
use trustmesh_bus::schema::xact_lock;

use crate::tenant::TenantScope;

/// One row of `objects`: an object's current version.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ObjectRow {
    /// The object's id within the tenant.
    pub object: String,
    /// Its current version.
    pub version: i64,
    /// Its plaintext size in bytes.
    pub size: i64,
    /// Its stored (sealed) size in bytes.
    pub sealed_size: i64,
    /// Its name, sealed.
    pub name_sealed: Vec<u8>,
    /// When the object was first stored.
    pub created_at: OffsetDateTime,
    /// When its current version was stored.
    pub updated_at: OffsetDateTime,
}

/// What [`ObjectsRepo::upsert`] stores.
#[derive(Debug, Clone)]
pub struct NewObjectVersion<'a> {
    /// The object's id within the tenant.
    pub object: &'a str,
    /// The new version.
    pub version: i64,
    /// Plaintext size in bytes.
    pub size: i64,
    /// Stored (sealed) size in bytes.
    pub sealed_size: i64,
    /// The object's name, sealed.
    pub name_sealed: &'a [u8],
}

/// The `objects` table, always filtered by tenant.
#[derive(Debug, Clone)]
pub struct ObjectsRepo {
    pool: PgPool,
}

const COLUMNS: &str = "object, version, size, sealed_size, name_sealed, created_at, updated_at";

impl ObjectsRepo {
    /// A repository on `pool`, whose `search_path` is the service's schema.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The tenant's object `object`, if any.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn get(
        &self,
        scope: &TenantScope,
        object: &str,
    ) -> Result<Option<ObjectRow>, sqlx::Error> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let row = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM objects WHERE tenant = $1 AND object = $2"
        ))
        .bind(scope.as_str())
        .bind(object)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Records `new` as the object's current version unless a newer version is already recorded;
    /// returns the version it replaced (`Some(None)`: none before), or `None` if `new` is older than
    /// the recorded one (a concurrent writer won).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn upsert(
        &self,
        scope: &TenantScope,
        new: &NewObjectVersion<'_>,
    ) -> Result<Option<Option<i64>>, sqlx::Error> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        // Writers of one object take turns (a row lock alone cannot cover the first insert).
        let key = format!("objects/{}/{}", scope.as_str(), new.object);
        xact_lock(&mut tx, &key, false).await?;
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT version FROM objects WHERE tenant = $1 AND object = $2")
                .bind(scope.as_str())
                .bind(new.object)
                .fetch_optional(&mut *tx)
                .await?;
        if previous.is_some_and(|p| p >= new.version) {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO objects (tenant, object, version, size, sealed_size, name_sealed)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant, object) DO UPDATE
                SET version = EXCLUDED.version, size = EXCLUDED.size,
                    sealed_size = EXCLUDED.sealed_size, name_sealed = EXCLUDED.name_sealed,
                    updated_at = now()",
        )
        .bind(scope.as_str())
        .bind(new.object)
        .bind(new.version)
        .bind(new.size)
        .bind(new.sealed_size)
        .bind(new.name_sealed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(previous))
    }

    /// The tenant's objects whose id starts with `prefix`, ordered by id.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn list(
        &self,
        scope: &TenantScope,
        prefix: &str,
    ) -> Result<Vec<ObjectRow>, sqlx::Error> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let rows = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM objects
             WHERE tenant = $1 AND left(object, length($2)) = $2 ORDER BY object"
        ))
        .bind(scope.as_str())
        .bind(prefix)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Deletes the tenant's object `object`; returns the deleted row.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn delete(
        &self,
        scope: &TenantScope,
        object: &str,
    ) -> Result<Option<ObjectRow>, sqlx::Error> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let row = sqlx::query_as(&format!(
            "DELETE FROM objects WHERE tenant = $1 AND object = $2 RETURNING {COLUMNS}"
        ))
        .bind(scope.as_str())
        .bind(object)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Deletes every object row of the tenant; returns how many.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn delete_all(&self, scope: &TenantScope) -> Result<u64, sqlx::Error> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let done = sqlx::query("DELETE FROM objects WHERE tenant = $1")
            .bind(scope.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
