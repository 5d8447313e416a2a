//! Request denials ([`AuthError`], with the one mapping to `tonic::Status`) and bucket failures
//! ([`KeyStoreError`]).

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::quota::QuotaKind;
use crate::scope::Scope;

/// Why a request is refused by the auth layer. Messages sent to clients never say which check failed
/// for an unauthenticated call, and never reveal whether another tenant's resource exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer <credential>` header.
    #[error("no bearer credential")]
    MissingCredential,
    /// The credential is neither an API key nor the operator credential.
    #[error("the credential is malformed")]
    MalformedCredential,
    /// No key with that id is known.
    #[error("unknown key")]
    UnknownKey,
    /// The key's secret does not match its digest.
    #[error("wrong secret")]
    WrongSecret,
    /// The key (or support grant) was revoked.
    #[error("revoked key or grant")]
    Revoked,
    /// The key (or support grant) has expired.
    #[error("expired key or grant")]
    Expired,
    /// No support grant with that id is known.
    #[error("unknown support grant")]
    UnknownGrant,
    /// The key cache has been cut off from `tm_auth` longer than allowed, so a revocation might be
    /// missed: every key is refused until it catches up (fail closed).
    #[error("the key cache is stale")]
    CacheStale,
    /// The caller lacks `scope` on `resource` (its own tenant's).
    #[error("missing scope {scope} on {resource}")]
    MissingScope {
        /// The scope needed.
        scope: Scope,
        /// The resource name asked for.
        resource: String,
    },
    /// The resource belongs to another tenant; answered exactly like a resource that does not exist.
    #[error("{resource} belongs to another tenant")]
    OtherTenant {
        /// The resource name asked for.
        resource: String,
    },
    /// The method needs the operator credential.
    #[error("operator credential needed")]
    OperatorOnly,
    /// The operator credential was used on a tenant's data.
    #[error("the operator may not access tenant data")]
    OperatorDenied {
        /// The resource name asked for.
        resource: String,
    },
    /// The service credential was used on a method that serves only tenants' keys.
    #[error("the service credential may not call this method")]
    ServiceDenied {
        /// The resource name asked for.
        resource: String,
    },
    /// The caller's tenant is over its request-rate quota.
    #[error("the tenant's request rate is over quota")]
    RateLimited {
        /// The tenant.
        tenant: String,
        /// How long until the tenant's next request is allowed.
        retry_after: Duration,
    },
    /// The tenant is at its quota of concurrent jobs or stored bytes ([`crate::quota`]).
    #[error("the tenant is over its {} quota ({used} of {limit})", quota.field())]
    QuotaExceeded {
        /// The tenant.
        tenant: String,
        /// Which quota.
        quota: QuotaKind,
        /// The limit.
        limit: u64,
        /// What the tenant uses now.
        used: u64,
    },
    /// The resource name does not start with `tenants/{tenant}`.
    #[error("invalid resource name")]
    InvalidResourceName {
        /// The request field holding it.
        field: &'static str,
    },
}

impl AuthError {
    /// A short machine-readable reason for the audit log (UPPER_SNAKE).
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::MissingCredential => "MISSING_CREDENTIAL",
            Self::MalformedCredential => "MALFORMED_CREDENTIAL",
            Self::UnknownKey => "UNKNOWN_KEY",
            Self::WrongSecret => "WRONG_SECRET",
            Self::Revoked => "KEY_REVOKED",
            Self::Expired => "KEY_EXPIRED",
            Self::UnknownGrant => "UNKNOWN_GRANT",
            Self::CacheStale => "KEY_CACHE_STALE",
            Self::MissingScope { .. } => "MISSING_SCOPE",
            Self::OtherTenant { .. } => "OTHER_TENANT",
            Self::OperatorOnly => "OPERATOR_ONLY",
            Self::OperatorDenied { .. } => "OPERATOR_DENIED",
            Self::ServiceDenied { .. } => "SERVICE_DENIED",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            Self::InvalidResourceName { .. } => "INVALID_RESOURCE_NAME",
        }
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::MissingCredential
            | AuthError::MalformedCredential
            | AuthError::UnknownKey
            | AuthError::WrongSecret
            | AuthError::Revoked
            | AuthError::Expired
            | AuthError::UnknownGrant => Status::unauthenticated(
                "missing or invalid credentials: send `authorization: Bearer <api key>`",
            ),
            AuthError::CacheStale => {
                Status::unavailable("credentials cannot be checked right now; retry shortly")
            }
            AuthError::MissingScope { scope, resource } => Status::permission_denied(format!(
                "Permission `{scope}` denied on resource `{resource}` (or it might not exist)"
            )),
            AuthError::OtherTenant { resource } => {
                Status::not_found(format!("resource `{resource}` not found"))
            }
            AuthError::OperatorOnly => {
                Status::permission_denied("this method needs the operator credential")
            }
            AuthError::OperatorDenied { resource } => Status::permission_denied(format!(
                "the operator credential may not access `{resource}`"
            )),
            AuthError::ServiceDenied { resource } => Status::permission_denied(format!(
                "the service credential may not call this method on `{resource}`"
            )),
            AuthError::RateLimited {
                tenant,
                retry_after,
            } => {
                let mut details =
                    ErrorDetails::with_retry_info(Some(retry_after.max(Duration::from_millis(1))));
                details.add_quota_failure_violation(
                    format!("tenants/{tenant}"),
                    "max_requests_per_minute: the tenant's request rate is over quota",
                );
                Status::with_error_details(
                    Code::ResourceExhausted,
                    format!(
                        "the tenant's request rate is over quota; retry in {} ms",
                        retry_after.as_millis().max(1)
                    ),
                    details,
                )
            }
            AuthError::QuotaExceeded {
                tenant,
                quota,
                limit,
                used,
            } => {
                let description = format!("{}: {used} of {limit} used", quota.field());
                let mut details = match quota.retry_after() {
                    Some(delay) => ErrorDetails::with_retry_info(Some(delay)),
                    None => ErrorDetails::new(),
                };
                details.add_quota_failure_violation(format!("tenants/{tenant}"), &description);
                Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("the tenant is over quota: {description}"),
                    details,
                )
            }
            AuthError::InvalidResourceName { field } => Status::invalid_argument(format!(
                "`{field}` must be a resource name starting with `tenants/{{tenant}}`"
            )),
        }
    }
}

/// Why the `tm_auth` bucket could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The bucket could not be created or opened.
    #[error("cannot open the tm_auth key-value bucket")]
    Bucket(#[source] async_nats::Error),
    /// A record could not be written.
    #[error("cannot write key {key} to tm_auth")]
    Put {
        /// The bucket key.
        key: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// The watch on the bucket could not be started.
    #[error("cannot watch the tm_auth bucket")]
    Watch(#[source] async_nats::Error),
    /// The cache did not load the bucket within its start timeout.
    #[error("the key cache did not load tm_auth within {0:?}")]
    LoadTimeout(std::time::Duration),
    /// The `tm_usage` bucket (tenants' usage, [`crate::quota::UsageBucket`]) could not be opened,
    /// read or written.
    #[error("cannot open, read or write the tm_usage key-value bucket")]
    Usage(#[source] async_nats::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_reasons_share_one_message() {
        let messages: Vec<String> = [
            AuthError::MissingCredential,
            AuthError::MalformedCredential,
            AuthError::UnknownKey,
            AuthError::WrongSecret,
            AuthError::Revoked,
            AuthError::Expired,
        ]
        .into_iter()
        .map(|e| {
            let status = Status::from(e);
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            status.message().to_owned()
        })
        .collect();
        assert!(messages.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn over_quota_says_when_to_retry() {
        let status = Status::from(AuthError::RateLimited {
            tenant: "acme".to_owned(),
            retry_after: Duration::from_millis(250),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_details_retry_info().expect("a RetryInfo detail");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(250)));
        let failure = status.get_details_quota_failure().expect("a QuotaFailure");
        assert_eq!(failure.violations[0].subject, "tenants/acme");
    }

    #[test]
    fn another_tenants_resource_looks_absent() {
        let status = Status::from(AuthError::OtherTenant {
            resource: "tenants/bbb/datasets/1".to_owned(),
        });
        assert_eq!(status.code(), tonic::Code::NotFound);
        // Word for word what a service answers for a resource that does not exist.
        assert_eq!(
            status.message(),
            "resource `tenants/bbb/datasets/1` not found"
        );
    }
}
