//! Per-tenant request-rate quotas: one token bucket per tenant (GCRA, the `governor` crate), so a
//! tenant over its rate is refused with RESOURCE_EXHAUSTED while every other tenant keeps its own
//! full bucket.
//!
//! The limit is the deployment's, set in `tenancy`'s settings and published in `tm_auth` (bucket key
//! `limits`), so every service applies the same one; until it arrives a service applies
//! [`RateLimit::default`]. Each service instance counts the requests it serves: a tenant may make
//! `requests_per_second` to each service.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use trustmesh_events::TenantId;

/// A tenant's sustained request rate and burst, per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second a tenant may make without being refused, sustained.
    pub requests_per_second: NonZeroU32,
    /// Requests a tenant may make at once after being idle (the bucket's size).
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    /// 100 requests per second, bursts of 200.
    fn default() -> Self {
        Self {
            requests_per_second: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// The buckets of every tenant under one [`RateLimit`].
#[derive(Debug)]
pub(crate) struct TenantLimiter {
    limit: RateLimit,
    buckets: DefaultKeyedRateLimiter<TenantId>,
}

impl TenantLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.requests_per_second).allow_burst(limit.burst);
        Self {
            limit,
            buckets: RateLimiter::keyed(quota),
        }
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one request from `tenant`'s bucket, or says how long until one is available.
    pub(crate) fn admit(&self, tenant: &TenantId) -> Result<(), Duration> {
        self.buckets
            .check_key(tenant)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_over_its_burst_waits_and_others_do_not() {
        let limit = RateLimit {
            requests_per_second: NonZeroU32::new(2).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        };
        let limiter = TenantLimiter::new(limit);
        let acme = TenantId::parse("acme").unwrap();
        let beta = TenantId::parse("beta").unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.admit(&acme), Ok(()));
        }
        let wait = limiter.admit(&acme).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // beta's bucket is its own, full.
        for _ in 0..3 {
            assert_eq!(limiter.admit(&beta), Ok(()));
        }
    }
}
