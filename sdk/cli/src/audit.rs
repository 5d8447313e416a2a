//! `trustmesh audit verify FILE --key KEY`: checks an `ExportEvents` JSONL export offline — the
//! hash chain, every checkpoint signature and hash, and no tail truncated behind a checkpoint.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

/// `trustmesh audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

/// The `audit` subcommands.
#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify an exported audit log (JSON Lines from ExportEvents) offline.
    Verify(VerifyArgs),
}

/// `trustmesh audit verify`.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// The export (JSON Lines).
    file: PathBuf,
    /// A checkpoint public key (repeatable): a file holding it, or the key itself, in base64 or
    /// hex (the `public_key` of `VerifyLogResponse.verification_keys`).
    #[arg(long = "key", required = true)]
    keys: Vec<String>,
}

/// Runs `trustmesh audit ...`; `false` when the export is invalid (exit code 1).
pub(crate) fn run(args: &AuditArgs) -> anyhow::Result<bool> {
    match &args.command {
        AuditCommand::Verify(verify) => run_verify(verify),
    }
}

fn run_verify(args: &VerifyArgs) -> anyhow::Result<bool> {
    let export = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let keys = args
        .keys
        .iter()
        .map(|key| load_key(key))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ids: Vec<String> = keys.iter().map(|k| trustmesh_audit::key_id(k)).collect();
    let pairs: Vec<(&str, &[u8])> = ids
        .iter()
        .zip(&keys)
        .map(|(id, key)| (id.as_str(), key.as_slice()))
        .collect();
    Ok(match trustmesh_audit::verify_export(&export, &pairs) {
        Ok(verified) => {
            println!(
                "valid: {} events, {} checkpoints",
                verified.events, verified.checkpoints
            );
            true
        }
        Err(failure) => {
            println!(
                "INVALID at sequence {}: {}",
                failure.first_bad_sequence, failure.reason
            );
            false
        }
    })
}

/// A public key from a file or the argument itself.
pub(crate) fn load_key(key: &str) -> anyhow::Result<Vec<u8>> {
    load_material(
        key,
        32,
        "a 32-byte Ed25519 public key in base64 or hex",
        trustmesh_audit::parse_public_key,
    )
}

/// Key material named by `arg`: a file holding `raw_len` raw bytes or text, or the text itself,
/// parsed by `parse`; `what` names it in errors.
pub(crate) fn load_material(
    arg: &str,
    raw_len: usize,
    what: &str,
    parse: impl Fn(&str) -> Option<Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    let path = Path::new(arg);
    let text = if path.is_file() {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {arg}"))?;
        if bytes.len() == raw_len {
            return Ok(bytes);
        }
        String::from_utf8(bytes).with_context(|| format!("{arg} is neither raw bytes nor text"))?
    } else {
        arg.to_owned()
    };
    parse(text.trim()).with_context(|| format!("not {what}"))
}
