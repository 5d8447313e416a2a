//! The one auth layer of every trustmesh service: API keys, their replication through the NATS KV
//! bucket `tm_auth`, the gRPC interceptor that turns `authorization: Bearer <key>` into a
//! [`Principal`], and the scope and tenant checks handlers run on every resource name.
//!
//! Layout:
//! - [`scope`]: [`Scope`], what a key may do (`datasets:write`, ..., `admin`).
//! - [`key`]: [`IssuedKey`] (a fresh `tmk_<key id>_<secret>`, shown once), [`PresentedKey`] (a parsed
//!   bearer token), [`KeyId`] and [`SecretDigest`] (SHA-256 of the secret, compared in constant time).
//! - [`record`]: [`KeyRecord`], what `tm_auth` holds per key (digest, tenant, scopes, expiry,
//!   revocation), [`GrantRecord`] per support grant, and [`AuthBucket`], the bucket itself (created
//!   if missing), which also holds the operator credential's digest and the [`RateLimit`].
//! - [`grant`]: support grants, the operator's time-limited, scoped access to one tenant's data
//!   ([`SupportPrincipal`], sent as [`GRANT_HEADER`]).
//! - [`limit`]: [`RateLimit`], the per-tenant request-rate quota, one token bucket per tenant.
//! - [`quota`]: per-tenant quotas (requests per minute, concurrent jobs, stored bytes) replicated
//!   through `tm_auth`: [`TenantQuota`], [`QuotaDefaults`], [`EffectiveQuota`]; and what tenants
//!   use, reported through `tm_usage`: [`UsageBucket`], [`TenantUsage`].
//! - [`denials`]: the audit of the auth layer's own refusals, aggregated per second.
//! - [`cache`]: [`KeyCache`], a local replica of `tm_auth` kept current by a KV watch, which resolves
//!   keys without a network round trip; its revocation bound is documented there.
//! - [`principal`]: [`Principal`] (an API key of a tenant, the operator, possibly under a support
//!   grant, or the mesh's services) and its checks
//!   ([`Principal::require`], [`Principal::require_operator`]).
//! - [`interceptor`]: [`Authenticator`], the tonic interceptor, [`OperatorCredential`] and
//!   [`ServiceCredential`].
//! - [`page`]: page sizes and page tokens bound to a tenant and a query.
//! - [`peer`]: mTLS between services: the service a client certificate names, and
//!   [`peer::MESH_METHODS`], the allow-list of who may call each mesh-internal method.
//! - [`error`]: [`AuthError`] (request denials, with the one mapping to `tonic::Status`) and
//!   [`KeyStoreError`] (the bucket could not be reached).

pub mod cache;
pub mod denials;
pub mod error;
pub mod grant;
pub mod interceptor;
pub mod key;
pub mod limit;
pub mod page;
pub mod peer;
pub mod principal;
pub mod quota;
pub mod record;
pub mod scope;

pub use cache::{CacheOptions, KeyCache};
pub use error::{AuthError, KeyStoreError};
pub use grant::{GRANT_HEADER, SupportPrincipal};
pub use interceptor::{
    Authenticator, CREDENTIAL_MIN_LEN, Credential, OperatorCredential, ServiceCredential,
    WeakCredential,
};
pub use key::{IssuedKey, KEY_PREFIX, KeyId, PresentedKey, SecretDigest};
pub use limit::RateLimit;
pub use page::{PageError, PageToken, page_size};
pub use principal::{KeyPrincipal, Principal, resource_tenant};
pub use quota::{EffectiveQuota, QuotaDefaults, QuotaKind, TenantQuota, TenantUsage, UsageBucket};
pub use record::{AuthBucket, GrantRecord, KeyRecord, quota_bucket_key};
pub use scope::Scope;
