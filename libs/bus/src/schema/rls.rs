//! Row-level security on tenant tables: a transaction sees the rows of the tenant it names.
//!
//! A table holding tenant data has a `tenant` column; its migration enables and **forces** row-level
//! security (so the owning service role is subject to it too) with the policy
//! [`TENANT_POLICY`], via [`tenant_policy_sql`]:
//!
//! - a transaction opened by [`tenant_tx`] (or marked by [`set_tenant`]) has
//!   `trustmesh.tenant` = the tenant, and sees, inserts and changes only that tenant's rows;
//! - a transaction opened by [`service_tx`] has `trustmesh.scope` = `service`: the **service-wide
//!   escape**, for the code paths that act on every tenant by design (sweepers, the deletion of a
//!   whole tenant, start-up recovery). Only those call it; a request handler never does;
//! - a transaction with neither setting sees no tenant row at all.
//!
//! Both settings are transaction-local (`set_config(.., true)`): they end with the transaction, so a
//! pooled connection never carries one tenant's setting into another's work. A superuser, or a role
//! with `BYPASSRLS`, is not subject to any of this: services connect as their own role
//! ([`super::roles`]).

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// The transaction-local setting naming the tenant a transaction acts for.
pub const TENANT_SETTING: &str = "trustmesh.tenant";

/// The transaction-local setting that, set to [`SERVICE_SCOPE`], opens every tenant's rows.
pub const SCOPE_SETTING: &str = "trustmesh.scope";

/// The value of [`SCOPE_SETTING`] for service-wide work.
pub const SERVICE_SCOPE: &str = "service";

/// The name of the policy on every tenant table.
pub const TENANT_POLICY: &str = "tenant_isolation";

/// The row filter of [`TENANT_POLICY`], for reads and writes alike.
pub const TENANT_PREDICATE: &str = "tenant = current_setting('trustmesh.tenant', true) \
     OR current_setting('trustmesh.scope', true) = 'service'";

/// The statements that put `table` (with a `tenant` column) under row-level security, as a
/// migration writes them.
#[must_use]
pub fn tenant_policy_sql(table: &str) -> String {
    format!(
        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n\
         CREATE POLICY {TENANT_POLICY} ON {table} USING ({TENANT_PREDICATE}) WITH CHECK ({TENANT_PREDICATE});\n"
    )
}

/// Marks the open transaction on `conn` as acting for `tenant` (for a transaction opened
/// elsewhere, e.g. by [`crate::ProcessedMessages::process_once`]).
///
/// # Errors
///
/// The database error.
pub async fn set_tenant(conn: &mut PgConnection, tenant: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(TENANT_SETTING)
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks the open transaction on `conn` as service-wide work: it sees every tenant's rows. Only for
/// the code paths that act on every tenant by design (see the module documentation).
///
/// # Errors
///
/// The database error.
pub async fn set_service_scope(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(SCOPE_SETTING)
        .bind(SERVICE_SCOPE)
        .execute(conn)
        .await?;
    Ok(())
}

/// A transaction on `pool` acting for `tenant`: its queries see and write only that tenant's rows.
///
/// # Errors
///
/// The database error.
pub async fn tenant_tx(
    pool: &PgPool,
    tenant: &str,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    set_tenant(&mut tx, tenant).await?;
    Ok(tx)
}

/// A transaction on `pool` for service-wide work (every tenant's rows): sweepers, a whole tenant's
/// deletion, start-up recovery. Never for a request handler.
///
/// # Errors
///
/// The database error.
pub async fn service_tx(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    set_service_scope(&mut tx).await?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_forces_rls_and_checks_writes() {
        let sql = tenant_policy_sql("reports");
        assert!(sql.contains("ALTER TABLE reports FORCE ROW LEVEL SECURITY"));
        assert!(sql.contains("USING (tenant = current_setting('trustmesh.tenant', true)"));
        assert!(sql.contains("WITH CHECK (tenant = current_setting('trustmesh.tenant', true)"));
    }
}
