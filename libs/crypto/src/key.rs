//! Key material types: the plaintext DEK (zeroized, never printed) and its wrapped form.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// Length in bytes of every AES-256 key in this crate.
pub const KEY_LEN: usize = 32;

/// A plaintext 256-bit data-encryption key.
///
/// Zeroized on drop; `Debug` prints only `DataKey(..)`. There is no `Display`, `Clone` or
/// serialization: the only way to persist it is [`crate::KeyProvider::wrap`].
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// Generates a fresh random key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`Error::Rng`] if the system generator fails.
    pub fn generate() -> Result<Self> {
        let mut key = Self([0; KEY_LEN]);
        SystemRandom::new()
            .fill(&mut key.0)
            .map_err(|_| Error::Rng)?;
        Ok(key)
    }

    /// Takes ownership of raw key bytes (for key providers that unwrap remotely); the source
    /// array is zeroized.
    pub fn from_bytes(bytes: &mut [u8; KEY_LEN]) -> Self {
        let key = Self(*bytes);
        bytes.zeroize();
        key
    }

    /// The raw key bytes, for a key provider to wrap. Never log or store them.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A DEK encrypted under a key-encryption key: safe to store.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WrappedKey {
    /// The KEK version that wrapped it.
    pub kek_version: u32,
    /// Provider-specific ciphertext (for the local key file: nonce ‖ AES-256-GCM ciphertext ‖ tag).
    pub ciphertext: Vec<u8>,
}

/// What a wrapped DEK is bound to: the provider authenticates it as associated data (or as the KMS
/// encryption context), so a wrapped DEK copied to another tenant, service or version fails to unwrap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WrapContext<'a> {
    /// The service that owns the DEK.
    pub service: &'a str,
    /// The tenant the DEK belongs to.
    pub tenant: &'a str,
    /// The DEK's version within (service, tenant).
    pub dek_version: u32,
}

impl WrapContext<'_> {
    /// A canonical, length-prefixed encoding of the context, for use as associated data.
    pub fn to_aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + self.service.len() + self.tenant.len());
        push_field(&mut aad, b"trustmesh/dek-wrap/v1");
        push_field(&mut aad, self.service.as_bytes());
        push_field(&mut aad, self.tenant.as_bytes());
        aad.extend_from_slice(&self.dek_version.to_be_bytes());
        aad
    }
}

/// Appends `field` with a 4-byte big-endian length prefix (so concatenations are unambiguous).
pub(crate) fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are names and ids bounded far below 4 GiB; saturate rather than wrap just in case.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}
