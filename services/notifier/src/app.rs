//! [`Application`]: connects, migrates, ensures streams and the notifier's four consumers, binds the
//! listeners; then serves health and admin, relays the outbox and runs the consumers until shutdown.

use std::net::SocketAddr;

use sqlx::migrate::Migrator;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, RunnerError,
    ensure_consumer, ensure_schema, ensure_streams,
};
use trustmesh_events::{
    NOTIFIER_DATASET, NOTIFIER_DELETION, NOTIFIER_JOB, NOTIFIER_SCORES, Service,
};
use trustmesh_runtime::{AdminServer, Dependency, ExposeSecret, GrpcServer, Readiness};
use trustmesh_store::{PgSettings, SchemaName};
use trustmesh_telemetry::Metrics;

use crate::deliveries::DeliveryLog;
use crate::deliveries::consumer::NotifierHandler;
use crate::settings::Settings;

/// The notifier's own migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema of this service.
pub const SCHEMA: &str = "notifier";

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
    /// Streams or a consumer could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
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
    consumers: Vec<ConsumerRunner<NotifierHandler>>,
    consumers_ready: Dependency,
    log: DeliveryLog,
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
    /// Connects to Postgres (migrating schema `notifier`) and NATS (ensuring streams and the
    /// `notifier-job`, `notifier-scores`, `notifier-dataset` and `notifier-deletion` consumers), and
    /// binds the gRPC (health, reflection) and admin listeners.
    ///
    /// # Errors
    ///
    /// [`AppError`] naming what could not be set up.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let readiness = Readiness::new();
        let postgres_ready = readiness.register("postgres");
        let nats_ready = readiness.register("nats");
        let consumers_ready = readiness.register("notifier consumers");

        let schema = SchemaName::new(SCHEMA)?;
        let mut pg = PgSettings::new(settings.database.url.expose_secret(), schema.clone());
        pg.max_connections = settings.database.max_connections;
        let pool = trustmesh_store::connect(&pg).await?;
        trustmesh_store::migrate(&pool, &schema, &[&MIGRATOR]).await?;
        let bus_schema = trustmesh_bus::SchemaName::new(SCHEMA)?;
        ensure_schema(&pool, &bus_schema).await?;
        postgres_ready.set_ready();

        let client = async_nats::ConnectOptions::new()
            .name("trustmesh-notifier")
            .connect(settings.nats.url.as_str())
            .await?;
        let jetstream = async_nats::jetstream::new(client);
        ensure_streams(&jetstream).await?;
        let publisher = Publisher::new(jetstream.clone());
        let outbox = Outbox::new(&bus_schema);
        let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
        let log = DeliveryLog::new(pool.clone());
        let handler = NotifierHandler {
            log: log.clone(),
            outbox,
            deletions: ProcessedMessages::new(pool, &bus_schema, NOTIFIER_DELETION.durable_name),
        };
        let mut consumers = Vec::new();
        for spec in [
            &NOTIFIER_JOB,
            &NOTIFIER_SCORES,
            &NOTIFIER_DATASET,
            &NOTIFIER_DELETION,
        ] {
            let pull = ensure_consumer(&jetstream, spec).await?;
            consumers.push(ConsumerRunner::new(
                pull,
                spec,
                publisher.clone(),
                handler.clone(),
            ));
        }
        nats_ready.set_ready();
        consumers_ready.set_ready();

        let metrics = Metrics::new(Service::Notifier.as_str());
        let grpc = GrpcServer::builder(settings.grpc, readiness.clone())
            .file_descriptor_set(trustmesh_proto::FILE_DESCRIPTOR_SET)
            .grace_period(settings.shutdown.grace_period())
            .build()
            .await?;
        let admin = AdminServer::bind(&settings.admin, readiness, move || metrics.render()).await?;
        Ok(Self {
            grpc,
            admin,
            relay,
            consumers,
            consumers_ready,
            log,
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

    /// The delivery log.
    #[must_use]
    pub fn delivery_log(&self) -> DeliveryLog {
        self.log.clone()
    }

    /// Serves until `shutdown` is cancelled, with the outbox relay and the consumers running beside
    /// the servers; a fatal consumer error fails readiness and is returned at the end.
    ///
    /// # Errors
    ///
    /// [`AppError::Server`] or [`AppError::Consumer`].
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        let mut consumers = JoinSet::new();
        for consumer in self.consumers {
            let ready = self.consumers_ready.clone();
            let run = consumer.run(shutdown.clone());
            consumers.spawn(async move {
                let result = run.await;
                if let Err(error) = &result {
                    ready.set_not_ready();
                    tracing::error!(error = %error, "A notifier consumer stopped; the service is not ready.");
                }
                result
            });
        }
        let served = trustmesh_runtime::serve(self.grpc, self.admin, shutdown.clone()).await;
        shutdown.cancel();
        if let Err(error) = relay.await {
            tracing::warn!(error = %error, "The outbox relay task ended abnormally.");
        }
        let mut consumed = Ok(());
        while let Some(done) = consumers.join_next().await {
            match done {
                Ok(Err(error)) if consumed.is_ok() => consumed = Err(AppError::from(error)),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "A consumer task ended abnormally.");
                }
            }
        }
        served?;
        consumed
    }
}
