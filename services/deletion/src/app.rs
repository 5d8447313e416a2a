//! [`Application`]: connects, migrates, ensures streams and the `deletion-receipt` consumer, opens the
//! signing key, loads the API-key cache, binds the listeners; then serves gRPC (every call
//! authenticated) and admin, relays the outbox, consumes receipts and sweeps late deletions until
//! shutdown.

use std::net::SocketAddr;

use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions, KeyCache, KeyStoreError};
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, Publisher, ensure_consumer, ensure_schema, ensure_streams,
};
use trustmesh_events::{DELETION_RECEIPT, Service};
use trustmesh_proto::v1::deletion_service_server::DeletionServiceServer;
use trustmesh_runtime::{
    AdminServer, Dependency, ExposeSecret, GrpcServer, InvalidSetting, Readiness, code_name,
};
use trustmesh_store::{PgSettings, SchemaName};
use trustmesh_telemetry::Metrics;

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
    /// Postgres could not be reached or migrated.
    #[error("postgres setup failed")]
    Postgres(#[from] trustmesh_store::PgError),
    /// A startup statement failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The bus tables could not be created.
    #[error("bus schema setup failed")]
    BusSchema(#[from] trustmesh_bus::SchemaError),
    /// NATS could not be reached.
    #[error("cannot connect to NATS")]
    Nats(#[from] async_nats::ConnectError),
    /// Streams or the consumer could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// The API-key cache could not open or load `tm_auth`.
    #[error("API-key cache setup failed")]
    KeyStore(#[from] KeyStoreError),
    /// The signing key could not be opened.
    #[error("cannot open the certificate signing key")]
    SigningKey(#[from] SigningKeyError),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// The receipt consumer stopped on a fatal error.
    #[error("the receipt consumer stopped")]
    Consumer(#[from] trustmesh_bus::RunnerError),
}

/// The built service, ready to run.
pub struct Application {
    grpc: GrpcServer,
    admin: AdminServer,
    relay: OutboxRelay,
    consumer: ConsumerRunner<ReceiptHandler>,
    consumer_ready: Dependency,
    deletions: Deletions,
    sweep_interval: std::time::Duration,
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
    /// Connects to Postgres (migrating schema `deletion`) and NATS (ensuring streams and the
    /// `deletion-receipt` consumer), opens (or creates) the signing key and records it as current,
    /// loads the API-key cache from `tm_auth`, and binds the gRPC and admin listeners. Every
    /// `DeletionService` call goes through `trustmesh_auth::Authenticator`: API keys, and the
    /// operator credential if `auth.operator_credential` is set.
    ///
    /// # Errors
    ///
    /// [`AppError`] naming what could not be set up.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let operator = settings.auth.operator().map_err(|e| e.within("auth"))?;
        let readiness = Readiness::new();
        let postgres_ready = readiness.register("postgres");
        let nats_ready = readiness.register("nats");
        let keys_ready = readiness.register("tm_auth key cache");
        let consumer_ready = readiness.register("deletion-receipt consumer");

        let schema = SchemaName::new(SCHEMA)?;
        let mut pg = PgSettings::new(settings.database.url.expose_secret(), schema.clone());
        pg.max_connections = settings.database.max_connections;
        let pool = trustmesh_store::connect(&pg).await?;
        trustmesh_store::migrate(&pool, &schema, &[&MIGRATOR]).await?;
        let bus_schema = trustmesh_bus::SchemaName::new(SCHEMA)?;
        ensure_schema(&pool, &bus_schema).await?;

        let signer = CertificateSigner::open_or_create(&settings.keys.signing_key_file)?;
        repo::register_signing_key(&pool, signer.key_id(), &signer.public_key()).await?;
        tracing::info!(
            key.id = signer.key_id(),
            "Certificates are signed with this key."
        );
        postgres_ready.set_ready();

        let client = async_nats::ConnectOptions::new()
            .name("trustmesh-deletion")
            .connect(settings.nats.url.as_str())
            .await?;
        let jetstream = async_nats::jetstream::new(client);
        ensure_streams(&jetstream).await?;
        let pull = ensure_consumer(&jetstream, &DELETION_RECEIPT).await?;
        nats_ready.set_ready();
        let background = CancellationToken::new();
        // Stops the cache's watch if anything below fails; disarmed once the app is built.
        let stop_background = background.clone().drop_guard();
        let options = CacheOptions {
            max_staleness: settings.auth.max_key_cache_staleness(),
            ..CacheOptions::default()
        };
        let cache = KeyCache::start(&jetstream, options, background.clone()).await?;
        keys_ready.set_ready();
        let authenticator = match operator {
            Some(operator) => Authenticator::new(cache).with_operator(operator),
            None => Authenticator::new(cache),
        };
        let publisher = Publisher::new(jetstream);

        let metrics = Metrics::new(Service::Deletion.as_str());
        let outbox = Outbox::new(&bus_schema);
        let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
        let deletions = Deletions::new(
            pool,
            outbox,
            signer,
            Policy {
                expected_services: settings.deletion.expected_services.clone(),
                receipt_timeout: settings.deletion.receipt_timeout(),
                max_retries: settings.deletion.max_retries,
                backup_retention_days: settings.deletion.backup_retention_days,
            },
            metrics.jobs().clone(),
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

        let rpc_metrics = metrics.clone();
        let service = DeletionServiceServer::new(DeletionHandler::new(deletions.clone()));
        let grpc = GrpcServer::builder(settings.grpc, readiness.clone())
            .add_service(InterceptedService::new(service, authenticator))
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
            deletions,
            sweep_interval: settings.deletion.sweep_interval(),
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

    /// The current signing key: its id and raw public key.
    #[must_use]
    pub fn signing_key(&self) -> (String, [u8; 32]) {
        let signer = self.deletions.signer();
        (signer.key_id().to_owned(), signer.public_key())
    }

    /// Serves until `shutdown` is cancelled, with the outbox relay, the receipt consumer and the
    /// sweeper running beside the servers; a fatal consumer error fails readiness and is returned
    /// at the end.
    ///
    /// # Errors
    ///
    /// [`AppError::Server`] or [`AppError::Consumer`].
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        let sweeper = tokio::spawn(sweeper::run(
            self.deletions.clone(),
            self.sweep_interval,
            shutdown.clone(),
        ));
        let consumer_ready = self.consumer_ready;
        let consumer_run = self.consumer.run(shutdown.clone());
        let consumer = tokio::spawn(async move {
            let result = consumer_run.await;
            if let Err(error) = &result {
                consumer_ready.set_not_ready();
                tracing::error!(error = %error, "The receipt consumer stopped; the service is not ready.");
            }
            result
        });
        let served = trustmesh_runtime::serve(self.grpc, self.admin, shutdown.clone()).await;
        shutdown.cancel();
        self.background.cancel();
        for (task, name) in [(relay, "outbox relay"), (sweeper, "sweeper")] {
            if let Err(error) = task.await {
                tracing::warn!(error = %error, task = name, "A background task ended abnormally.");
            }
        }
        let consumed = match consumer.await {
            Ok(result) => result.map_err(AppError::from),
            Err(error) => {
                tracing::warn!(error = %error, "The receipt consumer task ended abnormally.");
                Ok(())
            }
        };
        served?;
        consumed
    }
}
