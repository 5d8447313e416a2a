//! A thin client of the mesh's gRPC API: one channel, one bearer credential (an API key or the
//! operator credential) on every call, a typed client per service, and the few multi-call steps
//! every user repeats (uploading a CSV, waiting for a job, waiting for a deletion).

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use trustmesh_proto::v1::analysis_service_client::AnalysisServiceClient;
use trustmesh_proto::v1::audit_service_client::AuditServiceClient;
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::deletion_service_client::DeletionServiceClient;
use trustmesh_proto::v1::tenancy_service_client::TenancyServiceClient;
use trustmesh_proto::v1::trust_service_client::TrustServiceClient;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    CreateApiKeyRequest, CreateDatasetRequest, CreateTenantRequest, Dataset, DatasetFormat,
    Deletion, DeletionState, GetDeletionRequest, Job, JobState, Scope, UploadDatasetRequest,
    UploadMetadata, WatchJobRequest,
};
use trustmesh_runtime::{ExposeSecret as _, SecretString};

/// Upload chunk size: well under the 4 MiB message limit.
const CHUNK_BYTES: usize = 1024 * 1024;

/// Adds `authorization: Bearer <credential>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The channel type of every typed client.
pub type Authed = InterceptedService<Channel, Bearer>;

/// A connection to the mesh acting as one credential.
#[derive(Debug, Clone)]
pub struct Client {
    raw: Channel,
    bearer: MetadataValue<Ascii>,
    channel: Authed,
}

impl Client {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`) presenting `credential`.
    ///
    /// # Errors
    ///
    /// The endpoint is invalid or unreachable, or the credential is not a valid header value.
    pub async fn connect(endpoint: &str, credential: &SecretString) -> anyhow::Result<Self> {
        Self::with_channel(channel_to(endpoint).await?, credential)
    }

    /// A client on an existing channel presenting `credential`.
    ///
    /// # Errors
    ///
    /// The credential is not a valid header value.
    pub fn with_channel(channel: Channel, credential: &SecretString) -> anyhow::Result<Self> {
        let mut bearer: MetadataValue<Ascii> = format!("Bearer {}", credential.expose_secret())
            .parse()
            .context("the credential is not printable ASCII")?;
        bearer.set_sensitive(true);
        Ok(Self::with_bearer(channel, bearer))
    }

    fn with_bearer(channel: Channel, bearer: MetadataValue<Ascii>) -> Self {
        Self {
            raw: channel.clone(),
            bearer: bearer.clone(),
            channel: InterceptedService::new(channel, Bearer(bearer)),
        }
    }

    /// The same credential on a connection to `endpoint` (e.g. the mesh after a restart).
    ///
    /// # Errors
    ///
    /// The endpoint is invalid or unreachable.
    pub async fn reconnect(&self, endpoint: &str) -> anyhow::Result<Self> {
        Ok(Self::with_bearer(
            channel_to(endpoint).await?,
            self.bearer.clone(),
        ))
    }

    /// The `authorization` header value this client sends (for raw calls).
    #[must_use]
    pub fn bearer(&self) -> &MetadataValue<Ascii> {
        &self.bearer
    }

    /// The same connection presenting another credential.
    ///
    /// # Errors
    ///
    /// The credential is not a valid header value.
    pub fn as_credential(&self, credential: &SecretString) -> anyhow::Result<Self> {
        Self::with_channel(self.raw.clone(), credential)
    }

    /// `TenancyService`.
    #[must_use]
    pub fn tenancy(&self) -> TenancyServiceClient<Authed> {
        TenancyServiceClient::new(self.channel.clone())
    }

    /// `DatasetService` (ingest).
    #[must_use]
    pub fn datasets(&self) -> DatasetServiceClient<Authed> {
        DatasetServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// `AnalysisService`.
    #[must_use]
    pub fn analysis(&self) -> AnalysisServiceClient<Authed> {
        AnalysisServiceClient::new(self.channel.clone())
    }

    /// `TrustService` (trust-scoring).
    #[must_use]
    pub fn trust(&self) -> TrustServiceClient<Authed> {
        TrustServiceClient::new(self.channel.clone())
    }

    /// `DeletionService`.
    #[must_use]
    pub fn deletion(&self) -> DeletionServiceClient<Authed> {
        DeletionServiceClient::new(self.channel.clone())
    }

    /// `AuditService`.
    #[must_use]
    pub fn audit(&self) -> AuditServiceClient<Authed> {
        AuditServiceClient::new(self.channel.clone())
    }

    /// As the operator: creates tenant `tenant` and an API key of it with `scopes`, valid for
    /// `lifetime`; returns the key's resource name and a client acting as the key (its secret is
    /// shown once, here, and kept only in that client).
    ///
    /// # Errors
    ///
    /// The service's status (e.g. ALREADY_EXISTS for a tenant that exists).
    pub async fn create_tenant_with_key(
        &self,
        tenant: &str,
        display_name: &str,
        scopes: &[Scope],
        lifetime: Duration,
    ) -> anyhow::Result<(String, Self)> {
        self.tenancy()
            .create_tenant(CreateTenantRequest {
                tenant_id: tenant.to_owned(),
                display_name: display_name.to_owned(),
                ..CreateTenantRequest::default()
            })
            .await
            .with_context(|| format!("creating tenant {tenant}"))?;
        let key = self
            .tenancy()
            .create_api_key(CreateApiKeyRequest {
                parent: format!("tenants/{tenant}"),
                display_name: display_name.to_owned(),
                scopes: scopes.iter().map(|&scope| scope.into()).collect(),
                expire_time: Some(prost_types::Timestamp::from(SystemTime::now() + lifetime)),
                ..CreateApiKeyRequest::default()
            })
            .await
            .with_context(|| format!("creating an API key of {tenant}"))?
            .into_inner();
        let name = key.api_key.map(|k| k.name).unwrap_or_default();
        Ok((name, self.as_credential(&SecretString::from(key.secret))?))
    }

    /// Creates dataset `display_name` under `tenants/{tenant}` and uploads `csv` into it (in 1 MiB
    /// chunks), with `id_column` as the row id column if not empty.
    ///
    /// # Errors
    ///
    /// The service's status, e.g. INVALID_ARGUMENT naming the row and column of bad input.
    pub async fn upload_csv(
        &self,
        tenant: &str,
        display_name: &str,
        csv: Vec<u8>,
        id_column: &str,
    ) -> Result<Dataset, Status> {
        let dataset = self
            .datasets()
            .create_dataset(CreateDatasetRequest {
                parent: format!("tenants/{tenant}"),
                display_name: display_name.to_owned(),
                ..CreateDatasetRequest::default()
            })
            .await?
            .into_inner();
        let metadata = UploadDatasetRequest {
            payload: Some(Payload::Metadata(UploadMetadata {
                dataset: dataset.name,
                format: DatasetFormat::Csv.into(),
                filename: format!("{display_name}.csv"),
                id_column: id_column.to_owned(),
                ..UploadMetadata::default()
            })),
        };
        let chunks = csv
            .chunks(CHUNK_BYTES)
            .map(|chunk| UploadDatasetRequest {
                payload: Some(Payload::Chunk(chunk.to_vec())),
            })
            .collect::<Vec<_>>();
        let messages = std::iter::once(metadata).chain(chunks);
        Ok(self
            .datasets()
            .upload_dataset(futures::stream::iter(messages))
            .await?
            .into_inner())
    }

    /// Follows job `name` until it ends, calling `progress` with each update; returns the last.
    ///
    /// # Errors
    ///
    /// The watch failed, or the stream ended before the job did.
    pub async fn wait_job(
        &self,
        name: &str,
        mut progress: impl FnMut(&Job),
    ) -> anyhow::Result<Job> {
        let mut updates = self
            .analysis()
            .watch_job(WatchJobRequest {
                name: name.to_owned(),
            })
            .await?
            .into_inner();
        while let Some(job) = updates.message().await? {
            progress(&job);
            if is_final(job.state()) {
                return Ok(job);
            }
        }
        anyhow::bail!("the watch of {name} ended before the job did")
    }

    /// Polls deletion `name` until it is COMPLETED or FAILED (or `timeout` passes).
    ///
    /// # Errors
    ///
    /// A call failed, or the deletion did not end within `timeout`.
    pub async fn wait_deletion(&self, name: &str, timeout: Duration) -> anyhow::Result<Deletion> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let deletion = self
                .deletion()
                .get_deletion(GetDeletionRequest {
                    name: name.to_owned(),
                })
                .await?
                .into_inner();
            if deletion.state() != DeletionState::InProgress {
                return Ok(deletion);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("deletion {name} still in progress after {timeout:?}: {deletion:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn channel_to(endpoint: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("invalid endpoint {endpoint}"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))
}

/// Whether a job in `state` will not change any more.
#[must_use]
pub fn is_final(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    )
}

/// Calls `call` again while it answers UNAUTHENTICATED, for up to 10 s: a key just created reaches
/// each service's cache through the `tm_auth` watch within milliseconds, not instantly.
///
/// # Errors
///
/// The last status, once it is not UNAUTHENTICATED or the time is up.
pub async fn once_known<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    for _ in 0..100 {
        match call().await {
            Err(status) if status.code() == Code::Unauthenticated => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
    call().await
}
