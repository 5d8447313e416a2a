//! [`component`]: connects, migrates, ensures streams and the notifier's four consumers; the outbox
//! relay and the consumers (no gRPC service of its own). [`Application`] hosts it on its own gRPC
//! (health, reflection) and admin listeners until shutdown.

use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, ensure_consumer,
};
use trustmesh_events::{NOTIFIER_DATASET, NOTIFIER_DELETION, NOTIFIER_JOB, NOTIFIER_SCORES};
use trustmesh_runtime::{Component, Host, Readiness};
use trustmesh_service_kit::{Foundations, StartError};

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
    /// Postgres or NATS could not be set up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A consumer could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// A server failed.
    #[error("server failed")]
    Server(#[from] trustmesh_runtime::ServerError),
    /// A server or a background task failed while running.
    #[error("the service stopped on an error")]
    Host(#[from] trustmesh_runtime::HostError),
}

/// The built service, ready to run: its [`component`] on its own gRPC and admin listeners
/// (addresses through [`Host`]), and its delivery log.
#[derive(Debug)]
pub struct Application {
    host: Host,
    log: DeliveryLog,
}

impl Application {
    /// Builds the service's [`component`] and binds the gRPC and admin listeners.
    ///
    /// # Errors
    ///
    /// [`AppError`] naming what could not be set up.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let readiness = Readiness::new();
        let (component, log) = parts(&settings, &readiness).await?;
        let (grpc, admin, shutdown) = (settings.grpc, settings.admin, settings.shutdown);
        Ok(Self {
            host: Host::service(component, grpc, &admin, &shutdown, readiness).await?,
            log,
        })
    }

    /// The delivery log.
    #[must_use]
    pub fn delivery_log(&self) -> DeliveryLog {
        self.log.clone()
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

/// Connects to Postgres (migrating schema `notifier`) and NATS (ensuring streams and the
/// `notifier-job`, `notifier-scores`, `notifier-dataset` and `notifier-deletion` consumers): the
/// outbox relay and the consumers, registered on `readiness`. No gRPC service of its own.
///
/// # Errors
///
/// [`AppError`] naming what could not be set up.
pub async fn component(settings: &Settings, readiness: &Readiness) -> Result<Component, AppError> {
    Ok(parts(settings, readiness).await?.0)
}

/// [`component`] and the delivery log its consumers write.
async fn parts(
    settings: &Settings,
    readiness: &Readiness,
) -> Result<(Component, DeliveryLog), AppError> {
    // No key cache, so no background work: the token is not used.
    let Foundations {
        pool,
        bus_schema,
        jetstream,
        ..
    } = trustmesh_service_kit::connect(
        "notifier",
        SCHEMA,
        &settings.database,
        &settings.nats,
        &[&MIGRATOR],
        readiness,
    )
    .await?;
    let consumers_ready = readiness.register("notifier consumers");
    let publisher = Publisher::new(jetstream.clone());
    let outbox = Outbox::new(&bus_schema);
    let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
    let log = DeliveryLog::new(pool.clone());
    let handler = NotifierHandler {
        log: log.clone(),
        outbox,
        deletions: ProcessedMessages::new(pool, &bus_schema, NOTIFIER_DELETION.durable_name),
    };
    let mut component =
        Component::new(SCHEMA).infallible_task("outbox relay", move |shutdown| relay.run(shutdown));
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
    Ok((component, log))
}
