//! Encrypted, tenant-scoped objects: ciphertext only in Postgres and object storage, tenant isolation,
//! wrapped DEKs, crypto-shredding.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use trustmesh_crypto::envelope::HEADER_LEN;
use trustmesh_crypto::{Error as CryptoError, KeyProvider, ObjectRef, WrapContext, WrappedKey};
use trustmesh_store::{
    EncryptedError, NewObjectVersion, ObjectKey, ObjectPrefix, ObjectStore, ObjectsRepo,
};
use trustmesh_testkit::canary::Canary;
use trustmesh_testkit::moto::MotoServer;
use trustmesh_testkit::s3::S3Server;

use crate::common::{
    enable_versioning, encrypted, local_store, moto_store, pattern, s3_store, scope, service_db,
};

fn id(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

/// Plaintext with the canary at the start, across 64 KiB chunk boundaries and at the end.
fn canary_payload(canary: &Canary, len: usize) -> Vec<u8> {
    let mut data = pattern(len);
    let c = canary.as_bytes();
    for at in [0, 65_536 - 10, 3 * 65_536 - 5, len / 2, len - c.len()] {
        data[at..at + c.len()].copy_from_slice(c);
    }
    data
}

/// Writes a canary through EncryptedObjects (content and name, small and 20 MiB streamed) and checks
/// that it reads back, then that neither Postgres nor the object files hold it.
async fn canary_round_trip(store: Arc<dyn ObjectStore>, object_root: &std::path::Path) {
    let (db, pool) = service_db("ingest").await;
    let enc = encrypted("ingest", &pool, Arc::clone(&store));
    let acme = scope("acme");
    let canary = Canary::new();

    let small = Bytes::from(canary_payload(&canary, 200_000));
    let info = enc
        .objects
        .put(
            &acme,
            &id("datasets/d1/raw"),
            canary.as_str(),
            small.clone(),
        )
        .await
        .unwrap();
    assert_eq!(info.size, small.len() as u64);
    assert!(info.sealed_size > info.size);
    assert_eq!(
        enc.objects
            .get(&acme, &id("datasets/d1/raw"))
            .await
            .unwrap(),
        small
    );

    let large = canary_payload(&canary, 20 * 1024 * 1024 + 3);
    let pieces: Vec<Result<Bytes, std::io::Error>> = large
        .chunks(1024 * 1024 + 7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let name = format!("{canary}.csv");
    let info = enc
        .objects
        .put_stream(
            &acme,
            &id("datasets/d2/raw"),
            &name,
            futures::stream::iter(pieces),
        )
        .await
        .unwrap();
    assert_eq!(info.size, large.len() as u64);
    assert!(
        enc.objects
            .get(&acme, &id("datasets/d2/raw"))
            .await
            .unwrap()
            == large
    );
    let mut streamed = Vec::new();
    let mut body = enc
        .objects
        .get_stream(&acme, &id("datasets/d2/raw"))
        .await
        .unwrap();
    while let Some(piece) = body.next().await {
        streamed.extend_from_slice(&piece.unwrap());
    }
    assert!(streamed == large);
    let listed = enc.objects.list(&acme, "datasets/").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, [canary.as_str(), name.as_str()]);

    assert_eq!(canary.scan_postgres(db.pool()).await.unwrap(), []);
    assert_eq!(canary.scan_dir(object_root).unwrap(), []);

    // The scanners do see plaintext when it is there, so the empty results above mean something.
    store
        .put(
            &id("control/plain"),
            Bytes::copy_from_slice(canary.as_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(canary.scan_dir(object_root).unwrap().len(), 1);
    sqlx::query("CREATE TABLE ingest.control (note text)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO ingest.control VALUES ($1)")
        .bind(canary.as_str())
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(canary.scan_postgres(db.pool()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn canary_through_local_store_is_in_no_table_and_no_file() {
    let dir = tempfile::tempdir().unwrap();
    canary_round_trip(local_store(dir.path()).await, dir.path()).await;
}

#[tokio::test]
async fn canary_through_s3_is_in_no_table_and_no_file() {
    let server = S3Server::start().await;
    let store = Arc::new(s3_store(&server, "trustmesh-objects").await);
    canary_round_trip(store, server.root_dir()).await;
}

#[tokio::test]
async fn tenant_b_cannot_read_tenant_a_objects() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (_db, pool) = service_db("ingest").await;
    let enc = encrypted("ingest", &pool, Arc::clone(&store));
    let (a, b) = (scope("tenant-a"), scope("tenant-b"));
    let doc = id("datasets/d1/raw");
    let info = enc
        .objects
        .put(&a, &doc, "a.csv", Bytes::from_static(b"a,b\n1,2\n"))
        .await
        .unwrap();
    // B gets a DEK of its own.
    enc.objects
        .put(&b, &id("datasets/mine"), "b.csv", Bytes::from_static(b"x"))
        .await
        .unwrap();

    assert!(matches!(
        enc.objects.get(&b, &doc).await,
        Err(EncryptedError::NotFound)
    ));
    assert!(matches!(
        enc.objects.get_stream(&b, &doc).await,
        Err(EncryptedError::NotFound)
    ));
    assert!(matches!(
        enc.objects.info(&b, &doc).await,
        Err(EncryptedError::NotFound)
    ));
    assert_eq!(enc.objects.list(&b, "datasets/d1").await.unwrap(), []);
    assert!(!enc.objects.delete(&b, &doc).await.unwrap());
    assert_eq!(
        enc.objects.get(&a, &doc).await.unwrap(),
        Bytes::from_static(b"a,b\n1,2\n")
    );

    // Move A's ciphertext and metadata under B, as a buggy or malicious copy would: it does not open.
    let sealed = store
        .get(&id(&format!(
            "ingest/tenant-a/datasets/d1/raw/v{}",
            info.version
        )))
        .await
        .unwrap();
    store
        .put(
            &id(&format!(
                "ingest/tenant-b/datasets/d1/raw/v{}",
                info.version
            )),
            sealed.clone(),
        )
        .await
        .unwrap();
    let repo = ObjectsRepo::new(pool.clone());
    let a_row = repo.get(&a, doc.as_str()).await.unwrap().unwrap();
    let moved = NewObjectVersion {
        object: doc.as_str(),
        version: a_row.version,
        size: a_row.size,
        sealed_size: a_row.sealed_size,
        name_sealed: &a_row.name_sealed,
    };
    repo.upsert(&b, &moved).await.unwrap();
    assert!(matches!(
        enc.objects.get(&b, &doc).await,
        Err(EncryptedError::Crypto(CryptoError::Decrypt))
    ));
    assert!(matches!(
        enc.objects.info(&b, &doc).await,
        Err(EncryptedError::Crypto(CryptoError::Decrypt))
    ));
    // Nor under A as another object or version.
    let other = ObjectRef {
        tenant: "tenant-a",
        object: "datasets/d9/raw",
        version: info.version,
    };
    assert!(matches!(
        enc.keyring.open(&other, &sealed).await,
        Err(CryptoError::Decrypt)
    ));
    let older = ObjectRef {
        tenant: "tenant-a",
        object: doc.as_str(),
        version: info.version - 1,
    };
    assert!(matches!(
        enc.keyring.open(&older, &sealed).await,
        Err(CryptoError::Decrypt)
    ));
}

#[tokio::test]
async fn wrapped_deks_in_postgres_never_equal_raw_dek_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (db, pool) = service_db("ingest").await;
    let enc = encrypted("ingest", &pool, local_store(dir.path()).await);
    for tenant in ["tenant-a", "tenant-b"] {
        enc.objects
            .put(&scope(tenant), &id("x"), "x", Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    enc.keyring.rotate_dek("tenant-a").await.unwrap();

    let rows: Vec<(String, i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT tenant, version, kek_version, wrapped FROM ingest.deks ORDER BY tenant, version",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    for (tenant, version, kek_version, wrapped) in rows {
        let ctx = WrapContext {
            service: "ingest",
            tenant: &tenant,
            dek_version: u32::try_from(version).unwrap(),
        };
        let wrapped_key = WrappedKey {
            kek_version: u32::try_from(kek_version).unwrap(),
            ciphertext: wrapped.clone(),
        };
        let dek = enc.provider.unwrap(&ctx, &wrapped_key).await.unwrap();
        let raw = dek.expose_secret();
        assert_ne!(wrapped.as_slice(), raw.as_slice());
        assert!(
            !wrapped.windows(raw.len()).any(|w| w == raw),
            "raw DEK bytes inside the wrapped DEK"
        );
        // Nowhere in the database either (bytea as raw bytes and as hex text).
        let found: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ingest.deks WHERE position($1::bytea IN wrapped) > 0
                OR strpos(encode(wrapped, 'hex'), encode($1::bytea, 'hex')) > 0",
        )
        .bind(raw.as_slice())
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(found, 0);
    }
}

#[tokio::test]
async fn deleting_a_tenant_shreds_its_keys_objects_and_rows_only() {
    let server = S3Server::start().await;
    let store: Arc<dyn ObjectStore> = Arc::new(s3_store(&server, "trustmesh-objects").await);
    let (_db, pool) = service_db("ingest").await;
    let enc = encrypted("ingest", &pool, Arc::clone(&store));
    let (a, b) = (scope("tenant-a"), scope("tenant-b"));
    let doc = id("datasets/d1/raw");
    let info = enc
        .objects
        .put(&a, &doc, "a", Bytes::from(pattern(100_000)))
        .await
        .unwrap();
    enc.objects
        .put(&a, &id("datasets/d2/raw"), "a2", Bytes::from(pattern(10)))
        .await
        .unwrap();
    enc.objects
        .put(&b, &doc, "b", Bytes::from_static(b"b's data"))
        .await
        .unwrap();
    // A copy kept elsewhere (a backup) of A's ciphertext.
    let backup = store
        .get(&id(&format!(
            "ingest/tenant-a/datasets/d1/raw/v{}",
            info.version
        )))
        .await
        .unwrap();

    let purge = enc.objects.delete_tenant(&a).await.unwrap();
    assert_eq!(
        (
            purge.deks_destroyed,
            purge.objects_deleted,
            purge.rows_deleted
        ),
        (1, 2, 2)
    );
    assert!(matches!(
        enc.objects.get(&a, &doc).await,
        Err(EncryptedError::NotFound)
    ));
    assert!(
        store
            .list(&ObjectPrefix::new("ingest/tenant-a/").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    let backup_ref = ObjectRef {
        tenant: "tenant-a",
        object: doc.as_str(),
        version: info.version,
    };
    assert!(matches!(
        enc.keyring.open(&backup_ref, &backup).await,
        Err(CryptoError::DekNotFound { .. })
    ));
    assert_eq!(
        enc.objects.get(&b, &doc).await.unwrap(),
        Bytes::from_static(b"b's data")
    );

    let again = enc.objects.delete_tenant(&a).await.unwrap();
    assert_eq!(
        (
            again.deks_destroyed,
            again.objects_deleted,
            again.rows_deleted
        ),
        (0, 0, 0)
    );
}

/// On a versioned bucket, a service's deletions leave no S3 version behind: overwriting an object
/// removes every S3 version of the old trustmesh version, deleting one object (a dataset deletion)
/// removes all of its, and deleting the tenant all of the tenant's; another tenant keeps its own.
#[tokio::test]
async fn deletions_on_a_versioned_bucket_leave_no_version_of_the_tenant() {
    let server = MotoServer::start().await;
    let s3 = moto_store(&server, "trustmesh-objects").await;
    enable_versioning(&s3).await;
    let store: Arc<dyn ObjectStore> = Arc::new(s3);
    let (_db, pool) = service_db("ingest").await;
    let enc = encrypted("ingest", &pool, Arc::clone(&store));
    let (a, b) = (scope("tenant-a"), scope("tenant-b"));
    let tenant_a = ObjectPrefix::new("ingest/tenant-a/").unwrap();
    let (d1, d2) = (id("datasets/d1/raw"), id("datasets/d2/raw"));
    for body in ["first", "second", "third"] {
        enc.objects
            .put(&a, &d1, "d1", Bytes::from(body))
            .await
            .unwrap();
    }
    enc.objects
        .put(&a, &d2, "d2", Bytes::from(pattern(10)))
        .await
        .unwrap();
    enc.objects
        .put(&b, &d1, "b", Bytes::from_static(b"b's data"))
        .await
        .unwrap();
    assert_eq!(store.count_versions(&tenant_a).await.unwrap(), 2);

    assert!(enc.objects.delete(&a, &d1).await.unwrap());
    assert_eq!(
        store
            .count_versions(&ObjectPrefix::new("ingest/tenant-a/datasets/d1/").unwrap())
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.count_versions(&tenant_a).await.unwrap(), 1);

    let purge = enc.objects.delete_tenant(&a).await.unwrap();
    assert_eq!((purge.deks_destroyed, purge.objects_deleted), (1, 1));
    assert_eq!(store.count_versions(&tenant_a).await.unwrap(), 0);
    let tenant_b = ObjectPrefix::new("ingest/tenant-b/").unwrap();
    assert_eq!(store.count_versions(&tenant_b).await.unwrap(), 1);
    assert_eq!(
        enc.objects.get(&b, &d1).await.unwrap(),
        Bytes::from_static(b"b's data")
    );
}

#[tokio::test]
async fn overwrites_replace_the_version_and_remove_the_old_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (_db, pool) = service_db("ingest").await;
    let enc = encrypted("ingest", &pool, Arc::clone(&store));
    let acme = scope("acme");
    let doc = id("reports/r1");
    let first = enc
        .objects
        .put(&acme, &doc, "v1", Bytes::from_static(b"one"))
        .await
        .unwrap();
    let second = enc
        .objects
        .put(&acme, &doc, "v2", Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert!(second.version > first.version);
    assert_eq!(
        enc.objects.get(&acme, &doc).await.unwrap(),
        Bytes::from_static(b"two")
    );
    assert_eq!(enc.objects.info(&acme, &doc).await.unwrap().name, "v2");
    let stored = store
        .list(&ObjectPrefix::new("ingest/acme/").unwrap())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0]
            .key
            .as_str()
            .ends_with(&format!("/v{}", second.version))
    );

    assert!(enc.objects.delete(&acme, &doc).await.unwrap());
    assert!(
        store
            .list(&ObjectPrefix::new("ingest/acme/").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        enc.objects.get(&acme, &doc).await,
        Err(EncryptedError::NotFound)
    ));
}

#[tokio::test]
async fn truncated_or_altered_ciphertext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (_db, pool) = service_db("ingest").await;
    let enc = encrypted("ingest", &pool, Arc::clone(&store));
    let acme = scope("acme");
    let doc = id("datasets/big");
    let info = enc
        .objects
        .put(&acme, &doc, "big", Bytes::from(pattern(1_000_000)))
        .await
        .unwrap();
    let key = id(&format!("ingest/acme/datasets/big/v{}", info.version));
    let sealed = store.get(&key).await.unwrap();

    // Drop the last chunk: every remaining chunk authenticates, but the stream must fail at its end.
    let full_chunks = HEADER_LEN + 15 * (65_536 + 16);
    assert!(sealed.len() > full_chunks);
    store.put(&key, sealed.slice(..full_chunks)).await.unwrap();
    assert!(enc.objects.get(&acme, &doc).await.is_err());
    let mut body = enc.objects.get_stream(&acme, &doc).await.unwrap();
    let mut last = None;
    while let Some(piece) = body.next().await {
        last = Some(piece);
    }
    assert!(
        matches!(last, Some(Err(EncryptedError::Crypto(_)))),
        "{last:?}"
    );

    let mut flipped = sealed.to_vec();
    flipped[500_000] ^= 1;
    store.put(&key, Bytes::from(flipped)).await.unwrap();
    assert!(matches!(
        enc.objects.get(&acme, &doc).await,
        Err(EncryptedError::Crypto(CryptoError::Decrypt))
    ));
}

#[tokio::test]
async fn concurrent_writers_of_one_object_leave_one_readable_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (_db, pool) = service_db("ingest").await;
    let enc = encrypted("ingest", &pool, Arc::clone(&store));
    let acme = scope("acme");
    let doc = id("datasets/contended");
    let writers = (0..8u8).map(|i| {
        let (objects, acme, doc) = (enc.objects.clone(), acme.clone(), doc.clone());
        tokio::spawn(async move {
            let body = Bytes::from(vec![i; 10_000]);
            objects
                .put(&acme, &doc, &format!("writer {i}"), body)
                .await
                .unwrap()
        })
    });
    let infos = futures::future::join_all(writers).await;
    let newest = infos
        .into_iter()
        .map(Result::unwrap)
        .max_by_key(|i| i.version)
        .unwrap();

    let current = enc.objects.info(&acme, &doc).await.unwrap();
    assert_eq!(
        (current.version, &current.name),
        (newest.version, &newest.name)
    );
    let byte = enc.objects.get(&acme, &doc).await.unwrap()[0];
    assert_eq!(current.name, format!("writer {byte}"));
    let stored = store
        .list(&ObjectPrefix::new("ingest/acme/").unwrap())
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        1,
        "replaced and losing versions are deleted: {stored:?}"
    );
}

/// What a kill -9 leaves in a dataset's folder, and what deleting it by prefix removes: a version
/// written but never recorded (killed before the row upsert, then rewritten), a version recorded but
/// whose deletion was cut off (killed between deleting the row and the file, then redelivered),
/// and, on a local store, the temporary file of a put killed mid-write. Deleting only the recorded
/// version leaves them for the residue scan; `delete_prefix` leaves nothing, also when rerun, and
/// touches no sibling dataset.
async fn crash_leftovers_are_deleted_by_prefix(
    store: Arc<dyn ObjectStore>,
    local: Option<&std::path::Path>,
) {
    let (_db, pool) = service_db("ingest").await;
    let enc = encrypted("ingest", &pool, Arc::clone(&store));
    let acme = scope("acme");
    let (raw, rows, sibling) = (
        id("datasets/d1/raw"),
        id("datasets/d1/rows"),
        id("datasets/d2/raw"),
    );
    let folder = ObjectPrefix::new("ingest/acme/datasets/d1/").unwrap();
    for key in [&raw, &rows, &sibling] {
        enc.objects
            .put(&acme, key, "data", Bytes::from(pattern(1_000)))
            .await
            .unwrap();
    }
    // Killed between writing a version of `raw` and recording it.
    store
        .put(
            &id("ingest/acme/datasets/d1/raw/v7"),
            Bytes::from(pattern(50)),
        )
        .await
        .unwrap();
    if let Some(root) = local {
        // Killed in the middle of writing a version of `rows`.
        std::fs::write(
            root.join("ingest/acme/datasets/d1/rows/.tmp-0123abcd"),
            pattern(20),
        )
        .unwrap();
    }
    let leftovers = 1 + u64::from(local.is_some());
    assert_eq!(store.count_versions(&folder).await.unwrap(), 2 + leftovers);

    // Deleting what the rows record leaves the leftovers for the residue scan.
    assert!(enc.objects.delete(&acme, &raw).await.unwrap());
    assert_eq!(store.count_versions(&folder).await.unwrap(), 1 + leftovers);
    // Killed between deleting `rows`' row and its file.
    let repo = ObjectsRepo::new(pool.clone());
    assert!(repo.delete(&acme, rows.as_str()).await.unwrap().is_some());
    assert_eq!(store.count_versions(&folder).await.unwrap(), 1 + leftovers);

    // The redelivered deletion, by prefix: no row is left to name them, and nothing is left.
    assert_eq!(
        enc.objects
            .delete_prefix(&acme, "datasets/d1/")
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.count_versions(&folder).await.unwrap(), 0);
    assert_eq!(
        enc.objects
            .delete_prefix(&acme, "datasets/d1/")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        enc.objects.get(&acme, &sibling).await.unwrap(),
        Bytes::from(pattern(1_000))
    );
    if let Some(root) = local {
        assert!(
            !root.join("ingest/acme/datasets/d1").exists(),
            "its folder is pruned"
        );
        assert!(root.join("ingest/acme/datasets/d2").is_dir());
    }

    // Recorded objects are counted and deleted with all their versions.
    enc.objects
        .put(&acme, &raw, "again", Bytes::from(pattern(10)))
        .await
        .unwrap();
    store
        .put(
            &id("ingest/acme/datasets/d1/raw/v8"),
            Bytes::from(pattern(50)),
        )
        .await
        .unwrap();
    assert_eq!(
        enc.objects
            .delete_prefix(&acme, "datasets/d1/")
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.count_versions(&folder).await.unwrap(), 0);
    assert!(matches!(
        enc.objects.get(&acme, &raw).await,
        Err(EncryptedError::NotFound)
    ));
    for bad in ["", "/", "datasets/d1", "datasets//"] {
        assert!(
            matches!(
                enc.objects.delete_prefix(&acme, bad).await,
                Err(EncryptedError::InvalidObjectId(_))
            ),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn local_crash_leftovers_are_deleted_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    crash_leftovers_are_deleted_by_prefix(local_store(dir.path()).await, Some(dir.path())).await;
}

#[tokio::test]
async fn s3_crash_leftovers_are_deleted_by_prefix() {
    let server = S3Server::start().await;
    let store: Arc<dyn ObjectStore> = Arc::new(s3_store(&server, "trustmesh-objects").await);
    crash_leftovers_are_deleted_by_prefix(store, None).await;
}
