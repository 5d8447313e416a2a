//! [`Client`]: one channel, one bearer credential (an API key or the operator credential) on every
//! call, the tenant it acts in, a typed client per service, and the retry policy of its calls.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use trustmesh_proto::v1::analysis_service_client::AnalysisServiceClient;
use trustmesh_proto::v1::audit_service_client::AuditServiceClient;
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::deletion_service_client::DeletionServiceClient;
use trustmesh_proto::v1::tenancy_service_client::TenancyServiceClient;
use trustmesh_proto::v1::trust_service_client::TrustServiceClient;
use trustmesh_runtime::{ClientTls, ExposeSecret as _, SecretString};

use crate::error::{Error, GrpcCode};

/// Largest message the SDK accepts (row pages and exports can be large).
const MAX_DECODING_BYTES: usize = 64 << 20;

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

/// How calls that fail with a retryable code are retried: exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 turns retries off).
    pub max_retries: usize,
    /// The first delay.
    pub min_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The backon builder of this policy (factor 2, jitter on).
    #[must_use]
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// Whether repeating a call can change the outcome twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// Reads, and writes carrying a `request_id` the server deduplicates on: every retryable
    /// code is retried (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED).
    Safe,
    /// Other writes: retried only when the server surely did not act (RESOURCE_EXHAUSTED, a
    /// rate limit's refusal).
    Unsafe,
}

impl Idempotence {
    fn retries(self, code: Code) -> bool {
        match self {
            Self::Safe => matches!(
                code,
                Code::Unavailable | Code::ResourceExhausted | Code::Aborted
            ),
            Self::Unsafe => code == Code::ResourceExhausted,
        }
    }
}

/// A connection to the mesh acting as one credential, in one tenant (if known).
#[derive(Debug, Clone)]
pub struct Client {
    raw: Channel,
    bearer: MetadataValue<Ascii>,
    channel: Authed,
    tenant: Option<String>,
    retry: RetryPolicy,
    tls: ClientTls,
}

impl Client {
    /// Connects to `endpoint` presenting `credential`: `https://...` needs
    /// [`Client::connect_with`] and a CA; `http://` is allowed to a loopback address only
    /// (development plaintext).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for a bad endpoint or credential, [`Error::Transport`] when it cannot be
    /// reached.
    pub async fn connect(endpoint: &str, credential: &SecretString) -> Result<Self, Error> {
        if endpoint.starts_with("https://") {
            return Err(Error::Usage(format!(
                "{endpoint} is TLS: give the CA that signs its certificate (--ca-file / \
                 Client::connect_with)"
            )));
        }
        Self::connect_with(endpoint, credential, &ClientTls::dev_plaintext_loopback()).await
    }

    /// Connects to `endpoint` with `tls` (TLS 1.3 only, or development plaintext to loopback)
    /// presenting `credential`.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for a bad endpoint, TLS material or credential, [`Error::Transport`]
    /// when it cannot be reached.
    pub async fn connect_with(
        endpoint: &str,
        credential: &SecretString,
        tls: &ClientTls,
    ) -> Result<Self, Error> {
        let channel = trustmesh_runtime::connect_channel(endpoint, tls).await?;
        let mut client = Self::with_channel(channel, credential)?;
        client.tls = tls.clone();
        Ok(client)
    }

    /// A client on an existing channel presenting `credential`.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when the credential is not a valid header value.
    pub fn with_channel(channel: Channel, credential: &SecretString) -> Result<Self, Error> {
        let mut bearer: MetadataValue<Ascii> = format!("Bearer {}", credential.expose_secret())
            .parse()
            .map_err(|_| Error::Usage("the credential is not printable ASCII".to_owned()))?;
        bearer.set_sensitive(true);
        Ok(Self::with_bearer(channel, bearer))
    }

    fn with_bearer(channel: Channel, bearer: MetadataValue<Ascii>) -> Self {
        Self {
            raw: channel.clone(),
            bearer: bearer.clone(),
            channel: InterceptedService::new(channel, Bearer(bearer)),
            tenant: None,
            retry: RetryPolicy::default(),
            tls: ClientTls::dev_plaintext_loopback(),
        }
    }

    /// This client acting in `tenant` (the tenant of its API key): calls that take a parent
    /// use `tenants/{tenant}`.
    #[must_use]
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// This client retrying as `policy` says.
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The retry policy of this client's calls.
    #[must_use]
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The tenant this client acts in, if set.
    #[must_use]
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The same credential, tenant and TLS settings on a connection to `endpoint` (e.g. after
    /// a restart).
    ///
    /// # Errors
    ///
    /// As [`Client::connect_with`].
    pub async fn reconnect(&self, endpoint: &str) -> Result<Self, Error> {
        let channel = trustmesh_runtime::connect_channel(endpoint, &self.tls).await?;
        let mut client = Self::with_bearer(channel, self.bearer.clone());
        client.tenant.clone_from(&self.tenant);
        client.retry = self.retry;
        client.tls = self.tls.clone();
        Ok(client)
    }

    /// The `authorization` header value this client sends (for raw calls).
    #[must_use]
    pub fn bearer(&self) -> &MetadataValue<Ascii> {
        &self.bearer
    }

    /// The same connection presenting another credential (no tenant set).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when the credential is not a valid header value.
    pub fn as_credential(&self, credential: &SecretString) -> Result<Self, Error> {
        let mut client = Self::with_channel(self.raw.clone(), credential)?;
        client.retry = self.retry;
        client.tls = self.tls.clone();
        Ok(client)
    }

    /// `tenants/{tenant}` of this client.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when no tenant is set.
    pub fn parent(&self) -> Result<String, Error> {
        self.tenant
            .as_deref()
            .map(|tenant| format!("tenants/{tenant}"))
            .ok_or_else(|| {
                Error::Usage(
                    "no tenant: set one (Client::with_tenant, --tenant or the profile)".to_owned(),
                )
            })
    }

    /// The full resource name of `name` in collection `collection` (`datasets`, `jobs`,
    /// `reports`, ...): `name` itself when it already starts with `tenants/`, else
    /// `tenants/{tenant}/{collection}/{name}`.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for a bare id without a tenant set, or an empty name.
    pub fn resource(&self, collection: &str, name: &str) -> Result<String, Error> {
        if name.is_empty() {
            return Err(Error::Usage(format!("an empty {collection} name")));
        }
        if name.starts_with("tenants/") {
            return Ok(name.to_owned());
        }
        Ok(format!("{}/{collection}/{name}", self.parent()?))
    }

    /// `TenancyService`.
    #[must_use]
    pub fn tenancy(&self) -> TenancyServiceClient<Authed> {
        TenancyServiceClient::new(self.channel.clone())
    }

    /// `DatasetService` (ingest).
    #[must_use]
    pub fn datasets(&self) -> DatasetServiceClient<Authed> {
        DatasetServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_DECODING_BYTES)
    }

    /// `AnalysisService`.
    #[must_use]
    pub fn analysis(&self) -> AnalysisServiceClient<Authed> {
        AnalysisServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_DECODING_BYTES)
    }

    /// `TrustService` (trust-scoring).
    #[must_use]
    pub fn trust(&self) -> TrustServiceClient<Authed> {
        TrustServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_DECODING_BYTES)
    }

    /// `DeletionService`.
    #[must_use]
    pub fn deletion(&self) -> DeletionServiceClient<Authed> {
        DeletionServiceClient::new(self.channel.clone())
    }

    /// `AuditService`.
    #[must_use]
    pub fn audit(&self) -> AuditServiceClient<Authed> {
        AuditServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_DECODING_BYTES)
    }

    /// Makes a call, retrying the codes `idempotence` allows with this client's backoff.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        idempotence: Idempotence,
        call: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        call.retry(self.retry.backoff())
            .when(|status: &Status| idempotence.retries(status.code()))
            .await
            .map(Response::into_inner)
            .map_err(Error::from)
    }
}

/// A fresh idempotency key for a write the server deduplicates on.
pub(crate) fn request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Calls `call` again while it answers UNAUTHENTICATED, for up to 10 s: a key just created reaches
/// each service's cache through the `tm_auth` watch within milliseconds, not instantly.
///
/// # Errors
///
/// The last error, once it is not UNAUTHENTICATED or the time is up.
pub async fn once_known<T, E, F, Fut>(mut call: F) -> Result<T, E>
where
    E: GrpcCode,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    for _ in 0..100 {
        match call().await {
            Err(error) if error.grpc_code() == Some(Code::Unauthenticated) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
    call().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retryable_codes_are_retried_and_others_are_not() {
        let channel = Channel::from_static("http://127.0.0.1:1").connect_lazy();
        let client = Client::with_channel(channel, &SecretString::from("k".to_owned())).unwrap();
        let mut attempts = 0;
        let result: Result<(), Error> = client
            .call(Idempotence::Safe, || {
                attempts += 1;
                let answer = if attempts < 3 {
                    Err(Status::unavailable("restarting"))
                } else {
                    Ok(Response::new(()))
                };
                async move { answer }
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(attempts, 3);

        let mut attempts = 0;
        let result: Result<(), Error> = client
            .call(Idempotence::Unsafe, || {
                attempts += 1;
                async { Err(Status::unavailable("maybe applied")) }
            })
            .await;
        assert!(matches!(
            result,
            Err(Error::Server {
                code: Code::Unavailable,
                ..
            })
        ));
        assert_eq!(attempts, 1);

        let mut attempts = 0;
        let result: Result<(), Error> = client
            .call(Idempotence::Safe, || {
                attempts += 1;
                async { Err(Status::not_found("no such dataset")) }
            })
            .await;
        assert!(matches!(result, Err(Error::NotFound { .. })));
        assert_eq!(attempts, 1);

        let mut attempts = 0;
        let result: Result<(), Error> = client
            .call(Idempotence::Safe, || {
                attempts += 1;
                async { Err(Status::resource_exhausted("slow down")) }
            })
            .await;
        assert!(matches!(result, Err(Error::Server { .. })));
        assert_eq!(attempts, 1 + RetryPolicy::default().max_retries);
    }
}
