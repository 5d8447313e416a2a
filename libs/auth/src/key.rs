//! API keys: `tmk_<key id>_<secret>`, a random 256-bit secret shown once; only its SHA-256 digest is
//! stored, and digests are compared in constant time.
//!
//! The key id (a UUIDv7 in 32 lowercase hex digits) is not secret: it names the key
//! (`tenants/{tenant}/apiKeys/{key id}`) and finds its record. The secret is base64url without padding.
//! A 256-bit random secret needs no password hashing: a plain SHA-256 digest cannot be brute-forced.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// First token of every API key.
pub const KEY_PREFIX: &str = "tmk";

/// Bytes of randomness in a key's secret.
const SECRET_BYTES: usize = 32;

/// Hex digits of a key id.
const KEY_ID_LEN: usize = 32;

/// A key's public id: a UUIDv7 as 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

/// Why a string is not a key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key id is 32 lowercase hex digits")]
pub struct InvalidKeyId;

impl KeyId {
    /// A fresh, time-ordered key id.
    #[must_use]
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    /// Validates `id`.
    ///
    /// # Errors
    /// [`InvalidKeyId`] unless `id` is 32 lowercase hex digits.
    pub fn parse(id: &str) -> Result<Self, InvalidKeyId> {
        let valid = id.len() == KEY_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(Self(id.to_owned()))
        } else {
            Err(InvalidKeyId)
        }
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for KeyId {
    type Error = InvalidKeyId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> Self {
        id.0
    }
}

/// SHA-256 of a secret; what is stored instead of it. Compared in constant time.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretDigest([u8; 32]);

/// Why a string is not a hex SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a digest is 64 hex digits")]
pub struct InvalidDigest;

impl SecretDigest {
    /// The digest of `secret`.
    #[must_use]
    pub fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// Whether `self` and `other` are equal, in time independent of where they differ.
    #[must_use]
    pub fn matches(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The digest's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest from its 32 bytes.
    ///
    /// # Errors
    /// [`InvalidDigest`] unless `bytes` is 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidDigest> {
        bytes.try_into().map(Self).map_err(|_| InvalidDigest)
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

impl TryFrom<String> for SecretDigest {
    type Error = InvalidDigest;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let bytes = hex::decode(value).map_err(|_| InvalidDigest)?;
        Self::from_slice(&bytes)
    }
}

impl From<SecretDigest> for String {
    fn from(digest: SecretDigest) -> Self {
        hex::encode(digest.0)
    }
}

/// A freshly generated API key: the full token is returned to the caller once and never stored.
pub struct IssuedKey {
    key_id: KeyId,
    digest: SecretDigest,
    token: SecretString,
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl IssuedKey {
    /// A new key: a fresh key id and 256 random bits from the operating system.
    #[must_use]
    pub fn generate() -> Self {
        let key_id = KeyId::generate();
        let mut secret = [0_u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let digest = SecretDigest::of(&secret);
        let token = SecretString::from(format!(
            "{KEY_PREFIX}_{key_id}_{}",
            URL_SAFE_NO_PAD.encode(secret)
        ));
        secret.fill(0);
        Self {
            key_id,
            digest,
            token,
        }
    }

    /// The key's id.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The digest to store.
    #[must_use]
    pub fn digest(&self) -> &SecretDigest {
        &self.digest
    }

    /// The full token, for `authorization: Bearer`; hand it to the caller once, never log or store it.
    #[must_use]
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// The non-secret prefix that identifies the key in listings: `tmk_<key id>`.
    #[must_use]
    pub fn display_prefix(&self) -> String {
        display_prefix(&self.key_id)
    }
}

/// The non-secret prefix that identifies key `key_id` in listings: `tmk_<key id>`.
#[must_use]
pub fn display_prefix(key_id: &KeyId) -> String {
    format!("{KEY_PREFIX}_{key_id}")
}

/// A bearer token parsed as an API key: its id and the digest of its secret (the secret itself is
/// dropped at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    key_id: KeyId,
    digest: SecretDigest,
}

/// Why a bearer token is not an API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an API key of the form tmk_<key id>_<secret>")]
pub struct MalformedKey;

impl PresentedKey {
    /// Parses `token` as `tmk_<key id>_<secret>`.
    ///
    /// # Errors
    /// [`MalformedKey`] if it has another shape or the secret is not 256 bits of base64url.
    pub fn parse(token: &SecretString) -> Result<Self, MalformedKey> {
        let token = token.expose_secret();
        let rest = token
            .strip_prefix(KEY_PREFIX)
            .and_then(|r| r.strip_prefix('_'))
            .ok_or(MalformedKey)?;
        let (id, secret) = rest.split_once('_').ok_or(MalformedKey)?;
        let key_id = KeyId::parse(id).map_err(|_| MalformedKey)?;
        let mut secret = URL_SAFE_NO_PAD.decode(secret).map_err(|_| MalformedKey)?;
        if secret.len() != SECRET_BYTES {
            return Err(MalformedKey);
        }
        let digest = SecretDigest::of(&secret);
        secret.fill(0);
        Ok(Self { key_id, digest })
    }

    /// The key id the token names.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The digest of the token's secret.
    #[must_use]
    pub fn digest(&self) -> &SecretDigest {
        &self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_parse_back_to_their_id_and_digest() {
        let issued = IssuedKey::generate();
        let token = issued.token().expose_secret();
        assert!(token.starts_with(&format!("tmk_{}_", issued.key_id())));
        let presented = PresentedKey::parse(issued.token()).unwrap();
        assert_eq!(presented.key_id(), issued.key_id());
        assert!(presented.digest().matches(issued.digest()));
        assert_ne!(
            IssuedKey::generate().token().expose_secret(),
            issued.token().expose_secret()
        );
        assert!(!format!("{issued:?}").contains(token));
    }

    #[test]
    fn a_changed_secret_gives_another_digest() {
        let issued = IssuedKey::generate();
        let token = issued.token().expose_secret();
        let last = token.chars().last().unwrap();
        let flipped = format!(
            "{}{}",
            &token[..token.len() - 1],
            if last == 'A' { 'Q' } else { 'A' }
        );
        let presented = PresentedKey::parse(&SecretString::from(flipped)).unwrap();
        assert!(!presented.digest().matches(issued.digest()));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let id = KeyId::generate();
        for bad in [
            String::new(),
            "tmk_".to_owned(),
            format!("tmk_{id}"),
            format!("tmk_{id}_"),
            format!("tmk_{id}_c2hvcnQ"),
            format!("xyz_{id}_{}", URL_SAFE_NO_PAD.encode([1_u8; 32])),
            format!(
                "tmk_{}_{}",
                "Z".repeat(32),
                URL_SAFE_NO_PAD.encode([1_u8; 32])
            ),
        ] {
            assert_eq!(
                PresentedKey::parse(&SecretString::from(bad.clone())),
                Err(MalformedKey),
                "{bad}"
            );
        }
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let digest = SecretDigest::of(b"x");
        let hex: String = digest.clone().into();
        assert_eq!(hex.len(), 64);
        assert_eq!(SecretDigest::try_from(hex).unwrap(), digest);
        assert!(SecretDigest::try_from("zz".to_owned()).is_err());
    }
}
