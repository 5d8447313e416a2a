//! The `DeletionService` handler: validates requests, checks the caller, and runs the workflow.

use tonic::{Request, Response, Status};
use trustmesh_auth::{Principal, Scope as AuthScope, resource_tenant};
use trustmesh_events::TenantId;
use trustmesh_proto::v1::deletion_service_server::DeletionService;
use trustmesh_proto::v1::{
    DeleteDatasetRequest, DeleteTenantRequest, Deletion, DeletionCertificate,
    GetDeletionCertificateRequest, GetDeletionRequest, Job, ListCertificateSigningKeysRequest,
    ListCertificateSigningKeysResponse, SigningKey,
};
use uuid::Uuid;

use super::model::{Scope, certificate_name, parse_deletion_name, timestamp};
use super::service::{Actor, Deletions, Request as DeletionRequest};
use crate::certificate::ALGORITHM;
use crate::error::DeletionError;

/// Longest `reason` accepted, in characters.
const MAX_REASON_LEN: usize = 128;

/// Serves `DeletionService`.
#[derive(Debug, Clone)]
pub(crate) struct DeletionHandler {
    deletions: Deletions,
}

impl DeletionHandler {
    pub(crate) fn new(deletions: Deletions) -> Self {
        Self { deletions }
    }
}

/// The principal the auth interceptor attached, as an audit actor, with the check of `scope` on
/// `resource` (request field `name`).
///
/// # Errors
/// Without a principal (the service is not behind `trustmesh_auth::Authenticator`), the request is
/// refused outright as UNAUTHENTICATED: there is no anonymous caller.
fn caller<T>(
    request: &Request<T>,
    scope: AuthScope,
    resource: &str,
    operator_allowed: bool,
) -> Result<(Actor, Result<(), DeletionError>), DeletionError> {
    let principal = Principal::of(request)?;
    let checked = if operator_allowed {
        principal.require_or_operator(scope, "name", resource)
    } else {
        principal.require(scope, "name", resource)
    };
    let actor_type = principal.actor_type();
    let actor = Actor {
        actor_type,
        id: principal.actor_id(),
    };
    Ok((actor, checked.map(|_| ()).map_err(DeletionError::from)))
}

fn invalid(message: &str) -> DeletionError {
    DeletionError::InvalidArgument(message.to_owned())
}

/// Parses `tenants/{tenant}/datasets/{dataset}`.
fn parse_dataset_name(name: &str) -> Result<TenantId, DeletionError> {
    let error =
        || invalid("`name` must be `tenants/{tenant}/datasets/{dataset}` with a UUID dataset id");
    let rest = name.strip_prefix("tenants/").ok_or_else(error)?;
    let mut parts = rest.split('/');
    let (Some(tenant), Some("datasets"), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(error());
    };
    Uuid::parse_str(id).map_err(|_| error())?;
    TenantId::parse(tenant).map_err(|_| error())
}

fn parse_reason(reason: &str) -> Result<String, DeletionError> {
    let valid = reason.chars().count() <= MAX_REASON_LEN
        && reason.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if valid {
        Ok(reason.to_owned())
    } else {
        Err(invalid(
            "`reason` must be at most 128 printable ASCII characters, e.g. `gdpr-art-17`",
        ))
    }
}

fn parse_request_id(request_id: &str) -> Result<Option<String>, DeletionError> {
    if request_id.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(request_id)
        .map(|id| Some(id.hyphenated().to_string()))
        .map_err(|_| invalid("`request_id` must be a UUID"))
}

impl DeletionHandler {
    /// The caller of `request`; a denial is audited (on the tenant the resource names) and returned.
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        resource: &str,
        operator_allowed: bool,
        action: &str,
    ) -> Result<Actor, DeletionError> {
        let (actor, checked) = caller(
            request,
            AuthScope::DeletionWrite,
            resource,
            operator_allowed,
        )?;
        let Err(denied) = checked else {
            return Ok(actor);
        };
        if let Ok(tenant) = resource_tenant("name", resource)
            && let Err(error) = self
                .deletions
                .audit(&tenant, &actor, action, resource.to_owned(), Some(&denied))
                .await
        {
            tracing::warn!(error.cause_chain = %trustmesh_runtime::cause_chain(&error), "Could not audit a denied request.");
        }
        Err(denied)
    }

    async fn handle_delete_dataset(
        &self,
        request: Request<DeleteDatasetRequest>,
    ) -> Result<Job, DeletionError> {
        let name = request.get_ref().name.clone();
        let actor = self
            .authorize(&request, &name, false, "deletion.datasets.delete")
            .await?;
        let body = request.into_inner();
        let tenant = parse_dataset_name(&body.name)?;
        let (row, receipts) = self
            .deletions
            .request(DeletionRequest {
                tenant,
                scope: Scope::Dataset,
                target: body.name,
                reason: parse_reason(&body.reason)?,
                request_id: parse_request_id(&body.request_id)?,
                actor,
            })
            .await?;
        Ok(row.job(&receipts))
    }

    async fn handle_delete_tenant(
        &self,
        request: Request<DeleteTenantRequest>,
    ) -> Result<Job, DeletionError> {
        let name = request.get_ref().name.clone();
        let actor = self
            .authorize(&request, &name, true, "deletion.tenants.delete")
            .await?;
        let body = request.into_inner();
        let tenant = body
            .name
            .strip_prefix("tenants/")
            .and_then(|t| TenantId::parse(t).ok())
            .ok_or_else(|| invalid("`name` must be `tenants/{tenant}`"))?;
        if body.confirm_tenant_id != tenant.as_str() {
            return Err(invalid(
                "`confirm_tenant_id` must equal the tenant id in `name`",
            ));
        }
        let (row, receipts) = self
            .deletions
            .request(DeletionRequest {
                tenant,
                scope: Scope::Tenant,
                target: body.name,
                reason: parse_reason(&body.reason)?,
                request_id: parse_request_id(&body.request_id)?,
                actor,
            })
            .await?;
        Ok(row.job(&receipts))
    }

    async fn handle_get_deletion(
        &self,
        request: Request<GetDeletionRequest>,
    ) -> Result<Deletion, DeletionError> {
        let name = request.get_ref().name.clone();
        let actor = self
            .authorize(&request, &name, false, "deletion.deletions.get")
            .await?;
        let (tenant, id) = parse_deletion_name(&name, false)
            .ok_or_else(|| invalid("`name` must be `tenants/{tenant}/deletions/{deletion}`"))?;
        let result = self.deletions.get(&tenant, id).await;
        self.deletions
            .audit(
                &tenant,
                &actor,
                "deletion.deletions.get",
                name,
                result.as_ref().err(),
            )
            .await?;
        let (row, receipts) = result?;
        Ok(row.api(&receipts))
    }

    async fn handle_get_deletion_certificate(
        &self,
        request: Request<GetDeletionCertificateRequest>,
    ) -> Result<DeletionCertificate, DeletionError> {
        let name = request.get_ref().name.clone();
        // The operator may fetch certificates: they outlive the tenant.
        let actor = self
            .authorize(&request, &name, true, "deletion.certificates.get")
            .await?;
        let (tenant, id) = parse_deletion_name(&name, true).ok_or_else(|| {
            invalid("`name` must be `tenants/{tenant}/deletions/{deletion}/certificate`")
        })?;
        let result = self.deletions.certificate(&tenant, id).await;
        self.deletions
            .audit(
                &tenant,
                &actor,
                "deletion.certificates.get",
                name,
                result.as_ref().err(),
            )
            .await?;
        let row = result?;
        Ok(DeletionCertificate {
            name: certificate_name(tenant.as_str(), id),
            certificate: row.document,
            signature: row.signature,
            algorithm: ALGORITHM.to_owned(),
            key_id: row.key_id,
            issue_time: Some(timestamp(row.issue_time)),
        })
    }
}

#[tonic::async_trait]
impl DeletionService for DeletionHandler {
    async fn delete_dataset(
        &self,
        request: Request<DeleteDatasetRequest>,
    ) -> Result<Response<Job>, Status> {
        Ok(Response::new(self.handle_delete_dataset(request).await?))
    }

    async fn delete_tenant(
        &self,
        request: Request<DeleteTenantRequest>,
    ) -> Result<Response<Job>, Status> {
        Ok(Response::new(self.handle_delete_tenant(request).await?))
    }

    async fn get_deletion(
        &self,
        request: Request<GetDeletionRequest>,
    ) -> Result<Response<Deletion>, Status> {
        Ok(Response::new(self.handle_get_deletion(request).await?))
    }

    async fn get_deletion_certificate(
        &self,
        request: Request<GetDeletionCertificateRequest>,
    ) -> Result<Response<DeletionCertificate>, Status> {
        Ok(Response::new(
            self.handle_get_deletion_certificate(request).await?,
        ))
    }

    async fn list_certificate_signing_keys(
        &self,
        request: Request<ListCertificateSigningKeysRequest>,
    ) -> Result<Response<ListCertificateSigningKeysResponse>, Status> {
        // Public keys: any authenticated caller may list them, but there is no anonymous caller.
        Principal::of(&request).map_err(DeletionError::from)?;
        let keys = self.deletions.signing_keys().await?;
        Ok(Response::new(ListCertificateSigningKeysResponse {
            keys: keys
                .into_iter()
                .map(|k| SigningKey {
                    key_id: k.key_id,
                    algorithm: ALGORITHM.to_owned(),
                    public_key: k.public_key,
                    create_time: Some(timestamp(k.create_time)),
                    retire_time: k.retire_time.map(timestamp),
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_a_principal_is_unauthenticated() {
        let request = Request::new(());
        for operator_allowed in [false, true] {
            let Err(refused) = caller(
                &request,
                AuthScope::DeletionWrite,
                "tenants/acme/datasets/0190b1a2-0000-7000-8000-000000000000",
                operator_allowed,
            ) else {
                panic!("no principal, no caller");
            };
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        }
    }
}
