//! [`Application`]: connects, migrates, ensures streams and consumers, binds the listeners; then
//! serves gRPC and admin, relays the outbox and runs the consumers until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions, KeyCache, KeyStoreError};
use trustmesh_bus::{
    ConsumerRunner, Handler, Outbox, OutboxRelay, ProcessedMessages, Publisher, RunnerError,
    ensure_consumer, ensure_schema, ensure_streams,
};
use trustmesh_crypto::{Keyring, LocalKeyFile};
use trustmesh_events::{Service, TRUST_SCORING_ANALYSIS, TRUST_SCORING_DELETION};
use trustmesh_proto::v1::analysis_service_client::AnalysisServiceClient;
use trustmesh_proto::v1::trust_service_server::TrustServiceServer;
use trustmesh_runtime::{AdminServer, Dependency, ExposeSecret, GrpcServer, Readiness, code_name};
use trustmesh_store::{
    EncryptedObjects, LocalDirStore, ObjectStore, ObjectsRepo, PgDekStore, PgSettings, S3Settings,
    S3Store, SchemaName,
};
use trustmesh_telemetry::Metrics;

use crate::deletion::DeletionHandler;
use crate::reports::grpc::ReportsHandler;
use crate::reports::repo::ReportRepo;
use crate::reports::scoring::ScoringHandler;
use crate::settings::{ObjectStoreSettings, Settings};

/// The trust-scoring service's own migrations (run next to `trustmesh_store::MIGRATOR`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema of this service (its keyring service and object-store prefix are
/// `trust-scoring`).
pub const SCHEMA: &str = "trust_scoring";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Postgres could not be reached or migrated.
    #[error("postgres setup failed")]
    Postgres(#[from] trustmesh_store::PgError),
    /// The bus tables could not be created.
    #[error("bus schema setup failed")]
    BusSchema(#[from] trustmesh_bus::SchemaError),
    /// NATS could not be reached.
    #[error("cannot connect to NATS")]
    Nats(#[from] async_nats::ConnectError),
    /// Streams or consumers could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// The object store could not be opened.
    #[error("cannot open the object store")]
    Objects(#[from] trustmesh_store::ObjectError),
    /// The key file could not be opened.
    #[error("cannot open the key-encryption keys")]
    Keys(#[from] trustmesh_crypto::Error),
    /// The analysis endpoint is not usable.
    #[error("cannot set up the channel to analysis")]
    Analysis(#[from] trustmesh_runtime::ConnectError),
    /// The API key for analysis is not a valid header value.
    #[error("the API key for analysis is not a valid header value")]
    AnalysisKey,
    /// The API-key cache could not open or load `tm_auth`.
    #[error("API-key cache setup failed")]
    KeyStore(#[from] KeyStoreError),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// A consumer stopped on a fatal error.
    #[error("a consumer stopped")]
    Consumer(#[from] RunnerError),
}

/// The built service, ready to run.
pub struct Application {
    grpc: GrpcServer,
    admin: AdminServer,
    relay: OutboxRelay,
    consumer: ConsumerRunner<ScoringHandler>,
    deletion: ConsumerRunner<DeletionHandler>,
    consumer_ready: Dependency,
    /// Stops the API-key cache's watch once the servers are done.
    background: CancellationToken,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("grpc", &self.grpc.local_addr())
            .field("admin", &self.admin.local_addr())
            .finish_non_exhaustive()
    }
}

async fn object_store(settings: &ObjectStoreSettings) -> Result<Arc<dyn ObjectStore>, AppError> {
    Ok(match settings {
        ObjectStoreSettings::Local { dir } => Arc::new(LocalDirStore::open(dir).await?),
        ObjectStoreSettings::S3 {
            endpoint,
            region,
            bucket,
            access_key_id,
            secret_access_key,
            create_bucket,
        } => {
            let mut s3 = S3Settings::compatible(
                endpoint.clone().unwrap_or_default(),
                region,
                bucket,
                access_key_id,
                secret_access_key.expose_secret(),
            );
            s3.endpoint.clone_from(endpoint);
            s3.create_bucket = *create_bucket;
            Arc::new(S3Store::connect(&s3).await?)
        }
    })
}

/// Runs `runner` until shutdown; a fatal error fails readiness. Dropping the handle (the service's
/// future dropped, as in a crash) aborts the consumer, whose in-flight deliveries are nak'ed.
fn spawn_consumer<H: Handler>(
    runner: ConsumerRunner<H>,
    ready: Dependency,
    shutdown: CancellationToken,
) -> AbortOnDropHandle<Result<(), RunnerError>> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let result = runner.run(shutdown).await;
        if let Err(error) = &result {
            ready.set_not_ready();
            tracing::error!(error = %error, "A consumer stopped; the service is not ready.");
        }
        result
    }))
}

impl Application {
    /// Connects to Postgres (migrating schema `trust_scoring`) and NATS (ensuring streams and the
    /// `trust-scoring-analysis` and `trust-scoring-deletion` consumers), loads the API-key cache from
    /// `tm_auth`, opens the object store and keyring, prepares the channel to analysis (sending its
    /// `analysis.api_key`), and binds the gRPC and admin listeners. Every `TrustService` call goes
    /// through `trustmesh_auth::Authenticator` (API keys only; the operator credential reads no
    /// tenant data).
    ///
    /// # Errors
    ///
    /// [`AppError`] naming what could not be set up.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let readiness = Readiness::new();
        let postgres_ready = readiness.register("postgres");
        let nats_ready = readiness.register("nats");
        let keys_ready = readiness.register("tm_auth key cache");
        let consumer_ready = readiness.register("trust-scoring consumers");

        let schema = SchemaName::new(SCHEMA)?;
        let mut pg = PgSettings::new(settings.database.url.expose_secret(), schema.clone());
        pg.max_connections = settings.database.max_connections;
        let pool = trustmesh_store::connect(&pg).await?;
        trustmesh_store::migrate(&pool, &schema, &[&trustmesh_store::MIGRATOR, &MIGRATOR]).await?;
        let bus_schema = trustmesh_bus::SchemaName::new(SCHEMA)?;
        ensure_schema(&pool, &bus_schema).await?;
        postgres_ready.set_ready();

        let client = async_nats::ConnectOptions::new()
            .name("trustmesh-trust-scoring")
            .connect(settings.nats.url.as_str())
            .await?;
        let jetstream = async_nats::jetstream::new(client);
        ensure_streams(&jetstream).await?;
        let pull = ensure_consumer(&jetstream, &TRUST_SCORING_ANALYSIS).await?;
        let deletion_pull = ensure_consumer(&jetstream, &TRUST_SCORING_DELETION).await?;
        nats_ready.set_ready();
        let background = CancellationToken::new();
        // Stops the cache's watch if anything below fails; disarmed once the app is built.
        let stop_background = background.clone().drop_guard();
        let cache =
            KeyCache::start(&jetstream, CacheOptions::default(), background.clone()).await?;
        keys_ready.set_ready();
        let publisher = Publisher::new(jetstream);

        let store = object_store(&settings.objects).await?;
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
        let deletion = DeletionHandler {
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
        let scoring = ScoringHandler {
            repo: repo.clone(),
            objects: objects.clone(),
            analysis: AnalysisServiceClient::new(channel),
            analysis_bearer: settings
                .analysis
                .api_key
                .as_ref()
                .map(|key| format!("Bearer {}", key.expose_secret()).parse())
                .transpose()
                .map_err(|_| AppError::AnalysisKey)?,
        };
        let consumer =
            ConsumerRunner::new(pull, &TRUST_SCORING_ANALYSIS, publisher.clone(), scoring);
        let deletion =
            ConsumerRunner::new(deletion_pull, &TRUST_SCORING_DELETION, publisher, deletion);
        consumer_ready.set_ready();

        let metrics = Metrics::new(Service::TrustScoring.as_str());
        let rpc_metrics = metrics.clone();
        let reports = TrustServiceServer::new(ReportsHandler::new(repo, objects));
        let grpc = GrpcServer::builder(settings.grpc, readiness.clone())
            .add_service(InterceptedService::new(reports, Authenticator::new(cache)))
            .file_descriptor_set(trustmesh_proto::FILE_DESCRIPTOR_SET)
            .grace_period(settings.shutdown.grace_period())
            .on_rpc(move |method, code, elapsed| {
                rpc_metrics.rpc().record(method, code_name(code), elapsed);
            })
            .build()
            .await?;
        let admin = AdminServer::bind(&settings.admin, readiness, move || metrics.render()).await?;
        stop_background.disarm();
        Ok(Self {
            grpc,
            admin,
            relay,
            consumer,
            deletion,
            consumer_ready,
            background,
        })
    }

    /// The address the gRPC server listens on (the real port when bound to port 0).
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr()
    }

    /// The address the admin server listens on.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` is cancelled, with the outbox relay and the consumers running beside
    /// the servers; a fatal consumer error fails readiness and is returned at the end.
    ///
    /// # Errors
    ///
    /// [`AppError::Server`] or [`AppError::Consumer`].
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let relay = AbortOnDropHandle::new(tokio::spawn(self.relay.run(shutdown.clone())));
        let consumers = [
            spawn_consumer(self.consumer, self.consumer_ready.clone(), shutdown.clone()),
            spawn_consumer(self.deletion, self.consumer_ready, shutdown.clone()),
        ];
        let served = trustmesh_runtime::serve(self.grpc, self.admin, shutdown.clone()).await;
        shutdown.cancel();
        self.background.cancel();
        if let Err(error) = relay.await {
            tracing::warn!(error = %error, "The outbox relay task ended abnormally.");
        }
        let mut consumed = Ok(());
        for consumer in consumers {
            match consumer.await {
                Ok(result) => consumed = consumed.and(result),
                Err(error) => tracing::warn!(error = %error, "A consumer task ended abnormally."),
            }
        }
        served?;
        Ok(consumed?)
    }
}
