//! A fresh, uniquely named Postgres database per test, dropped when the handle is dropped.
//!
//! The server comes from `TRUSTMESH_TEST_DATABASE_URL` (default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`, the dev server of `infra/dev/up.sh`); the
//! role in that URL must be allowed to create databases.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

/// The environment variable naming the Postgres server tests create their databases on.
pub const DATABASE_URL_ENV: &str = "TRUSTMESH_TEST_DATABASE_URL";

/// The server used when [`DATABASE_URL_ENV`] is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// The URL of the Postgres server tests use: [`DATABASE_URL_ENV`] or [`DEFAULT_DATABASE_URL`].
#[must_use]
pub fn server_url() -> String {
    std::env::var(DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// A fresh database on the test server, dropped (`DROP DATABASE ... WITH (FORCE)`) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
    pool: PgPool,
}

impl TestDatabase {
    /// Creates a uniquely named database on the test server and opens a pool to it.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached or refuses to create the database: a test cannot go on without it.
    pub async fn create() -> Self {
        let admin_url = server_url();
        let name = format!("tm_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("cannot connect to the test Postgres server (${DATABASE_URL_ENV}): {e}")
        });
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        admin.close().await.ok();

        let url = with_database(&admin_url, &name);
        let options = PgConnectOptions::from_str(&url)
            .unwrap_or_else(|e| panic!("bad test database URL: {e}"));
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test database {name}: {e}"));
        Self {
            name,
            url,
            admin_url,
            pool,
        }
    }

    /// The database's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection URL for the database (same server, credentials and options as the test server URL).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool connected to the database.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // NOTE: Drop cannot await, and the test's runtime may be a current-thread one that is shutting
        // down, so the database is dropped from a thread with its own small runtime. Best effort: a
        // failure leaves a `tm_test_*` database behind, which is harmless.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = admin
                        .execute(
                            format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str(),
                        )
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Replaces the database in a `postgres://` URL, keeping credentials, host and query options.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i);
    let mut out = match path_start {
        Some(i) => base[..i].to_owned(),
        None => base.to_owned(),
    };
    out.push('/');
    out.push_str(database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=require", "x"),
            "postgres://u:p@h:5432/x?sslmode=require"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432", "x"),
            "postgres://u:p@h:5432/x"
        );
    }

    #[tokio::test]
    async fn creates_a_usable_database_and_drops_it() {
        let db = TestDatabase::create().await;
        let name = db.name().to_owned();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(one, 1);
        let current: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(current, name);
        drop(db);

        let mut admin = PgConnection::connect(&server_url()).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(left, 0, "the test database should be dropped");
    }
}
