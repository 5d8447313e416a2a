//! Postgres: the connection pool, per-service schemas and their migrations.
//!
//! Each service owns one schema (production: its own database and role). [`connect`] opens a pool
//! whose sessions have `search_path` set to that schema, and [`migrate`] runs the service's sqlx
//! migrations (plus this crate's [`MIGRATOR`]) inside it, with the migration history table in the
//! schema too. TLS comes from the URL's `sslmode` (and [`PgSettings::ssl_root_cert`]); a server that is
//! not on loopback must be reached with `sslmode=verify-full` (sqlx's default, `prefer`, silently
//! falls back to plaintext).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions as _, Connection, Executor, PgPool};

/// This crate's own migrations (the `objects` and `deks` tables); pass it to [`migrate`] next to the
/// service's migrator.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Why connecting or migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database URL does not parse.
    #[error("invalid database URL")]
    InvalidUrl(#[source] sqlx::Error),
    /// A non-loopback server was configured without `sslmode=verify-full`.
    #[error(
        "database host {host} is not on loopback, so sslmode must be verify-full (found {mode}); plaintext or unverified TLS is only allowed on loopback"
    )]
    InsecureTls {
        /// The configured host.
        host: String,
        /// The configured mode.
        mode: &'static str,
    },
    /// A schema name is not `^[a-z_][a-z0-9_]{0,62}$`.
    #[error(
        "invalid schema name {0:?}: expected 1 to 63 characters of [a-z0-9_], not starting with a digit"
    )]
    InvalidSchema(String),
    /// Two migrations passed to [`migrate`] have the same version.
    #[error("two migrations have version {0}")]
    DuplicateMigration(i64),
    /// A migration failed or the history does not match.
    #[error("migration failed")]
    Migrate(#[from] MigrateError),
    /// The database could not be reached or a statement failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// How to reach a service's database.
#[derive(Clone)]
pub struct PgSettings {
    /// A `postgres://` URL; its `sslmode` (and `sslrootcert`) set TLS. It holds the password.
    pub url: SecretString,
    /// The service's schema: the pool's `search_path`.
    pub schema: SchemaName,
    /// A CA bundle to verify the server with (overrides the URL's `sslrootcert`).
    pub ssl_root_cert: Option<PathBuf>,
    /// The pool's size.
    pub max_connections: u32,
    /// How long to wait for a connection from the pool.
    pub acquire_timeout: Duration,
}

impl PgSettings {
    /// Settings for `url` and `schema` with a pool of 10 connections and a 10 s acquire timeout.
    #[must_use]
    pub fn new(url: impl Into<String>, schema: SchemaName) -> Self {
        Self {
            url: SecretString::from(url.into()),
            schema,
            ssl_root_cert: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }

    /// The connect options these settings describe, after the TLS check.
    ///
    /// # Errors
    ///
    /// [`PgError::InvalidUrl`], or [`PgError::InsecureTls`] for a non-loopback host without
    /// `sslmode=verify-full`.
    pub fn connect_options(&self) -> Result<PgConnectOptions, PgError> {
        let mut options =
            PgConnectOptions::from_str(self.url.expose_secret()).map_err(PgError::InvalidUrl)?;
        if let Some(ca) = &self.ssl_root_cert {
            options = options.ssl_root_cert(ca);
        }
        let mode = options.get_ssl_mode();
        let on_loopback = options.get_socket().is_some() || is_loopback(options.get_host());
        if !on_loopback && !matches!(mode, PgSslMode::VerifyFull) {
            return Err(PgError::InsecureTls {
                host: options.get_host().to_owned(),
                mode: ssl_mode_name(mode),
            });
        }
        if on_loopback
            && !matches!(
                mode,
                PgSslMode::VerifyFull | PgSslMode::VerifyCa | PgSslMode::Require
            )
        {
            tracing::warn!(
                host = options.get_host(),
                "The database connection may be plaintext: allowed only because the server is on loopback."
            );
        }
        Ok(options.options([("search_path", self.schema.as_str())]))
    }
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &self.url)
            .field("schema", &self.schema)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn ssl_mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Creates the database `url` names if it does not exist yet (connecting to the server's
/// `postgres` database with the same credentials and TLS), for a first start of the standalone mesh.
///
/// # Errors
///
/// [`PgError::InvalidUrl`] for a URL without a database name or of an unsafe one (only
/// `[A-Za-z0-9_-]` is accepted), the TLS check's errors, or [`PgError::Database`].
pub async fn ensure_database(url: &SecretString) -> Result<(), PgError> {
    let schema = SchemaName::new("public")?;
    let options = PgSettings::new(url.expose_secret(), schema).connect_options()?;
    let name = options
        .get_database()
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .ok_or_else(|| {
            PgError::InvalidUrl(sqlx::Error::Configuration(
                "the database URL must name a database of [A-Za-z0-9_-]".into(),
            ))
        })?
        .to_owned();
    let mut server = options.database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut server)
            .await?;
    if !exists {
        // A concurrent creator may win the race; its database is as good as ours.
        match sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut server)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "Created the database."),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
            Err(error) => return Err(error.into()),
        }
    }
    server.close().await?;
    Ok(())
}

/// Opens a pool to the service's database whose sessions use the service's schema.
///
/// The schema must exist before the pool's queries run; [`migrate`] creates it.
///
/// # Errors
///
/// [`PgSettings::connect_options`]' errors, or [`PgError::Database`] if the server cannot be reached.
pub async fn connect(settings: &PgSettings) -> Result<PgPool, PgError> {
    let options = settings.connect_options()?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// A Postgres schema name: `^[a-z_][a-z0-9_]{0,62}$`, so it can be quoted into SQL safely.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// Validates `name` as a schema name (a service name's `-` becomes `_`, e.g. `trust_scoring`).
    ///
    /// # Errors
    ///
    /// [`PgError::InvalidSchema`] if `name` breaks the pattern or starts with `pg_`.
    pub fn new(name: impl Into<String>) -> Result<Self, PgError> {
        let name = name.into();
        let mut chars = name.chars();
        let valid_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_first || !valid_rest || name.len() > 63 || name.starts_with("pg_") {
            return Err(PgError::InvalidSchema(name));
        }
        Ok(Self(name))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted as an SQL identifier.
    #[must_use]
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Creates `schema` if needed and applies every migration of `migrators` not yet applied in it, with
/// the history table `_sqlx_migrations` inside the schema. Idempotent; concurrent callers serialize on
/// sqlx's advisory lock.
///
/// Pass this crate's [`MIGRATOR`] with the service's own (`&[&trustmesh_store::MIGRATOR, &MIGRATOR]`):
/// they are merged by version, so their versions must not collide.
///
/// # Errors
///
/// [`PgError::DuplicateMigration`], [`PgError::Migrate`] (a failed migration, or an applied one that
/// changed or vanished), [`PgError::Database`].
pub async fn migrate(
    pool: &PgPool,
    schema: &SchemaName,
    migrators: &[&Migrator],
) -> Result<(), PgError> {
    let mut seen = BTreeSet::new();
    let mut migrations = Vec::new();
    for migration in migrators.iter().flat_map(|m| m.iter()) {
        if !seen.insert((
            migration.version,
            migration.migration_type.is_down_migration(),
        )) {
            return Err(PgError::DuplicateMigration(migration.version));
        }
        migrations.push(migration.clone());
    }
    migrations.sort_by_key(|m| m.version);
    let migrator = Migrator::new(Merged(migrations)).await?;

    // NOTE: a detached connection, so the session-level search_path never leaks back into the pool,
    // even when a migration fails half-way.
    let mut conn = pool.acquire().await?.detach();
    // NOTE: `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when the schema exists,
    // which a service's own role (owning its provisioned schema, nothing more) does not have.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema.as_str())
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {}", schema.quoted()).as_str())
            .await?;
    }
    conn.execute(format!("SET search_path TO {}", schema.quoted()).as_str())
        .await?;
    let result = migrator.run(&mut conn).await;
    conn.close().await.ok();
    result?;
    Ok(())
}

/// Migrations already resolved (merged from several migrators).
#[derive(Debug)]
struct Merged(Vec<Migration>);

impl MigrationSource<'static> for Merged {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}
