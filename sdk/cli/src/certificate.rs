//! `trustmesh certificate verify FILE --signature SIG --key KEY`: checks a deletion certificate
//! offline — the Ed25519 signature of the document's exact bytes by the deletion service's
//! published key (`ListCertificateSigningKeys`). Any changed byte of the document fails.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::audit::{load_key, load_material};

/// `trustmesh certificate`.
#[derive(Debug, Args)]
pub(crate) struct CertificateArgs {
    #[command(subcommand)]
    command: CertificateCommand,
}

/// The `certificate` subcommands.
#[derive(Debug, Subcommand)]
enum CertificateCommand {
    /// Verify a deletion certificate's signature offline.
    Verify(VerifyArgs),
}

/// `trustmesh certificate verify`.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// The certificate document (`DeletionCertificate.certificate`, byte for byte).
    file: PathBuf,
    /// The signature (`DeletionCertificate.signature`): a file holding it (64 raw bytes, or text),
    /// or the signature itself, in base64 or hex.
    #[arg(long)]
    signature: String,
    /// The signing key's public key: a file holding it, or the key itself, in base64 or hex.
    #[arg(long)]
    key: String,
}

/// Runs `trustmesh certificate ...`; `false` when the certificate does not verify (exit code 1).
pub(crate) fn run(args: &CertificateArgs) -> anyhow::Result<bool> {
    match &args.command {
        CertificateCommand::Verify(verify) => run_verify(verify),
    }
}

fn run_verify(args: &VerifyArgs) -> anyhow::Result<bool> {
    let document = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let signature = load_signature(&args.signature)?;
    let key = load_key(&args.key)?;
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
