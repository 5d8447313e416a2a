//! [`Application`]: connects, migrates schema `tenancy`, opens `tm_auth` (reconciling it with the
//! keys in Postgres), ensures the `tenancy-deletion` consumer, loads the key cache, binds the
//! listeners; then serves gRPC and admin, relays the outbox and runs the deletion consumer until
//! shutdown.

use std::net::SocketAddr;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{AuthBucket, Authenticator, CacheOptions, KeyCache, KeyId, KeyStoreError};
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, ensure_consumer,
    ensure_schema, ensure_streams,
};
use trustmesh_events::{AUTH_KV_BUCKET, Service, TENANCY_DELETION};
use trustmesh_proto::v1::tenancy_service_server::TenancyServiceServer;
use trustmesh_runtime::{
    AdminServer, Dependency, ExposeSecret, GrpcServer, InvalidSetting, Readiness, code_name,
};
use trustmesh_store::{PgSettings, SchemaName};
use trustmesh_telemetry::Metrics;

use crate::deletion::DeletionHandler;
use crate::grpc::TenancyHandler;
use crate::repo;
use crate::settings::Settings;

/// The tenancy service's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema of this service.
pub const SCHEMA: &str = "tenancy";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is unacceptable.
    #[error(transparent)]
    Settings(#[from] InvalidSetting),
    /// Postgres could not be reached or migrated.
    #[error("postgres setup failed")]
    Postgres(#[from] trustmesh_store::PgError),
    /// A startup query failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The bus tables could not be created.
    #[error("bus schema setup failed")]
    BusSchema(#[from] trustmesh_bus::SchemaError),
    /// NATS could not be reached.
    #[error("cannot connect to NATS")]
    Nats(#[from] async_nats::ConnectError),
    /// Streams could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// `tm_auth` could not be opened, reconciled or loaded.
    #[error("key bucket setup failed")]
    KeyStore(#[from] KeyStoreError),
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
    /// Connects to Postgres (migrating schema `tenancy`) and NATS (ensuring streams and `tm_auth`),
    /// republishes to `tm_auth` any key it lacks or that it still shows active though revoked, loads
    /// the key cache and binds the gRPC and admin listeners.
    ///
    /// # Errors
    ///
    /// [`AppError`] naming what could not be set up.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let operator = settings.auth.operator()?;
        let readiness = Readiness::new();
        let postgres_ready = readiness.register("postgres");
        let nats_ready = readiness.register("nats");
        let keys_ready = readiness.register("tm_auth key cache");
        let consumer_ready = readiness.register("tenancy-deletion consumer");

        let schema = SchemaName::new(SCHEMA)?;
        let mut pg = PgSettings::new(settings.database.url.expose_secret(), schema.clone());
        pg.max_connections = settings.database.max_connections;
        let pool = trustmesh_store::connect(&pg).await?;
        trustmesh_store::migrate(&pool, &schema, &[&MIGRATOR]).await?;
        let bus_schema = trustmesh_bus::SchemaName::new(SCHEMA)?;
        ensure_schema(&pool, &bus_schema).await?;
        postgres_ready.set_ready();

        let client = async_nats::ConnectOptions::new()
            .name("trustmesh-tenancy")
            .connect(settings.nats.url.as_str())
            .await?;
        let jetstream = async_nats::jetstream::new(client);
        ensure_streams(&jetstream).await?;
        let pull = ensure_consumer(&jetstream, &TENANCY_DELETION).await?;
        let publisher = Publisher::new(jetstream.clone());
        nats_ready.set_ready();

        let options = CacheOptions {
            max_staleness: std::time::Duration::from_secs(
                settings.auth.max_key_cache_staleness_secs,
            ),
            ..CacheOptions::default()
        };
        let bucket = AuthBucket::open(&jetstream, options.replicas).await?;
        reconcile(&pool, &bucket).await?;
        let kv = jetstream
            .get_key_value(AUTH_KV_BUCKET)
            .await
            .map_err(|e| KeyStoreError::Bucket(e.into()))?;
        let background = CancellationToken::new();
        let cache = KeyCache::start(&jetstream, options, background.clone()).await?;
        keys_ready.set_ready();

        let outbox = Outbox::new(&bus_schema);
        let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
        let deletion = DeletionHandler {
            pool: pool.clone(),
            bucket: bucket.clone(),
            kv,
            processed: ProcessedMessages::new(
                pool.clone(),
                &bus_schema,
                TENANCY_DELETION.durable_name,
            ),
            outbox: outbox.clone(),
        };
        let consumer = ConsumerRunner::new(pull, &TENANCY_DELETION, publisher.clone(), deletion);
        consumer_ready.set_ready();
        let handler = TenancyHandler::new(
            pool,
            bucket,
            outbox,
            publisher,
            time::Duration::days(i64::from(settings.auth.max_key_lifetime_days)),
        );
        let authenticator = Authenticator::new(cache).with_operator(operator);

        let metrics = Metrics::new(Service::Tenancy.as_str());
        let rpc_metrics = metrics.clone();
        let grpc = GrpcServer::builder(settings.grpc, readiness.clone())
            .add_service(InterceptedService::new(
                TenancyServiceServer::new(handler),
                authenticator,
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

/// Makes `tm_auth` agree with Postgres, the source of truth, without ever re-activating a key:
/// keys missing from the bucket are written, and keys revoked in Postgres but active in the bucket
/// are written revoked.
async fn reconcile(pool: &PgPool, bucket: &AuthBucket) -> Result<(), AppError> {
    let mut written = 0_usize;
    for row in repo::all_keys(pool).await? {
        let (Some(record), Ok(key_id)) = (row.to_record(), KeyId::parse(&row.key_id)) else {
            tracing::warn!(key.id = %row.key_id, "Skipping a corrupt API-key row.");
            continue;
        };
        let stored = bucket.get(&key_id).await?;
        let stale = match &stored {
            None => true,
            Some(stored) => record.revoked && !stored.revoked,
        };
        if stale {
            bucket.put(&record).await?;
            written += 1;
        }
    }
    if written > 0 {
        tracing::info!(
            keys = written,
            "Republished API keys missing or stale in tm_auth."
        );
    }
    Ok(())
}
