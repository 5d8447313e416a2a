//! [`Application`]: connects, migrates, ensures streams and the consumer, loads the API-key cache,
//! binds the listeners; then serves gRPC (every call authenticated) and admin, relays the outbox and
//! runs the deletion consumer until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions, KeyCache, KeyStoreError};
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, ensure_consumer,
    ensure_schema, ensure_streams,
};
use trustmesh_crypto::{Keyring, LocalKeyFile};
use trustmesh_events::{INGEST_DELETION, Service};
use trustmesh_proto::v1::dataset_service_server::DatasetServiceServer;
use trustmesh_runtime::{AdminServer, Dependency, ExposeSecret, GrpcServer, Readiness, code_name};
use trustmesh_store::{
    EncryptedObjects, LocalDirStore, ObjectStore, ObjectsRepo, PgDekStore, PgSettings, S3Settings,
    S3Store, SchemaName,
};
use trustmesh_telemetry::Metrics;

use crate::datasets::grpc::DatasetsHandler;
use crate::datasets::repo::DatasetRepo;
use crate::deletion::consumer::DeletionHandler;
use crate::settings::{ObjectStoreSettings, Settings};

/// The ingest service's own migrations (run next to `trustmesh_store::MIGRATOR`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema (and object-store prefix, keyring service) of this service.
pub const SCHEMA: &str = "ingest";

/// Largest gRPC message accepted: a 4 MiB upload chunk plus framing.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 + 64 * 1024;

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
    /// Streams or the consumer could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// The object store could not be opened.
    #[error("cannot open the object store")]
    Objects(#[from] trustmesh_store::ObjectError),
    /// The API-key cache could not open or load `tm_auth`.
    #[error("API-key cache setup failed")]
    KeyStore(#[from] KeyStoreError),
    /// The key file could not be opened.
    #[error("cannot open the key-encryption keys")]
    Keys(#[from] trustmesh_crypto::Error),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// The deletion consumer stopped on a fatal error.
    #[error("the deletion consumer stopped")]
    Consumer(#[from] trustmesh_bus::RunnerError),
}

/// The built service, ready to run.
pub struct Application {
    grpc: GrpcServer,
    admin: AdminServer,
    relay: OutboxRelay,
    consumer: ConsumerRunner<DeletionHandler>,
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

impl Application {
    /// Connects to Postgres (migrating schema `ingest`) and NATS (ensuring streams and the
    /// `ingest-deletion` consumer), loads the API-key cache from `tm_auth`, opens the object store
    /// and keyring, and binds the gRPC and admin listeners. Every `DatasetService` call goes through
    /// `trustmesh_auth::Authenticator` (API keys only; the operator credential reads no datasets).
    ///
    /// # Errors
    ///
    /// [`AppError`] naming what could not be set up.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let readiness = Readiness::new();
        let postgres_ready = readiness.register("postgres");
        let nats_ready = readiness.register("nats");
        let keys_ready = readiness.register("tm_auth key cache");
        let consumer_ready = readiness.register("ingest-deletion consumer");

        let schema = SchemaName::new(SCHEMA)?;
        let mut pg = PgSettings::new(settings.database.url.expose_secret(), schema.clone());
        pg.max_connections = settings.database.max_connections;
        let pool = trustmesh_store::connect(&pg).await?;
        trustmesh_store::migrate(&pool, &schema, &[&trustmesh_store::MIGRATOR, &MIGRATOR]).await?;
        let bus_schema = trustmesh_bus::SchemaName::new(SCHEMA)?;
        ensure_schema(&pool, &bus_schema).await?;
        postgres_ready.set_ready();

        let client = async_nats::ConnectOptions::new()
            .name("trustmesh-ingest")
            .connect(settings.nats.url.as_str())
            .await?;
        let jetstream = async_nats::jetstream::new(client);
        ensure_streams(&jetstream).await?;
        let pull = ensure_consumer(&jetstream, &INGEST_DELETION).await?;
        nats_ready.set_ready();
        let background = CancellationToken::new();
        // Stops the cache's watch if anything below fails; disarmed once the app is built.
        let stop_background = background.clone().drop_guard();
        let cache =
            KeyCache::start(&jetstream, CacheOptions::default(), background.clone()).await?;
        keys_ready.set_ready();
        let publisher = Publisher::new(jetstream);

        let store: Arc<dyn ObjectStore> = match &settings.objects {
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
        };
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
        let repo = DatasetRepo::new(pool.clone(), keyring, outbox.clone());

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
        };
        let consumer = ConsumerRunner::new(pull, &INGEST_DELETION, publisher, deletion);
        consumer_ready.set_ready();

        let metrics = Metrics::new(Service::Ingest.as_str());
        let rpc_metrics = metrics.clone();
        let datasets =
            DatasetServiceServer::new(DatasetsHandler::new(repo, objects, settings.limits))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let grpc = GrpcServer::builder(settings.grpc, readiness.clone())
            .add_service(InterceptedService::new(datasets, Authenticator::new(cache)))
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
            consumer_ready,
            background,
        })
    }

    /// The address the gRPC server listens on (the real port when bound to port 0).
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr()
    }

    /// The gRPC port.
    #[must_use]
    pub fn grpc_port(&self) -> u16 {
        self.grpc.local_addr().port()
    }

    /// The address the admin server listens on.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` is cancelled, with the outbox relay and the deletion consumer
    /// running beside the servers; a fatal consumer error fails readiness and is returned at the end.
    ///
    /// # Errors
    ///
    /// [`AppError::Server`] or [`AppError::Consumer`].
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        let consumer_ready = self.consumer_ready;
        let consumer_run = self.consumer.run(shutdown.clone());
        let consumer = tokio::spawn(async move {
            let result = consumer_run.await;
            if let Err(error) = &result {
                consumer_ready.set_not_ready();
                tracing::error!(error = %error, "The deletion consumer stopped; the service is not ready.");
            }
            result
        });
        let served = trustmesh_runtime::serve(self.grpc, self.admin, shutdown.clone()).await;
        shutdown.cancel();
        self.background.cancel();
        if let Err(error) = relay.await {
            tracing::warn!(error = %error, "The outbox relay task ended abnormally.");
        }
        let consumed = match consumer.await {
            Ok(result) => result.map_err(AppError::from),
            Err(error) => {
                tracing::warn!(error = %error, "The deletion consumer task ended abnormally.");
                Ok(())
            }
        };
        served?;
        consumed
    }
}
