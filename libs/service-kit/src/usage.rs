//! Reporting a tenant's usage to `tm_usage` (tenancy's GetQuota reads it,
//! `trustmesh_auth::UsageBucket`): each service recounts what it holds of the tenant after a change
//! commits, and reports the count.

use std::future::Future;

use sqlx::{PgConnection, PgPool};
use trustmesh_auth::{TenantUsage, UsageBucket};
use trustmesh_bus::schema::rls::tenant_tx;
use trustmesh_bus::schema::xact_lock;
use trustmesh_events::{Service, TenantId};

/// How a service counts a tenant's usage in its own tables.
pub trait CountUsage: Send + Sync {
    /// The tenant's usage, counted in `conn`'s open transaction (acting for the tenant).
    fn count(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<TenantUsage, sqlx::Error>> + Send;
}

/// Reports a tenant's usage, as `C` counts it, under `service`'s key of `tm_usage`.
#[derive(Debug, Clone)]
pub struct UsageReporter<C> {
    pool: PgPool,
    bucket: UsageBucket,
    service: Service,
    counter: C,
}

impl<C: CountUsage> UsageReporter<C> {
    /// A reporter counting with `counter` in `pool` (the service's own database).
    pub fn new(pool: PgPool, bucket: UsageBucket, service: Service, counter: C) -> Self {
        Self {
            pool,
            bucket,
            service,
            counter,
        }
    }

    /// Recounts the tenant's usage and reports it, after a change committed. Counted and written
    /// under a per-tenant lock, so reports racing each other land in the order of their counts and
    /// the last one is current. A failure is logged, not returned: the change stands, and the next
    /// one reports again.
    pub async fn report(&self, tenant: &TenantId) {
        if let Err(error) = self.try_report(tenant).await {
            tracing::warn!(
                tenant.id = %tenant,
                error = &*error as &dyn std::error::Error,
                "Cannot report the tenant's usage; GetQuota shows the last one reported."
            );
        }
    }

    async fn try_report(
        &self,
        tenant: &TenantId,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut tx = tenant_tx(&self.pool, tenant.as_str()).await?;
        let key = format!("{}.usage/{tenant}", self.service.as_str());
        xact_lock(&mut tx, &key, false).await?;
        let usage = self.counter.count(&mut tx, tenant).await?;
        self.bucket.report(tenant, self.service, &usage).await?;
        tx.commit().await?;
        Ok(())
    }
}
