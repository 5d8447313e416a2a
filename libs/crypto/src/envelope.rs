//! The self-describing ciphertext envelope: a fixed header, then the chunks.
//!
//! ```text
//! header (53 bytes, all of it authenticated as part of every chunk's AAD):
//!   magic "TMCE" (4) | format version = 1 (1) | algorithm = 1 (1) | DEK version (u32 BE)
//!   | chunk size (u32 BE) | salt (32) | nonce prefix (7)
//! body: chunk_0 ‖ tag_0 ‖ chunk_1 ‖ tag_1 ‖ … ‖ chunk_last ‖ tag_last
//! ```
//!
//! Algorithm 1: per-object key = HKDF-SHA256(DEK, salt, info = object binding); each chunk is
//! AES-256-GCM with nonce = prefix (7) ‖ chunk counter (u32 BE) ‖ last-chunk flag (1), as in
//! STREAM (Hoang, Reyhanitabar, Rogaway, Vizár). Every chunk but the last holds exactly `chunk size`
//! plaintext bytes; the last holds 0 to `chunk size` bytes (an empty object is one empty last chunk).

use crate::error::EnvelopeError;

/// Magic bytes at the start of every envelope.
pub const MAGIC: [u8; 4] = *b"TMCE";
/// The envelope format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Algorithm 1: AES-256-GCM, HKDF-SHA256 per-object key, STREAM nonces (BE32 counter + last flag).
pub const ALGORITHM_AES256GCM_HKDF_STREAM: u8 = 1;
/// Length of the envelope header in bytes.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 4 + SALT_LEN + NONCE_PREFIX_LEN;
/// Length of the authentication tag after each chunk.
pub const TAG_LEN: usize = 16;
/// The default chunk size: 64 KiB of plaintext per chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// The smallest accepted chunk size.
pub const MIN_CHUNK_SIZE: u32 = 64;
/// The largest accepted chunk size (16 MiB).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

pub(crate) const SALT_LEN: usize = 32;
pub(crate) const NONCE_PREFIX_LEN: usize = 7;

/// A parsed envelope header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    dek_version: u32,
    chunk_size: u32,
    salt: [u8; SALT_LEN],
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl Header {
    pub(crate) fn new(
        dek_version: u32,
        chunk_size: u32,
        salt: [u8; SALT_LEN],
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Self {
        Self {
            dek_version,
            chunk_size,
            salt,
            nonce_prefix,
        }
    }

    /// Parses the first [`HEADER_LEN`] bytes of `bytes` (the rest is ignored).
    ///
    /// Never panics, whatever the input.
    ///
    /// # Errors
    /// An [`EnvelopeError`] saying what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(EnvelopeError::TooShort);
        };
        let (magic, rest) = h.split_at(4);
        if magic != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let (&[format, algorithm], rest) = rest.split_at(2) else {
            return Err(EnvelopeError::TooShort);
        };
        if format != FORMAT_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(format));
        }
        if algorithm != ALGORITHM_AES256GCM_HKDF_STREAM {
            return Err(EnvelopeError::UnsupportedAlgorithm(algorithm));
        }
        let (dek_version, rest) = rest.split_at(4);
        let (chunk_size, rest) = rest.split_at(4);
        let (salt, nonce_prefix) = rest.split_at(SALT_LEN);
        let be32 = |b: &[u8]| {
            b.try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| EnvelopeError::TooShort)
        };
        let chunk_size = be32(chunk_size)?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(EnvelopeError::BadChunkSize(chunk_size));
        }
        Ok(Self {
            dek_version: be32(dek_version)?,
            chunk_size,
            salt: salt.try_into().map_err(|_| EnvelopeError::TooShort)?,
            nonce_prefix: nonce_prefix
                .try_into()
                .map_err(|_| EnvelopeError::TooShort)?,
        })
    }

    /// The header's wire encoding.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let fields: [&[u8]; 6] = [
            &MAGIC,
            &[FORMAT_VERSION, ALGORITHM_AES256GCM_HKDF_STREAM],
            &self.dek_version.to_be_bytes(),
            &self.chunk_size.to_be_bytes(),
            &self.salt,
            &self.nonce_prefix,
        ];
        let mut at = 0;
        for field in fields {
            out[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        out
    }

    /// The version of the tenant's DEK that sealed the object.
    pub fn dek_version(&self) -> u32 {
        self.dek_version
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub(crate) fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    pub(crate) fn nonce_prefix(&self) -> &[u8; NONCE_PREFIX_LEN] {
        &self.nonce_prefix
    }
}

/// What a ciphertext says about itself without any key: for inventories and residue scans.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EnvelopeInfo {
    /// The DEK version that sealed it.
    pub dek_version: u32,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Number of chunks.
    pub chunks: u64,
    /// Plaintext length (if the ciphertext authenticates).
    pub plaintext_len: u64,
}

/// Parses a whole envelope's header and checks that its body length fits the chunk layout.
///
/// Never panics on any input; does not authenticate anything.
///
/// # Errors
/// An [`EnvelopeError`] if the bytes cannot be a trustmesh envelope.
pub fn inspect(ciphertext: &[u8]) -> Result<EnvelopeInfo, EnvelopeError> {
    let header = Header::parse(ciphertext)?;
    let body = ciphertext
        .get(HEADER_LEN..)
        .ok_or(EnvelopeError::TooShort)?;
    let (chunks, plaintext_len) = body_layout(body.len() as u64, header.chunk_size)?;
    Ok(EnvelopeInfo {
        dek_version: header.dek_version,
        chunk_size: header.chunk_size,
        chunks,
        plaintext_len,
    })
}

/// (number of chunks, plaintext length) of a body of `body_len` bytes, or why it cannot be one.
pub(crate) fn body_layout(body_len: u64, chunk_size: u32) -> Result<(u64, u64), EnvelopeError> {
    let segment = u64::from(chunk_size) + TAG_LEN as u64;
    let full = body_len / segment;
    let rest = body_len % segment;
    let chunks = match (full, rest) {
        (0, 0) => return Err(EnvelopeError::TooShort),
        (_, 0) => full,
        (_, r) if r < TAG_LEN as u64 => return Err(EnvelopeError::BadLength),
        (_, _) => full + 1,
    };
    if chunks > 1 << 32 {
        return Err(EnvelopeError::BadLength);
    }
    Ok((chunks, body_len - chunks * TAG_LEN as u64))
}

/// The envelope length for `plaintext_len` bytes sealed with `chunk_size`-byte chunks (e.g. to size
/// an upload before sealing).
pub fn sealed_len(plaintext_len: u64, chunk_size: u32) -> u64 {
    let chunk_size = u64::from(chunk_size.max(1));
    let chunks = plaintext_len.div_ceil(chunk_size).max(1);
    HEADER_LEN as u64 + plaintext_len + chunks * TAG_LEN as u64
}
