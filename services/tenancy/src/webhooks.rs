//! The webhook RPCs of `TenancyService`: tenancy authorizes the caller (the tenant's `admin` key
//! or the operator), audits the call, and forwards it to the notifier's `WebhookService` with the
//! mesh's service credential. The notifier owns endpoints, their sealed secrets and deliveries,
//! since it is the one service that signs and sends webhooks.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use trustmesh_auth::{Principal, Scope};
use trustmesh_proto::v1::webhook_service_client::WebhookServiceClient;
use trustmesh_proto::v1::{
    CreateWebhookEndpointRequest, CreateWebhookEndpointResponse, DeleteWebhookEndpointRequest,
    DeleteWebhookEndpointResponse, GetWebhookEndpointRequest, ListWebhookDeliveriesRequest,
    ListWebhookDeliveriesResponse, ListWebhookEndpointsRequest, ListWebhookEndpointsResponse,
    RotateWebhookSecretRequest, RotateWebhookSecretResponse, UpdateWebhookEndpointRequest,
    WebhookEndpoint,
};

use crate::error::TenancyError;
use crate::grpc::{TenancyHandler, entry};

/// Audited action names.
mod action {
    pub(super) const CREATE: &str = "webhookEndpoints.create";
    pub(super) const GET: &str = "webhookEndpoints.get";
    pub(super) const LIST: &str = "webhookEndpoints.list";
    pub(super) const UPDATE: &str = "webhookEndpoints.update";
    pub(super) const DELETE: &str = "webhookEndpoints.delete";
    pub(super) const ROTATE: &str = "webhookEndpoints.rotateSecret";
    pub(super) const DELIVERIES: &str = "webhookDeliveries.list";
}

/// The notifier's `WebhookService`, called with the mesh credential.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    client: WebhookServiceClient<Channel>,
    bearer: Option<MetadataValue<Ascii>>,
}

impl Notifier {
    pub(crate) fn new(channel: Channel, bearer: Option<MetadataValue<Ascii>>) -> Self {
        Self {
            client: WebhookServiceClient::new(channel),
            bearer,
        }
    }

    /// `message` as a request to the notifier: the mesh credential and the caller's request id.
    fn outbound<T>(&self, message: T, request_id: &str) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        if let Ok(id) = request_id.parse() {
            request.metadata_mut().insert("x-request-id", id);
        }
        request
    }
}

/// What the caller asked of which resource.
struct Call {
    principal: Principal,
    request_id: String,
    action: &'static str,
    field: &'static str,
    resource: String,
}

impl Call {
    fn of<T>(
        request: &Request<T>,
        action: &'static str,
        field: &'static str,
        resource: &str,
    ) -> Result<Self, Status> {
        Ok(Self {
            principal: Principal::of(request).map_err(TenancyError::from)?.clone(),
            request_id: trustmesh_service_kit::request_id(request),
            action,
            field,
            resource: resource.to_owned(),
        })
    }
}

impl TenancyHandler {
    /// Authorizes `call` (and, for a create, checks the tenant is active), runs `forward` against
    /// the notifier, audits the outcome and answers.
    async fn webhook_call<T, F>(
        &self,
        call: Call,
        create: bool,
        forward: F,
    ) -> Result<Response<T>, Status>
    where
        F: AsyncFnOnce(Notifier, &str) -> Result<Response<T>, Status>,
    {
        let result = async {
            let tenant =
                call.principal
                    .require_or_operator(Scope::Admin, call.field, &call.resource)?;
            if create {
                self.active_tenant(&tenant, &call.resource).await?;
            }
            let notifier = self.notifier.clone().ok_or(TenancyError::NotAvailable(
                "webhooks (no notifier is configured)",
            ))?;
            let response = forward(notifier, &call.request_id)
                .await
                .map_err(TenancyError::Notifier)?;
            let mut audit_entry = entry(&call.principal, tenant, call.action, &call.resource);
            audit_entry.request_id.clone_from(&call.request_id);
            self.record(audit_entry).await?;
            Ok(response.into_inner())
        }
        .await;
        self.audited(&call.principal, call.action, &call.resource, result)
            .await
    }

    pub(crate) async fn forward_create(
        &self,
        request: Request<CreateWebhookEndpointRequest>,
    ) -> Result<Response<CreateWebhookEndpointResponse>, Status> {
        let call = Call::of(
            &request,
            action::CREATE,
            "parent",
            &request.get_ref().parent,
        )?;
        let message = request.into_inner();
        self.webhook_call(call, true, async |mut n, id| {
            let request = n.outbound(message, id);
            n.client.create_webhook_endpoint(request).await
        })
        .await
    }

    pub(crate) async fn forward_get(
        &self,
        request: Request<GetWebhookEndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        let call = Call::of(&request, action::GET, "name", &request.get_ref().name)?;
        let message = request.into_inner();
        self.webhook_call(call, false, async |mut n, id| {
            let request = n.outbound(message, id);
            n.client.get_webhook_endpoint(request).await
        })
        .await
    }

    pub(crate) async fn forward_list(
        &self,
        request: Request<ListWebhookEndpointsRequest>,
    ) -> Result<Response<ListWebhookEndpointsResponse>, Status> {
        let call = Call::of(&request, action::LIST, "parent", &request.get_ref().parent)?;
        let message = request.into_inner();
        self.webhook_call(call, false, async |mut n, id| {
            let request = n.outbound(message, id);
            n.client.list_webhook_endpoints(request).await
        })
        .await
    }

    pub(crate) async fn forward_update(
        &self,
        request: Request<UpdateWebhookEndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        let name = request
            .get_ref()
            .webhook_endpoint
            .as_ref()
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let call = Call::of(&request, action::UPDATE, "webhook_endpoint.name", &name)?;
        let message = request.into_inner();
        self.webhook_call(call, false, async |mut n, id| {
            let request = n.outbound(message, id);
            n.client.update_webhook_endpoint(request).await
        })
        .await
    }

    pub(crate) async fn forward_delete(
        &self,
        request: Request<DeleteWebhookEndpointRequest>,
    ) -> Result<Response<DeleteWebhookEndpointResponse>, Status> {
        let call = Call::of(&request, action::DELETE, "name", &request.get_ref().name)?;
        let message = request.into_inner();
        self.webhook_call(call, false, async |mut n, id| {
            let request = n.outbound(message, id);
            n.client.delete_webhook_endpoint(request).await
        })
        .await
    }

    pub(crate) async fn forward_rotate(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        let call = Call::of(&request, action::ROTATE, "name", &request.get_ref().name)?;
        let message = request.into_inner();
        self.webhook_call(call, false, async |mut n, id| {
            let request = n.outbound(message, id);
            n.client.rotate_webhook_secret(request).await
        })
        .await
    }

    pub(crate) async fn forward_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>, Status> {
        let call = Call::of(
            &request,
            action::DELIVERIES,
            "parent",
            &request.get_ref().parent,
        )?;
        let message = request.into_inner();
        self.webhook_call(call, false, async |mut n, id| {
            let request = n.outbound(message, id);
            n.client.list_webhook_deliveries(request).await
        })
        .await
    }
}
