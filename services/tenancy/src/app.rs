//! [`component`]: connects, migrates schema `tenancy`, opens `tm_auth` (reconciling it with the
//! keys in Postgres), ensures the `tenancy-deletion` consumer, loads the key cache; the
//! `TenancyService` (every call authenticated), the outbox relay and the deletion consumer.
//! [`Application`] hosts it on its own gRPC and admin listeners until shutdown.

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{AuthBucket, Authenticator, CacheOptions, KeyId, KeyStoreError, UsageBucket};
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, ensure_consumer,
};
use trustmesh_events::{AUTH_KV_BUCKET, TENANCY_DELETION};
use trustmesh_proto::v1::tenancy_service_server::TenancyServiceServer;
use trustmesh_runtime::{Component, InvalidSetting, Readiness};
use trustmesh_service_kit::{Foundations, StartError};

use crate::deletion::DeletionHandler;
use crate::grpc::TenancyHandler;
use crate::repo;
use crate::settings::Settings;
use crate::webhooks::Notifier;

/// The tenancy service's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema of this service.
pub const SCHEMA: &str = "tenancy";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is unacceptable.
    #[error(transparent)]
    Settings(#[from] InvalidSetting),
    /// Postgres, NATS or the key cache could not be set up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A startup query failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The consumer could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// `tm_auth` could not be opened or reconciled.
    #[error("key bucket setup failed")]
    KeyStore(#[from] KeyStoreError),
    /// The notifier's endpoint is unusable.
    #[error("the notifier endpoint is unusable")]
    Notifier(#[from] trustmesh_runtime::ConnectError),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// A server or a background task failed while running.
    #[error("the service stopped on an error")]
    Host(#[from] trustmesh_runtime::HostError),
    /// A single-tenant install could not set up its tenant.
    #[error(transparent)]
    SingleTenant(#[from] crate::single_tenant::BootstrapError),
}

trustmesh_service_kit::application!(Settings, AppError, component);

/// Connects to Postgres (migrating schema `tenancy`) and NATS (ensuring streams and `tm_auth`),
/// republishes to `tm_auth` any key it lacks or that it still shows active though revoked, and
/// loads the key cache: the `TenancyService` (API keys and the operator credential) plus the outbox
/// relay and the deletion consumer, registered on `readiness`.
///
/// # Errors
///
/// [`AppError`] naming what could not be set up.
pub async fn component(settings: &Settings, readiness: &Readiness) -> Result<Component, AppError> {
    // A single-tenant install has no operator (`single_tenant.rs`).
    let operator = match settings.single_tenant {
        Some(_) => None,
        None => Some(settings.auth.operator()?),
    };
    let bearer = settings
        .mesh
        .bearer()
        .map(|bearer| trustmesh_runtime::ExposeSecret::expose_secret(&bearer).parse())
        .transpose()
        .map_err(|_| {
            InvalidSetting::new("service_credential", "not a valid header value").within("mesh")
        })?;
    let notifier = settings
        .notifier
        .as_ref()
        .map(|peer| trustmesh_runtime::lazy_channel(&peer.endpoint, &peer.tls))
        .transpose()?
        .map(|channel| Notifier::new(channel, bearer));
    let foundations = trustmesh_service_kit::connect(
        "tenancy",
        SCHEMA,
        &settings.database,
        &settings.nats,
        &[&MIGRATOR],
        readiness,
    )
    .await?;
    let pull = ensure_consumer(&foundations.jetstream, &TENANCY_DELETION).await?;

    let options = CacheOptions {
        max_staleness: std::time::Duration::from_secs(settings.auth.max_key_cache_staleness_secs),
        replicas: settings.nats.stream_replicas,
        ..CacheOptions::default()
    };
    let bucket = AuthBucket::open(&foundations.jetstream, options.replicas).await?;
    let usage = UsageBucket::open(&foundations.jetstream, options.replicas).await?;
    reconcile(&foundations.pool, &bucket).await?;
    let kv = foundations
        .jetstream
        .get_key_value(AUTH_KV_BUCKET)
        .await
        .map_err(|e| KeyStoreError::Bucket(e.into()))?;
    // Every service recognizes the operator, and limits tenants' request rates, by what is here.
    match &operator {
        Some(operator) => {
            bucket.put_operator(operator.digest()).await?;
        }
        None => {
            // NOTE: `trustmesh_auth`'s `OPERATOR_KEY`; purged, a former install's operator is
            // recognized by no service (their caches fail closed on the deletion).
            kv.purge("operator")
                .await
                .map_err(|e| KeyStoreError::Bucket(e.into()))?;
        }
    }
    bucket.put_limits(&settings.auth.tenant_rate_limit).await?;
    bucket
        .put_quota_defaults(&settings.auth.default_quota)
        .await?;
    let cache = foundations.start_key_cache(options, readiness).await?;
    let consumer_ready = readiness.register("tenancy-deletion consumer");
    let Foundations {
        pool,
        bus_schema,
        jetstream,
        background,
        stop_background,
        ..
    } = foundations;
    let publisher = Publisher::new(jetstream);

    let outbox = Outbox::new(&bus_schema);
    let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
    let deletion = DeletionHandler {
        pool: pool.clone(),
        bucket: bucket.clone(),
        kv,
        processed: ProcessedMessages::new(pool.clone(), &bus_schema, TENANCY_DELETION.durable_name),
        outbox: outbox.clone(),
    };
    let consumer = ConsumerRunner::new(pull, &TENANCY_DELETION, publisher.clone(), deletion);
    consumer_ready.set_ready();
    let handler = TenancyHandler::new(
        pool,
        bucket,
        outbox,
        publisher,
        time::Duration::days(i64::from(settings.auth.max_key_lifetime_days)),
        time::Duration::days(i64::from(settings.auth.max_support_grant_days)),
        notifier,
    )
    .with_quota_defaults(settings.auth.tenant_rate_limit, settings.auth.default_quota)
    .with_usage(usage);
    let handler = match &settings.single_tenant {
        Some(single) => {
            crate::single_tenant::bootstrap(&handler, single).await?;
            handler.single_tenant()
        }
        None => handler,
    };
    let mut authenticator = Authenticator::new(cache);
    if let Some(operator) = operator {
        authenticator = authenticator.with_operator(operator);
    }
    stop_background.disarm();
    Ok(Component::new(SCHEMA)
        .service(move |grpc| {
            grpc.add_service(InterceptedService::new(
                TenancyServiceServer::new(handler),
                authenticator,
            ))
        })
        .infallible_task("outbox relay", move |shutdown| relay.run(shutdown))
        .task("deletion consumer", Some(consumer_ready), move |shutdown| {
            consumer.run(shutdown)
        })
        .cancel_on_exit(background))
}

/// Makes `tm_auth` agree with Postgres, the source of truth, without ever re-activating a key or a
/// grant: keys and unexpired grants missing from the bucket are written, and those revoked in
/// Postgres but active in the bucket are written revoked; every tenant's quota is written.
async fn reconcile(pool: &PgPool, bucket: &AuthBucket) -> Result<(), AppError> {
    let mut written = 0_usize;
    for row in repo::all_keys(pool).await? {
        let (Some(record), Ok(key_id)) = (row.to_record(), KeyId::parse(&row.key_id)) else {
            tracing::warn!(key.id = %row.key_id, "Skipping a corrupt API-key row.");
            continue;
        };
        let stored = bucket.get(&key_id).await?;
        let stale = match &stored {
            None => true,
            Some(stored) => record.revoked && !stored.revoked,
        };
        if stale {
            bucket.put(&record).await?;
            written += 1;
        }
    }
    for row in repo::live_grants(pool).await? {
        let record = row.to_record();
        let stale = match bucket.get_grant(&row.grant_id).await? {
            None => true,
            Some(stored) => record.revoked && !stored.revoked,
        };
        if stale {
            bucket.put_grant(&record).await?;
            written += 1;
        }
    }
    // Quotas are rewritten as Postgres holds them: a quota raised or lowered is never a security
    // downgrade to repair carefully as a revocation is.
    for (tenant, row) in repo::all_quotas(pool).await? {
        let Ok(tenant) = trustmesh_events::TenantId::parse(tenant.as_str()) else {
            tracing::warn!(tenant.id = %tenant, "Skipping the quota of an invalid tenant id.");
            continue;
        };
        bucket.put_quota(&tenant, &row.to_record()).await?;
    }
    if written > 0 {
        tracing::info!(
            records = written,
            "Republished API keys and support grants missing or stale in tm_auth."
        );
    }
    Ok(())
}
