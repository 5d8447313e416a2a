//! A mesh PKI for development and tests: a local CA and one certificate per name (each service, and
//! infrastructure such as `nats`), issued with rcgen into a directory, idempotently.
//!
//! Each certificate's subject common name and DNS subject alternative name are its name (plus
//! `localhost`, `127.0.0.1` and `::1`, so a loopback dev server verifies), and it is valid for both
//! server and client authentication: a service presents the same certificate to its clients
//! (`grpc.tls.cert_file`) and to the services it calls (`<peer>.tls.cert_file`), whose listeners read
//! its service name from it (`trustmesh_auth::peer`).
//!
//! `trustmesh dev-certs --out <dir>` (sdk/cli) and `infra/dev/up.sh` use this; tests call
//! [`MeshPki::ensure`] on a temporary directory, and [`MeshPki::foreign`] for a CA the mesh does not
//! trust.
//!
//! Layout of the directory: `ca.pem`, `ca.key` and `<name>.pem`, `<name>.key` per name. Keys are
//! mode 0600. A second run keeps the CA and every certificate that is present and issues only the
//! missing ones (with the same CA).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The seven services of the mesh, the default names of [`MeshPki::ensure`]'s certificates.
pub const MESH_SERVICES: [&str; 7] = [
    "tenancy",
    "ingest",
    "analysis",
    "trust-scoring",
    "deletion",
    "audit",
    "notifier",
];

/// Common name of the CA [`MeshPki`] creates.
const CA_NAME: &str = "trustmesh dev mesh CA";

/// Why the PKI could not be issued.
#[derive(Debug)]
pub enum PkiError {
    /// A file could not be read or written.
    Io(PathBuf, io::Error),
    /// rcgen refused a parameter or a stored key.
    Certificate(rcgen::Error),
}

impl std::fmt::Display for PkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(path, error) => write!(f, "{}: {error}", path.display()),
            Self::Certificate(error) => write!(f, "cannot issue a certificate: {error}"),
        }
    }
}

impl std::error::Error for PkiError {}

impl From<rcgen::Error> for PkiError {
    fn from(error: rcgen::Error) -> Self {
        Self::Certificate(error)
    }
}

/// A CA and certificates in a directory (see the module docs for the layout).
#[derive(Debug, Clone)]
pub struct MeshPki {
    dir: PathBuf,
}

fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let io_error = |e| PkiError::Io(path.to_owned(), e);
    // Written under a temporary name and renamed: a crash never leaves half a file that a later
    // run would take as present.
    let partial = path.with_extension("partial");
    fs::write(&partial, contents).map_err(io_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = if private { 0o600 } else { 0o644 };
        fs::set_permissions(&partial, fs::Permissions::from_mode(mode)).map_err(io_error)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    fs::rename(&partial, path).map_err(io_error)
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| PkiError::Io(path.to_owned(), e))
}

impl MeshPki {
    /// Makes sure `dir` holds a CA and a certificate for each of `names` (created if missing, kept
    /// if present), and returns it.
    ///
    /// # Errors
    ///
    /// [`PkiError`] when a file cannot be read or written or a stored key is not usable.
    pub fn ensure(dir: impl Into<PathBuf>, names: &[&str]) -> Result<Self, PkiError> {
        let pki = Self { dir: dir.into() };
        fs::create_dir_all(&pki.dir).map_err(|e| PkiError::Io(pki.dir.clone(), e))?;
        let (ca_pem, ca_key) = (pki.ca(), pki.dir.join("ca.key"));
        let ca_signing_key = if ca_pem.exists() && ca_key.exists() {
            KeyPair::from_pem(&read(&ca_key)?)?
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params(CA_NAME)?.self_signed(&key)?;
            write(&ca_key, &key.serialize_pem(), true)?;
            write(&ca_pem, &cert.pem(), false)?;
            key
        };
        // The same subject and key as the stored CA certificate: what it signs chains to it.
        let issuer = Issuer::new(ca_params(CA_NAME)?, ca_signing_key);
        for name in names {
            if pki.cert(name).exists() && pki.key(name).exists() {
                continue;
            }
            let (cert, key) = leaf(name, &issuer)?;
            write(&pki.key(name), &key, true)?;
            write(&pki.cert(name), &cert, false)?;
        }
        Ok(pki)
    }

    /// A PKI of [`MESH_SERVICES`] in `dir`, with a CA of its own: the "unknown CA" of tests.
    ///
    /// # Errors
    ///
    /// As [`MeshPki::ensure`].
    pub fn foreign(dir: impl Into<PathBuf>) -> Result<Self, PkiError> {
        Self::ensure(dir, &MESH_SERVICES)
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM), what listeners and clients trust.
    #[must_use]
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The certificate of `name` (PEM).
    #[must_use]
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// The private key of `name` (PEM, mode 0600).
    #[must_use]
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

/// A certificate for `name` (server and client auth) and its key, as PEM.
fn leaf(name: &str, issuer: &Issuer<'_, KeyPair>) -> Result<(String, String), rcgen::Error> {
    let mut sans = vec![name.to_owned()];
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if extra != name {
            sans.push(extra.to_owned());
        }
    }
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_keeps_what_exists_and_adds_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let first = MeshPki::ensure(dir.path(), &["ingest"]).unwrap();
        let ca = fs::read_to_string(first.ca()).unwrap();
        let ingest = fs::read_to_string(first.cert("ingest")).unwrap();
        let again = MeshPki::ensure(dir.path(), &["ingest", "nats"]).unwrap();
        assert_eq!(fs::read_to_string(again.ca()).unwrap(), ca);
        assert_eq!(fs::read_to_string(again.cert("ingest")).unwrap(), ingest);
        assert!(again.cert("nats").exists() && again.key("nats").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(again.key("nats"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }
}
