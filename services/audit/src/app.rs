//! [`Application`]: connects, migrates schema `audit`, ensures streams and the `audit-events`
//! consumer, loads the key cache, binds the listeners; then serves gRPC and admin and runs the
//! consumer until shutdown.

use std::net::SocketAddr;

use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions, KeyCache, KeyStoreError};
use trustmesh_bus::{ConsumerRunner, Publisher, ensure_consumer, ensure_streams};
use trustmesh_events::{AUDIT_EVENTS, Service};
use trustmesh_proto::v1::audit_service_server::AuditServiceServer;
use trustmesh_runtime::{AdminServer, Dependency, ExposeSecret, GrpcServer, Readiness, code_name};
use trustmesh_store::{PgSettings, SchemaName};
use trustmesh_telemetry::Metrics;

use crate::consumer::AuditWriter;
use crate::grpc::AuditHandler;
use crate::settings::Settings;

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
    /// `tm_auth` could not be loaded.
    #[error("key cache setup failed")]
    KeyStore(#[from] KeyStoreError),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// The consumer stopped on a fatal error.
    #[error("the audit-events consumer stopped")]
    Consumer(#[from] trustmesh_bus::RunnerError),
}

/// The built service, ready to run.
pub struct Application {
    grpc: GrpcServer,
    admin: AdminServer,
    consumer: ConsumerRunner<AuditWriter>,
    consumer_ready: Dependency,
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
    /// Connects to Postgres (migrating schema `audit`) and NATS (ensuring streams and the
    /// `audit-events` consumer), loads the key cache and binds the gRPC and admin listeners.
    ///
    /// # Errors
    ///
    /// [`AppError`] naming what could not be set up.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let readiness = Readiness::new();
        let postgres_ready = readiness.register("postgres");
        let nats_ready = readiness.register("nats");
        let keys_ready = readiness.register("tm_auth key cache");
        let consumer_ready = readiness.register("audit-events consumer");

        let schema = SchemaName::new(SCHEMA)?;
        let mut pg = PgSettings::new(settings.database.url.expose_secret(), schema.clone());
        pg.max_connections = settings.database.max_connections;
        let pool = trustmesh_store::connect(&pg).await?;
        trustmesh_store::migrate(&pool, &schema, &[&MIGRATOR]).await?;
        postgres_ready.set_ready();

        let client = async_nats::ConnectOptions::new()
            .name("trustmesh-audit")
            .connect(settings.nats.url.as_str())
            .await?;
        let jetstream = async_nats::jetstream::new(client);
        ensure_streams(&jetstream).await?;
        let pull = ensure_consumer(&jetstream, &AUDIT_EVENTS).await?;
        nats_ready.set_ready();

        let background = CancellationToken::new();
        let options = CacheOptions {
            max_staleness: std::time::Duration::from_secs(
                settings.auth.max_key_cache_staleness_secs,
            ),
            ..CacheOptions::default()
        };
        let cache = KeyCache::start(&jetstream, options, background.clone()).await?;
        keys_ready.set_ready();

        let consumer = ConsumerRunner::new(
            pull,
            &AUDIT_EVENTS,
            Publisher::new(jetstream),
            AuditWriter { pool: pool.clone() },
        );

        let metrics = Metrics::new(Service::Audit.as_str());
        let rpc_metrics = metrics.clone();
        let grpc = GrpcServer::builder(settings.grpc, readiness.clone())
            .add_service(InterceptedService::new(
                AuditServiceServer::new(AuditHandler::new(pool)),
                Authenticator::new(cache),
            ))
            .file_descriptor_set(trustmesh_proto::FILE_DESCRIPTOR_SET)
            .grace_period(settings.shutdown.grace_period())
            .on_rpc(move |method, code, elapsed| {
                rpc_metrics.rpc().record(method, code_name(code), elapsed);
            })
            .build()
            .await?;
        let admin = AdminServer::bind(&settings.admin, readiness, move || metrics.render()).await?;
        Ok(Self {
            grpc,
            admin,
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

    /// The address the admin server listens on.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` is cancelled, with the consumer running beside the servers; a fatal
    /// consumer error fails readiness and is returned at the end.
    ///
    /// # Errors
    ///
    /// [`AppError::Server`] or [`AppError::Consumer`].
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let consumer_ready = self.consumer_ready;
        consumer_ready.set_ready();
        let consumer_run = self.consumer.run(shutdown.clone());
        let consumer = tokio::spawn(async move {
            let result = consumer_run.await;
            if let Err(error) = &result {
                consumer_ready.set_not_ready();
                tracing::error!(error = %error, "The audit-events consumer stopped; the service is not ready.");
            }
            result
        });
        let served = trustmesh_runtime::serve(self.grpc, self.admin, shutdown.clone()).await;
        shutdown.cancel();
        self.background.cancel();
        let consumed = match consumer.await {
            Ok(result) => result.map_err(AppError::from),
            Err(error) => {
                tracing::warn!(error = %error, "The audit-events consumer task ended abnormally.");
                Ok(())
            }
        };
        served?;
        consumed
    }
}
