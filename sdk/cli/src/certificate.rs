//! `trustmesh certificate get|verify`: a deletion's signed certificate through the mesh, and
//! `trustmesh certificate verify FILE --signature SIG --key KEY`, which checks one offline — the
//! Ed25519 signature of the document's exact bytes by the deletion service's published key
//! (`ListCertificateSigningKeys`). Any changed byte of the document fails.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::audit::{load_key, load_material};
use crate::remote::{self, Remote, UsageError};

/// `trustmesh certificate`.
#[derive(Debug, Args)]
pub(crate) struct CertificateArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: CertificateCommand,
}

/// The `certificate` subcommands.
#[derive(Debug, Subcommand)]
enum CertificateCommand {
    /// Fetch a deletion's certificate (to --out FILE and FILE.sig, or to stdout).
    Get {
        /// The deletion: its resource name or id.
        name: String,
        /// Write the document here and its signature to FILE.sig.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a deletion's certificate: fetched by NAME and checked against the published
    /// signing keys, or a document FILE offline with --signature and --key.
    Verify(VerifyArgs),
}

/// `trustmesh certificate verify`.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// The deletion (resource name or id); with --signature and --key, a certificate document
    /// file (`DeletionCertificate.certificate`, byte for byte) checked offline.
    target: String,
    /// The signature (`DeletionCertificate.signature`): a file holding it (64 raw bytes, or text),
    /// or the signature itself, in base64 or hex.
    #[arg(long, requires = "key")]
    signature: Option<String>,
    /// The signing key's public key: a file holding it, or the key itself, in base64 or hex.
    #[arg(long, requires = "signature")]
    key: Option<String>,
}

/// Runs `trustmesh certificate ...`; `false` when the certificate does not verify (exit code 1).
pub(crate) fn run(args: &CertificateArgs) -> anyhow::Result<bool> {
    match &args.command {
        CertificateCommand::Get { name, out } => {
            remote::block_on(remote::admin::certificate_get(
                &args.remote,
                name,
                out.as_ref(),
            ))?;
            Ok(true)
        }
        CertificateCommand::Verify(verify) => match (&verify.signature, &verify.key) {
            (Some(signature), Some(key)) => run_verify(Path::new(&verify.target), signature, key),
            (None, None) => remote::block_on(remote::admin::certificate_verify(
                &args.remote,
                &verify.target,
            )),
            (Some(_), None) | (None, Some(_)) => Err(UsageError(
                "an offline check needs both --signature and --key".to_owned(),
            )
            .into()),
        },
    }
}

fn run_verify(file: &Path, signature: &str, key: &str) -> anyhow::Result<bool> {
    let document = std::fs::read(file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
    let signature = load_signature(signature)?;
    let key = load_key(key)?;
    Ok(
        match trustmesh_deletion::verify_certificate(&document, &signature, &key) {
            Ok(()) => {
                println!("valid: signed by {}", trustmesh_audit::key_id(&key));
                true
            }
            Err(error) => {
                println!("INVALID: {error}");
                false
            }
        },
    )
}

/// A signature from a file (64 raw bytes, or text) or the argument itself, in base64 or hex.
fn load_signature(signature: &str) -> anyhow::Result<Vec<u8>> {
    load_material(
        signature,
        64,
        "a 64-byte signature in base64 or hex",
        |text| {
            use base64::Engine as _;
            hex::decode(text)
                .ok()
                .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
                .filter(|bytes| bytes.len() == 64)
        },
    )
}
