//! Postgres pool and migrations, tenant-scoped repositories, and encrypted object storage (local
//! directory and S3).
//!
//! Layout:
//! - [`pg`]: [`pg::connect`] (TLS from the URL's `sslmode`, required `verify-full` off loopback), the
//!   per-service schema and [`pg::migrate`] (the service's sqlx migrations plus this crate's
//!   [`pg::MIGRATOR`], run inside the schema).
//! - [`tenant`]: [`TenantScope`], the validated tenant every repository method takes.
//! - [`repo`]: [`ObjectsRepo`], the tenant-scoped repository of encrypted objects' metadata.
//! - [`objects`]: the [`ObjectStore`] trait, [`LocalDirStore`] and [`S3Store`]; they store bytes as
//!   given and are only ever given ciphertext.
//! - [`encrypted`]: [`EncryptedObjects`], tenant-scoped put/get/list/delete sealed with a
//!   `trustmesh_crypto::Keyring`, and tenant purge (crypto-shredding first).
//! - [`deks`]: [`PgDekStore`], the Postgres `trustmesh_crypto::DekStore` for wrapped DEKs.

pub mod deks;
pub mod encrypted;
pub mod objects;
pub mod pg;
pub mod repo;
pub mod settings;
pub mod tenant;

pub use deks::PgDekStore;
pub use encrypted::{EncryptedError, EncryptedObjects, ObjectInfo, PlaintextStream, TenantPurge};
pub use objects::{
    LocalDirStore, ObjectError, ObjectKey, ObjectMeta, ObjectPrefix, ObjectStore, S3Settings,
    S3Store,
};
pub use pg::{MIGRATOR, PgError, PgSettings, SchemaName, connect, ensure_database, migrate};
pub use repo::{NewObjectVersion, ObjectRow, ObjectsRepo};
pub use settings::ObjectStoreSettings;
pub use tenant::TenantScope;
