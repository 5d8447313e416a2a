//! `trustmesh login`, `delete`, `keys`, `webhooks`, and the online `certificate` and `audit`
//! commands.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::json;
use trustmesh_sdk::proto::{AuditFilter, DeletionState, Scope, WebhookEventType};
use trustmesh_sdk::{Error, ExposeSecret as _, SecretString};

use super::config::{self, ConfigFile};
use super::render::{self, AUDIT_HEADER, KEY_HEADER, Output, WEBHOOK_HEADER};
use super::{Negative, Remote, UsageError};

/// How long `--wait` follows a deletion.
const DELETION_WAIT: Duration = Duration::from_secs(600);

/// `trustmesh login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    #[command(flatten)]
    remote: Remote,
    /// Save without checking the key against the endpoint.
    #[arg(long)]
    no_verify: bool,
}

/// Runs `trustmesh login`: reads the key from `$TRUSTMESH_API_KEY` or one line of stdin, checks
/// it, and saves the profile (mode 0600).
pub(crate) async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let path = config::path();
    let mut file = ConfigFile::load(&path)?;
    let mut profile = args.remote.resolve()?;
    if profile.tenant.is_empty() {
        return Err(UsageError("no tenant: pass --tenant".to_owned()).into());
    }
    let key = match std::env::var("TRUSTMESH_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        Some(key) => key,
        None => {
            eprint!(
                "API key for tenant {} (read from stdin, not echoed back): ",
                profile.tenant
            );
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the API key from stdin")?;
            eprintln!();
            line.trim().to_owned()
        }
    };
    if key.is_empty() {
        return Err(UsageError("no API key given".to_owned()).into());
    }
    let secret = SecretString::from(key);
    if !args.no_verify {
        let client = super::connect(&profile, &secret)
            .await?
            .with_tenant(profile.tenant.clone());
        let first = std::pin::pin!(client.list_datasets()).next().await;
        match first {
            // A key without `datasets:read` is still a key the mesh knows.
            None | Some(Ok(_)) => {}
            Some(Err(Error::Auth {
                code: tonic::Code::PermissionDenied,
                ..
            })) => {}
            Some(Err(error)) => return Err(anyhow::Error::new(error).context("checking the key")),
        }
    }
    profile.api_key = Some(secret.expose_secret().to_owned());
    let tenant = profile.tenant.clone();
    let endpoint = profile.endpoint.clone();
    file.profiles.insert(args.remote.profile.clone(), profile);
    file.save(&path)?;
    args.remote.output().show(
        &json!({"profile": args.remote.profile, "tenant": tenant, "endpoint": endpoint, "config": path}),
        || {
            format!(
                "Saved profile {:?} (tenant {tenant} at {endpoint}) in {} (owner-only).",
                args.remote.profile,
                path.display()
            )
        },
    );
    Ok(())
}

/// `trustmesh tenants`.
#[derive(Debug, Args)]
pub(crate) struct TenantsArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: TenantsCommand,
}

/// The `tenants` subcommands (the operator's).
#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Create a tenant (as the operator: TRUSTMESH_API_KEY holds the operator credential).
    Create {
        /// The tenant id (`^[a-z0-9][a-z0-9-]{2,62}$`).
        id: String,
        /// Its display name (default: the id).
        #[arg(long)]
        name: Option<String>,
    },
}

/// Runs `trustmesh tenants ...`.
pub(crate) async fn tenants(args: TenantsArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    let client = args.remote.connect().await?;
    match args.command {
        TenantsCommand::Create { id, name } => {
            let tenant = client
                .create_tenant(&id, name.as_deref().unwrap_or(&id))
                .await?;
            out.show(
                &json!({"name": tenant.name, "display_name": tenant.display_name}),
                || format!("Created {}", tenant.name),
            );
        }
    }
    Ok(())
}

/// `trustmesh delete`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: DeleteCommand,
}

/// The `delete` subcommands.
#[derive(Debug, Subcommand)]
enum DeleteCommand {
    /// Delete a dataset everywhere (reports, model outputs, objects), with a signed certificate.
    Dataset {
        /// The dataset: its resource name or id.
        name: String,
        /// Why (recorded with the deletion).
        #[arg(long, default_value = "")]
        reason: String,
        /// Wait until every service has deleted it.
        #[arg(long)]
        wait: bool,
    },
    /// Delete the whole tenant (every dataset, key and report; its keys are destroyed).
    Tenant {
        /// Required: yes, delete the tenant of this profile.
        #[arg(long)]
        confirm: bool,
        /// Why (recorded with the deletion).
        #[arg(long, default_value = "")]
        reason: String,
        /// Wait until every service has deleted it.
        #[arg(long)]
        wait: bool,
    },
}

/// Runs `trustmesh delete ...`.
pub(crate) async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    let (job, wait, tenant) = match args.command {
        DeleteCommand::Dataset { name, reason, wait } => {
            let client = args.remote.connect().await?;
            let job = client.delete_dataset(&name, &reason).await?;
            (job, wait.then_some(client), false)
        }
        DeleteCommand::Tenant {
            confirm,
            reason,
            wait,
        } => {
            if !confirm {
                return Err(UsageError(
                    "deleting a tenant cannot be undone: add --confirm".to_owned(),
                )
                .into());
            }
            let client = args.remote.connect().await?;
            let job = client.delete_tenant(&reason).await?;
            (job, wait.then_some(client), true)
        }
    };
    let Some(client) = wait else {
        out.show(&render::job_json(&job), || {
            format!(
                "Deletion {} requested; its certificate: `trustmesh certificate get {}`",
                job.output, job.output
            )
        });
        return Ok(());
    };
    let deletion = match client.wait_deletion(&job.output, DELETION_WAIT).await {
        Ok(deletion) => deletion,
        // The tenant's own keys are among what a tenant deletion destroys: once they stop
        // working, only the operator can follow it (certificates outlive the tenant).
        Err(Error::Auth {
            code: tonic::Code::Unauthenticated,
            ..
        }) if tenant => {
            let mut value = render::job_json(&job);
            value["keys_destroyed"] = json!(true);
            out.show(&value, || {
                format!(
                    "Deletion {} is under way: this tenant's keys are destroyed. The operator \
                     fetches its certificate with `trustmesh certificate get {}`.",
                    job.output, job.output
                )
            });
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    out.show(&render::deletion_json(&deletion), || {
        let mut text = format!(
            "{} of {}: {}\n",
            deletion.name,
            deletion.target,
            render::short(deletion.state().as_str_name(), "DELETION_STATE_")
        );
        text.push_str(
            &render::table(
                &["service", "deleted", "residue", "keys destroyed"],
                deletion.receipts.iter().map(|r| {
                    vec![
                        r.service.clone(),
                        r.deleted
                            .iter()
                            .map(|(kind, n)| format!("{n} {kind}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if r.residue_found { "FOUND" } else { "none" }.to_owned(),
                        r.deks_destroyed.to_string(),
                    ]
                }),
            )
            .to_string(),
        );
        text
    });
    if deletion.state() != DeletionState::Completed {
        return Err(Negative(format!("{} did not complete", deletion.name)).into());
    }
    Ok(())
}

/// `trustmesh keys`.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: KeysCommand,
}

/// The `keys` subcommands.
#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key; its secret is shown once (or saved in a profile with --save-profile).
    Create {
        /// The key's display name.
        #[arg(long)]
        name: String,
        /// A scope (repeatable): datasets:write, datasets:read, analysis:run, reports:read,
        /// audit:read, deletion:write, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Days until it expires.
        #[arg(long, default_value_t = 90)]
        days: u64,
        /// Save the secret in this profile (same endpoint and tenant) instead of printing it.
        #[arg(long)]
        save_profile: Option<String>,
    },
    /// List the tenant's keys (never their secrets).
    List {
        /// Revoked and expired keys too.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key.
    Revoke {
        /// The key: its resource name or id.
        name: String,
    },
}

fn scope(text: &str) -> Result<Scope, UsageError> {
    let name = format!(
        "SCOPE_{}",
        text.to_ascii_uppercase().replace([':', '-'], "_")
    );
    Scope::from_str_name(&name)
        .filter(|&s| s != Scope::Unspecified)
        .ok_or_else(|| UsageError(format!("unknown scope {text:?}")))
}

/// Runs `trustmesh keys ...`.
pub(crate) async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    match args.command {
        KeysCommand::Create {
            name,
            scopes,
            days,
            save_profile,
        } => {
            let scopes = scopes
                .iter()
                .map(|s| scope(s))
                .collect::<Result<Vec<_>, _>>()?;
            let client = args.remote.connect().await?;
            let (key, secret) = client
                .create_api_key(&name, &scopes, Duration::from_secs(days * 24 * 3600))
                .await?;
            let mut value = render::key_json(&key);
            match save_profile {
                Some(profile_name) => {
                    let path = config::path();
                    let mut file = ConfigFile::load(&path)?;
                    let mut profile = args.remote.resolve()?;
                    profile.api_key = Some(secret.expose_secret().to_owned());
                    file.profiles.insert(profile_name.clone(), profile);
                    file.save(&path)?;
                    value["saved_profile"] = json!(profile_name);
                    out.show(&value, || {
                        format!(
                            "Created {}; its secret is in profile {profile_name:?}.",
                            key.name
                        )
                    });
                }
                None => {
                    value["secret"] = json!(secret.expose_secret());
                    out.show(&value, || {
                        format!(
                            "Created {}.\nSecret (shown once, store it now): {}",
                            key.name,
                            secret.expose_secret()
                        )
                    });
                }
            }
        }
        KeysCommand::List { all } => {
            let client = args.remote.connect().await?;
            let keys: Vec<_> = client.list_api_keys(all).try_collect().await?;
            out.list(
                &keys,
                render::key_json,
                KEY_HEADER,
                render::key_row,
                "No keys.",
            );
        }
        KeysCommand::Revoke { name } => {
            let client = args.remote.connect().await?;
            let key = client.revoke_api_key(&name).await?;
            out.show(&render::key_json(&key), || format!("Revoked {}", key.name));
        }
    }
    Ok(())
}

/// `trustmesh webhooks`.
#[derive(Debug, Args)]
pub(crate) struct WebhooksArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: WebhooksCommand,
}

/// The `webhooks` subcommands.
#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// Register an endpoint; its signing secret is shown once.
    Add {
        /// The HTTPS URL to deliver to.
        url: String,
        /// An event type (repeatable; default: all), e.g. dataset-ingested, job-succeeded,
        /// job-failed, deletion-completed.
        #[arg(long = "event")]
        events: Vec<String>,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the endpoints.
    List,
    /// Remove an endpoint.
    Remove {
        /// The endpoint: its resource name or id.
        name: String,
    },
}

fn event_type(text: &str) -> Result<WebhookEventType, UsageError> {
    let name = format!(
        "WEBHOOK_EVENT_TYPE_{}",
        text.to_ascii_uppercase().replace(['-', '.'], "_")
    );
    WebhookEventType::from_str_name(&name)
        .filter(|&e| e != WebhookEventType::Unspecified)
        .ok_or_else(|| {
            let known: Vec<String> = (1..64)
                .filter_map(|n| WebhookEventType::try_from(n).ok())
                .map(render::event_name)
                .collect();
            UsageError(format!(
                "unknown event type {text:?}; one of: {}",
                known.join(", ")
            ))
        })
}

/// Runs `trustmesh webhooks ...`.
pub(crate) async fn webhooks(args: WebhooksArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    match args.command {
        WebhooksCommand::Add {
            url,
            events,
            description,
        } => {
            let events = events
                .iter()
                .map(|e| event_type(e))
                .collect::<Result<Vec<_>, _>>()?;
            let client = args.remote.connect().await?;
            let (endpoint, secret) = client.create_webhook(&url, &events, &description).await?;
            let mut value = render::webhook_json(&endpoint);
            value["signing_secret"] = json!(secret.expose_secret());
            out.show(&value, || {
                format!(
                    "Added {} -> {}\nSigning secret (shown once, store it now): {}",
                    endpoint.name,
                    endpoint.url,
                    secret.expose_secret()
                )
            });
        }
        WebhooksCommand::List => {
            let client = args.remote.connect().await?;
            let hooks: Vec<_> = client.list_webhooks().try_collect().await?;
            out.list(
                &hooks,
                render::webhook_json,
                WEBHOOK_HEADER,
                render::webhook_row,
                "No webhook endpoints.",
            );
        }
        WebhooksCommand::Remove { name } => {
            let client = args.remote.connect().await?;
            let name = client.resource("webhookEndpoints", &name)?;
            client.delete_webhook(&name).await?;
            out.show(&json!({"name": name, "removed": true}), || {
                format!("Removed {name}")
            });
        }
    }
    Ok(())
}

/// `trustmesh certificate get NAME [--out FILE]`: the certificate document (to FILE, with its
/// signature in FILE.sig, or to stdout).
pub(crate) async fn certificate_get(
    remote: &Remote,
    name: &str,
    out_file: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let out = remote.output();
    let client = remote.connect().await?;
    let certificate = client.get_certificate(name).await?;
    let mut value = render::certificate_json(&certificate);
    if let Some(path) = out_file {
        let signature = signature_path(path);
        std::fs::write(path, &certificate.certificate)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
        std::fs::write(&signature, &certificate.signature)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", signature.display())))?;
        value["out"] = json!(path);
        value["signature_out"] = json!(signature);
        out.show(&value, || {
            format!(
                "Wrote {} and its {} signature {} (key {})",
                path.display(),
                certificate.algorithm,
                signature.display(),
                certificate.key_id
            )
        });
    } else {
        out.show(&value, || {
            String::from_utf8_lossy(&certificate.certificate).into_owned()
        });
    }
    Ok(())
}

/// `FILE.sig` beside `path`.
pub(crate) fn signature_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// `trustmesh certificate verify NAME`: fetches the certificate and the published signing keys
/// and checks the signature here; `false` when it does not verify.
pub(crate) async fn certificate_verify(remote: &Remote, name: &str) -> anyhow::Result<bool> {
    let out = remote.output();
    let client = remote.connect().await?;
    let certificate = client.get_certificate(name).await?;
    let keys = client.certificate_signing_keys().await?;
    let key = keys
        .iter()
        .find(|k| k.key_id == certificate.key_id)
        .with_context(|| format!("no published signing key {}", certificate.key_id))?;
    let verdict = trustmesh_deletion::verify_certificate(
        &certificate.certificate,
        &certificate.signature,
        &key.public_key,
    );
    let valid = verdict.is_ok();
    out.show(
        &json!({
            "name": certificate.name,
            "valid": valid,
            "key_id": certificate.key_id,
            "error": verdict.as_ref().err().map(ToString::to_string),
        }),
        || match &verdict {
            Ok(()) => format!(
                "valid: {} signed by {}",
                certificate.name, certificate.key_id
            ),
            Err(error) => format!("INVALID: {error}"),
        },
    );
    Ok(valid)
}

/// `trustmesh audit list`.
pub(crate) async fn audit_list(
    remote: &Remote,
    filter: AuditFilter,
    limit: usize,
) -> anyhow::Result<()> {
    let out = remote.output();
    let client = remote.connect().await?;
    let events: Vec<_> = client
        .list_audit_events(filter)
        .take(limit)
        .try_collect()
        .await?;
    out.list(
        &events,
        render::audit_json,
        AUDIT_HEADER,
        render::audit_row,
        "No events.",
    );
    Ok(())
}

/// `trustmesh audit verify` (online): the audit service checks the tenant's chain and
/// checkpoints; `false` when it does not verify.
pub(crate) async fn audit_verify(remote: &Remote) -> anyhow::Result<bool> {
    let out = remote.output();
    let client = remote.connect().await?;
    let verdict = client.verify_audit_log().await?;
    out.show(
        &json!({
            "valid": verdict.valid,
            "verified_count": verdict.verified_count,
            "first_bad_sequence": verdict.first_bad_sequence,
            "failure_reason": verdict.failure_reason,
            "checkpoint": verdict.checkpoint.as_ref().map(|c| json!({"sequence": c.sequence, "key_id": c.key_id})),
            "verification_keys": verdict.verification_keys.iter().map(|k| json!({
                "key_id": k.key_id, "algorithm": k.algorithm, "public_key_hex": hex::encode(&k.public_key),
            })).collect::<Vec<_>>(),
        }),
        || {
            if verdict.valid {
                format!("valid: {} events", verdict.verified_count)
            } else {
                format!(
                    "INVALID at sequence {}: {}",
                    verdict.first_bad_sequence.unwrap_or_default(),
                    verdict.failure_reason
                )
            }
        },
    );
    Ok(verdict.valid)
}

/// `trustmesh audit export --out FILE`.
pub(crate) async fn audit_export(remote: &Remote, path: &PathBuf) -> anyhow::Result<()> {
    let out: Output = remote.output();
    let client = remote.connect().await?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
    let bytes = client
        .export_audit_log(AuditFilter::default(), &mut file)
        .await?;
    out.show(&json!({"out": path, "bytes": bytes}), || {
        format!(
            "Wrote {bytes} bytes of audit log to {}; check it offline with `trustmesh audit verify {} --key KEY`",
            path.display(),
            path.display()
        )
    });
    Ok(())
}
