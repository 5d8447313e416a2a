//! `TenancyService`: tenants (operator), API keys (tenant admin or operator) and support grants
//! (`grants.rs`).
//!
//! Every call that reaches a tenant is audited once: allowed calls through the outbox in the same
//! transaction as their effect, denied and failed calls published straight away.

use std::collections::BTreeSet;

use prost_types::Timestamp;
use sqlx::PgPool;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use trustmesh_auth::key::display_prefix;
use trustmesh_auth::{
    AuthBucket, IssuedKey, KeyId, PageToken, Principal, QuotaDefaults, RateLimit, Scope,
    UsageBucket, page_size, resource_tenant,
};
use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::{Outbox, Publisher};
use trustmesh_events::{Service, TenantId};
use trustmesh_proto::events::v1::Outcome;
use trustmesh_proto::v1::tenancy_service_server::TenancyService;
use trustmesh_proto::v1::{
    ApiKey, CreateApiKeyRequest, CreateApiKeyResponse, CreateSupportAccessGrantRequest,
    CreateTenantRequest, CreateWebhookEndpointRequest, CreateWebhookEndpointResponse,
    DeleteWebhookEndpointRequest, DeleteWebhookEndpointResponse, DisableTenantRequest,
    EnableTenantRequest, GetQuotaRequest, GetTenantRequest, GetWebhookEndpointRequest,
    ListApiKeysRequest, ListApiKeysResponse, ListSupportAccessGrantsRequest,
    ListSupportAccessGrantsResponse, ListTenantsRequest, ListTenantsResponse,
    ListWebhookDeliveriesRequest, ListWebhookDeliveriesResponse, ListWebhookEndpointsRequest,
    ListWebhookEndpointsResponse, Quota, RevokeApiKeyRequest, RevokeSupportAccessGrantRequest,
    RotateWebhookSecretRequest, RotateWebhookSecretResponse, SupportAccessGrant, Tenant,
    TenantState, UpdateQuotaRequest, UpdateWebhookEndpointRequest, WebhookEndpoint,
};

use crate::error::TenancyError;
use crate::grants;
use crate::quotas;
use crate::repo::{self, KeyRow, NewKey, TenantRow};
use crate::webhooks::Notifier;

/// Longest display name accepted.
const MAX_DISPLAY_NAME: usize = 200;
/// Default and largest `ListApiKeys` (and `ListSupportAccessGrants`) page.
pub(crate) const DEFAULT_PAGE: usize = 50;
pub(crate) const MAX_PAGE: usize = 1000;

/// Audited action names.
mod action {
    pub(super) const TENANT_CREATE: &str = "tenants.create";
    pub(super) const TENANT_GET: &str = "tenants.get";
    pub(super) const KEY_CREATE: &str = "apiKeys.create";
    pub(super) const KEY_LIST: &str = "apiKeys.list";
    pub(super) const KEY_REVOKE: &str = "apiKeys.revoke";
}

/// The `TenancyService` implementation.
#[derive(Debug, Clone)]
pub struct TenancyHandler {
    pub(crate) pool: PgPool,
    pub(crate) bucket: AuthBucket,
    pub(crate) outbox: Outbox,
    publisher: Publisher,
    pub(crate) max_key_lifetime: time::Duration,
    pub(crate) max_grant_lifetime: time::Duration,
    pub(crate) notifier: Option<Notifier>,
    /// The deployment's default request rate and quotas (what a quota field of 0 means).
    pub(crate) rate_limit: RateLimit,
    pub(crate) quota_defaults: QuotaDefaults,
    /// Where ingest and analysis report what each tenant uses (GetQuota's `usage`).
    pub(crate) usage: Option<UsageBucket>,
    /// A single-tenant install: the operator's RPCs are refused (`single_tenant.rs`).
    single_tenant: bool,
}

impl TenancyHandler {
    /// A handler over the `tenancy` schema, replicating keys and grants to `bucket`, auditing
    /// through `outbox` (allowed calls) and `publisher` (denied and failed calls), and forwarding
    /// webhook calls to `notifier`.
    pub(crate) fn new(
        pool: PgPool,
        bucket: AuthBucket,
        outbox: Outbox,
        publisher: Publisher,
        max_key_lifetime: time::Duration,
        max_grant_lifetime: time::Duration,
        notifier: Option<Notifier>,
    ) -> Self {
        Self {
            pool,
            bucket,
            outbox,
            publisher,
            max_key_lifetime,
            max_grant_lifetime,
            notifier,
            rate_limit: RateLimit::default(),
            quota_defaults: QuotaDefaults::default(),
            usage: None,
            single_tenant: false,
        }
    }

    /// The same handler reading tenants' usage from `usage` (`tm_usage`).
    pub(crate) fn with_usage(mut self, usage: UsageBucket) -> Self {
        self.usage = Some(usage);
        self
    }

    /// The same handler for a single-tenant install: no operator surface.
    pub(crate) fn single_tenant(mut self) -> Self {
        self.single_tenant = true;
        self
    }

    /// Refuses an operator RPC in a single-tenant install, before anything else.
    fn operator_surface(&self) -> Result<(), Status> {
        if self.single_tenant {
            return Err(crate::single_tenant::refused());
        }
        Ok(())
    }

    /// The same handler answering GetQuota with these defaults.
    pub(crate) fn with_quota_defaults(
        mut self,
        rate_limit: RateLimit,
        quota_defaults: QuotaDefaults,
    ) -> Self {
        self.rate_limit = rate_limit;
        self.quota_defaults = quota_defaults;
        self
    }

    /// Runs `call` for `principal`; on failure, audits it against `resource`'s tenant (if the name has
    /// one) and returns the client-safe status.
    /// A method this version does not implement yet: the caller's access to `resource` is checked
    /// all the same (tenant admin or the operator), and the call is audited, denied or failed.
    async fn not_available<R, T>(
        &self,
        request: &Request<R>,
        action: &'static str,
        resource: &str,
        method: &'static str,
    ) -> Result<Response<T>, Status> {
        let principal = Principal::of(request)?.clone();
        let result = principal
            .require_or_operator(Scope::Admin, "name", resource)
            .map_err(TenancyError::from)
            .and_then(|_| Err(TenancyError::NotAvailable(method)));
        self.audited(&principal, action, resource, result).await
    }

    pub(crate) async fn audited<T>(
        &self,
        principal: &Principal,
        action: &'static str,
        resource: &str,
        result: Result<T, TenancyError>,
    ) -> Result<Response<T>, Status> {
        let error = match result {
            Ok(value) => return Ok(Response::new(value)),
            Err(error) => error,
        };
        let outcome = match &error {
            TenancyError::Auth(_) => Outcome::Denied,
            TenancyError::Page(_)
            | TenancyError::InvalidArgument { .. }
            | TenancyError::TenantExists(_)
            | TenancyError::NotFound(_)
            | TenancyError::NotAvailable(_)
            | TenancyError::Database(_)
            | TenancyError::CorruptKey(_)
            | TenancyError::KeyStore(_)
            | TenancyError::Notifier(_)
            | TenancyError::Outbox(_) => Outcome::Error,
        };
        let reason = error.reason();
        let status = Status::from(error);
        if let Ok(tenant) = resource_tenant("name", resource) {
            let mut entry = entry(principal, tenant, action, resource);
            entry.outcome = outcome;
            entry.grpc_code = status.code() as i32;
            entry.reason = reason.to_owned();
            if let Err(error) = audit::publish(&self.publisher, entry).await {
                tracing::error!(error = %error, audit.action = action, "An audit event could not be published.");
            }
        }
        Err(status)
    }

    pub(crate) async fn create_tenant_inner(
        &self,
        principal: &Principal,
        request: CreateTenantRequest,
    ) -> Result<Tenant, TenancyError> {
        principal.require_operator()?;
        let tenant = TenantId::parse(request.tenant_id.as_str())
            .map_err(|e| TenancyError::invalid("tenant_id", e.to_string()))?;
        let display_name = display_name(&request.display_name)?;
        let request_id = request_id(&request.request_id)?;
        let quota = request
            .quota
            .as_ref()
            .map(quotas::initial_quota)
            .transpose()?;
        let mut tx = self.pool.begin().await?;
        let inserted =
            repo::insert_tenant(&mut tx, tenant.as_str(), display_name, request_id).await?;
        let Some(row) = inserted else {
            let existing = repo::get_tenant(&self.pool, tenant.as_str()).await?;
            return match existing {
                Some(row) if request_id.is_some() && row.request_id.as_deref() == request_id => {
                    Ok(tenant_proto(&row))
                }
                Some(_) | None => Err(TenancyError::TenantExists(tenant.into_string())),
            };
        };
        let name = tenant_name(&tenant);
        if let Some(quota) = quota {
            self.write_quota(&mut tx, &tenant, quota).await?;
        }
        audit::enqueue(
            &self.outbox,
            &mut tx,
            entry(principal, tenant, action::TENANT_CREATE, &name),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant.id = %row.id, "Tenant created.");
        Ok(tenant_proto(&row))
    }

    async fn get_tenant_inner(
        &self,
        principal: &Principal,
        request: GetTenantRequest,
    ) -> Result<Tenant, TenancyError> {
        let tenant = principal.require_or_operator(Scope::Admin, "name", &request.name)?;
        exact_tenant_name("name", &tenant, &request.name)?;
        let row = repo::get_tenant(&self.pool, tenant.as_str())
            .await?
            .ok_or_else(|| TenancyError::NotFound(request.name.clone()))?;
        self.record(entry(principal, tenant, action::TENANT_GET, &request.name))
            .await?;
        Ok(tenant_proto(&row))
    }

    pub(crate) async fn create_api_key_inner(
        &self,
        principal: &Principal,
        request: CreateApiKeyRequest,
    ) -> Result<CreateApiKeyResponse, TenancyError> {
        let tenant = principal.require_or_operator(Scope::Admin, "parent", &request.parent)?;
        exact_tenant_name("parent", &tenant, &request.parent)?;
        let scopes = scopes(&request.scopes)?;
        let expire_time = expire_time(
            "expire_time",
            request.expire_time.as_ref(),
            self.max_key_lifetime,
        )?;
        let display_name = display_name(&request.display_name)?;
        let request_id = request_id(&request.request_id)?;
        self.active_tenant(&tenant, &request.parent).await?;
        if let Some(request_id) = request_id
            && let Some(row) = repo::key_by_request(&self.pool, tenant.as_str(), request_id).await?
        {
            // A retry: the key exists; its secret was shown once and is not shown again.
            return Ok(CreateApiKeyResponse {
                api_key: Some(key_proto(&row)),
                secret: String::new(),
            });
        }

        let issued = IssuedKey::generate();
        let mut tx = self.pool.begin().await?;
        let row = repo::insert_key(
            &mut tx,
            NewKey {
                key_id: issued.key_id().as_str(),
                tenant: tenant.as_str(),
                display_name,
                scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                digest: issued.digest().as_bytes(),
                expire_time,
                request_id,
            },
        )
        .await?;
        let name = key_name(&tenant, issued.key_id());
        let mut audit_entry = entry(principal, tenant, action::KEY_CREATE, &name);
        audit_entry.request_id = request_id.unwrap_or_default().to_owned();
        audit::enqueue(&self.outbox, &mut tx, audit_entry).await?;
        self.replicate(&row).await?;
        tx.commit().await?;
        tracing::info!(key.name = %name, "API key created.");
        Ok(CreateApiKeyResponse {
            api_key: Some(key_proto(&row)),
            secret: trustmesh_runtime::ExposeSecret::expose_secret(issued.token()).to_owned(),
        })
    }

    async fn list_api_keys_inner(
        &self,
        principal: &Principal,
        request: ListApiKeysRequest,
    ) -> Result<ListApiKeysResponse, TenancyError> {
        let tenant = principal.require_or_operator(Scope::Admin, "parent", &request.parent)?;
        exact_tenant_name("parent", &tenant, &request.parent)?;
        let size = page_size(request.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        let query = format!("apiKeys?show_inactive={}", request.show_inactive);
        let cursor = PageToken::decode(&request.page_token, &tenant, &query)?;
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut rows = repo::list_keys(
            &self.pool,
            tenant.as_str(),
            request.show_inactive,
            cursor.as_deref(),
            limit,
        )
        .await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|row| PageToken::encode(&tenant, &query, &row.key_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut audit_entry = entry(principal, tenant, action::KEY_LIST, &request.parent);
        audit_entry.records_affected = rows.len() as u64;
        self.record(audit_entry).await?;
        Ok(ListApiKeysResponse {
            api_keys: rows.iter().map(key_proto).collect(),
            next_page_token,
        })
    }

    async fn revoke_api_key_inner(
        &self,
        principal: &Principal,
        request: RevokeApiKeyRequest,
    ) -> Result<ApiKey, TenancyError> {
        let tenant = principal.require_or_operator(Scope::Admin, "name", &request.name)?;
        let key_id = request
            .name
            .strip_prefix(&format!("{}/apiKeys/", tenant_name(&tenant)))
            .ok_or_else(|| {
                TenancyError::invalid("name", "expected `tenants/{tenant}/apiKeys/{api_key}`")
            })?;
        let key_id =
            KeyId::parse(key_id).map_err(|_| TenancyError::NotFound(request.name.clone()))?;
        let mut tx = self.pool.begin().await?;
        let row = repo::revoke_key(&mut tx, tenant.as_str(), key_id.as_str())
            .await?
            .ok_or_else(|| TenancyError::NotFound(request.name.clone()))?;
        audit::enqueue(
            &self.outbox,
            &mut tx,
            entry(principal, tenant, action::KEY_REVOKE, &request.name),
        )
        .await?;
        // Replicate before committing: if the bucket refuses, nothing is recorded and the caller retries.
        self.replicate(&row).await?;
        tx.commit().await?;
        tracing::info!(key.name = %request.name, "API key revoked.");
        Ok(key_proto(&row))
    }

    /// Audits an allowed read through the outbox.
    pub(crate) async fn record(&self, entry: AuditEntry) -> Result<(), TenancyError> {
        let mut tx = self.pool.begin().await?;
        audit::enqueue(&self.outbox, &mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes `row`'s record to `tm_auth`.
    async fn replicate(&self, row: &KeyRow) -> Result<(), TenancyError> {
        let Some(record) = row.to_record() else {
            return Err(TenancyError::CorruptKey(row.key_id.clone()));
        };
        self.bucket.put(&record).await?;
        Ok(())
    }

    /// Checks that `tenant` exists and is active.
    pub(crate) async fn active_tenant(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<TenantRow, TenancyError> {
        match repo::get_tenant(&self.pool, tenant.as_str()).await? {
            Some(row) if row.state == "active" => Ok(row),
            Some(_) | None => Err(TenancyError::NotFound(name.to_owned())),
        }
    }
}

/// The expiry `expire` (request field `field`): required, in the future, at most `max` away.
pub(crate) fn expire_time(
    field: &'static str,
    expire: Option<&Timestamp>,
    max: time::Duration,
) -> Result<OffsetDateTime, TenancyError> {
    let expire = expire.ok_or_else(|| TenancyError::invalid(field, "required"))?;
    let at = OffsetDateTime::from_unix_timestamp(expire.seconds)
        .ok()
        .and_then(|t| t.checked_add(time::Duration::nanoseconds(i64::from(expire.nanos))))
        .ok_or_else(|| TenancyError::invalid(field, "out of range"))?;
    let now = OffsetDateTime::now_utc();
    if at <= now {
        return Err(TenancyError::invalid(field, "must be in the future"));
    }
    if at > now + max {
        return Err(TenancyError::invalid(
            field,
            format!("must be at most {} days away", max.whole_days()),
        ));
    }
    Ok(at)
}

/// The audit entry of `principal` doing `action` on `resource` of `tenant`.
pub(crate) fn entry(
    principal: &Principal,
    tenant: TenantId,
    action: &str,
    resource: &str,
) -> AuditEntry {
    let mut entry = AuditEntry::new(Service::Tenancy, tenant, action, resource);
    entry.actor_type = principal.actor_type();
    entry.actor_id = principal.actor_id();
    entry
}

pub(crate) fn tenant_name(tenant: &TenantId) -> String {
    format!("tenants/{tenant}")
}

fn key_name(tenant: &TenantId, key_id: &KeyId) -> String {
    format!("tenants/{tenant}/apiKeys/{key_id}")
}

/// Checks that `name` is exactly `tenants/{tenant}`.
pub(crate) fn exact_tenant_name(
    field: &'static str,
    tenant: &TenantId,
    name: &str,
) -> Result<(), TenancyError> {
    if name == tenant_name(tenant) {
        Ok(())
    } else {
        Err(TenancyError::invalid(field, "expected `tenants/{tenant}`"))
    }
}

fn display_name(name: &str) -> Result<&str, TenancyError> {
    short_text("display_name", name)
}

/// Free text of request field `field`: at most [`MAX_DISPLAY_NAME`] characters, no control
/// characters.
pub(crate) fn short_text<'a>(field: &'static str, text: &'a str) -> Result<&'a str, TenancyError> {
    if text.chars().count() > MAX_DISPLAY_NAME || text.chars().any(char::is_control) {
        return Err(TenancyError::invalid(
            field,
            format!("at most {MAX_DISPLAY_NAME} characters, no control characters"),
        ));
    }
    Ok(text)
}

pub(crate) fn request_id(id: &str) -> Result<Option<&str>, TenancyError> {
    if id.is_empty() {
        return Ok(None);
    }
    uuid::Uuid::parse_str(id)
        .map(|_| Some(id))
        .map_err(|_| TenancyError::invalid("request_id", "must be a UUID"))
}

pub(crate) fn scopes(values: &[i32]) -> Result<BTreeSet<Scope>, TenancyError> {
    if values.is_empty() {
        return Err(TenancyError::invalid(
            "scopes",
            "at least one scope is required",
        ));
    }
    values
        .iter()
        .map(|v| {
            Scope::from_proto(*v)
                .ok_or_else(|| TenancyError::invalid("scopes", format!("{v} is not a valid scope")))
        })
        .collect()
}

pub(crate) fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

fn tenant_proto(row: &TenantRow) -> Tenant {
    let state = match row.state.as_str() {
        "active" => TenantState::Active,
        "disabled" => TenantState::Disabled,
        "deleting" => TenantState::Deleting,
        _ => TenantState::Unspecified,
    };
    Tenant {
        name: format!("tenants/{}", row.id),
        display_name: row.display_name.clone(),
        state: state.into(),
        disable_reason: row.disable_reason.clone(),
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
    }
}

fn key_proto(row: &KeyRow) -> ApiKey {
    let prefix = KeyId::parse(&row.key_id)
        .map(|id| display_prefix(&id))
        .unwrap_or_default();
    ApiKey {
        name: format!("tenants/{}/apiKeys/{}", row.tenant, row.key_id),
        display_name: row.display_name.clone(),
        key_prefix: prefix,
        scopes: row
            .scopes
            .iter()
            .filter_map(|s| Scope::from_name(s))
            .map(|s| s.to_proto() as i32)
            .collect(),
        create_time: Some(timestamp(row.create_time)),
        expire_time: Some(timestamp(row.expire_time)),
        revoke_time: row.revoke_time.map(timestamp),
        last_use_time: None,
    }
}

/// The answer of the RPCs that later versions implement.

#[tonic::async_trait]
impl TenancyService for TenancyHandler {
    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        self.operator_surface()?;
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = format!("tenants/{}", request.tenant_id);
        let result = self.create_tenant_inner(&principal, request).await;
        self.audited(&principal, action::TENANT_CREATE, &resource, result)
            .await
    }

    async fn get_tenant(
        &self,
        request: Request<GetTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = request.name.clone();
        let result = self.get_tenant_inner(&principal, request).await;
        self.audited(&principal, action::TENANT_GET, &resource, result)
            .await
    }

    async fn list_tenants(
        &self,
        request: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        self.operator_surface()?;
        // Names no tenant, so there is no tenant log to audit it in.
        Principal::of(&request)?
            .require_operator()
            .map_err(TenancyError::from)?;
        Err(TenancyError::NotAvailable("ListTenants").into())
    }

    async fn disable_tenant(
        &self,
        request: Request<DisableTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        self.operator_surface()?;
        let resource = request.get_ref().name.clone();
        self.not_available(&request, "tenants.disable", &resource, "DisableTenant")
            .await
    }

    async fn enable_tenant(
        &self,
        request: Request<EnableTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        self.operator_surface()?;
        let resource = request.get_ref().name.clone();
        self.not_available(&request, "tenants.enable", &resource, "EnableTenant")
            .await
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = request.parent.clone();
        let result = self.create_api_key_inner(&principal, request).await;
        self.audited(&principal, action::KEY_CREATE, &resource, result)
            .await
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = request.parent.clone();
        let result = self.list_api_keys_inner(&principal, request).await;
        self.audited(&principal, action::KEY_LIST, &resource, result)
            .await
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = request.name.clone();
        let result = self.revoke_api_key_inner(&principal, request).await;
        self.audited(&principal, action::KEY_REVOKE, &resource, result)
            .await
    }

    async fn create_webhook_endpoint(
        &self,
        request: Request<CreateWebhookEndpointRequest>,
    ) -> Result<Response<CreateWebhookEndpointResponse>, Status> {
        self.forward_create(request).await
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<GetWebhookEndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        self.forward_get(request).await
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<ListWebhookEndpointsRequest>,
    ) -> Result<Response<ListWebhookEndpointsResponse>, Status> {
        self.forward_list(request).await
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<UpdateWebhookEndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        self.forward_update(request).await
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<DeleteWebhookEndpointRequest>,
    ) -> Result<Response<DeleteWebhookEndpointResponse>, Status> {
        self.forward_delete(request).await
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        self.forward_rotate(request).await
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>, Status> {
        self.forward_deliveries(request).await
    }

    async fn get_quota(
        &self,
        request: Request<GetQuotaRequest>,
    ) -> Result<Response<Quota>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = request.name.clone();
        let result = self.get_quota_inner(&principal, request).await;
        self.audited(&principal, quotas::action::GET, &resource, result)
            .await
    }

    async fn update_quota(
        &self,
        request: Request<UpdateQuotaRequest>,
    ) -> Result<Response<Quota>, Status> {
        self.operator_surface()?;
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = request
            .quota
            .as_ref()
            .map(|q| q.name.clone())
            .unwrap_or_default();
        let result = self.update_quota_inner(&principal, request).await;
        self.audited(&principal, quotas::action::UPDATE, &resource, result)
            .await
    }

    async fn create_support_access_grant(
        &self,
        request: Request<CreateSupportAccessGrantRequest>,
    ) -> Result<Response<SupportAccessGrant>, Status> {
        // A grant opens the tenant to the operator, whom a single-tenant install does not have.
        self.operator_surface()?;
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = request.parent.clone();
        let result = self.create_grant_inner(&principal, request).await;
        self.audited(&principal, grants::action::CREATE, &resource, result)
            .await
    }

    async fn list_support_access_grants(
        &self,
        request: Request<ListSupportAccessGrantsRequest>,
    ) -> Result<Response<ListSupportAccessGrantsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = request.parent.clone();
        let result = self.list_grants_inner(&principal, request).await;
        self.audited(&principal, grants::action::LIST, &resource, result)
            .await
    }

    async fn revoke_support_access_grant(
        &self,
        request: Request<RevokeSupportAccessGrantRequest>,
    ) -> Result<Response<SupportAccessGrant>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let resource = request.name.clone();
        let result = self.revoke_grant_inner(&principal, request).await;
        self.audited(&principal, grants::action::REVOKE, &resource, result)
            .await
    }
}
