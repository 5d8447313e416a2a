//! [`component`]: connects, migrates, ensures streams and consumers, loads the API-key cache; the
//! `AnalysisService` (every call authenticated), the outbox relay and the consumers.
//! [`Application`] hosts it on its own gRPC and admin listeners until shutdown.

use std::sync::Arc;

use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions, ServiceCredential};
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, ensure_consumer,
};
use trustmesh_crypto::{Keyring, LocalKeyFile};
use trustmesh_events::{ANALYSIS_DELETION, ANALYSIS_REQUESTED, ANALYSIS_SCORES, Service};
use trustmesh_proto::v1::analysis_service_server::AnalysisServiceServer;
use trustmesh_runtime::{Component, ExposeSecret, Host, Readiness};
use trustmesh_service_kit::{Foundations, StartError};
use trustmesh_service_kit::{ResourceDeletion, Resources};
use trustmesh_store::{EncryptedObjects, ObjectsRepo, PgDekStore};

use crate::ingest::IngestClient;
use crate::jobs::grpc::JobsHandler;
use crate::jobs::repo::JobRepo;
use crate::jobs::scores::ScoresHandler;
use crate::jobs::worker::AnalysisWorker;
use crate::settings::Settings;

/// The analysis service's own migrations (run next to `trustmesh_store::MIGRATOR`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema (and object-store prefix, keyring service) of this service.
pub const SCHEMA: &str = "analysis";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Postgres, NATS or the API-key cache could not be set up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The consumers could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// The object store could not be opened.
    #[error("cannot open the object store")]
    Objects(#[from] trustmesh_store::ObjectError),
    /// The key file could not be opened.
    #[error("cannot open the key-encryption keys")]
    Keys(#[from] trustmesh_crypto::Error),
    /// The ingest endpoint is not usable.
    #[error("cannot set up the channel to ingest")]
    Ingest(#[from] trustmesh_runtime::ConnectError),
    /// The mesh's service credential is too weak.
    #[error("`mesh.service_credential` is not usable")]
    ServiceCredential(#[from] trustmesh_auth::WeakCredential),
    /// The mesh's service credential, presented to ingest, is not a valid header value.
    #[error("`mesh.service_credential` is not a valid header value")]
    ServiceBearer,
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// A server or a background task failed while running.
    #[error("the service stopped on an error")]
    Host(#[from] trustmesh_runtime::HostError),
}

/// The built service, ready to run: its [`component`] on its own gRPC and admin listeners
/// (addresses through [`Host`]).
#[derive(Debug)]
pub struct Application(Host);

impl Application {
    /// Builds the service's [`component`] and binds the gRPC and admin listeners.
    ///
    /// # Errors
    ///
    /// [`AppError`] naming what could not be set up.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let readiness = Readiness::new();
        let component = component(&settings, &readiness).await?;
        let (grpc, admin, shutdown) = (settings.grpc, settings.admin, settings.shutdown);
        Ok(Self(
            Host::service(component, grpc, &admin, &shutdown, readiness).await?,
        ))
    }

    /// Serves until `shutdown` is cancelled, with the background tasks beside the servers.
    ///
    /// # Errors
    ///
    /// [`AppError::Host`] when a server or a background task failed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        Ok(self.0.run_until_stopped(shutdown).await?)
    }
}

impl std::ops::Deref for Application {
    type Target = Host;

    fn deref(&self) -> &Host {
        &self.0
    }
}

/// Connects to Postgres (migrating schema `analysis`) and NATS (ensuring streams and the
/// `analysis-requested`, `analysis-scores` and `analysis-deletion` consumers), loads the API-key
/// cache from `tm_auth`, opens the object store and keyring, and prepares the channel to ingest
/// (presenting the mesh's service credential): the `AnalysisService` (every call through
/// `trustmesh_auth::Authenticator`; API keys, and the mesh's service credential on
/// `GetModelOutputs` only, never the operator) plus the outbox relay and the consumers, registered
/// on `readiness`.
///
/// # Errors
///
/// [`AppError`] naming what could not be set up.
pub async fn component(settings: &Settings, readiness: &Readiness) -> Result<Component, AppError> {
    let service = ServiceCredential::optional(settings.mesh.service_credential.as_ref())?;
    let ingest_bearer = settings
        .mesh
        .bearer()
        .map(|bearer| bearer.expose_secret().parse())
        .transpose()
        .map_err(|_| AppError::ServiceBearer)?;

    let foundations = trustmesh_service_kit::connect(
        "analysis",
        SCHEMA,
        &settings.database,
        &settings.nats,
        &[&trustmesh_store::MIGRATOR, &MIGRATOR],
        readiness,
    )
    .await?;
    let requested_pull = ensure_consumer(&foundations.jetstream, &ANALYSIS_REQUESTED).await?;
    let scores_pull = ensure_consumer(&foundations.jetstream, &ANALYSIS_SCORES).await?;
    let deletion_pull = ensure_consumer(&foundations.jetstream, &ANALYSIS_DELETION).await?;
    let cache = foundations
        .start_key_cache(CacheOptions::default(), readiness)
        .await?;
    let consumers_ready = readiness.register("analysis consumers");
    // `stop_background` stops the cache's watch if anything below fails; disarmed once built.
    let Foundations {
        pool,
        bus_schema,
        jetstream,
        background,
        stop_background,
        ..
    } = foundations;
    let publisher = Publisher::new(jetstream);

    let store = settings.objects.open().await?;
    let deks = PgDekStore::new(pool.clone());
    let keyring = Arc::new(Keyring::new(
        Service::Analysis.as_str(),
        Arc::new(LocalKeyFile::open_or_create(&settings.keys.kek_file)?),
        Arc::new(deks.clone()),
    ));
    let objects = EncryptedObjects::new(
        Arc::clone(&store),
        Arc::clone(&keyring),
        ObjectsRepo::new(pool.clone()),
    );
    let outbox = Outbox::new(&bus_schema);
    let deletion = ResourceDeletion {
        resources: Resources {
            service: Service::Analysis,
            table: "jobs",
            object: "outputs",
            action: "jobs.delete",
        },
        pool: pool.clone(),
        objects: objects.clone(),
        store,
        deks,
        processed: ProcessedMessages::new(
            pool.clone(),
            &bus_schema,
            ANALYSIS_DELETION.durable_name,
        ),
        outbox: outbox.clone(),
    };
    let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
    let repo = JobRepo::new(pool, keyring, outbox);
    let channel = trustmesh_runtime::lazy_channel(&settings.ingest.endpoint, &settings.ingest.tls)?;
    let ingest = IngestClient::new(channel, ingest_bearer);

    let worker = AnalysisWorker {
        repo: repo.clone(),
        objects: objects.clone(),
        ingest: ingest.clone(),
    };
    let requested = ConsumerRunner::new(
        requested_pull,
        &ANALYSIS_REQUESTED,
        publisher.clone(),
        worker,
    );
    let scores = ConsumerRunner::new(
        scores_pull,
        &ANALYSIS_SCORES,
        publisher.clone(),
        ScoresHandler { repo: repo.clone() },
    );
    let deletion = ConsumerRunner::new(deletion_pull, &ANALYSIS_DELETION, publisher, deletion);
    consumers_ready.set_ready();

    let jobs = AnalysisServiceServer::new(JobsHandler::new(repo, objects, ingest));
    let authenticator = Authenticator::new(cache).with_service(service);
    stop_background.disarm();
    Ok(Component::new(SCHEMA)
        .service(move |grpc| grpc.add_service(InterceptedService::new(jobs, authenticator)))
        .infallible_task("outbox relay", move |shutdown| relay.run(shutdown))
        .task(
            "analysis-requested consumer",
            Some(consumers_ready.clone()),
            move |shutdown| requested.run(shutdown),
        )
        .task(
            "analysis-scores consumer",
            Some(consumers_ready.clone()),
            move |shutdown| scores.run(shutdown),
        )
        .task(
            "analysis-deletion consumer",
            Some(consumers_ready),
            move |shutdown| deletion.run(shutdown),
        )
        .cancel_on_exit(background))
}
