//! The key-encryption-key (KEK) provider trait and its local key file implementation.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use async_trait::async_trait;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::key::{DataKey, KEY_LEN, WrapContext, WrappedKey};

/// Wraps and unwraps data-encryption keys under a versioned key-encryption key.
///
/// The local key file ([`LocalKeyFile`]) is the default; a KMS or Vault/OpenBao-transit provider is
/// another implementation. Implementations must authenticate the [`WrapContext`] (as AAD or KMS
/// encryption context) so a wrapped DEK only unwraps for the (service, tenant, version) it was made for.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// The KEK version that [`KeyProvider::wrap`] uses now.
    ///
    /// # Errors
    /// [`Error::KeyProvider`] if the backend cannot be reached.
    async fn current_kek_version(&self) -> Result<u32>;

    /// Wraps `dek` under the current KEK version, bound to `ctx`.
    ///
    /// # Errors
    /// [`Error::KeyProvider`] or [`Error::Rng`] on backend failure.
    async fn wrap(&self, ctx: &WrapContext<'_>, dek: &DataKey) -> Result<WrappedKey>;

    /// Unwraps `wrapped` with the KEK version it names, checking it is bound to `ctx`.
    ///
    /// # Errors
    /// [`Error::UnknownKekVersion`] if that version is gone, [`Error::Unwrap`] if the wrapped key
    /// does not authenticate for `ctx`, [`Error::KeyProvider`] on backend failure.
    async fn unwrap(&self, ctx: &WrapContext<'_>, wrapped: &WrappedKey) -> Result<DataKey>;

    /// Adds a new KEK version and makes it current; older versions keep unwrapping.
    ///
    /// # Errors
    /// [`Error::KeyProvider`] or [`Error::Rng`] on backend failure.
    async fn rotate(&self) -> Result<u32>;
}

const FILE_HEADER: &str = "# trustmesh local key-encryption keys: `kek <version> <hex key>` per line; the highest version is current.\n# Keep this file secret (mode 0600) and backed up: losing it makes every DEK it wraps unreadable.\n";

/// A [`KeyProvider`] whose KEK versions live in a local file (mode 0600), for standalone and dev use.
///
/// The file is created with one fresh KEK if missing, and refused if group or others can read it.
/// Wrapping uses AES-256-GCM with a random 96-bit nonce and the [`WrapContext`] as AAD. Another
/// process sharing the file sees a rotation when it meets an unknown version (it reloads once).
pub struct LocalKeyFile {
    path: PathBuf,
    keks: RwLock<BTreeMap<u32, Zeroizing<[u8; KEY_LEN]>>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for LocalKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalKeyFile {
    /// Opens the key file at `path`, creating it (mode 0600, one fresh KEK) if it does not exist.
    ///
    /// # Errors
    /// [`Error::KeyProvider`] if the file cannot be read or created, is readable by group or others,
    /// or is malformed; [`Error::Rng`] if a fresh key cannot be generated.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let rng = SystemRandom::new();
        let keks = match read_key_file(&path) {
            Ok(keks) => keks,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut keks = BTreeMap::new();
                keks.insert(1, random_key(&rng)?);
                match write_key_file(&path, &keks, true) {
                    Ok(()) => keks,
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        read_key_file(&path).map_err(provider_err)?
                    }
                    Err(e) => return Err(provider_err(e)),
                }
            }
            Err(e) => return Err(provider_err(e)),
        };
        Ok(Self {
            path,
            keks: RwLock::new(keks),
            rng,
        })
    }

    /// Permanently deletes the KEK versions below `min_version` from the file (after
    /// [`crate::Keyring::rewrap`] reported every DEK rewrapped), so a leaked old KEK unwraps nothing
    /// stored from then on. Returns how many versions were deleted.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `min_version` is above the current version (that would delete
    /// every KEK); [`Error::KeyProvider`] if the file cannot be rewritten.
    pub fn retire_below(&self, min_version: u32) -> Result<usize> {
        self.reload()?;
        let mut keks = self
            .keks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keks
            .keys()
            .next_back()
            .is_none_or(|&current| min_version > current)
        {
            return Err(Error::InvalidArgument("cannot retire the current KEK"));
        }
        let retired = keks.range(..min_version).count();
        if retired > 0 {
            let kept = keks.clone().split_off(&min_version);
            write_key_file(&self.path, &kept, false).map_err(provider_err)?;
            *keks = kept;
        }
        Ok(retired)
    }

    /// The path of the key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_kek<T>(&self, version: u32, f: impl FnOnce(&LessSafeKey) -> T) -> Option<T> {
        let keks = self
            .keks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = keks.get(&version)?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes.as_ref()).ok()?);
        Some(f(&key))
    }

    fn current(&self) -> u32 {
        let keks = self
            .keks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keks.keys().next_back().copied().unwrap_or(0)
    }

    fn reload(&self) -> Result<()> {
        let fresh = read_key_file(&self.path).map_err(provider_err)?;
        let mut keks = self
            .keks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (version, key) in fresh {
            keks.entry(version).or_insert(key);
        }
        Ok(())
    }

    fn unwrap_sync(&self, ctx: &WrapContext<'_>, wrapped: &WrappedKey) -> Option<Result<DataKey>> {
        self.with_kek(wrapped.kek_version, |kek| {
            let ct = &wrapped.ciphertext;
            if ct.len() != NONCE_LEN + KEY_LEN + AES_256_GCM.tag_len() {
                return Err(Error::Unwrap);
            }
            let (nonce, body) = ct.split_at(NONCE_LEN);
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Unwrap)?;
            let mut buf = Zeroizing::new(body.to_vec());
            let plain = kek
                .open_in_place(nonce, Aad::from(ctx.to_aad()), buf.as_mut_slice())
                .map_err(|_| Error::Unwrap)?;
            let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
            bytes.copy_from_slice(plain);
            Ok(DataKey::from_bytes(&mut bytes))
        })
    }
}

#[async_trait]
impl KeyProvider for LocalKeyFile {
    async fn current_kek_version(&self) -> Result<u32> {
        Ok(self.current())
    }

    async fn wrap(&self, ctx: &WrapContext<'_>, dek: &DataKey) -> Result<WrappedKey> {
        let version = self.current();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| Error::Rng)?;
        let mut ciphertext = Vec::with_capacity(NONCE_LEN + KEY_LEN + AES_256_GCM.tag_len());
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(dek.expose_secret());
        self.with_kek(version, |kek| {
            let tag = kek
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(ctx.to_aad()),
                    &mut ciphertext[NONCE_LEN..],
                )
                .map_err(|_| Error::Unwrap)?;
            ciphertext.extend_from_slice(tag.as_ref());
            Ok::<(), Error>(())
        })
        .ok_or(Error::UnknownKekVersion(version))??;
        Ok(WrappedKey {
            kek_version: version,
            ciphertext,
        })
    }

    async fn unwrap(&self, ctx: &WrapContext<'_>, wrapped: &WrappedKey) -> Result<DataKey> {
        if let Some(result) = self.unwrap_sync(ctx, wrapped) {
            return result;
        }
        // Another process may have rotated the shared file: reload once.
        self.reload()?;
        self.unwrap_sync(ctx, wrapped)
            .unwrap_or(Err(Error::UnknownKekVersion(wrapped.kek_version)))
    }

    async fn rotate(&self) -> Result<u32> {
        self.reload()?;
        let mut keks = self
            .keks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = keks
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(Error::TooLarge)?;
        let mut updated = keks.clone();
        updated.insert(next, random_key(&self.rng)?);
        write_key_file(&self.path, &updated, false).map_err(provider_err)?;
        *keks = updated;
        Ok(next)
    }
}

fn provider_err(e: io::Error) -> Error {
    Error::KeyProvider(Box::new(e))
}

fn random_key(rng: &SystemRandom) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(key.as_mut()).map_err(|_| Error::Rng)?;
    Ok(key)
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_key_file(path: &Path) -> io::Result<BTreeMap<u32, Zeroizing<[u8; KEY_LEN]>>> {
    let file = fs::File::open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "key file is accessible by group or others; chmod 600 it",
            ));
        }
    }
    let text = Zeroizing::new(io::read_to_string(file)?);
    let mut keks = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some("kek"), Some(version), Some(hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("key file line is not `kek <version> <hex key>`"));
        };
        let version: u32 = version
            .parse()
            .map_err(|_| invalid("bad key version in key file"))?;
        let key = decode_hex_key(hex).ok_or_else(|| invalid("bad key in key file"))?;
        if version == 0 || keks.insert(version, key).is_some() {
            return Err(invalid("key versions must be unique and start at 1"));
        }
    }
    if keks.is_empty() {
        return Err(invalid("key file holds no key"));
    }
    Ok(keks)
}

fn decode_hex_key(hex: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let hex = hex.as_bytes();
    if hex.len() != KEY_LEN * 2 {
        return None;
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    for (byte, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(key)
}

fn write_key_file(
    path: &Path,
    keks: &BTreeMap<u32, Zeroizing<[u8; KEY_LEN]>>,
    create_new: bool,
) -> io::Result<()> {
    use std::fmt::Write as _;
    // Sized up front so the text holding key bytes is never reallocated (and left unzeroized).
    let capacity = FILE_HEADER.len() + keks.len() * (KEY_LEN * 2 + 16);
    let mut text = Zeroizing::new(String::with_capacity(capacity));
    text.push_str(FILE_HEADER);
    for (version, key) in keks {
        let _ = write!(text, "kek {version} ");
        for byte in key.iter() {
            let _ = write!(text, "{byte:02x}");
        }
        text.push('\n');
    }
    // Write a uniquely named sibling temp file with mode 0600 and fsync it, then move it into place
    // (rename to replace, hard link to create without clobbering), so a crash or a concurrent
    // writer never leaves a half-written or lost key file.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    let mut suffix = [0u8; 8];
    SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| io::Error::other("random number generator failed"))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", u64::from_le_bytes(suffix)));
    let tmp = path.with_file_name(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    let moved = if create_new {
        fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp))
    } else {
        fs::rename(&tmp, path)
    };
    if let Err(e) = moved {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = dir {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
