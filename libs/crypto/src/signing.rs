//! Ed25519 signing keys in local key files (mode 0600, created if missing): the deletion service's
//! certificate key and the audit service's checkpoint key. One line `ed25519 <hex seed>`; the
//! private key is zeroized on drop and never printed.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use ed25519_dalek::{SECRET_KEY_LENGTH, Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The algorithm name signatures and keys carry.
pub const ALGORITHM: &str = "ed25519";

const FILE_HEADER: &str = "# trustmesh signing key: `ed25519 <hex seed>`.\n# Keep this file secret (mode 0600) and backed up; publish only its public key.\n";

/// Why the signing key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The file could not be read or created.
    #[error("cannot read or create the signing key file")]
    Io(#[from] io::Error),
    /// The file is readable by group or others.
    #[error("the signing key file is accessible by group or others; chmod 600 it")]
    Permissions,
    /// The file does not hold one `ed25519 <hex seed>` line.
    #[error("the signing key file is malformed")]
    Malformed,
}

/// Signs with the key of one key file; the private key is zeroized on drop and never printed.
pub struct Ed25519Signer {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// Opens the key file at `path`, creating it (mode 0600, a fresh key) if it does not exist.
    ///
    /// # Errors
    ///
    /// [`SigningKeyError`] if the file cannot be read or created, is readable by group or others, or
    /// is malformed.
    pub fn open_or_create(path: &Path) -> Result<Self, SigningKeyError> {
        match read_key_file(path) {
            Ok(key) => Ok(Self::new(key)),
            Err(SigningKeyError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                let key = SigningKey::generate(&mut rand::rngs::OsRng);
                match write_key_file(path, &key) {
                    Ok(()) => Ok(Self::new(key)),
                    // Another replica created it first: use theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        read_key_file(path).map(Self::new)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn new(key: SigningKey) -> Self {
        let key_id = key_id(key.verifying_key().as_bytes());
        Self { key, key_id }
    }

    /// The key id: `ed25519-` and the first 8 bytes of SHA-256 of the public key, in hex.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw public key.
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The Ed25519 signature of `message`.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// The key id of a raw Ed25519 public key: `ed25519-` and the first 8 bytes of its SHA-256, in hex.
#[must_use]
pub fn key_id(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    format!("{ALGORITHM}-{}", hex::encode(&digest[..8]))
}

/// Whether `signature` is a valid (strict) Ed25519 signature of `message` by `public_key`.
#[must_use]
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(public) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&public) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

fn read_key_file(path: &Path) -> Result<SigningKey, SigningKeyError> {
    let file = fs::File::open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            return Err(SigningKeyError::Permissions);
        }
    }
    let text = Zeroizing::new(io::read_to_string(file)?);
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Err(SigningKeyError::Malformed);
    };
    let Some(("ed25519", seed_hex)) = line.split_once(' ') else {
        return Err(SigningKeyError::Malformed);
    };
    let mut seed = Zeroizing::new([0u8; SECRET_KEY_LENGTH]);
    hex::decode_to_slice(seed_hex.trim(), seed.as_mut()).map_err(|_| SigningKeyError::Malformed)?;
    Ok(SigningKey::from_bytes(&seed))
}

fn write_key_file(path: &Path, key: &SigningKey) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    let seed = Zeroizing::new(hex::encode(key.to_bytes()));
    let mut text = Zeroizing::new(String::with_capacity(FILE_HEADER.len() + seed.len() + 16));
    text.push_str(FILE_HEADER);
    text.push_str("ed25519 ");
    text.push_str(&seed);
    text.push('\n');
    let mut options = fs::OpenOptions::new();
    // NOTE: create_new, so two replicas starting together never overwrite each other's key.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_created_private_and_reopened_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing");
        let first = Ed25519Signer::open_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Ed25519Signer::open_or_create(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        assert_eq!(first.key_id(), again.key_id());
        assert!(first.key_id().starts_with("ed25519-"));
        assert!(!format!("{first:?}").contains(&hex::encode(first.key.to_bytes())));
        let signature = first.sign(b"m");
        assert!(verify(&first.public_key(), b"m", &signature));
        assert!(!verify(&first.public_key(), b"n", &signature));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing");
        Ed25519Signer::open_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Ed25519Signer::open_or_create(&path),
            Err(SigningKeyError::Permissions)
        ));
    }
}
