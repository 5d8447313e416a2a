//! [`component`]: connects, migrates, ensures streams and the consumer, loads the API-key cache; the
//! `DatasetService` (every call authenticated), the outbox relay and the deletion consumer.
//! [`Application`] hosts it on its own gRPC and admin listeners until shutdown.

use std::sync::Arc;

use sqlx::migrate::Migrator;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions, ServiceCredential, UsageBucket};
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, ensure_consumer,
};
use trustmesh_crypto::{Keyring, LocalKeyFile};
use trustmesh_events::{INGEST_DELETION, Service};
use trustmesh_proto::v1::dataset_service_server::DatasetServiceServer;
use trustmesh_runtime::{Component, Readiness};
use trustmesh_service_kit::{Foundations, StartError};
use trustmesh_store::{EncryptedObjects, ObjectsRepo, PgDekStore};

use crate::datasets::grpc::DatasetsHandler;
use crate::datasets::repo::{DatasetRepo, StoredDatasets, UsageReporter};
use crate::deletion::consumer::DeletionHandler;
use crate::settings::Settings;

/// The ingest service's own migrations (run next to `trustmesh_store::MIGRATOR`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema (and object-store prefix, keyring service) of this service.
pub const SCHEMA: &str = "ingest";

/// Largest gRPC message accepted: a 4 MiB upload chunk plus framing.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 + 64 * 1024;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Postgres, NATS or the API-key cache could not be set up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The consumer could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// The object store could not be opened.
    #[error("cannot open the object store")]
    Objects(#[from] trustmesh_store::ObjectError),
    /// The key file could not be opened.
    #[error("cannot open the key-encryption keys")]
    Keys(#[from] trustmesh_crypto::Error),
    /// The mesh's service credential is too weak.
    #[error("`mesh.service_credential` is not usable")]
    ServiceCredential(#[from] trustmesh_auth::WeakCredential),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// A server or a background task failed while running.
    #[error("the service stopped on an error")]
    Host(#[from] trustmesh_runtime::HostError),
}

trustmesh_service_kit::application!(Settings, AppError, component);

/// Connects to Postgres (migrating schema `ingest`) and NATS (ensuring streams and the
/// `ingest-deletion` consumer), loads the API-key cache from `tm_auth`, and opens the object store
/// and keyring: the `DatasetService` (every call through `trustmesh_auth::Authenticator`; API keys
/// and the mesh's service credential, never the operator) plus the outbox relay and the deletion
/// consumer, registered on `readiness`.
///
/// # Errors
///
/// [`AppError`] naming what could not be set up.
pub async fn component(settings: &Settings, readiness: &Readiness) -> Result<Component, AppError> {
    let foundations = trustmesh_service_kit::connect(
        "ingest",
        SCHEMA,
        &settings.database,
        &settings.nats,
        &[&trustmesh_store::MIGRATOR, &MIGRATOR],
        readiness,
    )
    .await?;
    let pull = ensure_consumer(&foundations.jetstream, &INGEST_DELETION).await?;
    let cache = foundations
        .start_key_cache(CacheOptions::default(), readiness)
        .await?;
    let consumer_ready = readiness.register("ingest-deletion consumer");
    // `stop_background` stops the cache's watch if anything below fails; disarmed once built.
    let Foundations {
        pool,
        bus_schema,
        jetstream,
        background,
        stop_background,
        ..
    } = foundations;
    let usage_jetstream = jetstream.clone();
    let publisher = Publisher::new(jetstream);

    let store = settings.objects.open().await?;
    let deks = PgDekStore::new(pool.clone());
    let keyring = Arc::new(Keyring::new(
        Service::Ingest.as_str(),
        Arc::new(LocalKeyFile::open_or_create(&settings.keys.kek_file)?),
        Arc::new(deks.clone()),
    ));
    let objects = EncryptedObjects::new(
        Arc::clone(&store),
        Arc::clone(&keyring),
        ObjectsRepo::new(pool.clone()),
    );
    let outbox = Outbox::new(&bus_schema);
    let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
    let usage = UsageReporter::new(
        pool.clone(),
        UsageBucket::open(&usage_jetstream, settings.nats.stream_replicas)
            .await
            .map_err(StartError::from)?,
        Service::Ingest,
        StoredDatasets,
    );
    let repo = DatasetRepo::new(pool.clone(), keyring, outbox.clone(), usage);

    let deletion = DeletionHandler {
        objects: objects.clone(),
        store,
        deks,
        processed: ProcessedMessages::new(
            repo.pool().clone(),
            &bus_schema,
            INGEST_DELETION.durable_name,
        ),
        outbox: repo.outbox().clone(),
        usage: repo.usage().clone(),
    };
    let sweep = repo.usage().clone();
    let consumer = ConsumerRunner::new(pull, &INGEST_DELETION, publisher, deletion);
    consumer_ready.set_ready();

    let datasets = DatasetServiceServer::new(DatasetsHandler::new(repo, objects, settings.limits))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let authenticator = Authenticator::new(cache).with_service(ServiceCredential::optional(
        settings.mesh.service_credential.as_ref(),
    )?);
    stop_background.disarm();
    Ok(Component::new(SCHEMA)
        .service(move |grpc| grpc.add_service(InterceptedService::new(datasets, authenticator)))
        .infallible_task("outbox relay", move |shutdown| relay.run(shutdown))
        .infallible_task("usage sweep", move |shutdown| sweep.sweep(shutdown))
        .task("deletion consumer", Some(consumer_ready), move |shutdown| {
            consumer.run(shutdown)
        })
        .cancel_on_exit(background))
}
