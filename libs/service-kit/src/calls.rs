//! What every service's gRPC handlers record of a call: its request id and its audit entry, and
//! how a call's result is audited ([`settle`]).

use std::future::Future;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Code, Request, Status};
use trustmesh_auth::{Principal, resource_tenant};
use trustmesh_bus::audit::AuditEntry;
use trustmesh_events::{Service, TenantId};
use trustmesh_proto::events::v1::Outcome;
use uuid::Uuid;

/// Longest resource name an audit entry keeps, in characters.
pub const AUDIT_RESOURCE_MAX: usize = 256;

/// The caller's `x-request-id` if it is a short printable token, else a fresh UUIDv7.
pub fn request_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

/// The audit entry of `principal` doing `action` on `resource` of `tenant`, in `service`.
#[must_use]
pub fn call_entry(
    service: Service,
    principal: &Principal,
    tenant: TenantId,
    action: &str,
    resource: &str,
    request_id: &str,
) -> AuditEntry {
    let resource: String = resource.chars().take(AUDIT_RESOURCE_MAX).collect();
    let mut entry = AuditEntry::new(service, tenant, action, resource);
    entry.actor_type = principal.actor_type();
    entry.actor_id = principal.actor_id();
    entry.request_id = request_id.to_owned();
    entry
}

/// [`call_entry`] in the tenant `resource` names (its owner, whoever calls); `None` if it names
/// none, as nothing of any tenant is touched then.
#[must_use]
pub fn call_entry_for(
    service: Service,
    principal: &Principal,
    action: &str,
    resource: &str,
    request_id: &str,
) -> Option<AuditEntry> {
    let tenant = resource_tenant("name", resource).ok()?;
    Some(call_entry(
        service, principal, tenant, action, resource, request_id,
    ))
}

/// A request to another service of the mesh: `message` with `bearer` (the whole `authorization`
/// value, the mesh's service credential) if set, and the current trace context, so the callee's
/// span continues this one's trace.
pub fn mesh_request<T>(message: T, bearer: Option<&MetadataValue<Ascii>>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(bearer) = bearer {
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
    }
    trustmesh_telemetry::inject_current(request.metadata_mut());
    request
}

/// A service's error as [`settle`] audits it.
pub trait CallError: std::fmt::Display + Sized {
    /// The gRPC code the call is answered with.
    fn code(&self) -> Code;
    /// A short machine-readable reason for the audit log (never content).
    fn reason(&self) -> &'static str;
    /// Whether the auth layer refused the call (audited as DENIED; any other failure as ERROR).
    fn is_denial(&self) -> bool;
}

/// Audits a call (when its tenant is known, `entry`; denials as DENIED, failures as ERROR with
/// their code and reason) with `record`, and turns `result` (the value and how many records it
/// touched) into the RPC's answer. An allowed call whose audit cannot be recorded fails: no
/// unaudited data access. A failed call whose audit cannot be recorded keeps its own error.
///
/// # Errors
///
/// The call's error, or the audit's when an allowed call cannot be recorded, as a [`Status`].
pub async fn settle<T, E, F, Fut>(
    entry: Option<AuditEntry>,
    result: Result<(T, u64), E>,
    record: F,
) -> Result<T, Status>
where
    E: CallError,
    Status: From<E>,
    F: FnOnce(AuditEntry) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let Some(mut entry) = entry else {
        return result.map(|(value, _)| value).map_err(Status::from);
    };
    match result {
        Ok((value, records)) => {
            entry.records_affected = records;
            record(entry).await?;
            Ok(value)
        }
        Err(error) => {
            entry.outcome = if error.is_denial() {
                Outcome::Denied
            } else {
                Outcome::Error
            };
            entry.grpc_code = error.code() as i32;
            error.reason().clone_into(&mut entry.reason);
            if let Err(audit_error) = record(entry).await {
                tracing::error!(error = %audit_error, "Could not record the audit event of a failed call.");
            }
            Err(error.into())
        }
    }
}
