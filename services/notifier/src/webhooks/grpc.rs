//! `WebhookService`: the webhook RPCs of `TenancyService` as tenancy forwards them, after it has
//! authorized and audited the tenant's call. Only the mesh's service credential gets through.

use prost_types::Timestamp;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use trustmesh_auth::{AuthError, PageToken, Principal, page_size, resource_tenant};
use trustmesh_bus::Publisher;
use trustmesh_bus::audit;
use trustmesh_events::{Service, TenantId};
use trustmesh_proto::events::v1::Outcome;
use trustmesh_proto::v1::webhook_service_server::WebhookService;
use trustmesh_proto::v1::{
    CreateWebhookEndpointRequest, CreateWebhookEndpointResponse, DeleteWebhookEndpointRequest,
    DeleteWebhookEndpointResponse, GetWebhookEndpointRequest, ListWebhookDeliveriesRequest,
    ListWebhookDeliveriesResponse, ListWebhookEndpointsRequest, ListWebhookEndpointsResponse,
    RotateWebhookSecretRequest, RotateWebhookSecretResponse, UpdateWebhookEndpointRequest,
    WebhookDelivery, WebhookDeliveryState, WebhookEndpoint, WebhookEventType,
};
use trustmesh_runtime::ExposeSecret as _;
use trustmesh_service_kit::calls::{call_entry, request_id};
use trustmesh_webhooks::EgressPolicy;
use uuid::Uuid;

use super::deliveries::{Deliveries, DeliveryRow};
use super::endpoints::{EndpointChange, EndpointRow, Endpoints, NewEndpoint};
use super::error::NotifierError;
use super::events;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;
const MAX_DESCRIPTION: usize = 1000;
const MAX_URL: usize = 2048;

/// The `WebhookService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct WebhookHandler {
    pub(crate) endpoints: Endpoints,
    pub(crate) deliveries: Deliveries,
    pub(crate) policy: EgressPolicy,
    /// Publishes the audit events of denied calls.
    pub(crate) publisher: Publisher,
}

/// The endpoint id of `name` (`tenants/{tenant}/webhookEndpoints/{id}`).
fn endpoint_id(field: &'static str, tenant: &TenantId, name: &str) -> Result<Uuid, NotifierError> {
    let id = name
        .strip_prefix(&format!("tenants/{tenant}/webhookEndpoints/"))
        .ok_or_else(|| {
            NotifierError::invalid(field, "expected `tenants/{tenant}/webhookEndpoints/{id}`")
        })?;
    Uuid::parse_str(id).map_err(|_| NotifierError::NotFound(name.to_owned()))
}

fn exact_parent(tenant: &TenantId, parent: &str) -> Result<(), NotifierError> {
    if parent == format!("tenants/{tenant}") {
        Ok(())
    } else {
        Err(NotifierError::invalid(
            "parent",
            "expected `tenants/{tenant}`",
        ))
    }
}

fn timestamp(at: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: at.unix_timestamp(),
        nanos: i32::try_from(at.nanosecond()).unwrap_or_default(),
    }
}

fn endpoint_proto(row: &EndpointRow) -> WebhookEndpoint {
    WebhookEndpoint {
        name: format!("tenants/{}/webhookEndpoints/{}", row.tenant, row.id),
        url: row.url.clone(),
        event_types: row
            .event_types
            .iter()
            .map(|t| events::from_name(t) as i32)
            .collect(),
        description: row.description.clone(),
        disabled: row.disabled,
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
    }
}

fn state_name(state: WebhookDeliveryState) -> Option<&'static str> {
    match state {
        WebhookDeliveryState::Pending => Some("pending"),
        WebhookDeliveryState::Succeeded => Some("succeeded"),
        WebhookDeliveryState::Failed => Some("failed"),
        WebhookDeliveryState::Unspecified => None,
    }
}

fn delivery_proto(row: &DeliveryRow) -> WebhookDelivery {
    let state = match row.state.as_str() {
        "pending" => WebhookDeliveryState::Pending,
        "succeeded" => WebhookDeliveryState::Succeeded,
        "failed" => WebhookDeliveryState::Failed,
        _ => WebhookDeliveryState::Unspecified,
    };
    WebhookDelivery {
        name: format!(
            "tenants/{}/webhookEndpoints/{}/deliveries/{}",
            row.tenant, row.endpoint, row.id
        ),
        webhook_id: row.webhook_id(),
        event_type: events::from_name(&row.event_type) as i32,
        state: state as i32,
        attempt_count: u32::try_from(row.attempt_count).unwrap_or_default(),
        last_http_status: u32::try_from(row.last_http_status).unwrap_or_default(),
        last_error: row.last_error.clone(),
        create_time: Some(timestamp(row.create_time)),
        last_attempt_time: row.last_attempt_time.map(timestamp),
        next_attempt_time: (state == WebhookDeliveryState::Pending)
            .then(|| timestamp(row.next_attempt_time)),
    }
}

impl WebhookHandler {
    /// The tenant `name` (a `field`) belongs to, if the caller is the mesh. Anyone else is denied
    /// (another tenant's key as if `name` did not exist), with one DENIED event for `action` in the
    /// named tenant's log: tenancy audits the calls it forwards, this audits the ones that bypass it.
    async fn mesh_tenant<T>(
        &self,
        request: &Request<T>,
        action: &'static str,
        field: &'static str,
        name: &str,
    ) -> Result<TenantId, NotifierError> {
        let principal = Principal::of(request)?;
        let tenant = resource_tenant(field, name)?;
        let denial = match principal {
            Principal::Service => return Ok(tenant),
            Principal::ApiKey(key) if key.tenant != tenant => AuthError::OtherTenant {
                resource: name.to_owned(),
            },
            Principal::ApiKey(_) | Principal::Operator | Principal::Support(_) => {
                AuthError::ServiceDenied {
                    resource: name.to_owned(),
                }
            }
        };
        let mut entry = call_entry(
            Service::Notifier,
            principal,
            tenant,
            action,
            name,
            &request_id(request),
        );
        entry.outcome = Outcome::Denied;
        entry.grpc_code = Status::from(denial.clone()).code() as i32;
        denial.reason().clone_into(&mut entry.reason);
        if let Err(error) = audit::publish(&self.publisher, entry).await {
            tracing::error!(error = %error, "Could not record the audit event of a denied call.");
        }
        Err(denial.into())
    }

    fn url(&self, url: &str) -> Result<String, NotifierError> {
        if url.len() > MAX_URL {
            return Err(NotifierError::invalid("url", "longer than 2048 bytes"));
        }
        self.policy
            .check_url(url)
            .map(|u| u.to_string())
            .map_err(|refusal| NotifierError::invalid("url", refusal.to_string()))
    }

    fn event_types(types: &[i32]) -> Result<Vec<String>, NotifierError> {
        let mut names: Vec<String> = Vec::with_capacity(types.len());
        for value in types {
            let name = WebhookEventType::try_from(*value)
                .ok()
                .and_then(events::type_name)
                .ok_or_else(|| NotifierError::invalid("event_types", "unknown event type"))?;
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn description(text: &str) -> Result<&str, NotifierError> {
        if text.chars().count() > MAX_DESCRIPTION {
            Err(NotifierError::invalid(
                "description",
                "longer than 1000 characters",
            ))
        } else {
            Ok(text)
        }
    }

    async fn create(
        &self,
        request: Request<CreateWebhookEndpointRequest>,
    ) -> Result<CreateWebhookEndpointResponse, NotifierError> {
        let tenant = self
            .mesh_tenant(
                &request,
                "webhooks.create",
                "parent",
                &request.get_ref().parent,
            )
            .await?;
        let request = request.into_inner();
        exact_parent(&tenant, &request.parent)?;
        let endpoint = request
            .webhook_endpoint
            .ok_or_else(|| NotifierError::invalid("webhook_endpoint", "required"))?;
        let url = self.url(&endpoint.url)?;
        let request_id = if request.request_id.is_empty() {
            None
        } else {
            Uuid::parse_str(&request.request_id)
                .map_err(|_| NotifierError::invalid("request_id", "must be a UUID"))?;
            Some(request.request_id.as_str())
        };
        let (row, secret) = self
            .endpoints
            .create(
                &tenant,
                NewEndpoint {
                    url: &url,
                    event_types: Self::event_types(&endpoint.event_types)?,
                    description: Self::description(&endpoint.description)?,
                    disabled: endpoint.disabled,
                    request_id,
                },
            )
            .await?;
        tracing::info!(tenant.id = %tenant, webhook.endpoint = %row.id, "Webhook endpoint created.");
        Ok(CreateWebhookEndpointResponse {
            webhook_endpoint: Some(endpoint_proto(&row)),
            signing_secret: secret
                .map(|s| s.to_shown().expose_secret().to_owned())
                .unwrap_or_default(),
        })
    }

    async fn get(
        &self,
        request: Request<GetWebhookEndpointRequest>,
    ) -> Result<WebhookEndpoint, NotifierError> {
        let name = &request.get_ref().name;
        let tenant = self
            .mesh_tenant(&request, "webhooks.get", "name", name)
            .await?;
        let id = endpoint_id("name", &tenant, name)?;
        let row = self
            .endpoints
            .get(&tenant, id)
            .await?
            .ok_or_else(|| NotifierError::NotFound(name.clone()))?;
        Ok(endpoint_proto(&row))
    }

    async fn list(
        &self,
        request: Request<ListWebhookEndpointsRequest>,
    ) -> Result<ListWebhookEndpointsResponse, NotifierError> {
        let tenant = self
            .mesh_tenant(
                &request,
                "webhooks.list",
                "parent",
                &request.get_ref().parent,
            )
            .await?;
        let request = request.into_inner();
        exact_parent(&tenant, &request.parent)?;
        let size = page_size(request.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        let query = "webhookEndpoints";
        let cursor = PageToken::decode(&request.page_token, &tenant, query)?
            .map(|c| {
                Uuid::parse_str(&c).map_err(|_| NotifierError::invalid("page_token", "malformed"))
            })
            .transpose()?;
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut rows = self.endpoints.list(&tenant, cursor, limit).await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|r| PageToken::encode(&tenant, query, &r.id.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListWebhookEndpointsResponse {
            webhook_endpoints: rows.iter().map(endpoint_proto).collect(),
            next_page_token,
        })
    }

    async fn update(
        &self,
        request: Request<UpdateWebhookEndpointRequest>,
    ) -> Result<WebhookEndpoint, NotifierError> {
        let name = request
            .get_ref()
            .webhook_endpoint
            .as_ref()
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let tenant = self
            .mesh_tenant(&request, "webhooks.update", "name", &name)
            .await?;
        let id = endpoint_id("name", &tenant, &name)?;
        let request = request.into_inner();
        let endpoint = request.webhook_endpoint.unwrap_or_default();
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(NotifierError::invalid(
                "update_mask",
                "name at least one field",
            ));
        }
        let mut change = EndpointChange::default();
        for path in &paths {
            match path.as_str() {
                "url" => change.url = Some(self.url(&endpoint.url)?),
                "event_types" => {
                    change.event_types = Some(Self::event_types(&endpoint.event_types)?)
                }
                "description" => {
                    change.description = Some(Self::description(&endpoint.description)?.to_owned());
                }
                "disabled" => change.disabled = Some(endpoint.disabled),
                _ => {
                    return Err(NotifierError::invalid(
                        "update_mask",
                        "only `url`, `event_types`, `description` and `disabled` can change",
                    ));
                }
            }
        }
        let row = self
            .endpoints
            .update(&tenant, id, change)
            .await?
            .ok_or_else(|| NotifierError::NotFound(name.clone()))?;
        Ok(endpoint_proto(&row))
    }

    async fn delete(
        &self,
        request: Request<DeleteWebhookEndpointRequest>,
    ) -> Result<(), NotifierError> {
        let name = &request.get_ref().name;
        let tenant = self
            .mesh_tenant(&request, "webhooks.delete", "name", name)
            .await?;
        let id = endpoint_id("name", &tenant, name)?;
        if self.endpoints.delete(&tenant, id).await? {
            Ok(())
        } else {
            Err(NotifierError::NotFound(name.clone()))
        }
    }

    async fn rotate(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<RotateWebhookSecretResponse, NotifierError> {
        let name = &request.get_ref().name;
        let tenant = self
            .mesh_tenant(&request, "webhooks.rotate", "name", name)
            .await?;
        let id = endpoint_id("name", &tenant, name)?;
        let secret = self
            .endpoints
            .rotate(&tenant, id)
            .await?
            .ok_or_else(|| NotifierError::NotFound(name.clone()))?;
        Ok(RotateWebhookSecretResponse {
            signing_secret: secret.to_shown().expose_secret().to_owned(),
        })
    }

    async fn list_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<ListWebhookDeliveriesResponse, NotifierError> {
        let parent = request.get_ref().parent.clone();
        let tenant = self
            .mesh_tenant(&request, "webhooks.deliveries.list", "parent", &parent)
            .await?;
        let id = endpoint_id("parent", &tenant, &parent)?;
        let request = request.into_inner();
        if self.endpoints.get(&tenant, id).await?.is_none() {
            return Err(NotifierError::NotFound(parent));
        }
        let size = page_size(request.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        let state = state_name(request.state());
        let query = format!("{parent}/deliveries?state={}", state.unwrap_or(""));
        let cursor = PageToken::decode(&request.page_token, &tenant, &query)?
            .map(|c| {
                Uuid::parse_str(&c).map_err(|_| NotifierError::invalid("page_token", "malformed"))
            })
            .transpose()?;
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut rows = self
            .deliveries
            .list(&tenant, id, state, cursor, limit)
            .await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|r| PageToken::encode(&tenant, &query, &r.id.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListWebhookDeliveriesResponse {
            webhook_deliveries: rows.iter().map(delivery_proto).collect(),
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookHandler {
    async fn create_webhook_endpoint(
        &self,
        request: Request<CreateWebhookEndpointRequest>,
    ) -> Result<Response<CreateWebhookEndpointResponse>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<GetWebhookEndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        Ok(Response::new(self.get(request).await?))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<ListWebhookEndpointsRequest>,
    ) -> Result<Response<ListWebhookEndpointsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<UpdateWebhookEndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        Ok(Response::new(self.update(request).await?))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<DeleteWebhookEndpointRequest>,
    ) -> Result<Response<DeleteWebhookEndpointResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(DeleteWebhookEndpointResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        Ok(Response::new(self.rotate(request).await?))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>, Status> {
        Ok(Response::new(self.list_deliveries(request).await?))
    }
}
