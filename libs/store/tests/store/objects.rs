//! The raw object stores: local directory and S3 (s3s-fs; moto for versioned buckets), same
//! behaviour; on a versioned bucket deletes leave no version or delete marker behind.

use std::os::unix::fs::PermissionsExt;

use bytes::Bytes;
use futures::StreamExt;
use trustmesh_store::{LocalDirStore, ObjectError, ObjectKey, ObjectPrefix, ObjectStore};
use trustmesh_testkit::moto::MotoServer;
use trustmesh_testkit::s3::S3Server;

use crate::common::{enable_versioning, moto_store, pattern, s3_store};

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

fn prefix(p: &str) -> ObjectPrefix {
    ObjectPrefix::new(p).unwrap()
}

/// `data` as a stream of pieces of `piece` bytes.
fn pieces(data: Vec<u8>, piece: usize) -> trustmesh_store::objects::BodyStream {
    let chunks: Vec<Result<Bytes, ObjectError>> = data
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

/// The behaviour every backend must have.
async fn exercise(store: &dyn ObjectStore) {
    let small = key("svc/tenant-a/small");
    assert!(matches!(
        store.get(&small).await,
        Err(ObjectError::NotFound)
    ));
    store
        .put(&small, Bytes::from_static(b"first"))
        .await
        .unwrap();
    assert_eq!(
        store.get(&small).await.unwrap(),
        Bytes::from_static(b"first")
    );
    store
        .put(&small, Bytes::from_static(b"second, longer"))
        .await
        .unwrap();
    assert_eq!(
        store.get(&small).await.unwrap(),
        Bytes::from_static(b"second, longer")
    );

    let empty = key("svc/tenant-a/empty");
    store.put(&empty, Bytes::new()).await.unwrap();
    assert!(store.get(&empty).await.unwrap().is_empty());

    // 20 MiB in odd-sized pieces: a multipart upload on S3 (8 MiB parts).
    let large = key("svc/tenant-a/dir/large");
    let data = pattern(20 * 1024 * 1024 + 17);
    let size = store
        .put_stream(&large, pieces(data.clone(), 3 * 1024 * 1024 + 5))
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    assert!(
        store.get(&large).await.unwrap() == data,
        "large object differs"
    );
    let mut streamed = Vec::new();
    let mut body = store.get_stream(&large).await.unwrap();
    while let Some(piece) = body.next().await {
        streamed.extend_from_slice(&piece.unwrap());
    }
    assert!(streamed == data, "streamed large object differs");

    store
        .put(&key("svc/tenant-b/x"), Bytes::from_static(b"b"))
        .await
        .unwrap();
    store
        .put(&key("svc/tenant-ab/x"), Bytes::from_static(b"ab"))
        .await
        .unwrap();

    let listed = store.list(&prefix("svc/tenant-a/")).await.unwrap();
    let names: Vec<(&str, u64)> = listed.iter().map(|m| (m.key.as_str(), m.size)).collect();
    assert_eq!(
        names,
        [
            ("svc/tenant-a/dir/large", data.len() as u64),
            ("svc/tenant-a/empty", 0),
            ("svc/tenant-a/small", 14)
        ]
    );
    assert_eq!(
        store.list(&prefix("svc/tenant-a")).await.unwrap().len(),
        4,
        "a plain string prefix"
    );
    assert_eq!(store.list(&prefix("")).await.unwrap().len(), 5);

    store.delete(&small).await.unwrap();
    store.delete(&small).await.unwrap();
    assert!(matches!(
        store.get(&small).await,
        Err(ObjectError::NotFound)
    ));

    assert_eq!(
        store.delete_prefix(&prefix("svc/tenant-a/")).await.unwrap(),
        2
    );
    assert!(
        store
            .list(&prefix("svc/tenant-a/"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.get(&large).await,
        Err(ObjectError::NotFound)
    ));
    assert_eq!(
        store.get(&key("svc/tenant-b/x")).await.unwrap(),
        Bytes::from_static(b"b")
    );
    assert_eq!(
        store.get(&key("svc/tenant-ab/x")).await.unwrap(),
        Bytes::from_static(b"ab")
    );
    assert_eq!(
        store.delete_prefix(&prefix("svc/tenant-a/")).await.unwrap(),
        0
    );
}

/// A put whose body fails part-way stores nothing and leaves the previous object intact.
async fn failed_put_keeps_the_old_object(store: &dyn ObjectStore) {
    let k = key("svc/tenant-a/doc");
    store.put(&k, Bytes::from_static(b"old")).await.unwrap();
    let mut chunks: Vec<Result<Bytes, ObjectError>> = pattern(12 * 1024 * 1024)
        .chunks(1024 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    chunks.push(Err(ObjectError::Body("the client went away".into())));
    let err = store
        .put_stream(&k, futures::stream::iter(chunks).boxed())
        .await
        .unwrap_err();
    assert!(matches!(err, ObjectError::Body(_)), "{err:?}");
    assert_eq!(store.get(&k).await.unwrap(), Bytes::from_static(b"old"));
    assert_eq!(store.list(&prefix("svc/")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn local_dir_store_round_trips_lists_and_deletes_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::open(dir.path().join("objects"))
        .await
        .unwrap();
    exercise(&store).await;
}

#[tokio::test]
async fn s3_store_round_trips_lists_and_deletes_by_prefix() {
    let server = S3Server::start().await;
    let store = s3_store(&server, "trustmesh-test").await;
    assert!(!store.versioning(), "s3s-fs does not version");
    exercise(&store).await;
}

#[tokio::test]
async fn s3_versioned_store_round_trips_lists_and_deletes_by_prefix() {
    let server = MotoServer::start().await;
    let store = moto_store(&server, "trustmesh-versioned").await;
    assert!(store.versioning(), "moto implements versioning");
    enable_versioning(&store).await;
    exercise(&store).await;
    assert_eq!(
        store
            .count_versions(&prefix("svc/tenant-a/"))
            .await
            .unwrap(),
        0
    );
}

/// Every version and delete marker under `prefix`, straight from the S3 API (not the store).
async fn versions(store: &trustmesh_store::S3Store, prefix: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = store
            .client()
            .list_object_versions()
            .bucket(store.bucket())
            .prefix(prefix)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .unwrap();
        out.extend(
            page.versions()
                .iter()
                .map(|v| (v.key().unwrap().to_owned(), false)),
        );
        out.extend(
            page.delete_markers()
                .iter()
                .map(|m| (m.key().unwrap().to_owned(), true)),
        );
        if !page.is_truncated().unwrap_or(false) {
            return out;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
    }
}

/// On a bucket whose versioning is switched on after the store connected: overwrites keep old
/// versions, a plain DELETE (another tool's) leaves a delete marker over a hidden version, and the
/// object from before versioning is version "null". `list` shows only current objects;
/// `count_versions` counts everything; `delete` and `delete_prefix` remove every version and marker
/// of their keys, and only theirs.
#[tokio::test]
async fn s3_versioned_deletes_remove_every_version_and_delete_marker() {
    let server = MotoServer::start().await;
    let store = moto_store(&server, "trustmesh-versions").await;
    let (before, doc, gone) = (
        key("svc/tenant-a/before"),
        key("svc/tenant-a/doc"),
        key("svc/tenant-a/gone"),
    );
    store
        .put(&before, Bytes::from_static(b"null version"))
        .await
        .unwrap();
    enable_versioning(&store).await;
    for body in ["one", "two", "three"] {
        store.put(&doc, Bytes::from(body)).await.unwrap();
    }
    store
        .put(&before, Bytes::from_static(b"second"))
        .await
        .unwrap();
    store
        .put(&gone, Bytes::from_static(b"hidden"))
        .await
        .unwrap();
    store
        .client()
        .delete_object()
        .bucket(store.bucket())
        .key(gone.as_str())
        .send()
        .await
        .unwrap();
    let near = key("svc/tenant-a/doc2");
    store.put(&near, Bytes::from_static(b"near")).await.unwrap();
    store
        .put(&near, Bytes::from_static(b"near 2"))
        .await
        .unwrap();
    let other = key("svc/tenant-b/doc");
    store.put(&other, Bytes::from_static(b"b1")).await.unwrap();
    store.put(&other, Bytes::from_static(b"b2")).await.unwrap();

    let a = prefix("svc/tenant-a/");
    let listed: Vec<String> = store
        .list(&a)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.as_str().to_owned())
        .collect();
    assert_eq!(
        listed,
        [
            "svc/tenant-a/before",
            "svc/tenant-a/doc",
            "svc/tenant-a/doc2"
        ]
    );
    // before: 2, doc: 3, gone: 1 + its marker, doc2: 2.
    assert_eq!(store.count_versions(&a).await.unwrap(), 9);
    assert_eq!(versions(&store, "svc/tenant-a/").await.len(), 9);

    // One key: all three versions go, the key sharing its prefix (doc2) stays.
    store.delete(&doc).await.unwrap();
    assert_eq!(versions(&store, "svc/tenant-a/doc").await.len(), 2);
    assert_eq!(
        store.get(&near).await.unwrap(),
        Bytes::from_static(b"near 2")
    );
    store.delete(&doc).await.unwrap();

    // The prefix: the versions, the hidden version and its delete marker, the "null" version.
    assert_eq!(store.delete_prefix(&a).await.unwrap(), 6);
    assert_eq!(versions(&store, "svc/tenant-a/").await, []);
    assert_eq!(store.count_versions(&a).await.unwrap(), 0);
    assert_eq!(store.delete_prefix(&a).await.unwrap(), 0);
    assert_eq!(
        store
            .count_versions(&prefix("svc/tenant-b/"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.get(&other).await.unwrap(), Bytes::from_static(b"b2"));
}

/// More versions and markers than one ListObjectVersions page or one DeleteObjects batch (1000).
#[tokio::test]
async fn s3_versioned_delete_prefix_pages_through_thousands_of_versions() {
    let server = MotoServer::start().await;
    let store = moto_store(&server, "trustmesh-pages").await;
    enable_versioning(&store).await;
    // Three keys, 350 versions each, then a delete marker on each: 1053 entries, split across pages
    // in the middle of a key's versions.
    let keys: Vec<ObjectKey> = (0..3).map(|i| key(&format!("svc/t-1/k{i}"))).collect();
    // The keys are written concurrently, each one's versions in order (moto can lose a version when
    // one key is written concurrently).
    futures::future::join_all(keys.iter().map(|k| {
        let store = &store;
        async move {
            for n in 0..350 {
                store.put(k, Bytes::from(format!("{n}"))).await.unwrap();
            }
        }
    }))
    .await;
    for k in &keys {
        store
            .client()
            .delete_object()
            .bucket(store.bucket())
            .key(k.as_str())
            .send()
            .await
            .unwrap();
    }
    let p = prefix("svc/t-1/");
    assert!(store.list(&p).await.unwrap().is_empty());
    assert_eq!(store.count_versions(&p).await.unwrap(), 1053);
    assert_eq!(store.delete_prefix(&p).await.unwrap(), 1053);
    assert_eq!(versions(&store, "svc/t-1/").await, []);
}

#[tokio::test]
async fn local_failed_put_keeps_the_old_object_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::open(dir.path()).await.unwrap();
    failed_put_keeps_the_old_object(&store).await;
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("svc/tenant-a"))
        .unwrap()
        .collect();
    assert_eq!(leftovers.len(), 1, "only the object itself: {leftovers:?}");
}

#[tokio::test]
async fn s3_failed_multipart_put_keeps_the_old_object() {
    let server = S3Server::start().await;
    let store = s3_store(&server, "trustmesh-test").await;
    failed_put_keeps_the_old_object(&store).await;
}

#[tokio::test]
async fn s3_large_objects_go_up_as_multipart() {
    let server = S3Server::start().await;
    let store = s3_store(&server, "trustmesh-test").await;
    let (small, large) = (key("svc/t-1/small"), key("svc/t-1/large"));
    store.put(&small, Bytes::from(pattern(1024))).await.unwrap();
    store
        .put(&large, Bytes::from(pattern(20 * 1024 * 1024)))
        .await
        .unwrap();
    let etag = |k: &ObjectKey| {
        let client = store.client().clone();
        let (bucket, k) = (store.bucket().to_owned(), k.as_str().to_owned());
        async move {
            client
                .head_object()
                .bucket(bucket)
                .key(k)
                .send()
                .await
                .unwrap()
                .e_tag()
                .unwrap()
                .to_owned()
        }
    };
    // A multipart object's ETag ends in "-<number of parts>": 20 MiB in 8 MiB parts is 3 parts.
    assert!(etag(&large).await.trim_matches('"').ends_with("-3"));
    assert!(!etag(&small).await.contains('-'));
}

#[tokio::test]
async fn s3_bucket_is_created_once_and_reconnecting_is_harmless() {
    let server = S3Server::start().await;
    let first = s3_store(&server, "auto-created").await;
    first
        .put(&key("a/b"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let second = s3_store(&server, "auto-created").await;
    assert_eq!(
        second.get(&key("a/b")).await.unwrap(),
        Bytes::from_static(b"x")
    );
    assert!(server.root_dir().join("auto-created").is_dir());
}

#[tokio::test]
async fn local_objects_are_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::open(dir.path().join("objects"))
        .await
        .unwrap();
    store
        .put(&key("svc/t-1/x"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let mode = std::fs::metadata(dir.path().join("objects/svc/t-1/x"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(dir.path().join("objects"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn plaintext_s3_endpoints_are_refused_off_loopback() {
    let settings = |endpoint: &str| {
        trustmesh_store::S3Settings::compatible(endpoint, "us-east-1", "b", "ak", "sk")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for bad in [
        "http://s3.example.com",
        "http://10.1.2.3:9000",
        "ftp://127.0.0.1",
    ] {
        let err = runtime
            .block_on(trustmesh_store::S3Store::connect(&settings(bad)))
            .unwrap_err();
        assert!(
            matches!(err, ObjectError::InvalidSettings(_)),
            "{bad}: {err:?}"
        );
    }
    let mut small_parts = settings("https://s3.example.com");
    small_parts.part_size = 1024 * 1024;
    let err = runtime
        .block_on(trustmesh_store::S3Store::connect(&small_parts))
        .unwrap_err();
    assert!(matches!(err, ObjectError::InvalidSettings(_)), "{err:?}");
    assert!(!format!("{:?}", settings("https://s3.example.com")).contains("\"sk\""));
}

/// A prefix deletion prunes the empty directories inside its prefix and no others (a sibling's
/// empty directory may be one a concurrent put just made for its file), and it deletes, as the
/// residue scan counts, the temporary file a put killed mid-write left under the prefix.
#[tokio::test]
async fn local_delete_prefix_prunes_only_inside_the_prefix_and_agrees_with_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::open(dir.path()).await.unwrap();
    let root = dir.path();
    store
        .put(&key("svc/t-1/d1/raw/v1"), Bytes::from_static(b"a"))
        .await
        .unwrap();
    std::fs::write(root.join("svc/t-1/d1/raw/.tmp-0123abcd"), b"partial").unwrap();
    // Empty directories of other prefixes: another dataset's (its put about to write), another tenant's.
    std::fs::create_dir_all(root.join("svc/t-1/d2/raw")).unwrap();
    std::fs::create_dir_all(root.join("svc/t-2")).unwrap();

    let d1 = prefix("svc/t-1/d1/");
    assert_eq!(
        store.list(&d1).await.unwrap().len(),
        1,
        "a temporary file is not an object"
    );
    assert_eq!(
        store.count_versions(&d1).await.unwrap(),
        2,
        "but the scan counts it"
    );
    assert_eq!(store.delete_prefix(&d1).await.unwrap(), 2);
    assert_eq!(store.count_versions(&d1).await.unwrap(), 0);
    assert!(
        !root.join("svc/t-1/d1").exists(),
        "the prefix's directories are pruned"
    );
    assert!(
        root.join("svc/t-1/d2/raw").is_dir(),
        "a sibling's empty directory stays"
    );
    assert!(
        root.join("svc/t-2").is_dir(),
        "another tenant's empty directory stays"
    );

    assert_eq!(store.delete_prefix(&prefix("svc/t-1/")).await.unwrap(), 0);
    assert!(!root.join("svc/t-1").exists());
    assert!(root.join("svc/t-2").is_dir());
}
