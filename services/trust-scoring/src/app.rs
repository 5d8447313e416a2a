//! [`component`]: connects, migrates, ensures streams and consumers, loads the API-key cache; the
//! `TrustService` (every call authenticated), the outbox relay and the consumers.
//! [`Application`] hosts it on its own gRPC and admin listeners until shutdown.

use std::sync::Arc;

use sqlx::migrate::Migrator;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions};
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, ensure_consumer,
};
use trustmesh_crypto::{Keyring, LocalKeyFile};
use trustmesh_events::{Service, TRUST_SCORING_ANALYSIS, TRUST_SCORING_DELETION};
use trustmesh_proto::v1::analysis_service_client::AnalysisServiceClient;
use trustmesh_proto::v1::trust_service_server::TrustServiceServer;
use trustmesh_runtime::{Component, ExposeSecret, Readiness};
use trustmesh_service_kit::{Foundations, StartError};
use trustmesh_service_kit::{ResourceDeletion, Resources};
use trustmesh_store::{EncryptedObjects, ObjectsRepo, PgDekStore};

use crate::reports::export::Ingest;
use crate::reports::grpc::ReportsHandler;
use crate::reports::repo::ReportRepo;
use crate::reports::scoring::{AnalysisClients, ScoringHandler};
use crate::settings::Settings;

/// The trust-scoring service's own migrations (run next to `trustmesh_store::MIGRATOR`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema of this service (its keyring service and object-store prefix are
/// `trust-scoring`).
pub const SCHEMA: &str = "trust_scoring";

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
    /// The analysis or ingest endpoint is not usable.
    #[error("cannot set up the channel to analysis or ingest")]
    Analysis(#[from] trustmesh_runtime::ConnectError),
    /// The mesh's service credential (presented to analysis and ingest) is not a header value.
    #[error("`mesh.service_credential` is not a valid header value")]
    ServiceBearer,
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// A server or a background task failed while running.
    #[error("the service stopped on an error")]
    Host(#[from] trustmesh_runtime::HostError),
}

trustmesh_service_kit::application!(Settings, AppError, component);

/// Connects to Postgres (migrating schema `trust_scoring`) and NATS (ensuring streams and the
/// `trust-scoring-analysis` and `trust-scoring-deletion` consumers), loads the API-key cache from
/// `tm_auth`, opens the object store and keyring, and prepares the channels to analysis and ingest
/// (presenting the mesh's `mesh.service_credential`): the `TrustService` (every call through
/// `trustmesh_auth::Authenticator`; API keys only, the operator credential reads no tenant data)
/// plus the outbox relay and the consumers, registered on `readiness`.
///
/// # Errors
///
/// [`AppError`] naming what could not be set up.
pub async fn component(settings: &Settings, readiness: &Readiness) -> Result<Component, AppError> {
    let analysis_bearer = settings
        .mesh
        .bearer()
        .map(|bearer| bearer.expose_secret().parse())
        .transpose()
        .map_err(|_| AppError::ServiceBearer)?;

    let foundations = trustmesh_service_kit::connect(
        Service::TrustScoring.as_str(),
        SCHEMA,
        &settings.database,
        &settings.nats,
        &[&trustmesh_store::MIGRATOR, &MIGRATOR],
        readiness,
    )
    .await?;
    let pull = ensure_consumer(&foundations.jetstream, &TRUST_SCORING_ANALYSIS).await?;
    let deletion_pull = ensure_consumer(&foundations.jetstream, &TRUST_SCORING_DELETION).await?;
    let cache = foundations
        .start_key_cache(CacheOptions::default(), readiness)
        .await?;
    let consumer_ready = readiness.register("trust-scoring consumers");
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
        Service::TrustScoring.as_str(),
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
            service: Service::TrustScoring,
            table: "reports",
            action: "reports.delete",
        },
        pool: pool.clone(),
        objects: objects.clone(),
        store,
        deks,
        processed: ProcessedMessages::new(
            pool.clone(),
            &bus_schema,
            TRUST_SCORING_DELETION.durable_name,
        ),
        outbox: outbox.clone(),
    };
    let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
    let repo = ReportRepo::new(pool, keyring, outbox);
    let channel =
        trustmesh_runtime::lazy_channel(&settings.analysis.endpoint, &settings.analysis.tls)?;
    let ingest_peer = settings.ingest.as_ref().unwrap_or(&settings.analysis);
    let ingest = Ingest::new(
        trustmesh_runtime::lazy_channel(&ingest_peer.endpoint, &ingest_peer.tls)?,
        analysis_bearer.clone(),
    );
    let dedicated = settings
        .dedicated
        .analysis
        .iter()
        .map(|(tenant, endpoint)| {
            let channel = trustmesh_runtime::lazy_channel(endpoint, &settings.analysis.tls)?;
            Ok((tenant.clone(), AnalysisServiceClient::new(channel)))
        })
        .collect::<Result<_, AppError>>()?;
    let scoring = ScoringHandler {
        repo: repo.clone(),
        objects: objects.clone(),
        analysis: AnalysisClients {
            shared: AnalysisServiceClient::new(channel),
            dedicated,
        },
        analysis_bearer,
    };
    let consumer = ConsumerRunner::new(pull, &TRUST_SCORING_ANALYSIS, publisher.clone(), scoring);
    let deletion = ConsumerRunner::new(deletion_pull, &TRUST_SCORING_DELETION, publisher, deletion);
    consumer_ready.set_ready();

    let reports = TrustServiceServer::new(ReportsHandler::new(repo, objects, ingest));
    let authenticator = Authenticator::new(cache);
    stop_background.disarm();
    // Named for the service (`trust-scoring`), as its metrics always were, not its schema.
    Ok(Component::new(Service::TrustScoring.as_str())
        .service(move |grpc| grpc.add_service(InterceptedService::new(reports, authenticator)))
        .infallible_task("outbox relay", move |shutdown| relay.run(shutdown))
        .task(
            "trust-scoring-analysis consumer",
            Some(consumer_ready.clone()),
            move |shutdown| consumer.run(shutdown),
        )
        .task(
            "trust-scoring-deletion consumer",
            Some(consumer_ready),
            move |shutdown| deletion.run(shutdown),
        )
        .cancel_on_exit(background))
}
