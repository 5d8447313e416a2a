//! The bus tables (`processed_messages`, `outbox`) in a service's own Postgres schema, the
//! service's own role ([`roles`]) and row-level security on its tenant tables ([`rls`]).

pub mod rls;
pub mod roles;

use std::fmt;

use sqlx::{Connection, PgConnection, PgPool};

/// Waits for, then holds until its transaction ends, the advisory lock named `key` on the open
/// transaction of `conn`: exclusive, or shared with the other `shared` holders. Advisory locks are
/// database-wide, so a key starts with what it protects (`<schema>.<table>/…`).
///
/// # Errors
///
/// The database error.
pub async fn xact_lock(
    conn: &mut PgConnection,
    key: &str,
    shared: bool,
) -> Result<(), sqlx::Error> {
    let function = if shared {
        "pg_advisory_xact_lock_shared"
    } else {
        "pg_advisory_xact_lock"
    };
    sqlx::query(&format!("SELECT {function}(hashtextextended($1, 0))"))
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Why the bus tables could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The schema name is not a lowercase identifier.
    #[error(
        "invalid schema name {0:?}: expected 1 to 63 characters of [a-z0-9_], starting with a letter or '_'"
    )]
    InvalidName(String),
    /// A database URL is not `postgres://…` (to provision a role from it).
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// Postgres refused a statement or could not be reached.
    #[error("cannot create the bus tables")]
    Database(#[from] sqlx::Error),
}

/// A validated Postgres schema name (`^[a-z_][a-z0-9_]{0,62}$`), safe to splice into SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`SchemaError::InvalidName`] if it is empty, too long, or has a character outside `[a-z0-9_]`
    /// or a leading digit.
    pub fn new(name: impl Into<String>) -> Result<Self, SchemaError> {
        let name = name.into();
        let mut chars = name.chars();
        let valid = name.len() <= 63
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(Self(name))
        } else {
            Err(SchemaError::InvalidName(name))
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The schema-qualified, quoted name of `table`, e.g. `"ingest"."outbox"`.
    pub(crate) fn table(&self, table: &str) -> String {
        format!(r#""{}"."{table}""#, self.0)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Creates `schema` and the bus tables in it, if missing; safe to run at every start and from several
/// replicas at once.
///
/// - `processed_messages(consumer, msg_id, processed_at)`, primary key `(consumer, msg_id)`: the
///   message ids each consumer has applied ([`crate::ProcessedMessages`]).
/// - `outbox(seq, msg_id, subject, payload, traceparent, tracestate, created_at, published_at,
///   failed_at, last_error)`: events written in business transactions, published by [`crate::OutboxRelay`] in
///   `seq` order; `failed_at` marks a row the server refused for good (an operator must look).
///
/// # Errors
///
/// [`SchemaError::Database`] if Postgres refuses a statement.
pub async fn ensure_schema(pool: &PgPool, schema: &SchemaName) -> Result<(), SchemaError> {
    let processed = schema.table("processed_messages");
    let outbox = schema.table("outbox");
    let statements = [
        format!(
            "CREATE TABLE IF NOT EXISTS {processed} (
                consumer text NOT NULL,
                msg_id text NOT NULL,
                processed_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (consumer, msg_id)
            )"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {outbox} (
                seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                msg_id text NOT NULL,
                subject text NOT NULL,
                payload bytea NOT NULL,
                traceparent text,
                tracestate text,
                created_at timestamptz NOT NULL DEFAULT now(),
                published_at timestamptz,
                failed_at timestamptz,
                last_error text
            )"
        ),
        format!(
            r#"CREATE INDEX IF NOT EXISTS outbox_pending ON {outbox} (seq) WHERE published_at IS NULL AND failed_at IS NULL"#
        ),
    ];
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // NOTE: concurrent `CREATE ... IF NOT EXISTS` can still fail on the catalog's unique indexes, so
    // replicas starting together take turns on a transaction-scoped advisory lock.
    xact_lock(&mut tx, &format!("trustmesh-bus:{schema}"), false).await?;
    // NOTE: `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when the schema exists,
    // which the service's own role ([`roles`]) does not have: it only owns its provisioned schema.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema.as_str())
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        sqlx::query(&format!(r#"CREATE SCHEMA IF NOT EXISTS "{schema}""#))
            .execute(&mut *tx)
            .await?;
    }
    for statement in statements {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["ingest", "trust_scoring", "_x", "a1"] {
            assert!(SchemaName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1a",
            "Ingest",
            "trust-scoring",
            "a\"b",
            "a;drop",
            &"a".repeat(64),
        ] {
            assert!(SchemaName::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            SchemaName::new("ingest").unwrap().table("outbox"),
            r#""ingest"."outbox""#
        );
    }
}
