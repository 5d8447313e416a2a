//! The crate's error type.

use std::error::Error as StdError;

/// A boxed error from a pluggable backend (a KMS client, a database driver, ...).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong while sealing, opening or managing keys.
///
/// Messages never contain key material or plaintext; a failed authentication is deliberately
/// reported without detail ([`Error::Decrypt`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ciphertext did not authenticate: it was tampered with, truncated, reordered, moved to
    /// another object, tenant or service, or sealed under another key.
    #[error("ciphertext failed authentication")]
    Decrypt,
    /// The bytes are not a trustmesh envelope this version understands.
    #[error("malformed envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// No data-encryption key of that version exists for the tenant (never created, or destroyed
    /// by crypto-shredding).
    #[error(
        "data-encryption key {dek_version} of this tenant does not exist (destroyed or never created)"
    )]
    DekNotFound {
        /// The DEK version the ciphertext names.
        dek_version: u32,
    },
    /// The key provider does not know this key-encryption-key version.
    #[error("key-encryption key version {0} is unknown to the key provider")]
    UnknownKekVersion(u32),
    /// A wrapped DEK did not unwrap under its KEK (wrong KEK, or the wrapped bytes were altered).
    #[error("wrapped data-encryption key failed to unwrap")]
    Unwrap,
    /// The caller passed an invalid argument (empty tenant, oversized chunk size, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The key provider's backend failed (I/O, KMS, ...).
    #[error("key provider failed")]
    KeyProvider(#[source] BoxError),
    /// The DEK store's backend failed.
    #[error("data-encryption key store failed")]
    DekStore(#[source] BoxError),
    /// A DEK with the same (service, tenant, version) already exists in the store.
    #[error("data-encryption key already exists")]
    DekConflict,
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// The object is too large for one envelope (more than 2^32 chunks).
    #[error("object too large for one envelope")]
    TooLarge,
}

/// Why an envelope header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Fewer bytes than a header plus one tag.
    #[error("too short")]
    TooShort,
    /// The magic bytes are not `TMCE`.
    #[error("bad magic")]
    BadMagic,
    /// The format version is not one this crate reads.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// The algorithm id is not one this crate reads.
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(u8),
    /// The chunk size is outside the accepted range.
    #[error("chunk size {0} out of range")]
    BadChunkSize(u32),
    /// The ciphertext body's length cannot come from this chunk size.
    #[error("body length does not match the chunk layout")]
    BadLength,
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
