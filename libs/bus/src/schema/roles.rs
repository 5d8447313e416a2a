//! One Postgres role per service, owning only its schema.
//!
//! [`provision_service_role`] runs as an administrator (in dev and tests the superuser, in production
//! the operator's bootstrap, `infra/postgres/provision-roles.sql` does the same): it creates or
//! updates the role `tm_<service>` (`LOGIN`, not superuser, `NOBYPASSRLS`, no `CREATEDB`/`CREATEROLE`,
//! not inheriting), makes it the owner of the service's schema and of everything already in it, and
//! revokes whatever it was granted on any other schema. The service then connects as that role: it
//! can migrate its own schema, and reading another service's schema fails with `permission denied`.
//! Being the owner, the role is subject to row-level security only because the tenant tables
//! `FORCE` it ([`super::rls`]).

use std::fmt;
use std::time::Duration;

use sqlx::{Connection, PgPool};

use super::{SchemaError, SchemaName};

/// A validated Postgres role name (`^[a-z_][a-z0-9_]{0,62}$`), safe to splice into SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleName(String);

impl RoleName {
    /// Validates `name` (the rules of [`SchemaName`]).
    ///
    /// # Errors
    ///
    /// [`SchemaError::InvalidName`] if it is not a plain lowercase identifier of at most 63 bytes.
    pub fn new(name: impl Into<String>) -> Result<Self, SchemaError> {
        SchemaName::new(name).map(|s| Self(s.as_str().to_owned()))
    }

    /// The role of the service whose schema is `schema`: `tm_<schema>`.
    ///
    /// # Errors
    ///
    /// [`SchemaError::InvalidName`] if the result is longer than 63 bytes.
    pub fn for_schema(schema: &SchemaName) -> Result<Self, SchemaError> {
        Self::new(format!("tm_{schema}"))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The attributes every service role has, whether created or updated.
const ROLE_ATTRIBUTES: &str =
    "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION";

/// Schemas the revocation leaves alone: the catalogs.
const SYSTEM_SCHEMAS: &str = "('pg_catalog', 'information_schema', 'pg_toast')";

/// Creates (or brings up to date) `role` with `password`, owning `schema` (created if missing) and
/// every table, view and sequence already in it, with nothing granted on any other schema; returns
/// what it did not own before (the relations handed over), for the bootstrap's log.
///
/// `admin` must be a superuser, or a role with `CREATEROLE` that may alter the schema's objects. Safe
/// to run again (it also resets the password and attributes) and from several replicas, or several
/// databases of one server, at once.
///
/// # Errors
///
/// [`SchemaError::Database`] if Postgres refuses a statement.
pub async fn provision_service_role(
    admin: &PgPool,
    schema: &SchemaName,
    role: &RoleName,
    password: &str,
) -> Result<u64, SchemaError> {
    let mut attempt = 1;
    loop {
        match provision_once(admin, schema, role, password).await {
            Err(SchemaError::Database(sqlx::Error::Database(e)))
                if attempt < ROLE_RACE_ATTEMPTS
                    && is_role_race(e.code().as_deref(), e.message()) =>
            {
                tracing::debug!(%role, attempt, error = %e, "Provisioning raced another database's; retrying.");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// How often [`provision_service_role`] tries when another database provisions the same role.
const ROLE_RACE_ATTEMPTS: u32 = 8;

/// Whether a failure is another session changing the same (cluster-wide) role at the same time: its
/// `CREATE ROLE` won (`unique_violation` on `pg_authid`, or `duplicate_object` when it committed
/// between our existence check and our own `CREATE ROLE`), or its `ALTER ROLE` did (`tuple
/// concurrently updated`, an internal error). The advisory lock cannot prevent these, being per
/// database.
fn is_role_race(code: Option<&str>, message: &str) -> bool {
    matches!(code, Some("23505" | "42710" | "40001" | "40P01"))
        || (code == Some("XX000") && message.contains("concurrently"))
}

async fn provision_once(
    admin: &PgPool,
    schema: &SchemaName,
    role: &RoleName,
    password: &str,
) -> Result<u64, SchemaError> {
    let mut conn = admin.acquire().await?;
    let mut tx = conn.begin().await?;
    // NOTE: roles are global to the cluster while advisory locks are per database, so two databases
    // provisioning the same role at once could still race; one cluster per role set avoids that.
    super::xact_lock(&mut tx, &format!("trustmesh-role:{role}"), false).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role.as_str())
            .fetch_one(&mut *tx)
            .await?;
    let verb = if exists { "ALTER" } else { "CREATE" };
    // The password is quoted by the server (`format('%L')`), never spliced by hand.
    let statement: String = sqlx::query_scalar(&format!(
        r#"SELECT format('{verb} ROLE "{role}" {ROLE_ATTRIBUTES} PASSWORD %L', $1::text)"#
    ))
    .bind(password)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(&statement).execute(&mut *tx).await?;
    // NOTE: an administrator that is not a superuser must be a member of the role to hand it objects.
    sqlx::query(&format!(r#"CREATE SCHEMA IF NOT EXISTS "{schema}""#))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(r#"ALTER SCHEMA "{schema}" OWNER TO "{role}""#))
        .execute(&mut *tx)
        .await?;
    // Relations created before the role existed (a deployment upgraded in place) change owner too;
    // sequences owned by a column follow their table.
    let handover: Vec<String> = sqlx::query_scalar(
        "SELECT format('ALTER %s %I.%I OWNER TO %I',
                CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                               WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                n.nspname, c.relname, $2::text)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           AND pg_get_userbyid(c.relowner) <> $2
           AND NOT EXISTS (SELECT 1 FROM pg_depend d
                           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                             AND d.deptype IN ('a', 'i'))",
    )
    .bind(schema.as_str())
    .bind(role.as_str())
    .fetch_all(&mut *tx)
    .await?;
    for statement in &handover {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    // Nothing on any other schema: not `public` (where PUBLIC may create before Postgres 15), not
    // another service's.
    let revokes: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT format('REVOKE ALL ON SCHEMA %1$I FROM %2$I; REVOKE ALL ON ALL TABLES IN SCHEMA %1$I FROM %2$I; REVOKE ALL ON ALL SEQUENCES IN SCHEMA %1$I FROM %2$I', nspname, $2::text)
         FROM pg_namespace
         WHERE nspname <> $1 AND nspname NOT IN {SYSTEM_SCHEMAS} AND nspname NOT LIKE 'pg_temp_%'
           AND nspname NOT LIKE 'pg_toast_temp_%'"
    ))
    .bind(schema.as_str())
    .bind(role.as_str())
    .fetch_all(&mut *tx)
    .await?;
    for statement in revokes {
        sqlx::raw_sql(&statement).execute(&mut *tx).await?;
    }
    sqlx::query("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(handover.len() as u64)
}

/// What the connected role may do that a service role must not: `(superuser, bypasses RLS)`.
///
/// # Errors
///
/// [`SchemaError::Database`] if the query fails.
pub async fn current_role_privileges(pool: &PgPool) -> Result<(bool, bool), SchemaError> {
    Ok(
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(pool)
            .await?,
    )
}

/// Whether the connected role may provision service roles (a superuser, or `CREATEROLE`).
///
/// # Errors
///
/// [`SchemaError::Database`] if the query fails.
pub async fn may_provision_roles(pool: &PgPool) -> Result<bool, SchemaError> {
    Ok(sqlx::query_scalar(
        "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await?)
}

/// Provisions `schema`'s role where one administrator URL is all a deployment has (`trustmesh
/// standalone`, the tests), and returns the URL the service connects with: `admin_url` with the
/// role and its password as credentials.
///
/// The password is derived from the administrator's URL without its database (SHA-256, computed by
/// the server): every database of one server derives the same one, so runs provisioning the same
/// (cluster-wide) role in their own databases at once do not change each other's password, and only
/// a holder of the administrator's credentials can compute it.
///
/// # Errors
///
/// [`SchemaError::InvalidName`] if the role name is too long, [`SchemaError::InvalidUrl`] if the
/// URL is not `postgres://…`,
/// [`SchemaError::Database`] if Postgres refuses a statement.
pub async fn provision_for_admin_url(
    admin: &PgPool,
    admin_url: &str,
    schema: &SchemaName,
) -> Result<String, SchemaError> {
    let role = RoleName::for_schema(schema)?;
    let (server, _) = split_url(admin_url)?;
    let password: String = sqlx::query_scalar(
        "SELECT encode(sha256(convert_to('trustmesh service role' || chr(10) || $1 || chr(10) || $2, 'UTF8')), 'hex')",
    )
    .bind(server)
    .bind(role.as_str())
    .fetch_one(admin)
    .await?;
    provision_service_role(admin, schema, &role, &password).await?;
    login_url(admin_url, &role, &password)
}

/// `url` with `role` and `password` (percent-encoded) as its credentials, keeping host, database
/// and query options.
///
/// # Errors
///
/// [`SchemaError::InvalidUrl`] if `url` is not `postgres://…` or `postgresql://…`.
pub fn login_url(url: &str, role: &RoleName, password: &str) -> Result<String, SchemaError> {
    let (server, rest) = split_url(url)?;
    let (scheme, authority) = server.split_once("://").unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let mut encoded = String::with_capacity(password.len());
    for byte in password.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(format!("{scheme}://{role}:{encoded}@{host}{rest}"))
}

/// Splits a `postgres://` URL into its server part (scheme, credentials, host) and the rest (the
/// database path and query).
fn split_url(url: &str) -> Result<(&str, &str), SchemaError> {
    let Some((scheme, after_scheme)) = url.split_once("://") else {
        return Err(SchemaError::InvalidUrl("expected postgres://".to_owned()));
    };
    if !matches!(scheme, "postgres" | "postgresql") {
        return Err(SchemaError::InvalidUrl(format!(
            "expected postgres://, found {scheme}://"
        )));
    }
    let split = scheme.len() + 3 + after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    Ok(url.split_at(split))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_url_keeps_host_database_and_options() {
        let role = RoleName::new("tm_audit").unwrap();
        assert_eq!(
            login_url(
                "postgres://postgres:pw@127.0.0.1:5432/db?sslmode=require",
                &role,
                "a b/c"
            )
            .unwrap(),
            "postgres://tm_audit:a%20b%2Fc@127.0.0.1:5432/db?sslmode=require"
        );
        assert_eq!(
            login_url("postgresql://h/db", &role, "x").unwrap(),
            "postgresql://tm_audit:x@h/db"
        );
        assert!(login_url("mysql://h/db", &role, "x").is_err());
    }

    #[test]
    fn role_races_are_retried_and_nothing_else() {
        assert!(is_role_race(Some("23505"), "duplicate key value"));
        assert!(is_role_race(Some("XX000"), "tuple concurrently updated"));
        assert!(!is_role_race(Some("XX000"), "something else"));
        assert!(!is_role_race(Some("42501"), "permission denied"));
    }
}
