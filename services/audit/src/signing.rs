//! The checkpoint signing key: an Ed25519 key file of `trustmesh_crypto::signing` (mode 0600,
//! created if missing), the same format as the deletion service's certificate key.

pub(crate) use trustmesh_crypto::signing::Ed25519Signer as CheckpointSigner;
pub(crate) use trustmesh_crypto::signing::verify;
pub use trustmesh_crypto::signing::{ALGORITHM, SigningKeyError, key_id};
