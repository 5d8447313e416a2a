//! The chunked AEAD (STREAM over AES-256-GCM via `ring`): the per-object cipher, [`Encryptor`] and
//! [`Decryptor`].

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use ring::hkdf;

use crate::envelope::{HEADER_LEN, Header, NONCE_PREFIX_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::key::DataKey;

const KEY_INFO: &[u8] = b"trustmesh/object-key/v1";

/// One object's cipher: the per-object key derived from the DEK and the header's salt, and the AAD
/// (object binding ‖ header) every chunk authenticates.
pub(crate) struct ObjectCipher {
    key: LessSafeKey,
    aad: Vec<u8>,
    prefix: [u8; NONCE_PREFIX_LEN],
    chunk_size: usize,
}

impl ObjectCipher {
    /// Derives the object key with HKDF-SHA256(salt, DEK, info = label ‖ binding).
    pub(crate) fn new(dek: &DataKey, header: &Header, binding: &[u8]) -> Result<Self> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, header.salt()).extract(dek.expose_secret());
        let info = [KEY_INFO, binding];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .map_err(|_| Error::InvalidArgument("binding"))?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        let mut aad = Vec::with_capacity(binding.len() + HEADER_LEN);
        aad.extend_from_slice(binding);
        aad.extend_from_slice(&header.to_bytes());
        let chunk_size = usize::try_from(header.chunk_size()).map_err(|_| Error::TooLarge)?;
        Ok(Self {
            key,
            aad,
            prefix: *header.nonce_prefix(),
            chunk_size,
        })
    }

    fn nonce(&self, counter: u32, last: bool) -> Nonce {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.prefix);
        nonce[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&counter.to_be_bytes());
        nonce[NONCE_LEN - 1] = u8::from(last);
        Nonce::assume_unique_for_key(nonce)
    }

    /// Appends `plain` sealed as chunk `counter` (and its tag) to `out`.
    fn seal_into(&self, out: &mut Vec<u8>, plain: &[u8], counter: u32, last: bool) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                self.nonce(counter, last),
                Aad::from(&self.aad),
                &mut out[start..],
            )
            .map_err(|_| Error::TooLarge)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Appends the plaintext of `segment` (chunk ‖ tag) opened as chunk `counter` to `out`; on
    /// failure `out` is left as it was.
    fn open_into(&self, out: &mut Vec<u8>, segment: &[u8], counter: u32, last: bool) -> Result<()> {
        let Some(split) = segment.len().checked_sub(TAG_LEN) else {
            return Err(Error::Decrypt);
        };
        let (ciphertext, tag) = segment.split_at(split);
        let tag = Tag::try_from(tag).map_err(|_| Error::Decrypt)?;
        let start = out.len();
        out.extend_from_slice(ciphertext);
        let nonce = self.nonce(counter, last);
        let opened = self.key.open_in_place_separate_tag(
            nonce,
            Aad::from(&self.aad),
            tag,
            &mut out[start..],
            0..,
        );
        if opened.is_err() {
            out.truncate(start);
            return Err(Error::Decrypt);
        }
        Ok(())
    }
}

/// Seals one object incrementally: feed plaintext of any piece sizes to [`Encryptor::update`], then
/// call [`Encryptor::finish`]; the output pieces, concatenated, are the envelope.
///
/// Made by [`crate::Keyring::encryptor`]; salt and nonce prefix are random per object.
pub struct Encryptor {
    cipher: ObjectCipher,
    header: Option<[u8; HEADER_LEN]>,
    pending: Vec<u8>,
    counter: u32,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("chunks_sealed", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    pub(crate) fn new(cipher: ObjectCipher, header: &Header) -> Self {
        Self {
            cipher,
            header: Some(header.to_bytes()),
            pending: Vec::new(),
            counter: 0,
        }
    }

    /// Appends to `out` the header (first call) and every chunk that `data` completes.
    ///
    /// A full chunk is held back until more data arrives, since the last chunk is sealed differently.
    ///
    /// # Errors
    /// [`Error::TooLarge`] past 2^32 chunks.
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.emit_header(out);
        let size = self.cipher.chunk_size;
        while !data.is_empty() {
            if self.pending.len() == size {
                self.seal_next(out, None)?;
            }
            if self.pending.is_empty() {
                // Fast path: seal straight from the input, without the pending buffer.
                while data.len() > size {
                    let (chunk, rest) = data.split_at(size);
                    self.seal_next(out, Some(chunk))?;
                    data = rest;
                }
            }
            let take = (size - self.pending.len()).min(data.len());
            let (head, rest) = data.split_at(take);
            self.pending.extend_from_slice(head);
            data = rest;
        }
        Ok(())
    }

    /// Seals the last chunk and appends it (and the header, if nothing was appended yet) to `out`.
    ///
    /// # Errors
    /// Never in practice; [`Error::TooLarge`] is kept for symmetry with [`Encryptor::update`].
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<()> {
        self.emit_header(out);
        self.cipher
            .seal_into(out, &self.pending, self.counter, true)
    }

    fn emit_header(&mut self, out: &mut Vec<u8>) {
        if let Some(header) = self.header.take() {
            out.extend_from_slice(&header);
        }
    }

    fn seal_next(&mut self, out: &mut Vec<u8>, chunk: Option<&[u8]>) -> Result<()> {
        let next = self.counter.checked_add(1).ok_or(Error::TooLarge)?;
        match chunk {
            Some(chunk) => self.cipher.seal_into(out, chunk, self.counter, false)?,
            None => {
                self.cipher
                    .seal_into(out, &self.pending, self.counter, false)?;
                self.pending.clear();
            }
        }
        self.counter = next;
        Ok(())
    }
}

/// Opens one object incrementally: feed the body (the bytes after the header) in pieces of any size
/// to [`Decryptor::update`], then call [`Decryptor::finish`].
///
/// Each piece of plaintext appended to `out` has been authenticated as a chunk of this object at its
/// position; only [`Decryptor::finish`] proves the object was not truncated, so act on the plaintext
/// only after it returns `Ok`. Made by [`crate::Keyring::decryptor`].
pub struct Decryptor {
    cipher: ObjectCipher,
    pending: Vec<u8>,
    counter: u32,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("chunks_opened", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    pub(crate) fn new(cipher: ObjectCipher) -> Self {
        Self {
            cipher,
            pending: Vec::new(),
            counter: 0,
        }
    }

    /// Appends to `out` the plaintext of every chunk of `data` known not to be the last one.
    ///
    /// # Errors
    /// [`Error::Decrypt`] if a chunk does not authenticate (then the decryptor must be dropped).
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let segment = self.cipher.chunk_size + TAG_LEN;
        while !data.is_empty() {
            if self.pending.len() == segment {
                let pending = std::mem::take(&mut self.pending);
                self.open_next(out, &pending)?;
                self.pending = pending;
                self.pending.clear();
            }
            if self.pending.is_empty() {
                while data.len() > segment {
                    let (chunk, rest) = data.split_at(segment);
                    self.open_next(out, chunk)?;
                    data = rest;
                }
            }
            let take = (segment - self.pending.len()).min(data.len());
            let (head, rest) = data.split_at(take);
            self.pending.extend_from_slice(head);
            data = rest;
        }
        Ok(())
    }

    /// Opens the last chunk into `out`, proving the object complete.
    ///
    /// # Errors
    /// [`Error::Decrypt`] if the object was truncated or the last chunk does not authenticate.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<()> {
        self.cipher
            .open_into(out, &self.pending, self.counter, true)
    }

    fn open_next(&mut self, out: &mut Vec<u8>, segment: &[u8]) -> Result<()> {
        let next = self.counter.checked_add(1).ok_or(Error::Decrypt)?;
        self.cipher.open_into(out, segment, self.counter, false)?;
        self.counter = next;
        Ok(())
    }
}
