//! The tenant's administration: tenants (as the operator), API keys, webhook endpoints,
//! deletions and their certificates, and the audit log.

use std::time::{Duration, SystemTime};

use futures::Stream;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use trustmesh_proto::v1::{
    ApiKey, AuditFilter, AuditRecord, CreateApiKeyRequest, CreateTenantRequest,
    CreateWebhookEndpointRequest, DeleteDatasetRequest, DeleteTenantRequest,
    DeleteWebhookEndpointRequest, Deletion, DeletionCertificate, DeletionState,
    ExportEventsRequest, GetDeletionCertificateRequest, GetDeletionRequest, Job,
    ListApiKeysRequest, ListCertificateSigningKeysRequest, ListEventsRequest,
    ListWebhookEndpointsRequest, RevokeApiKeyRequest, Scope, SigningKey, Tenant, VerifyLogRequest,
    VerifyLogResponse, WebhookEndpoint, WebhookEventType,
};
use trustmesh_runtime::SecretString;

use crate::client::{Client, Idempotence, request_id};
use crate::error::Error;
use crate::paging::{PAGE_SIZE, pages};

/// The longest pause between two looks at a deletion in [`Client::wait_deletion`].
const DELETION_POLL_MAX: Duration = Duration::from_millis(200);

impl Client {
    /// As the operator: creates tenant `tenant`.
    ///
    /// # Errors
    ///
    /// The service's refusal (e.g. [`Error::Invalid`] ALREADY_EXISTS).
    pub async fn create_tenant(&self, tenant: &str, display_name: &str) -> Result<Tenant, Error> {
        let request = CreateTenantRequest {
            tenant_id: tenant.to_owned(),
            display_name: display_name.to_owned(),
            request_id: request_id(),
            ..CreateTenantRequest::default()
        };
        self.call(Idempotence::Safe, || {
            let mut service = self.tenancy();
            let request = request.clone();
            async move { service.create_tenant(request).await }
        })
        .await
    }

    /// Creates an API key of this client's tenant with `scopes`, valid for `lifetime`; returns
    /// it and its secret (shown once, here).
    ///
    /// # Errors
    ///
    /// The service's refusal (the caller needs the `admin` scope or to be the operator).
    pub async fn create_api_key(
        &self,
        display_name: &str,
        scopes: &[Scope],
        lifetime: Duration,
    ) -> Result<(ApiKey, SecretString), Error> {
        let request = CreateApiKeyRequest {
            parent: self.parent()?,
            display_name: display_name.to_owned(),
            scopes: scopes.iter().map(|&scope| scope.into()).collect(),
            expire_time: Some(prost_types::Timestamp::from(SystemTime::now() + lifetime)),
            request_id: request_id(),
        };
        // NOTE: not retried on UNAVAILABLE: a retry of a key created unseen answers the key
        // without its secret (shown once), which is worse than an error.
        let created = self
            .call(Idempotence::Unsafe, || {
                let mut service = self.tenancy();
                let request = request.clone();
                async move { service.create_api_key(request).await }
            })
            .await?;
        let key = created.api_key.ok_or_else(|| Error::Server {
            code: tonic::Code::Internal,
            message: "CreateApiKey answered no key".to_owned(),
        })?;
        Ok((key, SecretString::from(created.secret)))
    }

    /// As the operator: creates tenant `tenant` and an API key of it with `scopes`, valid for
    /// `lifetime`; returns the key's resource name and a client acting as the key in the tenant
    /// (its secret is kept only in that client).
    ///
    /// # Errors
    ///
    /// The service's refusal (e.g. ALREADY_EXISTS for a tenant that exists).
    pub async fn create_tenant_with_key(
        &self,
        tenant: &str,
        display_name: &str,
        scopes: &[Scope],
        lifetime: Duration,
    ) -> Result<(String, Self), Error> {
        self.create_tenant(tenant, display_name).await?;
        let operator = self.clone().with_tenant(tenant);
        let (key, secret) = operator
            .create_api_key(display_name, scopes, lifetime)
            .await?;
        let user = self.as_credential(&secret)?.with_tenant(tenant);
        Ok((key.name, user))
    }

    /// The API keys of this client's tenant (revoked and expired ones too when `show_inactive`).
    pub fn list_api_keys(
        &self,
        show_inactive: bool,
    ) -> impl Stream<Item = Result<ApiKey, Error>> + Send + '_ {
        pages(move |page_token| async move {
            let parent = self.parent()?;
            let page = self
                .call(Idempotence::Safe, || {
                    let mut service = self.tenancy();
                    let request = ListApiKeysRequest {
                        parent: parent.clone(),
                        page_size: PAGE_SIZE,
                        page_token: page_token.clone(),
                        show_inactive,
                    };
                    async move { service.list_api_keys(request).await }
                })
                .await?;
            Ok((page.api_keys, page.next_page_token))
        })
    }

    /// Revokes API key `name` (a resource name or a bare key id in this client's tenant).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] and the other refusals of the service.
    pub async fn revoke_api_key(&self, name: &str) -> Result<ApiKey, Error> {
        let name = self.resource("apiKeys", name)?;
        self.call(Idempotence::Safe, || {
            let mut service = self.tenancy();
            let name = name.clone();
            async move { service.revoke_api_key(RevokeApiKeyRequest { name }).await }
        })
        .await
    }

    /// Registers webhook endpoint `url` for `event_types` (empty: every type); returns it and
    /// its signing secret (shown once, here).
    ///
    /// # Errors
    ///
    /// The service's refusal (e.g. [`Error::Invalid`] for a URL it does not deliver to).
    pub async fn create_webhook(
        &self,
        url: &str,
        event_types: &[WebhookEventType],
        description: &str,
    ) -> Result<(WebhookEndpoint, SecretString), Error> {
        let request = CreateWebhookEndpointRequest {
            parent: self.parent()?,
            webhook_endpoint: Some(WebhookEndpoint {
                url: url.to_owned(),
                event_types: event_types.iter().map(|&t| t.into()).collect(),
                description: description.to_owned(),
                ..WebhookEndpoint::default()
            }),
            request_id: request_id(),
        };
        // NOTE: like keys, a secret is shown once: a blind retry could lose it.
        let created = self
            .call(Idempotence::Unsafe, || {
                let mut service = self.tenancy();
                let request = request.clone();
                async move { service.create_webhook_endpoint(request).await }
            })
            .await?;
        let endpoint = created.webhook_endpoint.ok_or_else(|| Error::Server {
            code: tonic::Code::Internal,
            message: "CreateWebhookEndpoint answered no endpoint".to_owned(),
        })?;
        Ok((endpoint, SecretString::from(created.signing_secret)))
    }

    /// The webhook endpoints of this client's tenant.
    pub fn list_webhooks(&self) -> impl Stream<Item = Result<WebhookEndpoint, Error>> + Send + '_ {
        pages(move |page_token| async move {
            let parent = self.parent()?;
            let page = self
                .call(Idempotence::Safe, || {
                    let mut service = self.tenancy();
                    let request = ListWebhookEndpointsRequest {
                        parent: parent.clone(),
                        page_size: PAGE_SIZE,
                        page_token: page_token.clone(),
                    };
                    async move { service.list_webhook_endpoints(request).await }
                })
                .await?;
            Ok((page.webhook_endpoints, page.next_page_token))
        })
    }

    /// Removes webhook endpoint `name` (a resource name or a bare id in this client's tenant).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] and the other refusals of the service.
    pub async fn delete_webhook(&self, name: &str) -> Result<(), Error> {
        let name = self.resource("webhookEndpoints", name)?;
        self.call(Idempotence::Safe, || {
            let mut service = self.tenancy();
            let name = name.clone();
            async move {
                service
                    .delete_webhook_endpoint(DeleteWebhookEndpointRequest { name })
                    .await
            }
        })
        .await
        .map(|_| ())
    }

    /// Requests the deletion of dataset `name`; returns the deletion job (its `output` names
    /// the deletion).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] and the other refusals of the service.
    pub async fn delete_dataset(&self, name: &str, reason: &str) -> Result<Job, Error> {
        let request = DeleteDatasetRequest {
            name: self.resource("datasets", name)?,
            reason: reason.to_owned(),
            request_id: request_id(),
        };
        self.call(Idempotence::Safe, || {
            let mut service = self.deletion();
            let request = request.clone();
            async move { service.delete_dataset(request).await }
        })
        .await
    }

    /// Requests the deletion of this client's tenant and everything in it.
    ///
    /// # Errors
    ///
    /// The service's refusal.
    pub async fn delete_tenant(&self, reason: &str) -> Result<Job, Error> {
        let name = self.parent()?;
        let request = DeleteTenantRequest {
            confirm_tenant_id: name.trim_start_matches("tenants/").to_owned(),
            name,
            reason: reason.to_owned(),
            request_id: request_id(),
        };
        self.call(Idempotence::Safe, || {
            let mut service = self.deletion();
            let request = request.clone();
            async move { service.delete_tenant(request).await }
        })
        .await
    }

    /// Deletion `name` (a resource name or a bare id in this client's tenant).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] and the other refusals of the service.
    pub async fn get_deletion(&self, name: &str) -> Result<Deletion, Error> {
        let name = self.resource("deletions", name)?;
        self.call(Idempotence::Safe, || {
            let mut service = self.deletion();
            let name = name.clone();
            async move { service.get_deletion(GetDeletionRequest { name }).await }
        })
        .await
    }

    /// Polls deletion `name` until it is COMPLETED or FAILED (or `timeout` passes): after 10 ms,
    /// then twice as long each time up to 200 ms.
    ///
    /// # Errors
    ///
    /// A call failed, or the deletion did not end within `timeout` ([`Error::Server`]
    /// DEADLINE_EXCEEDED).
    pub async fn wait_deletion(&self, name: &str, timeout: Duration) -> Result<Deletion, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Most deletions end within moments: look again soon, then less often.
        let mut pause = Duration::from_millis(10);
        loop {
            let deletion = self.get_deletion(name).await?;
            if deletion.state() != DeletionState::InProgress {
                return Ok(deletion);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Server {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("deletion {name} still in progress after {timeout:?}"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(DELETION_POLL_MAX);
        }
    }

    /// The signed certificate of completed deletion `name` (the deletion or its certificate's
    /// resource name, or a bare deletion id).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] and the other refusals of the service (e.g. FAILED_PRECONDITION
    /// while the deletion is in progress).
    pub async fn get_certificate(&self, name: &str) -> Result<DeletionCertificate, Error> {
        let name = self.resource("deletions", name)?;
        let name = if name.ends_with("/certificate") {
            name
        } else {
            format!("{name}/certificate")
        };
        self.call(Idempotence::Safe, || {
            let mut service = self.deletion();
            let name = name.clone();
            async move {
                service
                    .get_deletion_certificate(GetDeletionCertificateRequest { name })
                    .await
            }
        })
        .await
    }

    /// The public keys deletion certificates are signed with.
    ///
    /// # Errors
    ///
    /// The service's refusal.
    pub async fn certificate_signing_keys(&self) -> Result<Vec<SigningKey>, Error> {
        self.call(Idempotence::Safe, || {
            let mut service = self.deletion();
            async move {
                service
                    .list_certificate_signing_keys(ListCertificateSigningKeysRequest {})
                    .await
            }
        })
        .await
        .map(|answer| answer.keys)
    }

    /// The audit events of this client's tenant that `filter` selects, page by page.
    pub fn list_audit_events(
        &self,
        filter: AuditFilter,
    ) -> impl Stream<Item = Result<AuditRecord, Error>> + Send + '_ {
        pages(move |page_token| {
            let filter = filter.clone();
            async move {
                let parent = self.parent()?;
                let page = self
                    .call(Idempotence::Safe, || {
                        let mut service = self.audit();
                        let request = ListEventsRequest {
                            parent: parent.clone(),
                            filter: Some(filter.clone()),
                            page_size: PAGE_SIZE,
                            page_token: page_token.clone(),
                        };
                        async move { service.list_events(request).await }
                    })
                    .await?;
                Ok((page.events, page.next_page_token))
            }
        })
    }

    /// Has the audit service check this tenant's hash chain and checkpoint signatures.
    ///
    /// # Errors
    ///
    /// The service's refusal.
    pub async fn verify_audit_log(&self) -> Result<VerifyLogResponse, Error> {
        let parent = self.parent()?;
        self.call(Idempotence::Safe, || {
            let mut service = self.audit();
            let request = VerifyLogRequest {
                parent: parent.clone(),
                ..VerifyLogRequest::default()
            };
            async move { service.verify_log(request).await }
        })
        .await
    }

    /// Streams this tenant's audit log (JSON Lines, with checkpoints) into `out`; returns the
    /// bytes written.
    ///
    /// # Errors
    ///
    /// The service's refusal, or [`Error::Io`] when `out` fails.
    pub async fn export_audit_log(
        &self,
        filter: AuditFilter,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, Error> {
        let request = ExportEventsRequest {
            parent: self.parent()?,
            filter: Some(filter),
        };
        let mut chunks = self
            .call(Idempotence::Safe, || {
                let mut service = self.audit();
                let request = request.clone();
                async move { service.export_events(request).await }
            })
            .await?;
        let mut written = 0_u64;
        while let Some(chunk) = chunks.message().await? {
            out.write_all(&chunk.jsonl_chunk)
                .await
                .map_err(|e| Error::io("cannot write the audit export", e))?;
            written += chunk.jsonl_chunk.len() as u64;
        }
        out.flush()
            .await
            .map_err(|e| Error::io("cannot write the audit export", e))?;
        Ok(written)
    }
}
