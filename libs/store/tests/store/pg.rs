//! Pool, schemas, migrations, tenant-scoped repository, Postgres DEK store.

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use trustmesh_crypto::{DekRecord, DekStore, Error as CryptoError, WrappedKey};
use trustmesh_store::{NewObjectVersion, ObjectsRepo, PgDekStore, PgError, PgSettings, SchemaName};
use trustmesh_testkit::postgres::TestDatabase;

use crate::common::{scope, service_db};

/// A stand-in for a service's own migrations.
static SERVICE_MIGRATOR: Migrator = sqlx::migrate!("tests/migrations");

async fn tables_in(pool: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_are_idempotent_and_stay_in_each_service_schema() {
    let db = TestDatabase::create().await;
    let ingest = SchemaName::new("ingest").unwrap();
    let audit = SchemaName::new("audit").unwrap();
    let ingest_pool = trustmesh_store::connect(&PgSettings::new(db.url(), ingest.clone()))
        .await
        .unwrap();
    let audit_pool = trustmesh_store::connect(&PgSettings::new(db.url(), audit.clone()))
        .await
        .unwrap();

    for _ in 0..2 {
        trustmesh_store::migrate(&ingest_pool, &ingest, &[&trustmesh_store::MIGRATOR])
            .await
            .unwrap();
        trustmesh_store::migrate(
            &audit_pool,
            &audit,
            &[&trustmesh_store::MIGRATOR, &SERVICE_MIGRATOR],
        )
        .await
        .unwrap();
    }

    assert_eq!(
        tables_in(db.pool(), "ingest").await,
        ["_sqlx_migrations", "deks", "objects"]
    );
    assert_eq!(
        tables_in(db.pool(), "audit").await,
        ["_sqlx_migrations", "deks", "objects", "widgets"]
    );
    assert!(
        tables_in(db.pool(), "public").await.is_empty(),
        "nothing may land in public"
    );

    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit._sqlx_migrations WHERE success")
            .fetch_one(db.pool())
            .await
            .unwrap();
    // Every migration of both migrators, once.
    let expected = trustmesh_store::MIGRATOR.iter().count() + SERVICE_MIGRATOR.iter().count();
    assert_eq!(usize::try_from(applied).unwrap(), expected);

    // The pool's sessions resolve unqualified names in the service's schema.
    let current: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&ingest_pool)
        .await
        .unwrap();
    assert_eq!(current, "ingest");
    // Migrating did not leave a session with another search_path in the pool.
    for _ in 0..4 {
        let current: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&audit_pool)
            .await
            .unwrap();
        assert_eq!(current, "audit");
    }
}

#[tokio::test]
async fn a_later_migrator_missing_an_applied_migration_is_refused() {
    let db = TestDatabase::create().await;
    let schema = SchemaName::new("audit").unwrap();
    let pool = trustmesh_store::connect(&PgSettings::new(db.url(), schema.clone()))
        .await
        .unwrap();
    trustmesh_store::migrate(
        &pool,
        &schema,
        &[&trustmesh_store::MIGRATOR, &SERVICE_MIGRATOR],
    )
    .await
    .unwrap();
    let err = trustmesh_store::migrate(&pool, &schema, &[&trustmesh_store::MIGRATOR])
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Migrate(_)), "{err:?}");
}

#[tokio::test]
async fn duplicate_migration_versions_are_rejected() {
    let (_db, pool) = service_db("ingest").await;
    let schema = SchemaName::new("ingest").unwrap();
    let err = trustmesh_store::migrate(
        &pool,
        &schema,
        &[&trustmesh_store::MIGRATOR, &trustmesh_store::MIGRATOR],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PgError::DuplicateMigration(_)), "{err:?}");
}

#[test]
fn schema_names_are_validated() {
    for ok in ["ingest", "trust_scoring", "_x1"] {
        assert!(SchemaName::new(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "Ingest",
        "trust-scoring",
        "1abc",
        "a\"b",
        "pg_catalog",
        &"a".repeat(64),
    ] {
        assert!(SchemaName::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn plaintext_or_unverified_tls_is_refused_off_loopback() {
    let schema = SchemaName::new("ingest").unwrap();
    for insecure in [
        "postgres://u:p@db.example.com/x",
        "postgres://u:p@db.example.com/x?sslmode=require",
        "postgres://u:p@10.0.0.7:5432/x?sslmode=verify-ca",
    ] {
        let err = PgSettings::new(insecure, schema.clone())
            .connect_options()
            .unwrap_err();
        assert!(
            matches!(err, PgError::InsecureTls { .. }),
            "{insecure}: {err:?}"
        );
        assert!(
            !err.to_string().contains("u:p"),
            "the message must not carry credentials"
        );
    }
    for fine in [
        "postgres://u:p@db.example.com/x?sslmode=verify-full",
        "postgres://u:p@127.0.0.1/x",
        "postgres://u:p@localhost/x?sslmode=disable",
        "postgres://u:p@[::1]:5432/x",
    ] {
        assert!(
            PgSettings::new(fine, schema.clone())
                .connect_options()
                .is_ok(),
            "{fine}"
        );
    }
    let debug = format!("{:?}", PgSettings::new("postgres://u:secret@h/x", schema));
    assert!(!debug.contains("secret"), "{debug}");
}

#[tokio::test]
async fn repository_rows_are_tenant_scoped() {
    let (_db, pool) = service_db("ingest").await;
    let repo = ObjectsRepo::new(pool.clone());
    let (a, b) = (scope("tenant-a"), scope("tenant-b"));
    let row = NewObjectVersion {
        object: "datasets/1",
        version: 5,
        size: 3,
        sealed_size: 80,
        name_sealed: b"sealed",
    };
    assert_eq!(repo.upsert(&a, &row).await.unwrap(), Some(None));

    assert!(repo.get(&b, "datasets/1").await.unwrap().is_none());
    assert!(repo.list(&b, "").await.unwrap().is_empty());
    assert!(repo.delete(&b, "datasets/1").await.unwrap().is_none());
    assert_eq!(repo.delete_all(&b).await.unwrap(), 0);
    assert_eq!(
        repo.get(&a, "datasets/1").await.unwrap().unwrap().version,
        5
    );

    // An older version never replaces a newer one; a newer one reports what it replaced.
    let older = NewObjectVersion {
        version: 4,
        ..row.clone()
    };
    assert_eq!(repo.upsert(&a, &older).await.unwrap(), None);
    let newer = NewObjectVersion { version: 6, ..row };
    assert_eq!(repo.upsert(&a, &newer).await.unwrap(), Some(Some(5)));
    assert_eq!(repo.list(&a, "datasets/").await.unwrap().len(), 1);
    assert!(repo.list(&a, "reports/").await.unwrap().is_empty());
    assert_eq!(repo.delete_all(&a).await.unwrap(), 1);
}

fn rec(tenant: &str, dek_version: u32, kek_version: u32, byte: u8) -> DekRecord {
    DekRecord {
        service: "ingest".to_owned(),
        tenant: tenant.to_owned(),
        dek_version,
        wrapped: WrappedKey {
            kek_version,
            ciphertext: vec![byte; 60],
        },
    }
}

#[tokio::test]
async fn pg_dek_store_conflicts_rewraps_and_destroys() {
    let (db, pool) = service_db("ingest").await;
    let store = PgDekStore::new(pool.clone());
    store.insert(&rec("acme", 1, 1, 1)).await.unwrap();
    assert!(matches!(
        store.insert(&rec("acme", 1, 1, 2)).await,
        Err(CryptoError::DekConflict)
    ));
    store.insert(&rec("acme", 2, 1, 3)).await.unwrap();
    store.insert(&rec("other", 1, 2, 4)).await.unwrap();

    assert_eq!(
        store.current("ingest", "acme").await.unwrap(),
        Some(rec("acme", 2, 1, 3))
    );
    assert_eq!(
        store.get("ingest", "acme", 1).await.unwrap(),
        Some(rec("acme", 1, 1, 1))
    );
    assert_eq!(store.get("audit", "acme", 1).await.unwrap(), None);
    assert_eq!(
        store.list_behind("ingest", 2, 10).await.unwrap(),
        [rec("acme", 1, 1, 1), rec("acme", 2, 1, 3)]
    );
    assert_eq!(store.list_behind("ingest", 2, 1).await.unwrap().len(), 1);

    // Compare-and-set: only from the expected KEK version.
    let rewrapped = WrappedKey {
        kek_version: 2,
        ciphertext: vec![9; 60],
    };
    assert!(
        store
            .rewrap("ingest", "acme", 1, 1, &rewrapped)
            .await
            .unwrap()
    );
    assert!(
        !store
            .rewrap("ingest", "acme", 1, 1, &rewrapped)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get("ingest", "acme", 1)
            .await
            .unwrap()
            .unwrap()
            .wrapped,
        rewrapped
    );

    // Destruction erases the wrapped bytes, keeps a dated tombstone, and spares other tenants.
    assert_eq!(store.delete_tenant("ingest", "acme").await.unwrap(), 2);
    assert_eq!(store.delete_tenant("ingest", "acme").await.unwrap(), 0);
    assert_eq!(store.current("ingest", "acme").await.unwrap(), None);
    assert_eq!(store.get("ingest", "acme", 1).await.unwrap(), None);
    let tombstones: Vec<(Option<Vec<u8>>, bool)> = sqlx::query_as(
        "SELECT wrapped, destroyed_at IS NOT NULL FROM ingest.deks WHERE tenant = 'acme' ORDER BY version",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(tombstones, [(None, true), (None, true)]);
    assert!(store.current("ingest", "other").await.unwrap().is_some());

    // A tenant that comes back gets fresh keys over the tombstones.
    store.insert(&rec("acme", 1, 2, 7)).await.unwrap();
    assert_eq!(
        store.current("ingest", "acme").await.unwrap(),
        Some(rec("acme", 1, 2, 7))
    );
}
