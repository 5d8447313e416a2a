//! The single-tenant install (infra/README.md, "Deployment profiles"): one tenant in the customer's
//! own VPC, no operator surface.
//!
//! At start, [`bootstrap`] creates the tenant if it is absent and, if it has no active API key,
//! issues an admin key into `single_tenant.first_key_file` (mode 0600; the secret is never logged).
//! "No active key" rather than "just created" so that a start interrupted between the two steps
//! does not lock the tenant out for good; it also means revoking every key and restarting issues a
//! new first key, which only whoever runs the install (and can read the file) receives.
//!
//! No operator: the operator credential is refused by the settings, its digest is removed from
//! `tm_auth` (so no service recognizes a former one), and the operator's RPCs (CreateTenant,
//! ListTenants, DisableTenant, EnableTenant, UpdateQuota, CreateSupportAccessGrant) answer
//! PERMISSION_DENIED ([`refused`]): the methods exist, this install's policy forbids them.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use prost_types::Timestamp;
use tonic::Status;
use trustmesh_auth::Principal;
use trustmesh_events::TenantId;
use trustmesh_proto::v1::{CreateApiKeyRequest, CreateTenantRequest, Scope};

use crate::error::TenancyError;
use crate::grpc::TenancyHandler;
use crate::repo;
use crate::settings::SingleTenantSettings;

/// The answer of every operator RPC in a single-tenant install.
pub(crate) fn refused() -> Status {
    Status::permission_denied("this is a single-tenant install: it has no operator surface")
}

/// Why the single tenant could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Creating the tenant or its key failed.
    #[error("cannot create the single tenant or its first key")]
    Tenancy(#[from] TenancyError),
    /// The first key could not be written.
    #[error("cannot write the first admin key to {path}")]
    KeyFile {
        /// The file of `single_tenant.first_key_file`.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Creates the install's tenant if absent and issues its first admin key if it has no active key.
///
/// # Errors
///
/// [`BootstrapError`] if the tenant or key cannot be created or the key file cannot be written.
pub(crate) async fn bootstrap(
    handler: &TenancyHandler,
    settings: &SingleTenantSettings,
) -> Result<(), BootstrapError> {
    // NOTE: the install acts as the operator for these two calls (audited as such): there is none.
    let principal = Principal::Operator;
    let tenant = TenantId::parse(&settings.tenant)
        .map_err(|e| TenancyError::invalid("single_tenant.tenant", e.to_string()))?;
    if repo::get_tenant(&handler.pool, tenant.as_str())
        .await
        .map_err(TenancyError::from)?
        .is_none()
    {
        handler
            .create_tenant_inner(
                &principal,
                CreateTenantRequest {
                    tenant_id: tenant.as_str().to_owned(),
                    display_name: settings
                        .display_name
                        .clone()
                        .unwrap_or_else(|| tenant.as_str().to_owned()),
                    ..CreateTenantRequest::default()
                },
            )
            .await?;
    }
    let active = repo::list_keys(&handler.pool, tenant.as_str(), false, None, 1)
        .await
        .map_err(TenancyError::from)?;
    if !active.is_empty() {
        tracing::info!(tenant.id = %tenant, "Single-tenant install: the tenant has an active API key.");
        return Ok(());
    }
    // A minute short of the longest lifetime, so the request is within it when checked.
    let expire =
        time::OffsetDateTime::now_utc() + handler.max_key_lifetime - time::Duration::minutes(1);
    let issued = handler
        .create_api_key_inner(
            &principal,
            CreateApiKeyRequest {
                parent: format!("tenants/{tenant}"),
                display_name: "first admin key".to_owned(),
                scopes: vec![Scope::Admin as i32],
                expire_time: Some(Timestamp {
                    seconds: expire.unix_timestamp(),
                    nanos: 0,
                }),
                ..CreateApiKeyRequest::default()
            },
        )
        .await?;
    write_secret(&settings.first_key_file, &issued.secret).map_err(|source| {
        BootstrapError::KeyFile {
            path: settings.first_key_file.display().to_string(),
            source,
        }
    })?;
    let key = issued.api_key.map(|k| k.name).unwrap_or_default();
    tracing::info!(
        key.name = %key,
        path = %settings.first_key_file.display(),
        "Single-tenant install: issued the tenant's first admin API key into its file."
    );
    Ok(())
}

/// Writes `secret` to `path` with mode 0600, replacing the file whole (a temporary file renamed).
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
