//! Reporting a tenant's usage to `tm_usage` (tenancy's GetQuota reads it,
//! `trustmesh_auth::UsageBucket`): each service recounts what it holds of the tenant after a change
//! commits, and reports the count. At start it reports every tenant it holds rows of (a report
//! lost to a crash between a commit and its report is current again), and once a whole tenant is
//! deleted it purges the tenant's key instead of reporting zeros.

use std::future::Future;

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use trustmesh_auth::{TenantUsage, UsageBucket};
use trustmesh_bus::schema::rls::{service_tx, tenant_tx};
use trustmesh_bus::schema::xact_lock;
use trustmesh_events::{Service, TenantId};

/// How a service counts a tenant's usage in its own tables.
pub trait CountUsage: Send + Sync {
    /// The table whose `tenant` column names every tenant the service holds anything of (the
    /// start-up sweep reports each of them).
    const TENANTS_TABLE: &'static str;

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

    /// Reports every tenant the service holds rows of, once (a start-up task; it ends early on
    /// `shutdown`). Failures are logged.
    pub async fn sweep(self, shutdown: CancellationToken) {
        shutdown.run_until_cancelled(self.report_all()).await;
    }

    async fn report_all(&self) {
        match self.tenants().await {
            Ok(tenants) => {
                for tenant in &tenants {
                    self.report(tenant).await;
                }
                tracing::info!(tenants = tenants.len(), "Reported every tenant's usage.");
            }
            Err(error) => tracing::warn!(
                error = &error as &dyn std::error::Error,
                "Cannot list the tenants to report their usage; each is reported at its next change."
            ),
        }
    }

    /// After `tenant`'s deletion (of one dataset, or of the whole tenant when `whole_tenant`)
    /// is carried out: reports the new count, or purges the tenant's key.
    pub async fn after_deletion(&self, tenant: &TenantId, whole_tenant: bool) {
        if !whole_tenant {
            self.report(tenant).await;
        } else if let Err(error) = self.bucket.forget(tenant, self.service).await {
            tracing::warn!(
                tenant.id = %tenant,
                error = &error as &dyn std::error::Error,
                "Cannot remove the deleted tenant's usage."
            );
        }
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, sqlx::Error> {
        let mut tx = service_tx(&self.pool).await?;
        let names: Vec<String> =
            sqlx::query_scalar(&format!("SELECT DISTINCT tenant FROM {}", C::TENANTS_TABLE))
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(names
            .iter()
            .filter_map(|name| TenantId::parse(name).ok())
            .collect())
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
