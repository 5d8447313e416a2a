//! The `tm_usage` bucket against a real nats-server started with the repo's permissions
//! (`infra/nats/permissions.conf`): ingest and analysis each open it and report their own key of a
//! tenant, tenancy reads the tenant's usage (both reports together, never another tenant's), and
//! the server refuses a service writing (or purging) another's key or a service with no part in it.

use std::time::Duration;

use async_nats::jetstream;
use trustmesh_auth::{TenantUsage, UsageBucket};
use trustmesh_events::{Service, TenantId};
use trustmesh_testkit::nats_auth::SecuredNats;

async fn connect(nats: &SecuredNats, service: Service) -> jetstream::Context {
    let client = async_nats::ConnectOptions::with_user_and_password(
        service.nats_user().to_owned(),
        nats.password(&service.nats_password_env()).to_owned(),
    )
    .custom_inbox_prefix(service.nats_inbox_prefix())
    .connect(nats.url())
    .await
    .unwrap_or_else(|e| panic!("{service} connects: {e}"));
    let mut context = jetstream::new(client);
    context.set_timeout(Duration::from_secs(2));
    context
}

#[tokio::test]
async fn ingest_and_analysis_report_their_own_keys_and_tenancy_reads_them() {
    let nats = SecuredNats::start(Service::ALL.map(Service::nats_password_env)).await;
    let acme = TenantId::parse("acme").unwrap();
    let beta = TenantId::parse("beta").unwrap();

    let ingest = UsageBucket::open(&connect(&nats, Service::Ingest).await, 1)
        .await
        .unwrap_or_else(|e| panic!("ingest opens tm_usage: {e}; {}", nats.log()));
    let analysis = UsageBucket::open(&connect(&nats, Service::Analysis).await, 1)
        .await
        .unwrap_or_else(|e| panic!("analysis opens tm_usage: {e}; {}", nats.log()));
    let tenancy = UsageBucket::open(&connect(&nats, Service::Tenancy).await, 1)
        .await
        .unwrap_or_else(|e| panic!("tenancy opens tm_usage: {e}; {}", nats.log()));

    let stored = TenantUsage {
        datasets: 3,
        storage_bytes: 1000,
        ..TenantUsage::default()
    };
    ingest
        .report(&acme, Service::Ingest, &stored)
        .await
        .unwrap_or_else(|e| panic!("ingest reports: {e}; {}", nats.log()));
    let jobs = TenantUsage {
        concurrent_jobs: 2,
        ..TenantUsage::default()
    };
    analysis
        .report(&acme, Service::Analysis, &jobs)
        .await
        .unwrap_or_else(|e| panic!("analysis reports: {e}; {}", nats.log()));
    ingest
        .report(
            &beta,
            Service::Ingest,
            &TenantUsage {
                datasets: 9,
                ..TenantUsage::default()
            },
        )
        .await
        .unwrap();

    assert_eq!(
        tenancy.read(&acme).await.unwrap(),
        TenantUsage {
            datasets: 3,
            storage_bytes: 1000,
            concurrent_jobs: 2
        }
    );
    assert_eq!(tenancy.read(&beta).await.unwrap().datasets, 9);
    assert_eq!(
        tenancy
            .read(&TenantId::parse("gamma").unwrap())
            .await
            .unwrap(),
        TenantUsage::default()
    );

    // Only the counting service writes its key; tenancy writes none; trust-scoring cannot open it.
    assert!(
        analysis
            .report(&acme, Service::Ingest, &TenantUsage::default())
            .await
            .is_err()
    );
    assert!(
        tenancy
            .report(&acme, Service::Analysis, &TenantUsage::default())
            .await
            .is_err()
    );
    assert!(
        UsageBucket::open(&connect(&nats, Service::TrustScoring).await, 1)
            .await
            .is_err()
    );
    assert_eq!(tenancy.read(&acme).await.unwrap().concurrent_jobs, 2);

    // Once a tenant is deleted, each service purges its own key, and only its own.
    assert!(analysis.forget(&acme, Service::Ingest).await.is_err());
    assert!(tenancy.forget(&acme, Service::Analysis).await.is_err());
    assert_eq!(tenancy.read(&acme).await.unwrap().datasets, 3);
    ingest
        .forget(&acme, Service::Ingest)
        .await
        .unwrap_or_else(|e| panic!("ingest purges its key: {e}; {}", nats.log()));
    analysis
        .forget(&acme, Service::Analysis)
        .await
        .unwrap_or_else(|e| panic!("analysis purges its key: {e}; {}", nats.log()));
    assert_eq!(tenancy.read(&acme).await.unwrap(), TenantUsage::default());
    assert_eq!(tenancy.read(&beta).await.unwrap().datasets, 9);
}
