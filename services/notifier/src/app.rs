//! [`component`]: connects, migrates, ensures streams and the notifier's four consumers, loads the
//! key cache; `WebhookService` (mesh credential only), the dispatcher, the outbox relay and the
//! consumers. [`Application`] hosts it on its own gRPC and admin listeners until shutdown.

use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions, ServiceCredential};
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, ensure_consumer,
};
use trustmesh_crypto::{Keyring, LocalKeyFile};
use trustmesh_events::{
    NOTIFIER_DATASET, NOTIFIER_DELETION, NOTIFIER_JOB, NOTIFIER_SCORES, Service,
};
use trustmesh_proto::v1::webhook_service_server::WebhookServiceServer;
use trustmesh_runtime::{Component, Host, Readiness};
use trustmesh_service_kit::{Foundations, StartError};
use trustmesh_store::PgDekStore;
use trustmesh_webhooks::{EgressPolicy, WebhookClient};

use crate::deliveries::consumer::NotifierHandler;
use crate::settings::Settings;
use crate::webhooks::Deliveries;
use crate::webhooks::dispatcher::{Dispatcher, RetrySchedule};
use crate::webhooks::endpoints::Endpoints;
use crate::webhooks::grpc::WebhookHandler;

/// How long a replica holds a delivery it is attempting, beyond the attempt's timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The notifier's own migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema of this service.
pub const SCHEMA: &str = "notifier";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Postgres or NATS could not be set up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A consumer could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// The key file could not be opened or created.
    #[error("key setup failed")]
    Keys(#[from] trustmesh_crypto::Error),
    /// `mesh.service_credential` is too weak.
    #[error("`mesh.service_credential` is not usable")]
    ServiceCredential(#[from] trustmesh_auth::WeakCredential),
    /// The webhook HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] trustmesh_webhooks::ClientError),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// A server or a background task failed while running.
    #[error("the service stopped on an error")]
    Host(#[from] trustmesh_runtime::HostError),
}

/// The built service, ready to run: its [`component`] on its own gRPC and admin listeners
/// (addresses through [`Host`]), and its deliveries.
#[derive(Debug)]
pub struct Application {
    host: Host,
    deliveries: Deliveries,
}

impl Application {
    /// Builds the service's [`component`] and binds the gRPC and admin listeners.
    ///
    /// # Errors
    ///
    /// [`AppError`] naming what could not be set up.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let readiness = Readiness::new();
        let (component, deliveries) = parts(&settings, &readiness).await?;
        let (grpc, admin, shutdown) = (settings.grpc, settings.admin, settings.shutdown);
        Ok(Self {
            host: Host::service(component, grpc, &admin, &shutdown, readiness).await?,
            deliveries,
        })
    }

    /// The deliveries.
    #[must_use]
    pub fn deliveries(&self) -> Deliveries {
        self.deliveries.clone()
    }

    /// Serves until `shutdown` is cancelled, with the background tasks beside the servers.
    ///
    /// # Errors
    ///
    /// [`AppError::Host`] when a server or a background task failed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        Ok(self.host.run_until_stopped(shutdown).await?)
    }
}

impl std::ops::Deref for Application {
    type Target = Host;

    fn deref(&self) -> &Host {
        &self.host
    }
}

/// Connects to Postgres (migrating schema `notifier`) and NATS (ensuring streams, the
/// `notifier-job`, `notifier-scores`, `notifier-dataset` and `notifier-deletion` consumers and the
/// key cache): `WebhookService`, the dispatcher, the outbox relay and the consumers, registered on
/// `readiness`.
///
/// # Errors
///
/// [`AppError`] naming what could not be set up.
pub async fn component(settings: &Settings, readiness: &Readiness) -> Result<Component, AppError> {
    Ok(parts(settings, readiness).await?.0)
}

/// [`component`] and the deliveries its consumers queue.
async fn parts(
    settings: &Settings,
    readiness: &Readiness,
) -> Result<(Component, Deliveries), AppError> {
    let service = ServiceCredential::optional(settings.mesh.service_credential.as_ref())?;
    let policy = EgressPolicy::public_https()
        .allowing(settings.webhooks.allow_destinations.iter().copied())
        .allowing_http(settings.webhooks.allow_http);
    let client = WebhookClient::new(policy.clone(), settings.webhooks.timeout())?;
    let foundations = trustmesh_service_kit::connect(
        "notifier",
        SCHEMA,
        &settings.database,
        &settings.nats,
        &[&trustmesh_store::MIGRATOR, &MIGRATOR],
        readiness,
    )
    .await?;
    let cache = foundations
        .start_key_cache(CacheOptions::default(), readiness)
        .await?;
    let consumers_ready = readiness.register("notifier consumers");
    let Foundations {
        pool,
        bus_schema,
        jetstream,
        background,
        stop_background,
        ..
    } = foundations;
    let publisher = Publisher::new(jetstream.clone());
    let outbox = Outbox::new(&bus_schema);
    let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
    let keyring = Arc::new(Keyring::new(
        Service::Notifier.as_str(),
        Arc::new(LocalKeyFile::open_or_create(&settings.keys.kek_file)?),
        Arc::new(PgDekStore::new(pool.clone())),
    ));
    let endpoints = Endpoints::new(pool.clone(), keyring);
    let deliveries = Deliveries::new(pool.clone());
    let wake = Arc::new(Notify::new());
    let handler = NotifierHandler {
        endpoints: endpoints.clone(),
        wake: Arc::clone(&wake),
        outbox,
        deletions: ProcessedMessages::new(pool, &bus_schema, NOTIFIER_DELETION.durable_name),
    };
    let dispatcher = Dispatcher {
        deliveries: deliveries.clone(),
        endpoints: endpoints.clone(),
        client,
        schedule: RetrySchedule::new(&settings.webhooks),
        wake,
        poll: Duration::from_millis(settings.webhooks.poll_interval_ms),
        lease: settings.webhooks.timeout() + LEASE_MARGIN,
    };
    let webhooks = WebhookHandler {
        endpoints,
        deliveries: deliveries.clone(),
        policy,
        publisher: publisher.clone(),
    };
    let authenticator = Authenticator::new(cache).with_service(service);
    let mut component = Component::new(SCHEMA)
        .service(move |grpc| {
            grpc.add_service(InterceptedService::new(
                WebhookServiceServer::new(webhooks),
                authenticator,
            ))
        })
        .infallible_task("outbox relay", move |shutdown| relay.run(shutdown))
        .infallible_task("webhook dispatcher", move |shutdown| {
            dispatcher.run(shutdown)
        });
    for (spec, name) in [
        (&NOTIFIER_JOB, "notifier-job consumer"),
        (&NOTIFIER_SCORES, "notifier-scores consumer"),
        (&NOTIFIER_DATASET, "notifier-dataset consumer"),
        (&NOTIFIER_DELETION, "notifier-deletion consumer"),
    ] {
        let pull = ensure_consumer(&jetstream, spec).await?;
        let consumer = ConsumerRunner::new(pull, spec, publisher.clone(), handler.clone());
        component = component.task(name, Some(consumers_ready.clone()), move |shutdown| {
            consumer.run(shutdown)
        });
    }
    consumers_ready.set_ready();
    stop_background.disarm();
    Ok((component.cancel_on_exit(background), deliveries))
}
