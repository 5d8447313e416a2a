//! Keys: crypto-shredding, KEK rotation (rewrap), DEK rotation, the key file, wrapping, no key output.

use std::sync::Arc;

use trustmesh_crypto::{
    DataKey, DekStore, Error, KeyProvider, Keyring, LocalKeyFile, MemoryDekStore, ObjectRef,
    WrapContext,
};

use crate::{Fixture, OBJ, data};

const GLOBEX: ObjectRef<'static> = ObjectRef {
    tenant: "globex",
    object: "datasets/9/raw",
    version: 1,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn destroying_a_tenant_makes_every_copy_of_its_data_unreadable() {
    let fx = Fixture::new("ingest");
    let old = fx.keyring.seal(&OBJ, b"acme secret v1").await.unwrap();
    fx.keyring.rotate_dek("acme").await.unwrap();
    let newer = fx.keyring.seal(&OBJ, b"acme secret v2").await.unwrap();
    let globex = fx.keyring.seal(&GLOBEX, b"globex data").await.unwrap();

    assert_eq!(fx.keyring.destroy_tenant("acme").await.unwrap(), 2);
    assert_eq!(fx.store.current("ingest", "acme").await.unwrap(), None);

    // Neither this keyring (its cache is evicted) nor a fresh one can open anything of acme's.
    let fresh = fx.keyring("ingest");
    for keyring in [&fx.keyring, &fresh] {
        assert!(matches!(
            keyring.open(&OBJ, &old).await,
            Err(Error::DekNotFound { dek_version: 1 })
        ));
        assert!(matches!(
            keyring.open(&OBJ, &newer).await,
            Err(Error::DekNotFound { dek_version: 2 })
        ));
        // Other tenants are untouched.
        assert_eq!(
            keyring.open(&GLOBEX, &globex).await.unwrap(),
            b"globex data"
        );
    }

    // A new acme DEK (version 1 again) is a different key: the old ciphertext still does not open.
    let after = fx.keyring.seal(&OBJ, b"acme after deletion").await.unwrap();
    assert!(matches!(
        fx.keyring.open(&OBJ, &old).await,
        Err(Error::Decrypt)
    ));
    assert_eq!(
        fresh.open(&OBJ, &after).await.unwrap(),
        b"acme after deletion"
    );
}

#[tokio::test]
async fn another_replica_stops_opening_after_it_evicts_the_tenant() {
    let fx = Fixture::new("ingest");
    let replica = fx.keyring("ingest");
    let sealed = fx.keyring.seal(&OBJ, b"acme").await.unwrap();
    assert_eq!(replica.open(&OBJ, &sealed).await.unwrap(), b"acme");
    fx.keyring.destroy_tenant("acme").await.unwrap();
    replica.evict_tenant("acme");
    assert!(matches!(
        replica.open(&OBJ, &sealed).await,
        Err(Error::DekNotFound { .. })
    ));
}

#[tokio::test]
async fn kek_rotation_rewraps_every_dek_and_keeps_old_data_readable() {
    let fx = Fixture::new("ingest");
    let acme = fx.keyring.seal(&OBJ, b"acme").await.unwrap();
    fx.keyring.rotate_dek("acme").await.unwrap();
    let acme2 = fx.keyring.seal(&OBJ, b"acme 2").await.unwrap();
    let globex = fx.keyring.seal(&GLOBEX, b"globex").await.unwrap();
    let before = fx.store.list_behind("ingest", u32::MAX, 100).await.unwrap();
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|r| r.wrapped.kek_version == 1));

    let report = fx.keyring.rotate_kek().await.unwrap();
    assert_eq!((report.kek_version, report.rewrapped), (2, 3));
    assert!(
        fx.store
            .list_behind("ingest", 2, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let after = fx.store.list_behind("ingest", u32::MAX, 100).await.unwrap();
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(new.wrapped.kek_version, 2);
        assert_ne!(old.wrapped.ciphertext, new.wrapped.ciphertext);
    }
    // Nothing left behind: a second pass rewraps nothing.
    assert_eq!(fx.keyring.rewrap().await.unwrap().rewrapped, 0);

    // A fresh process (key file reopened from disk, empty cache) reads all old data and seals new data.
    let provider = Arc::new(LocalKeyFile::open_or_create(fx.provider.path()).unwrap());
    assert_eq!(provider.current_kek_version().await.unwrap(), 2);
    let keyring = Keyring::new("ingest", provider, fx.store.clone());
    assert_eq!(keyring.open(&OBJ, &acme).await.unwrap(), b"acme");
    assert_eq!(keyring.open(&OBJ, &acme2).await.unwrap(), b"acme 2");
    assert_eq!(keyring.open(&GLOBEX, &globex).await.unwrap(), b"globex");
}

#[tokio::test]
async fn a_replica_sharing_the_key_file_picks_up_a_rotation() {
    let fx = Fixture::new("ingest");
    let other = Arc::new(LocalKeyFile::open_or_create(fx.provider.path()).unwrap());
    let sealed = fx.keyring.seal(&OBJ, b"data").await.unwrap();
    fx.keyring.rotate_kek().await.unwrap();
    // `other` loaded version 1 only; meeting a DEK wrapped under version 2 makes it reload.
    let keyring = Keyring::new("ingest", other, fx.store.clone());
    assert_eq!(keyring.open(&OBJ, &sealed).await.unwrap(), b"data");
}

#[tokio::test]
async fn a_wrapped_dek_only_unwraps_for_its_own_context() {
    let fx = Fixture::new("ingest");
    let dek = DataKey::generate().unwrap();
    let ctx = WrapContext {
        service: "ingest",
        tenant: "acme",
        dek_version: 1,
    };
    let wrapped = fx.provider.wrap(&ctx, &dek).await.unwrap();
    let unwrapped = fx.provider.unwrap(&ctx, &wrapped).await.unwrap();
    assert_eq!(unwrapped.expose_secret(), dek.expose_secret());
    assert!(
        !wrapped
            .ciphertext
            .windows(32)
            .any(|w| w == dek.expose_secret())
    );

    for wrong in [
        WrapContext {
            tenant: "globex",
            ..ctx
        },
        WrapContext {
            service: "analysis",
            ..ctx
        },
        WrapContext {
            dek_version: 2,
            ..ctx
        },
    ] {
        assert!(matches!(
            fx.provider.unwrap(&wrong, &wrapped).await,
            Err(Error::Unwrap)
        ));
    }
    let mut flipped = wrapped.clone();
    flipped.ciphertext[20] ^= 1;
    assert!(matches!(
        fx.provider.unwrap(&ctx, &flipped).await,
        Err(Error::Unwrap)
    ));
    let unknown = trustmesh_crypto::WrappedKey {
        kek_version: 9,
        ..wrapped
    };
    assert!(matches!(
        fx.provider.unwrap(&ctx, &unknown).await,
        Err(Error::UnknownKekVersion(9))
    ));
}

#[tokio::test]
async fn a_dek_record_moved_to_another_tenant_does_not_unwrap() {
    let fx = Fixture::new("ingest");
    fx.keyring.seal(&OBJ, b"acme").await.unwrap();
    let mut record = fx.store.current("ingest", "acme").await.unwrap().unwrap();
    record.tenant = "globex".into();
    fx.store.insert(&record).await.unwrap();
    assert!(matches!(
        fx.keyring.seal(&GLOBEX, b"globex").await,
        Err(Error::Unwrap)
    ));
}

#[cfg(unix)]
#[tokio::test]
async fn the_key_file_is_created_private_and_refused_when_not() {
    use std::os::unix::fs::PermissionsExt;

    let fx = Fixture::new("ingest");
    let path = fx.provider.path();
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    // Reopening reads the same KEK: data sealed before opens through the reopened file.
    let sealed = fx.keyring.seal(&OBJ, b"x").await.unwrap();
    let reopened = Arc::new(LocalKeyFile::open_or_create(path).unwrap());
    assert_eq!(
        Keyring::new("ingest", reopened, fx.store.clone())
            .open(&OBJ, &sealed)
            .await
            .unwrap(),
        b"x"
    );

    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        LocalKeyFile::open_or_create(path),
        Err(Error::KeyProvider(_))
    ));

    let garbage = fx.dir.path().join("garbage");
    std::fs::write(&garbage, "kek 1 not-hex\n").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        LocalKeyFile::open_or_create(&garbage),
        Err(Error::KeyProvider(_))
    ));
}

#[tokio::test]
async fn no_debug_or_error_output_contains_key_bytes() {
    let fx = Fixture::new("ingest");
    let sealed = fx.keyring.seal(&OBJ, &data(1000, 5)).await.unwrap();
    let encryptor = fx.keyring.encryptor(&OBJ).await.unwrap();
    let decryptor = fx.keyring.decryptor(&OBJ, &sealed).await.unwrap();
    let record = fx.store.current("ingest", "acme").await.unwrap().unwrap();
    let ctx = WrapContext {
        service: "ingest",
        tenant: "acme",
        dek_version: 1,
    };
    let dek = fx.provider.unwrap(&ctx, &record.wrapped).await.unwrap();
    let kek_file = std::fs::read_to_string(fx.provider.path()).unwrap();
    let kek_hex = kek_file
        .lines()
        .find_map(|l| l.strip_prefix("kek 1 "))
        .unwrap()
        .to_owned();
    assert_eq!(kek_hex.len(), 64);

    let error = fx
        .keyring
        .open(&ObjectRef { version: 9, ..OBJ }, &sealed)
        .await
        .unwrap_err();
    let outputs = [
        format!("{dek:?}"),
        format!("{:?}", fx.keyring),
        format!("{:?}", fx.provider),
        format!("{:?}", fx.store),
        format!("{encryptor:?}"),
        format!("{decryptor:?}"),
        format!("{error:?} {error}"),
    ];
    assert_eq!(outputs[0], "DataKey(..)");
    let dek_hex = hex(dek.expose_secret());
    let dek_decimal = format!("{:?}", dek.expose_secret());
    let dek_hex_upper = dek_hex.to_uppercase();
    for output in &outputs {
        for secret in [&kek_hex, &dek_hex, &dek_hex_upper, &dek_decimal] {
            assert!(!output.contains(secret.as_str()), "{output} leaks a key");
        }
    }
}

#[tokio::test]
async fn invalid_object_refs_and_chunk_sizes_are_rejected() {
    let fx = Fixture::new("ingest");
    let empty_tenant = ObjectRef { tenant: "", ..OBJ };
    assert!(matches!(
        fx.keyring.seal(&empty_tenant, b"x").await,
        Err(Error::InvalidArgument(_))
    ));
    let long = "o".repeat(2000);
    let long_object = ObjectRef {
        object: &long,
        ..OBJ
    };
    assert!(matches!(
        fx.keyring.seal(&long_object, b"x").await,
        Err(Error::InvalidArgument(_))
    ));
    let store = Arc::new(MemoryDekStore::new());
    for size in [0, 63, 16 * 1024 * 1024 + 1] {
        let keyring = Keyring::new("ingest", fx.provider.clone(), store.clone());
        assert!(matches!(
            keyring.with_chunk_size(size),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[tokio::test]
async fn processes_creating_the_key_file_at_once_end_up_with_one_kek() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    let providers: Vec<Arc<LocalKeyFile>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| LocalKeyFile::open_or_create(&path).unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|h| Arc::new(h.join().unwrap()))
            .collect()
    });
    let store = Arc::new(MemoryDekStore::new());
    let sealed = Keyring::new("ingest", providers[0].clone(), store.clone())
        .seal(&OBJ, b"one kek")
        .await
        .unwrap();
    for provider in &providers[1..] {
        let keyring = Keyring::new("ingest", provider.clone(), store.clone());
        assert_eq!(keyring.open(&OBJ, &sealed).await.unwrap(), b"one kek");
    }
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "temp files left behind");
}

#[test]
fn keyring_and_streams_can_be_shared_and_moved_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Keyring>();
    send_sync::<trustmesh_crypto::Encryptor>();
    send_sync::<trustmesh_crypto::Decryptor>();
    send_sync::<LocalKeyFile>();
    send_sync::<MemoryDekStore>();
}

#[tokio::test]
async fn retiring_old_keks_after_a_rewrap_keeps_data_readable_and_old_wrappings_dead() {
    let fx = Fixture::new("ingest");
    let sealed = fx.keyring.seal(&OBJ, b"kept").await.unwrap();
    let under_v1 = fx.store.current("ingest", "acme").await.unwrap().unwrap();
    assert!(matches!(
        fx.provider.retire_below(2),
        Err(Error::InvalidArgument(_))
    ));

    fx.keyring.rotate_kek().await.unwrap();
    assert_eq!(fx.provider.retire_below(2).unwrap(), 1);
    assert_eq!(fx.provider.retire_below(2).unwrap(), 0);

    let reopened = Arc::new(LocalKeyFile::open_or_create(fx.provider.path()).unwrap());
    let text = std::fs::read_to_string(fx.provider.path()).unwrap();
    assert!(!text.contains("kek 1 ") && text.contains("kek 2 "));
    assert_eq!(
        Keyring::new("ingest", reopened.clone(), fx.store.clone())
            .open(&OBJ, &sealed)
            .await
            .unwrap(),
        b"kept"
    );
    // A copy of the DEK wrapped under the retired KEK (say, in an old database backup) is now dead.
    let ctx = WrapContext {
        service: "ingest",
        tenant: "acme",
        dek_version: 1,
    };
    assert!(matches!(
        reopened.unwrap(&ctx, &under_v1.wrapped).await,
        Err(Error::UnknownKekVersion(1))
    ));
    assert!(matches!(
        fx.provider.unwrap(&ctx, &under_v1.wrapped).await,
        Err(Error::UnknownKekVersion(1))
    ));
}
