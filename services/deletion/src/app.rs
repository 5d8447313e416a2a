//! [`component`]: connects, migrates, ensures streams and the `deletion-receipt` consumer, opens the
//! signing key, loads the API-key cache; the `DeletionService` (every call authenticated), the
//! outbox relay, the receipt consumer and the sweeper of late deletions. [`Application`] hosts it on
//! its own gRPC and admin listeners until shutdown.

use sqlx::migrate::Migrator;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions};
use trustmesh_bus::{ConsumerRunner, Outbox, OutboxRelay, Publisher, ensure_consumer};
use trustmesh_events::DELETION_RECEIPT;
use trustmesh_proto::v1::deletion_service_server::DeletionServiceServer;
use trustmesh_runtime::{Component, InvalidSetting, Readiness};
use trustmesh_service_kit::{Foundations, StartError};
use trustmesh_telemetry::{JobKind, JobMetrics};

use crate::certificate::{CertificateSigner, SigningKeyError};
use crate::deletions::grpc::DeletionHandler;
use crate::deletions::receipts::ReceiptHandler;
use crate::deletions::repo;
use crate::deletions::service::{Deletions, Policy};
use crate::deletions::sweeper;
use crate::settings::Settings;

/// The deletion service's own migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema of this service.
pub const SCHEMA: &str = "deletion";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is invalid (the operator credential).
    #[error("invalid settings")]
    Settings(#[from] InvalidSetting),
    /// Postgres, NATS or the API-key cache could not be set up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A startup statement failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The consumer could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// The signing key could not be opened.
    #[error("cannot open the certificate signing key")]
    SigningKey(#[from] SigningKeyError),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// A server or a background task failed while running.
    #[error("the service stopped on an error")]
    Host(#[from] trustmesh_runtime::HostError),
}

trustmesh_service_kit::application!(Settings, AppError, component);

/// Connects to Postgres (migrating schema `deletion`) and NATS (ensuring streams and the
/// `deletion-receipt` consumer), opens (or creates) the signing key and records it as current, and
/// loads the API-key cache from `tm_auth`: the `DeletionService` (every call through
/// `trustmesh_auth::Authenticator`: API keys, and the operator credential if
/// `auth.operator_credential` is set) plus the outbox relay, the receipt consumer and the sweeper,
/// registered on `readiness`. Its deletion metrics are process-wide families every `/metrics`
/// renders.
///
/// # Errors
///
/// [`AppError`] naming what could not be set up.
pub async fn component(settings: &Settings, readiness: &Readiness) -> Result<Component, AppError> {
    let operator = settings.auth.operator().map_err(|e| e.within("auth"))?;
    let foundations = trustmesh_service_kit::connect(
        "deletion",
        SCHEMA,
        &settings.database,
        &settings.nats,
        &[&MIGRATOR],
        readiness,
    )
    .await?;

    let signer = CertificateSigner::open_or_create(&settings.keys.signing_key_file)?;
    repo::register_signing_key(&foundations.pool, signer.key_id(), &signer.public_key()).await?;
    tracing::info!(
        key.id = signer.key_id(),
        "Certificates are signed with this key."
    );

    let pull = ensure_consumer(&foundations.jetstream, &DELETION_RECEIPT).await?;
    let options = CacheOptions {
        max_staleness: settings.auth.max_key_cache_staleness(),
        ..CacheOptions::default()
    };
    let cache = foundations.start_key_cache(options, readiness).await?;
    let consumer_ready = readiness.register("deletion-receipt consumer");
    // `stop_background` stops the cache's watch if anything below fails; disarmed once built.
    let Foundations {
        pool,
        bus_schema,
        jetstream,
        background,
        stop_background,
        ..
    } = foundations;
    let authenticator = match operator {
        Some(operator) => Authenticator::new(cache).with_operator(operator),
        None => Authenticator::new(cache),
    };
    let publisher = Publisher::new(jetstream.clone());

    let outbox = Outbox::new(&bus_schema);
    let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
    let deletions = Deletions::new(
        pool,
        jetstream,
        outbox,
        signer,
        Policy {
            expected_services: settings.deletion.expected_services.clone(),
            receipt_timeout: settings.deletion.receipt_timeout(),
            max_retries: settings.deletion.max_retries,
            backup_retention_days: settings.deletion.backup_retention_days,
        },
        JobMetrics::of(JobKind::Deletion),
    );
    let consumer = ConsumerRunner::new(
        pull,
        &DELETION_RECEIPT,
        publisher,
        ReceiptHandler {
            deletions: deletions.clone(),
        },
    );
    consumer_ready.set_ready();

    let service = DeletionServiceServer::new(DeletionHandler::new(deletions.clone()));
    let sweep_interval = settings.deletion.sweep_interval();
    stop_background.disarm();
    Ok(Component::new(SCHEMA)
        .service(move |grpc| grpc.add_service(InterceptedService::new(service, authenticator)))
        .infallible_task("outbox relay", move |shutdown| relay.run(shutdown))
        .infallible_task("sweeper", move |shutdown| {
            sweeper::run(deletions, sweep_interval, shutdown)
        })
        .task("receipt consumer", Some(consumer_ready), move |shutdown| {
            consumer.run(shutdown)
        })
        .cancel_on_exit(background))
}
