//! Envelope encryption at rest: AES-256-GCM, wrapped per-(service, tenant) DEKs, chunked AEAD,
//! rotation, crypto-shredding.
//!
//! Key hierarchy: a [`KeyProvider`] holds the service's versioned key-encryption key (KEK;
//! [`LocalKeyFile`] by default, a KMS is another implementation). Each (service, tenant) has
//! data-encryption keys (DEKs), stored only wrapped by the KEK in a [`DekStore`] (Postgres in
//! `trustmesh-store`, [`MemoryDekStore`] here). A [`Keyring`] seals an object under the tenant's
//! current DEK into a self-describing envelope ([`envelope`]): a per-object key is derived with
//! HKDF-SHA256 from the DEK and a random salt, and the object is cut into chunks (64 KiB by default)
//! sealed with AES-256-GCM (`ring`) under STREAM nonces (random prefix ‖ counter ‖ last flag), with
//! (service, tenant, object, version) and the header as AAD. So truncation, reordering, chunk swaps,
//! and moving a ciphertext to another object, version, tenant or service all fail to open.
//!
//! - [`Keyring::rotate_kek`] rewraps every DEK under a new KEK version; old data stays readable.
//! - [`Keyring::destroy_tenant`] deletes a tenant's DEKs (crypto-shredding): nothing of it opens again.
//! - Nonces and salts are generated here only; callers never pass one.
//! - [`signing`]: Ed25519 signing keys in local key files (deletion certificates, audit
//!   checkpoints).
//! - Plaintext keys ([`DataKey`], KEK bytes) are zeroized on drop and print as `..`. `ring`'s expanded
//!   AES key schedules are not zeroized by `ring`; they live only as long as one operation or cache entry.
//!
//! Layout: `keyring` (the entry point), `chunked` (the STREAM AEAD), [`envelope`] (wire format),
//! `key` (key types), `provider` (KEK providers), `store` (DEK stores), `error`.

mod chunked;
pub mod envelope;
mod error;
mod key;
mod keyring;
mod provider;
pub mod signing;
mod store;

pub use chunked::{Decryptor, Encryptor};
pub use envelope::{EnvelopeInfo, Header, inspect, sealed_len};
pub use error::{BoxError, EnvelopeError, Error, Result};
pub use key::{DataKey, KEY_LEN, WrapContext, WrappedKey};
pub use keyring::{Keyring, MAX_OBJECT_LEN, MAX_TENANT_LEN, ObjectRef, RewrapReport};
pub use provider::{KeyProvider, LocalKeyFile};
pub use store::{DekRecord, DekStore, MemoryDekStore};
