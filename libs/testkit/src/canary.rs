//! Plaintext canaries and the scanners that look for them in stores.
//!
//! A test writes [`Canary::as_str`] as customer content through the code under test, then asserts that
//! [`Canary::scan_postgres`] and [`Canary::scan_dir`] find it nowhere: every store must hold it only
//! encrypted.

use std::fmt;
use std::path::{Path, PathBuf};

use sqlx::PgPool;

/// A random, unmistakable plaintext marker.
#[derive(Clone, PartialEq, Eq)]
pub struct Canary(String);

/// A place a canary was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hit {
    /// Rows of a Postgres column hold the canary.
    Postgres {
        /// The schema.
        schema: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// How many rows hold it.
        rows: i64,
    },
    /// A file's bytes (or its name) hold the canary.
    File {
        /// The file.
        path: PathBuf,
    },
}

impl Canary {
    /// A fresh canary: `TMCANARY-` followed by 32 random hex digits and `-YRANACMT`.
    #[must_use]
    pub fn new() -> Self {
        Self(format!(
            "TMCANARY-{}-YRANACMT",
            hex::encode(rand::random::<[u8; 16]>())
        ))
    }

    /// The marker as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The marker as bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Searches every column of every table in every non-system schema of the pool's database: each
    /// value cast to text (which covers text, json, arrays and the hex form of bytea), and bytea columns
    /// also as raw bytes.
    ///
    /// # Errors
    ///
    /// A query failed.
    pub async fn scan_postgres(&self, pool: &PgPool) -> Result<Vec<Hit>, sqlx::Error> {
        let columns: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT c.table_schema::text, c.table_name::text, c.column_name::text, c.data_type::text
             FROM information_schema.columns c
             JOIN information_schema.tables t
               ON t.table_schema = c.table_schema AND t.table_name = c.table_name
             WHERE t.table_type = 'BASE TABLE'
               AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
               AND c.table_schema NOT LIKE 'pg\\_toast%'
               AND c.table_schema NOT LIKE 'pg\\_temp%'
             ORDER BY 1, 2, 3",
        )
        .fetch_all(pool)
        .await?;
        let mut hits = Vec::new();
        for (schema, table, column, data_type) in columns {
            let target = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
            let col = quote_ident(&column);
            let condition = if data_type == "bytea" {
                format!("strpos({col}::text, $1) > 0 OR position($2::bytea IN {col}) > 0")
            } else {
                format!("strpos({col}::text, $1) > 0")
            };
            let sql = format!("SELECT count(*) FROM {target} WHERE {condition}");
            let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(self.as_str());
            if data_type == "bytea" {
                query = query.bind(self.as_bytes());
            }
            let rows = query.fetch_one(pool).await?;
            if rows > 0 {
                hits.push(Hit::Postgres {
                    schema,
                    table,
                    column,
                    rows,
                });
            }
        }
        Ok(hits)
    }

    /// Searches every file under `dir`, recursively: its bytes and its name.
    ///
    /// # Errors
    ///
    /// A directory or file could not be read.
    pub fn scan_dir(&self, dir: &Path) -> std::io::Result<Vec<Hit>> {
        let mut hits = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current)? {
                let entry = entry?;
                let path = entry.path();
                let file_type = entry.file_type()?;
                if file_type.is_dir() {
                    pending.push(path);
                    continue;
                }
                let name_hit = path.to_string_lossy().contains(self.as_str());
                let content_hit =
                    file_type.is_file() && contains(&std::fs::read(&path)?, self.as_bytes());
                if name_hit || content_hit {
                    hits.push(Hit::File { path });
                }
            }
        }
        hits.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        Ok(hits)
    }
}

impl Default for Canary {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Canary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Canary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Canary").field(&self.0).finish()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::TestDatabase;

    #[test]
    fn canaries_are_unique_and_marked() {
        let (a, b) = (Canary::new(), Canary::new());
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("TMCANARY-") && a.as_str().ends_with("-YRANACMT"));
    }

    #[tokio::test]
    async fn scan_postgres_finds_text_json_and_bytea_and_nothing_else() {
        let db = TestDatabase::create().await;
        let pool = db.pool();
        let canary = Canary::new();
        sqlx::query(r#"CREATE SCHEMA "odd ""schema""""#)
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            r#"CREATE TABLE "odd ""schema""".t (id int, note text, doc jsonb, raw bytea, clean bytea, n int)"#,
        )
        .execute(pool)
        .await
        .unwrap();
        assert!(canary.scan_postgres(pool).await.unwrap().is_empty());
        sqlx::query(r#"INSERT INTO "odd ""schema""".t VALUES (1, $1, $2::jsonb, $3, $4, 7)"#)
            .bind(format!("before {canary} after"))
            .bind(serde_json_string(&canary))
            .bind([b"\x00\xff".as_slice(), canary.as_bytes(), b"\x01"].concat())
            .bind(b"\x00 nothing here".as_slice())
            .execute(pool)
            .await
            .unwrap();
        let hits = canary.scan_postgres(pool).await.unwrap();
        let columns: Vec<&str> = hits
            .iter()
            .map(|h| match h {
                Hit::Postgres { column, .. } => column.as_str(),
                Hit::File { .. } => "file",
            })
            .collect();
        assert_eq!(columns, ["doc", "note", "raw"]);
    }

    fn serde_json_string(canary: &Canary) -> String {
        format!(r#"{{"cell": "{canary}"}}"#)
    }

    #[test]
    fn scan_dir_finds_files_recursively() {
        let dir = tempfile::tempdir().unwrap();
        let canary = Canary::new();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(
            dir.path().join("a/b/hit.bin"),
            [b"xx".as_slice(), canary.as_bytes()].concat(),
        )
        .unwrap();
        std::fs::write(dir.path().join("a/miss.bin"), b"nothing").unwrap();
        std::fs::write(dir.path().join(canary.as_str()), b"named").unwrap();
        let hits = canary.scan_dir(dir.path()).unwrap();
        assert_eq!(hits.len(), 2);
        assert!(hits.contains(&Hit::File {
            path: dir.path().join("a/b/hit.bin")
        }));
        assert!(hits.contains(&Hit::File {
            path: dir.path().join(canary.as_str())
        }));
    }
}
