//! Postgres pool and migrations, tenant-scoped repositories, and encrypted object storage (local directory and S3).
