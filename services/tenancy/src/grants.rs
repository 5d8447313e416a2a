//! The support-grant RPCs: a tenant admin grants the operator time-limited access to some of the
//! tenant's resources with some scopes (never `admin`), lists and revokes it. Grants replicate to
//! every service through `tm_auth` like keys (written before the row commits, so a grant that is
//! recorded is also enforced, and a revocation that is recorded has reached the bucket).
//!
//! Only the tenant's `admin` key creates a grant: the operator, who would be its beneficiary, may
//! not. The operator may list a tenant's grants and revoke them (giving access up is always safe).

use std::collections::BTreeSet;

use trustmesh_auth::grant::covers;
use trustmesh_auth::{PageToken, Principal, Scope, page_size, resource_tenant};
use trustmesh_bus::audit;
use trustmesh_events::TenantId;
use trustmesh_proto::v1::{
    CreateSupportAccessGrantRequest, ListSupportAccessGrantsRequest,
    ListSupportAccessGrantsResponse, RevokeSupportAccessGrantRequest, SupportAccessGrant,
};
use uuid::Uuid;

use crate::error::TenancyError;
use crate::grpc::{
    DEFAULT_PAGE, MAX_PAGE, TenancyHandler, entry, exact_tenant_name, expire_time, request_id,
    scopes, short_text, tenant_name, timestamp,
};
use crate::repo::{self, GrantRow, NewGrant};

/// Most resources one grant may name.
const MAX_RESOURCES: usize = 20;
/// Longest resource name a grant may hold, in characters.
const MAX_RESOURCE_LEN: usize = 256;

/// Audited action names.
pub(crate) mod action {
    pub(crate) const CREATE: &str = "supportAccessGrants.create";
    pub(crate) const LIST: &str = "supportAccessGrants.list";
    pub(crate) const REVOKE: &str = "supportAccessGrants.revoke";
}

impl TenancyHandler {
    pub(crate) async fn create_grant_inner(
        &self,
        principal: &Principal,
        request: CreateSupportAccessGrantRequest,
    ) -> Result<SupportAccessGrant, TenancyError> {
        let tenant = principal.require(Scope::Admin, "parent", &request.parent)?;
        exact_tenant_name("parent", &tenant, &request.parent)?;
        let grant = request
            .support_access_grant
            .ok_or_else(|| TenancyError::invalid("support_access_grant", "required"))?;
        let granted = scopes(&grant.scopes)?;
        if granted.contains(&Scope::Admin) {
            return Err(TenancyError::invalid(
                "support_access_grant.scopes",
                "`admin` is not grantable",
            ));
        }
        let resources = resources(&tenant, &grant.resources)?;
        let grantee = short_text("support_access_grant.grantee", &grant.grantee)?;
        let reason = short_text("support_access_grant.reason", &grant.reason)?;
        let expire = expire_time(
            "support_access_grant.expire_time",
            grant.expire_time.as_ref(),
            self.max_grant_lifetime,
        )?;
        let request_id = request_id(&request.request_id)?;
        self.active_tenant(&tenant, &request.parent).await?;
        if let Some(request_id) = request_id
            && let Some(row) =
                repo::grant_by_request(&self.pool, tenant.as_str(), request_id).await?
        {
            return Ok(grant_proto(&row));
        }

        let grant_id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        let row = repo::insert_grant(
            &mut tx,
            NewGrant {
                grant_id,
                tenant: tenant.as_str(),
                grantee,
                reason,
                scopes: granted.iter().map(|s| s.as_str().to_owned()).collect(),
                resources: &resources,
                expire_time: expire,
                request_id,
            },
        )
        .await?;
        let name = grant_name(tenant.as_str(), grant_id);
        let mut audit_entry = entry(principal, tenant, action::CREATE, &name);
        audit_entry.request_id = request_id.unwrap_or_default().to_owned();
        audit::enqueue(&self.outbox, &mut tx, audit_entry).await?;
        self.bucket.put_grant(&row.to_record()).await?;
        tx.commit().await?;
        tracing::info!(grant.name = %name, "Support grant created.");
        Ok(grant_proto(&row))
    }

    pub(crate) async fn list_grants_inner(
        &self,
        principal: &Principal,
        request: ListSupportAccessGrantsRequest,
    ) -> Result<ListSupportAccessGrantsResponse, TenancyError> {
        let tenant = principal.require_or_operator(Scope::Admin, "parent", &request.parent)?;
        exact_tenant_name("parent", &tenant, &request.parent)?;
        let size = page_size(request.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        let query = format!(
            "supportAccessGrants?show_inactive={}",
            request.show_inactive
        );
        let cursor = PageToken::decode(&request.page_token, &tenant, &query)?
            .map(|id| Uuid::parse_str(&id))
            .transpose()
            .map_err(|_| TenancyError::invalid("page_token", "not a token of this query"))?;
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut rows = repo::list_grants(
            &self.pool,
            tenant.as_str(),
            request.show_inactive,
            cursor,
            limit,
        )
        .await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|row| PageToken::encode(&tenant, &query, &row.grant_id.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut audit_entry = entry(principal, tenant, action::LIST, &request.parent);
        audit_entry.records_affected = rows.len() as u64;
        self.record(audit_entry).await?;
        Ok(ListSupportAccessGrantsResponse {
            support_access_grants: rows.iter().map(grant_proto).collect(),
            next_page_token,
        })
    }

    pub(crate) async fn revoke_grant_inner(
        &self,
        principal: &Principal,
        request: RevokeSupportAccessGrantRequest,
    ) -> Result<SupportAccessGrant, TenancyError> {
        let tenant = principal.require_or_operator(Scope::Admin, "name", &request.name)?;
        let grant_id = request
            .name
            .strip_prefix(&format!("{}/supportAccessGrants/", tenant_name(&tenant)))
            .ok_or_else(|| {
                TenancyError::invalid(
                    "name",
                    "expected `tenants/{tenant}/supportAccessGrants/{grant}`",
                )
            })?;
        let grant_id =
            Uuid::parse_str(grant_id).map_err(|_| TenancyError::NotFound(request.name.clone()))?;
        let mut tx = self.pool.begin().await?;
        let row = repo::revoke_grant(&mut tx, tenant.as_str(), grant_id)
            .await?
            .ok_or_else(|| TenancyError::NotFound(request.name.clone()))?;
        audit::enqueue(
            &self.outbox,
            &mut tx,
            entry(principal, tenant, action::REVOKE, &request.name),
        )
        .await?;
        // Replicate before committing: if the bucket refuses, nothing is recorded and the caller retries.
        self.bucket.put_grant(&row.to_record()).await?;
        tx.commit().await?;
        tracing::info!(grant.name = %request.name, "Support grant revoked.");
        Ok(grant_proto(&row))
    }
}

/// The grant's resource names: each of `tenant`, clean (no empty, `.` or `..` segment), at most
/// [`MAX_RESOURCE_LEN`] characters, at most [`MAX_RESOURCES`] of them; duplicates dropped.
fn resources(tenant: &TenantId, names: &[String]) -> Result<Vec<String>, TenancyError> {
    const FIELD: &str = "support_access_grant.resources";
    if names.len() > MAX_RESOURCES {
        return Err(TenancyError::invalid(
            FIELD,
            format!("at most {MAX_RESOURCES} resources"),
        ));
    }
    let mut unique = BTreeSet::new();
    for name in names {
        let of_tenant = resource_tenant(FIELD, name).is_ok_and(|t| t == *tenant);
        // A clean name (no empty, `.` or `..` segment) is the only kind that covers itself.
        let clean = covers(name, name);
        if !of_tenant || !clean || name.chars().count() > MAX_RESOURCE_LEN {
            return Err(TenancyError::invalid(
                FIELD,
                format!(
                    "each must be a resource name of `tenants/{tenant}`, at most {MAX_RESOURCE_LEN} characters"
                ),
            ));
        }
        unique.insert(name.clone());
    }
    Ok(unique.into_iter().collect())
}

fn grant_name(tenant: &str, grant_id: Uuid) -> String {
    format!("tenants/{tenant}/supportAccessGrants/{grant_id}")
}

fn grant_proto(row: &GrantRow) -> SupportAccessGrant {
    SupportAccessGrant {
        name: grant_name(&row.tenant, row.grant_id),
        grantee: row.grantee.clone(),
        reason: row.reason.clone(),
        scopes: row
            .scopes
            .iter()
            .filter_map(|s| Scope::from_name(s))
            .map(|s| s.to_proto() as i32)
            .collect(),
        create_time: Some(timestamp(row.create_time)),
        expire_time: Some(timestamp(row.expire_time)),
        revoke_time: row.revoke_time.map(timestamp),
        resources: row.resources.clone(),
    }
}
