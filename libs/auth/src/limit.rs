//! Per-tenant request-rate quotas: one token bucket per tenant (GCRA, the `governor` crate), so a
//! tenant over its rate is refused with RESOURCE_EXHAUSTED while every other tenant keeps its own
//! full bucket.
//!
//! The default limit is the deployment's, set in `tenancy`'s settings and published in `tm_auth`
//! (bucket key `limits`), so every service applies the same one; until it arrives a service applies
//! [`RateLimit::default`]. A tenant whose quota sets `max_requests_per_minute` ([`crate::quota`])
//! gets a bucket of its own at that rate instead. Each service instance counts the requests it
//! serves: a tenant may make its rate to each service.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
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

/// The buckets of every tenant: one keyed limiter under the default [`RateLimit`], and a bucket of
/// its own for each tenant whose quota sets its rate.
#[derive(Debug)]
pub(crate) struct TenantLimiter {
    limit: RateLimit,
    buckets: DefaultKeyedRateLimiter<TenantId>,
    /// Tenants with a rate of their own: requests per minute and the bucket.
    own: HashMap<TenantId, (NonZeroU32, DefaultDirectRateLimiter)>,
}

impl TenantLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: RateLimiter::keyed(Self::quota(limit)),
            own: HashMap::new(),
        }
    }

    fn quota(limit: RateLimit) -> Quota {
        Quota::per_second(limit.requests_per_second).allow_burst(limit.burst)
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Applies a new default limit to every tenant without a rate of its own (their buckets start
    /// full again).
    pub(crate) fn set_default(&mut self, limit: RateLimit) {
        self.limit = limit;
        self.buckets = RateLimiter::keyed(Self::quota(limit));
    }

    /// Gives `tenant` a rate of `per_minute` requests a minute, or the default with `None`; an
    /// unchanged rate keeps the tenant's bucket as it is.
    pub(crate) fn set_tenant(&mut self, tenant: &TenantId, per_minute: Option<NonZeroU32>) {
        match per_minute {
            Some(rate) if self.own.get(tenant).is_some_and(|(own, _)| *own == rate) => {}
            Some(rate) => {
                let bucket = RateLimiter::direct(crate::quota::per_minute_bucket(rate));
                self.own.insert(tenant.clone(), (rate, bucket));
            }
            None => {
                self.own.remove(tenant);
            }
        }
    }

    /// Takes one request from `tenant`'s bucket, or says how long until one is available.
    pub(crate) fn admit(&self, tenant: &TenantId) -> Result<(), Duration> {
        let checked = match self.own.get(tenant) {
            Some((_, bucket)) => bucket.check(),
            None => self.buckets.check_key(tenant),
        };
        checked.map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
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

    #[test]
    fn a_tenant_with_its_own_rate_is_limited_at_it() {
        let mut limiter = TenantLimiter::new(RateLimit::default());
        let acme = TenantId::parse("acme").unwrap();
        let beta = TenantId::parse("beta").unwrap();
        // 60 a minute: one a second, a burst of two.
        limiter.set_tenant(&acme, NonZeroU32::new(60));
        assert_eq!(limiter.admit(&acme), Ok(()));
        assert_eq!(limiter.admit(&acme), Ok(()));
        let wait = limiter.admit(&acme).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // The same rate again keeps the (empty) bucket; a new default leaves it alone.
        limiter.set_tenant(&acme, NonZeroU32::new(60));
        limiter.set_default(RateLimit::default());
        assert!(limiter.admit(&acme).is_err());
        // beta is on the default: 200 at once.
        for _ in 0..200 {
            assert_eq!(limiter.admit(&beta), Ok(()));
        }
        // Back on the default, acme's bucket is the default's, full.
        limiter.set_tenant(&acme, None);
        assert_eq!(limiter.admit(&acme), Ok(()));
    }
}
