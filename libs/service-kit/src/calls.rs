//! What every service's gRPC handlers record of a call: its request id and its audit entry.

use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use trustmesh_auth::{Principal, resource_tenant};
use trustmesh_bus::audit::AuditEntry;
use trustmesh_events::{Service, TenantId};
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
