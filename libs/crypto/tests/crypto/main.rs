//! Integration tests of trustmesh-crypto: round trips, tamper rejection, keys, rotation, shredding.

mod keys;
mod parser;
mod roundtrip;
mod tamper;

use std::sync::Arc;

use tempfile::TempDir;
use trustmesh_crypto::{Keyring, LocalKeyFile, MemoryDekStore, ObjectRef};

/// A keyring over a fresh key file and an in-memory DEK store (kept alive by the returned parts).
pub(crate) struct Fixture {
    pub(crate) dir: TempDir,
    pub(crate) provider: Arc<LocalKeyFile>,
    pub(crate) store: Arc<MemoryDekStore>,
    pub(crate) keyring: Keyring,
}

impl Fixture {
    pub(crate) fn new(service: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let provider = Arc::new(
            LocalKeyFile::open_or_create(dir.path().join("keys").join("kek")).expect("key file"),
        );
        let store = Arc::new(MemoryDekStore::new());
        let keyring = Keyring::new(service, provider.clone(), store.clone());
        Self {
            dir,
            provider,
            store,
            keyring,
        }
    }

    /// Another keyring (with an empty cache) for `service` over the same provider and store.
    pub(crate) fn keyring(&self, service: &str) -> Keyring {
        Keyring::new(service, self.provider.clone(), self.store.clone())
    }

    /// The same fixture with a smaller chunk size, for multi-chunk tests on small data.
    pub(crate) fn with_chunk_size(self, chunk_size: u32) -> Self {
        let Self {
            dir,
            provider,
            store,
            keyring,
        } = self;
        let keyring = keyring.with_chunk_size(chunk_size).expect("chunk size");
        Self {
            dir,
            provider,
            store,
            keyring,
        }
    }
}

/// The object most tests seal.
pub(crate) const OBJ: ObjectRef<'static> = ObjectRef {
    tenant: "acme",
    object: "datasets/1/raw",
    version: 1,
};

/// Deterministic pseudo-random bytes (xorshift64*), fast even in debug builds.
pub(crate) fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A single-threaded runtime for driving the async API from proptest bodies.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}
