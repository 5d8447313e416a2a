//! `trustmesh audit list|verify|export`: the tenant's audit log through the mesh, and
//! `trustmesh audit verify FILE --key KEY`, which checks an `ExportEvents` JSONL export offline —
//! the hash chain, every checkpoint signature and hash, and no tail truncated behind a checkpoint.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use trustmesh_sdk::proto::AuditFilter;

use crate::remote::{self, Remote, UsageError};

/// `trustmesh audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: AuditCommand,
}

/// The `audit` subcommands.
#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List the tenant's audit events.
    List {
        /// Only events of this action (e.g. `datasets.upload`).
        #[arg(long)]
        action: Option<String>,
        /// Only events on this resource.
        #[arg(long)]
        resource: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Verify the tenant's log on the server, or an exported log (FILE, with --key) offline.
    Verify(VerifyArgs),
    /// Export the tenant's log (JSON Lines with signed checkpoints) to a file.
    Export {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `trustmesh audit verify`.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// An export (JSON Lines) to check offline; without it, the server checks the tenant's log.
    file: Option<PathBuf>,
    /// A checkpoint public key (repeatable, required with FILE): a file holding it, or the key
    /// itself, in base64 or hex (the `public_key` of `VerifyLogResponse.verification_keys`).
    #[arg(long = "key", requires = "file")]
    keys: Vec<String>,
}

/// Runs `trustmesh audit ...`; `false` when the log is invalid (exit code 1).
pub(crate) fn run(args: &AuditArgs) -> anyhow::Result<bool> {
    match &args.command {
        AuditCommand::List {
            action,
            resource,
            limit,
        } => {
            let filter = AuditFilter {
                action: action.clone().unwrap_or_default(),
                resource: resource.clone().unwrap_or_default(),
                ..AuditFilter::default()
            };
            remote::block_on(remote::admin::audit_list(&args.remote, filter, *limit))?;
            Ok(true)
        }
        AuditCommand::Verify(verify) => match &verify.file {
            Some(file) => run_verify(file, &verify.keys),
            None => remote::block_on(remote::admin::audit_verify(&args.remote)),
        },
        AuditCommand::Export { out } => {
            remote::block_on(remote::admin::audit_export(&args.remote, out))?;
            Ok(true)
        }
    }
}

fn run_verify(file: &Path, keys: &[String]) -> anyhow::Result<bool> {
    if keys.is_empty() {
        return Err(UsageError("verifying a file offline needs --key".to_owned()).into());
    }
    let export = std::fs::read(file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
    let keys = keys
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
        let bytes =
            std::fs::read(path).map_err(|e| UsageError(format!("cannot read {arg}: {e}")))?;
        if bytes.len() == raw_len {
            return Ok(bytes);
        }
        String::from_utf8(bytes)
            .map_err(|_| UsageError(format!("{arg} is neither raw bytes nor text")))?
    } else {
        arg.to_owned()
    };
    parse(text.trim()).ok_or_else(|| UsageError(format!("not {what}")).into())
}
