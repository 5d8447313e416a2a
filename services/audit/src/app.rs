//! [`component`]: connects, migrates schema `audit`, ensures streams and the `audit-events` and
//! `audit-deletion` consumers, loads the key cache; the `AuditService` (every call authenticated)
//! and the consumers.
//! [`Application`] hosts it on its own gRPC and admin listeners until shutdown.

use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions, KeyCache, KeyStoreError};
use trustmesh_bus::{ConsumerRunner, Publisher, ensure_consumer, ensure_streams_with_replicas};
use trustmesh_events::{AUDIT_DELETION, AUDIT_EVENTS, Service};
use trustmesh_proto::v1::audit_service_server::AuditServiceServer;
use trustmesh_runtime::{Component, ExposeSecret, Readiness};
use trustmesh_store::{PgSettings, SchemaName};

use crate::consumer::AuditWriter;
use crate::deletion::DeletionResponder;
use crate::grpc::AuditHandler;
use crate::repo::{self, Checkpointer};
use crate::settings::Settings;
use crate::signing::CheckpointSigner;

/// The audit service's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema of this service.
pub const SCHEMA: &str = "audit";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Postgres could not be reached or migrated.
    #[error("postgres setup failed")]
    Postgres(#[from] trustmesh_store::PgError),
    /// NATS could not be reached.
    #[error("cannot connect to NATS")]
    Nats(#[from] async_nats::ConnectError),
    /// Streams or the consumer could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// The checkpoint signing key could not be loaded or created.
    #[error("checkpoint signing key setup failed")]
    SigningKey(#[from] crate::signing::SigningKeyError),
    /// `tm_auth` could not be loaded.
    #[error("key cache setup failed")]
    KeyStore(#[from] KeyStoreError),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// A server or a background task failed while running.
    #[error("the service stopped on an error")]
    Host(#[from] trustmesh_runtime::HostError),
}

trustmesh_service_kit::application!(Settings, AppError, component);

/// Connects to Postgres (migrating schema `audit`) and NATS (ensuring streams and the
/// `audit-events` and `audit-deletion` consumers) and loads the key cache: the `AuditService`
/// (every call through `trustmesh_auth::Authenticator`) plus the consumers, registered on
/// `readiness`.
///
/// # Errors
///
/// [`AppError`] naming what could not be set up.
pub async fn component(settings: &Settings, readiness: &Readiness) -> Result<Component, AppError> {
    let postgres_ready = readiness.register("postgres");
    let nats_ready = readiness.register("nats");
    let keys_ready = readiness.register("tm_auth key cache");
    let consumer_ready = readiness.register("audit-events consumer");
    let deletion_ready = readiness.register("audit-deletion consumer");

    let signer = Arc::new(CheckpointSigner::open_or_create(
        &settings.keys.signing_key_file,
    )?);
    let checkpointer = Checkpointer {
        signer: Arc::clone(&signer),
        every_events: i64::try_from(settings.checkpoints.every_events).unwrap_or(i64::MAX),
    };
    let every_secs = settings.checkpoints.every_secs;

    let schema = SchemaName::new(SCHEMA)?;
    let mut pg = PgSettings::new(settings.database.url.expose_secret(), schema.clone());
    pg.max_connections = settings.database.max_connections;
    let pool = trustmesh_store::connect(&pg).await?;
    trustmesh_store::migrate(&pool, &schema, &[&MIGRATOR]).await?;
    postgres_ready.set_ready();

    let client = trustmesh_service_kit::nats_options(Service::Audit.as_str(), &settings.nats)
        .connect(settings.nats.url.as_str())
        .await?;
    let jetstream = async_nats::jetstream::new(client);
    ensure_streams_with_replicas(&jetstream, settings.nats.stream_replicas).await?;
    let pull = ensure_consumer(&jetstream, &AUDIT_EVENTS).await?;
    let deletion_pull = ensure_consumer(&jetstream, &AUDIT_DELETION).await?;
    nats_ready.set_ready();

    let background = CancellationToken::new();
    let options = CacheOptions {
        max_staleness: std::time::Duration::from_secs(settings.auth.max_key_cache_staleness_secs),
        replicas: settings.nats.stream_replicas,
        audit_denials_as: Some(Service::Audit),
        ..CacheOptions::default()
    };
    let cache = KeyCache::start(&jetstream, options, background.clone()).await?;
    keys_ready.set_ready();

    let publisher = Publisher::new(jetstream);
    let consumer = ConsumerRunner::new(
        pull,
        &AUDIT_EVENTS,
        publisher.clone(),
        AuditWriter {
            pool: pool.clone(),
            checkpointer: checkpointer.clone(),
        },
    );
    consumer_ready.set_ready();
    let deletion = ConsumerRunner::new(
        deletion_pull,
        &AUDIT_DELETION,
        publisher.clone(),
        DeletionResponder {
            publisher: publisher.clone(),
        },
    );
    deletion_ready.set_ready();
    let publisher_for_audit = publisher;

    let timer_pool = pool.clone();
    let audit = AuditServiceServer::new(AuditHandler::new(pool, signer, publisher_for_audit));
    let authenticator = Authenticator::new(cache);
    Ok(Component::new(SCHEMA)
        .service(move |grpc| grpc.add_service(InterceptedService::new(audit, authenticator)))
        .task(
            "audit-events consumer",
            Some(consumer_ready),
            move |shutdown| consumer.run(shutdown),
        )
        .task("deletion consumer", Some(deletion_ready), move |shutdown| {
            deletion.run(shutdown)
        })
        .infallible_task("audit checkpoints", move |shutdown| {
            checkpoint_timer(timer_pool, checkpointer, every_secs, shutdown)
        })
        .cancel_on_exit(background))
}

/// Every second, signs a checkpoint at the head of each chain whose newest events have waited
/// `every_secs` since its last checkpoint; a failed round is logged and retried on the next tick.
async fn checkpoint_timer(
    pool: sqlx::PgPool,
    checkpointer: Checkpointer,
    every_secs: u64,
    shutdown: CancellationToken,
) {
    let tick = Duration::from_secs(every_secs.min(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[allow(clippy::cast_precision_loss)]
    let every = every_secs as f64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match repo::checkpoint_due(&pool, &checkpointer, every).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                audit.checkpoints = n,
                "Time-based audit checkpoints signed."
            ),
            Err(error) => tracing::warn!(
                error.cause_chain = %trustmesh_runtime::cause_chain(&error),
                "Could not sign the due audit checkpoints; retrying."
            ),
        }
    }
}
