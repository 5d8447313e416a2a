//! The tonic interceptor every service puts in front of its API: `authorization: Bearer <credential>`
//! → a [`Principal`] in the request's extensions, or UNAUTHENTICATED; an API key's tenant over its
//! request-rate quota → RESOURCE_EXHAUSTED with a `RetryInfo` and a `QuotaFailure` (see
//! [`crate::limit`]). An admitted request also carries its tenant's [`EffectiveQuota`] (for the
//! handlers that enforce concurrent jobs and stored bytes).
//!
//! Every refusal is logged; one whose key names a tenant (revoked, expired, wrong secret, over the
//! rate) is also audited in that tenant's log, aggregated per second ([`crate::denials`]).
//!
//! The operator credential is recognized by every service (its digest is in `tm_auth`), and with
//! [`GRANT_HEADER`] naming a valid support grant it becomes [`Principal::Support`].
//!
//! Use it as `FooServiceServer::with_interceptor(handler, authenticator)`; handlers then call
//! [`Principal::of`] and [`Principal::require`].

use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::cache::KeyCache;
use crate::denials::Denial;
use crate::error::AuthError;
use crate::grant::GRANT_HEADER;
use crate::key::{KEY_PREFIX, PresentedKey, SecretDigest};
use crate::principal::Principal;
use crate::quota::EffectiveQuota;

/// Shortest shared-secret credential accepted, in characters.
pub const CREDENTIAL_MIN_LEN: usize = 32;

/// A shared-secret credential from the settings (the operator's, or the mesh's service
/// credential), kept only as its digest.
#[derive(Clone)]
pub struct Credential {
    digest: SecretDigest,
}

/// The operator credential: manages tenants and keys, reads no tenant data.
pub type OperatorCredential = Credential;

/// The mesh's service credential: one service reading a tenant's data from another on that
/// tenant's behalf (`analysis` reading rows from `ingest`), through the methods that allow it.
///
/// NOTE: one secret shared by the services of a deployment; per-service identities (mTLS client
/// certificates) replace it in the distributed deployment.
pub type ServiceCredential = Credential;

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

/// Why a shared-secret credential is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a credential must be at least {CREDENTIAL_MIN_LEN} characters, printable ASCII, and must not start with `{KEY_PREFIX}_`"
)]
pub struct WeakCredential;

impl Credential {
    /// The credential `secret`.
    ///
    /// # Errors
    /// [`WeakCredential`] if it is too short, not printable ASCII, or shaped like an API key.
    pub fn new(secret: &SecretString) -> Result<Self, WeakCredential> {
        let text = secret.expose_secret();
        let valid = text.len() >= CREDENTIAL_MIN_LEN
            && text.chars().all(|c| c.is_ascii_graphic())
            && !text.starts_with(&format!("{KEY_PREFIX}_"));
        if !valid {
            return Err(WeakCredential);
        }
        Ok(Self {
            digest: SecretDigest::of(text.as_bytes()),
        })
    }

    /// [`Credential::new`] of an optional setting.
    ///
    /// # Errors
    /// [`WeakCredential`] as [`Credential::new`].
    pub fn optional(secret: Option<&SecretString>) -> Result<Option<Self>, WeakCredential> {
        secret.map(Self::new).transpose()
    }

    /// The credential's digest, which `tenancy` publishes in `tm_auth` for the operator's.
    #[must_use]
    pub fn digest(&self) -> &SecretDigest {
        &self.digest
    }

    fn matches(&self, presented: &SecretDigest) -> bool {
        self.digest.matches(presented)
    }
}

/// Resolves the bearer credential of each request: an API key through the [`KeyCache`], or the
/// operator or service credential where one is configured.
#[derive(Debug, Clone)]
pub struct Authenticator {
    cache: KeyCache,
    operator: Option<OperatorCredential>,
    service: Option<ServiceCredential>,
}

impl Authenticator {
    /// An authenticator of API keys only.
    #[must_use]
    pub fn new(cache: KeyCache) -> Self {
        Self {
            cache,
            operator: None,
            service: None,
        }
    }

    /// The same authenticator also accepting `operator` from its own settings (`tenancy`, which
    /// publishes it to the others, and `deletion`); every service accepts the one in `tm_auth`.
    #[must_use]
    pub fn with_operator(mut self, operator: OperatorCredential) -> Self {
        self.operator = Some(operator);
        self
    }

    /// The same authenticator also accepting the mesh's service credential (`ingest` and
    /// `analysis`, whose data other services read).
    #[must_use]
    pub fn with_service(mut self, service: Option<ServiceCredential>) -> Self {
        self.service = service;
        self
    }

    /// The principal of the bearer credential in `metadata` at `now`.
    ///
    /// # Errors
    /// The [`AuthError`] naming why the credential is refused (for logs and audit; the client sees one
    /// UNAUTHENTICATED message for all of them).
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        now: OffsetDateTime,
    ) -> Result<Principal, AuthError> {
        let value = metadata
            .get("authorization")
            .ok_or(AuthError::MissingCredential)?
            .to_str()
            .map_err(|_| AuthError::MalformedCredential)?;
        let (scheme, credential) = value
            .split_once(' ')
            .ok_or(AuthError::MalformedCredential)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::MalformedCredential);
        }
        let credential = credential.trim();
        if credential.starts_with(&format!("{KEY_PREFIX}_")) {
            let presented = PresentedKey::parse(&SecretString::from(credential))
                .map_err(|_| AuthError::MalformedCredential)?;
            return self
                .cache
                .authenticate(&presented, now)
                .map(Principal::ApiKey);
        }
        let presented = SecretDigest::of(credential.as_bytes());
        if self
            .operator
            .as_ref()
            .is_some_and(|c| c.matches(&presented))
            || self.cache.is_operator(&presented)
        {
            return Ok(self.operator(metadata, now));
        }
        if self.service.as_ref().is_some_and(|c| c.matches(&presented)) {
            return Ok(Principal::Service);
        }
        Err(AuthError::MalformedCredential)
    }

    /// The operator, under the support grant [`GRANT_HEADER`] names if it is valid at `now`. An
    /// invalid grant leaves the plain operator, who is denied tenant data as without one.
    fn operator(&self, metadata: &MetadataMap, now: OffsetDateTime) -> Principal {
        let Some(value) = metadata.get(GRANT_HEADER) else {
            return Principal::Operator;
        };
        let grant = value
            .to_str()
            .ok()
            .and_then(|id| uuid::Uuid::parse_str(id.trim()).ok())
            .ok_or(AuthError::UnknownGrant)
            .and_then(|id| self.cache.grant(&id, now));
        match grant {
            Ok(grant) => Principal::Support(grant),
            Err(error) => {
                tracing::info!(
                    auth.reason = error.reason(),
                    "The operator's support grant was refused: {error}."
                );
                Principal::Operator
            }
        }
    }

    /// Takes one request from the caller's tenant's rate bucket; the operator and the mesh's
    /// services are not limited.
    ///
    /// # Errors
    /// [`AuthError::RateLimited`] when the tenant is over its rate.
    pub fn admit(&self, principal: &Principal) -> Result<(), AuthError> {
        match principal {
            Principal::ApiKey(key) => {
                self.cache
                    .admit(&key.tenant)
                    .map_err(|retry_after| AuthError::RateLimited {
                        tenant: key.tenant.as_str().to_owned(),
                        retry_after,
                    })
            }
            Principal::Operator | Principal::Support(_) | Principal::Service => Ok(()),
        }
    }

    /// The quota of the tenant `principal` acts for (an API key's, or a support grant's).
    #[must_use]
    pub fn quota(&self, principal: &Principal) -> Option<EffectiveQuota> {
        match principal {
            Principal::ApiKey(key) => Some(self.cache.quota(&key.tenant)),
            Principal::Support(grant) => Some(self.cache.quota(&grant.tenant)),
            Principal::Operator | Principal::Service => None,
        }
    }

    /// The tenant and actor a refusal is audited under: the key's, when the credential is an API
    /// key the cache knows (even revoked, expired or with a wrong secret).
    fn refused(
        &self,
        metadata: &MetadataMap,
        error: &AuthError,
        code: tonic::Code,
    ) -> Option<Denial> {
        let credential = metadata
            .get("authorization")?
            .to_str()
            .ok()?
            .split_once(' ')?
            .1
            .trim();
        let presented = PresentedKey::parse(&SecretString::from(credential)).ok()?;
        let record = self.cache.get(presented.key_id())?;
        let tenant = record.tenant_id().ok()?;
        Some(Denial {
            actor_id: format!("tenants/{tenant}/apiKeys/{}", record.key_id),
            tenant,
            reason: error.reason(),
            grpc_code: code as i32,
        })
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // The mesh's services by their client certificates first (`crate::peer`), then the bearer.
        let admitted = crate::peer::mesh_caller(&request)
            .and_then(|mesh| match mesh {
                Some(principal) => Ok(principal),
                None => self
                    .authenticate(request.metadata(), OffsetDateTime::now_utc())
                    .and_then(|principal| crate::peer::check_bearer(&request, principal)),
            })
            .and_then(|principal| self.admit(&principal).map(|()| principal));
        match admitted {
            Ok(principal) => {
                if let Some(quota) = self.quota(&principal) {
                    request.extensions_mut().insert(quota);
                }
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(error) => {
                // NOTE: a flood of rate refusals is audited aggregated; logging each at info
                // would cost more than refusing it.
                if matches!(error, AuthError::RateLimited { .. }) {
                    tracing::debug!(
                        auth.reason = error.reason(),
                        "A request was refused: {error}."
                    );
                } else {
                    tracing::info!(
                        auth.reason = error.reason(),
                        "A request was refused: {error}."
                    );
                }
                let status = Status::from(error.clone());
                if let Some(denial) = self.refused(request.metadata(), &error, status.code()) {
                    self.cache.record_denial(denial);
                }
                Err(status)
            }
        }
    }
}
