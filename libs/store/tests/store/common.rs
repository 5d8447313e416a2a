//! Fixtures shared by the tests.

use std::sync::Arc;

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use sqlx::PgPool;
use trustmesh_crypto::{KeyProvider, Keyring, LocalKeyFile};
use trustmesh_events::TenantId;
use trustmesh_store::{
    EncryptedObjects, LocalDirStore, ObjectStore, ObjectsRepo, PgDekStore, PgSettings, S3Settings,
    S3Store, SchemaName, TenantScope,
};
use trustmesh_testkit::moto::MotoServer;
use trustmesh_testkit::postgres::TestDatabase;
use trustmesh_testkit::s3::S3Server;

/// A fresh database with `schema` migrated (this crate's migrations), and a pool bound to the schema.
pub(crate) async fn service_db(schema: &str) -> (TestDatabase, PgPool) {
    let db = TestDatabase::create().await;
    let schema = SchemaName::new(schema).unwrap();
    let pool = trustmesh_store::connect(&PgSettings::new(db.url(), schema.clone()))
        .await
        .unwrap();
    trustmesh_store::migrate(&pool, &schema, &[&trustmesh_store::MIGRATOR])
        .await
        .unwrap();
    (db, pool)
}

pub(crate) fn scope(tenant: &str) -> TenantScope {
    TenantScope::new(TenantId::parse(tenant).unwrap())
}

pub(crate) async fn s3_store(server: &S3Server, bucket: &str) -> S3Store {
    let mut settings = S3Settings::compatible(
        server.endpoint(),
        server.region(),
        bucket,
        server.access_key(),
        server.secret_key(),
    );
    settings.part_size = trustmesh_store::objects::DEFAULT_PART_SIZE;
    S3Store::connect(&settings).await.unwrap()
}

/// A store on a fresh bucket of moto (which implements versioning), not yet versioned.
pub(crate) async fn moto_store(server: &MotoServer, bucket: &str) -> S3Store {
    let settings = S3Settings::compatible(
        server.endpoint(),
        server.region(),
        bucket,
        server.access_key(),
        server.secret_key(),
    );
    S3Store::connect(&settings).await.unwrap()
}

/// Switches versioning on for the store's bucket, as an operator would (with the store connected).
pub(crate) async fn enable_versioning(store: &S3Store) {
    store
        .client()
        .put_bucket_versioning()
        .bucket(store.bucket())
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Everything a service needs to keep encrypted objects: KEK file, Postgres DEK store, keyring.
pub(crate) struct Encrypted {
    pub(crate) objects: EncryptedObjects,
    pub(crate) provider: Arc<LocalKeyFile>,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) _kek_dir: tempfile::TempDir,
}

pub(crate) fn encrypted(service: &str, pool: &PgPool, store: Arc<dyn ObjectStore>) -> Encrypted {
    let kek_dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(LocalKeyFile::open_or_create(kek_dir.path().join("kek")).unwrap());
    let dyn_provider: Arc<dyn KeyProvider> = provider.clone();
    let keyring = Arc::new(Keyring::new(
        service,
        dyn_provider,
        Arc::new(PgDekStore::new(pool.clone())),
    ));
    let objects =
        EncryptedObjects::new(store, Arc::clone(&keyring), ObjectsRepo::new(pool.clone()));
    Encrypted {
        objects,
        provider,
        keyring,
        _kek_dir: kek_dir,
    }
}

pub(crate) async fn local_store(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    Arc::new(LocalDirStore::open(dir).await.unwrap())
}

/// `len` bytes of a repeating, position-dependent pattern (so swapped or lost parts show).
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 65_536) as u8)
        .collect()
}
