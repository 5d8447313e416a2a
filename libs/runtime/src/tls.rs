//! TLS 1.3-only rustls configurations (ring provider) for gRPC listeners and channels, from PEM files.
//!
//! tonic's own `ServerTlsConfig`/`ClientTlsConfig` also allow TLS 1.2, so listeners and channels use
//! these hand-built configurations instead (see `reference/security.md` §5.1).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;

use crate::settings::{InvalidSetting, Validate};

/// Installs ring as the process's default rustls crypto provider, once, at process start.
///
/// Clients that build their rustls configuration from the process default (async-nats for a
/// `tls://` NATS URL, sqlx for Postgres TLS) panic when more than one provider is compiled in and
/// none is installed; the S3 client's HTTPS stack brings aws-lc-rs next to our ring. Installing
/// again (or after someone else did) is harmless.
pub fn install_default_crypto_provider() {
    // NOTE: Err means a provider is already installed, which is all this needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How a listener or channel protects its traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportMode {
    /// TLS 1.3 (the default).
    #[default]
    Tls,
    /// No encryption; allowed on loopback addresses only, for development, and logged loudly.
    DevPlaintextLoopback,
}

/// A listener's TLS settings (the `tls` part of a server section).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTls {
    /// TLS 1.3 or development plaintext on loopback.
    pub mode: TransportMode,
    /// PEM file with the server certificate chain, leaf first (required for `tls`).
    pub cert_file: Option<PathBuf>,
    /// PEM file with the server's private key (required for `tls`).
    pub key_file: Option<PathBuf>,
    /// PEM file of the mesh CA(s) client certificates must chain to (mTLS between services): a
    /// client that presents a certificate this CA did not issue is refused at the handshake. Clients
    /// without a certificate (tenants' SDKs, which send API keys) are served unless
    /// `require_client_cert` is set; the mesh-internal methods need one (`trustmesh_auth::peer`).
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: refuse clients without a certificate at the handshake (a listener only
    /// services call). Default false.
    pub require_client_cert: bool,
}

impl Validate for ServerTls {
    fn validate(&self) -> Result<(), InvalidSetting> {
        match self.mode {
            TransportMode::Tls => {
                if self.cert_file.is_none() {
                    return Err(InvalidSetting::new(
                        "cert_file",
                        "required when mode is `tls`",
                    ));
                }
                if self.key_file.is_none() {
                    return Err(InvalidSetting::new(
                        "key_file",
                        "required when mode is `tls`",
                    ));
                }
                if self.require_client_cert && self.client_ca_file.is_none() {
                    return Err(InvalidSetting::new(
                        "require_client_cert",
                        "needs `client_ca_file`",
                    ));
                }
                Ok(())
            }
            TransportMode::DevPlaintextLoopback => Ok(()),
        }
    }
}

/// A channel's TLS settings (how to reach another service).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTls {
    /// TLS 1.3 or development plaintext to a loopback address.
    pub mode: TransportMode,
    /// PEM file of the CA(s) the server certificate must chain to (required for `tls`).
    pub ca_file: Option<PathBuf>,
    /// PEM file with this client's certificate chain, for mTLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM file with this client's private key, for mTLS (with `cert_file`).
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against; defaults to the endpoint's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Returns settings for TLS 1.3 trusting the CA(s) in `ca_file`, without a client certificate.
    pub fn tls(ca_file: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: Some(ca_file.into()),
            ..Self::default()
        }
    }

    /// Returns settings for development plaintext to a loopback address.
    pub fn dev_plaintext_loopback() -> Self {
        Self {
            mode: TransportMode::DevPlaintextLoopback,
            ..Self::default()
        }
    }

    /// Returns these settings presenting the client certificate in `cert_file`/`key_file` (mTLS).
    pub fn with_identity(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }
}

impl Validate for ClientTls {
    fn validate(&self) -> Result<(), InvalidSetting> {
        match self.mode {
            TransportMode::Tls if self.ca_file.is_none() => Err(InvalidSetting::new(
                "ca_file",
                "required when mode is `tls`",
            )),
            TransportMode::Tls | TransportMode::DevPlaintextLoopback => {
                if self.cert_file.is_some() != self.key_file.is_some() {
                    return Err(InvalidSetting::new(
                        "cert_file",
                        "`cert_file` and `key_file` go together",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A setting the mode needs is missing.
    #[error("TLS setting `{0}` is required")]
    Missing(&'static str),
    /// A PEM file could not be read or holds no usable item.
    #[error("cannot read PEM file {path}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM file holds no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("invalid TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be turned into a verifier.
    #[error("invalid client CA")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// The one crypto provider of every TLS configuration here.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn required<'a>(value: Option<&'a PathBuf>, name: &'static str) -> Result<&'a Path, TlsError> {
    value.map(PathBuf::as_path).ok_or(TlsError::Missing(name))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        path: path.to_owned(),
        source,
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// Builds a TLS 1.3-only server configuration (ALPN `h2`) from `tls`; with `client_ca_file`, a client
/// certificate is verified against it (one from another CA fails the handshake) and, with
/// `require_client_cert`, required.
///
/// # Errors
///
/// [`TlsError`] when a file is missing or unreadable or rustls rejects the material.
pub fn server_config(tls: &ServerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(required(tls.cert_file.as_ref(), "cert_file")?)?;
    let key = load_key(required(tls.key_file.as_ref(), "key_file")?)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider());
            let verifier = if tls.require_client_cert {
                verifier.build()?
            } else {
                // NOTE: only the absence of a certificate is allowed: a presented one must still
                // chain to the CA, or the handshake fails.
                verifier.allow_unauthenticated().build()?
            };
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Builds a TLS 1.3-only client configuration (ALPN `h2`) from `tls`, presenting a client
/// certificate when `cert_file`/`key_file` are set.
///
/// # Errors
///
/// [`TlsError`] when a file is missing or unreadable or rustls rejects the material.
pub fn client_config(tls: &ClientTls) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_roots(required(tls.ca_file.as_ref(), "ca_file")?)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(TlsError::Missing("key_file")),
        (None, Some(_)) => return Err(TlsError::Missing("cert_file")),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Builds a TLS 1.3-only client configuration for NATS from `tls` (no ALPN), presenting a client
/// certificate when `cert_file`/`key_file` are set; `None` when TLS is not configured (no
/// `ca_file`).
///
/// # Errors
///
/// [`TlsError`] when a file is missing or unreadable or rustls rejects the material.
pub fn nats_client_config(
    tls: &crate::settings::common::NatsTls,
) -> Result<Option<ClientConfig>, TlsError> {
    let Some(ca) = &tls.ca_file else {
        return Ok(None);
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(load_roots(ca)?);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(TlsError::Missing("key_file")),
        (None, Some(_)) => return Err(TlsError::Missing("cert_file")),
    };
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_provider_is_ring_once_installed_and_installing_again_is_harmless() {
        install_default_crypto_provider();
        install_default_crypto_provider();
        let installed = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            format!("{:?}", installed.cipher_suites),
            format!("{:?}", ring.cipher_suites)
        );
        // A configuration from the process default now builds (it panics with two providers
        // compiled in and none installed).
        let _ = ClientConfig::builder();
    }
}
