//! The crypto envelope parser and opener on arbitrary bytes: `inspect` (the header alone) and
//! `Keyring::open` (header, chunk framing, authentication) must return an error, never panic, hang
//! or allocate without bound, whatever the ciphertext. Seeds: real sealed objects (see
//! `fuzz/README.md`), so the fuzzer starts from valid framing and mutates it.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use trustmesh_crypto::{Keyring, LocalKeyFile, MemoryDekStore, ObjectRef, inspect};

const OBJECT: ObjectRef<'static> = ObjectRef {
    tenant: "acme",
    object: "datasets/fuzz/raw",
    version: 1,
};

/// One keyring for the whole run, with a DEK for `acme` (sealing once creates it).
fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("trustmesh-fuzz-{}.kek", std::process::id()));
        let provider = Arc::new(LocalKeyFile::open_or_create(&path).expect("the key file"));
        let keyring = Keyring::new("fuzz", provider, Arc::new(MemoryDekStore::default()))
            .with_chunk_size(64)
            .expect("a valid chunk size");
        futures::executor::block_on(keyring.seal(&OBJECT, b"seed")).expect("sealing works");
        keyring
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = inspect(data);
    let _ = futures::executor::block_on(keyring().open(&OBJECT, data));
});
