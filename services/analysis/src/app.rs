//! [`component`]: connects, migrates, ensures streams and consumers, loads the API-key cache; the
//! `AnalysisService` (every call authenticated), the outbox relay and the consumers.
//! [`Application`] hosts it on its own gRPC and admin listeners until shutdown.

use std::sync::Arc;

use sqlx::migrate::Migrator;
use tonic::service::interceptor::InterceptedService;
use trustmesh_auth::{Authenticator, CacheOptions, ServiceCredential, UsageBucket};
use trustmesh_bus::{
    ConsumerRunner, Outbox, OutboxRelay, ProcessedMessages, Publisher, RunnerOptions,
    ensure_consumer,
};
use trustmesh_crypto::{Keyring, LocalKeyFile};
use trustmesh_events::{
    ANALYSIS_DELETION, ANALYSIS_FOLDS, ANALYSIS_REQUESTED, ANALYSIS_SCORES, ConsumerSpec, Service,
    TenantId,
};
use trustmesh_proto::v1::analysis_service_server::AnalysisServiceServer;
use trustmesh_runtime::{Component, ExposeSecret, Readiness};
use trustmesh_service_kit::{Foundations, StartError};
use trustmesh_service_kit::{ResourceDeletion, Resources};
use trustmesh_store::{EncryptedObjects, ObjectsRepo, PgDekStore};

use crate::fairness::TenantGate;
use crate::ingest::IngestClient;
use crate::jobs::changes::JobChanges;
use crate::jobs::deletion::DeletionHandler;
use crate::jobs::folds::{FoldRepo, FoldWorker};
use crate::jobs::grpc::JobsHandler;
use crate::jobs::repo::{ActiveJobs, JobRepo, UsageReporter};
use crate::jobs::scores::ScoresHandler;
use crate::jobs::worker::AnalysisWorker;
use crate::placement::Placement;
use crate::settings::Settings;

/// The analysis service's own migrations (run next to `trustmesh_store::MIGRATOR`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema (and object-store prefix, keyring service) of this service.
pub const SCHEMA: &str = "analysis";

/// `spec` restricted to `tenant` for a dedicated replica: durable `<durable>-<tenant>` filtered on
/// `tm.<tenant>.…`, so only this tenant's messages reach it.
fn dedicated(spec: &'static ConsumerSpec, tenant: &TenantId) -> &'static ConsumerSpec {
    // NOTE: leaked once per process start (the runner keeps `&'static` specs).
    let durable: &'static str = Box::leak(
        trustmesh_events::permissions::dedicated_durable_name(spec, tenant).into_boxed_str(),
    );
    let filter: &'static str = Box::leak(
        spec.filter_for_tenant(tenant)
            .as_str()
            .to_owned()
            .into_boxed_str(),
    );
    Box::leak(Box::new(ConsumerSpec {
        durable_name: durable,
        filter_subject: filter,
        ..*spec
    }))
}

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

trustmesh_service_kit::application!(Settings, AppError, component);

/// Connects to Postgres (migrating schema `analysis`) and NATS (ensuring streams and the
/// `analysis-requested`, `analysis-folds`, `analysis-scores` and `analysis-deletion` consumers, or
/// with `work.dedicated_tenant` their `<durable>-<tenant>` twins filtered on that tenant's
/// subjects), loads the API-key cache from `tm_auth`, opens the object store and keyring, and
/// prepares the channel to ingest (presenting the mesh's service credential): the
/// `AnalysisService` (every call through `trustmesh_auth::Authenticator`; API keys, and the mesh's
/// service credential on `GetModelOutputs` only, never the operator) plus the outbox relay and the
/// consumers, registered on `readiness`.
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
    // Dedicated profile: this replica's own durables, filtered on its tenant's namespace, for all
    // four consumers: the tenant's jobs, folds, completions and deletions are all in this
    // replica's database and bucket.
    let placement = Placement::of(&settings.work);
    let spec = |shared: &'static ConsumerSpec| match placement.dedicated_tenant() {
        Some(tenant) => dedicated(shared, tenant),
        None => shared,
    };
    let requested_spec = spec(&ANALYSIS_REQUESTED);
    let folds_spec = spec(&ANALYSIS_FOLDS);
    let scores_spec = spec(&ANALYSIS_SCORES);
    let deletion_spec = spec(&ANALYSIS_DELETION);
    let requested_pull = ensure_consumer(&foundations.jetstream, requested_spec).await?;
    let folds_pull = ensure_consumer(&foundations.jetstream, folds_spec).await?;
    let scores_pull = ensure_consumer(&foundations.jetstream, scores_spec).await?;
    let deletion_pull = ensure_consumer(&foundations.jetstream, deletion_spec).await?;
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
    let usage_jetstream = jetstream.clone();
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
            action: "jobs.delete",
        },
        pool: pool.clone(),
        objects: objects.clone(),
        store,
        deks,
        processed: ProcessedMessages::new(pool.clone(), &bus_schema, deletion_spec.durable_name),
        outbox: outbox.clone(),
    };
    let relay = OutboxRelay::new(pool.clone(), &bus_schema, publisher.clone());
    let folds = FoldRepo::new(pool.clone(), outbox.clone());
    let usage = UsageReporter::new(
        pool.clone(),
        UsageBucket::open(&usage_jetstream, settings.nats.stream_replicas)
            .await
            .map_err(StartError::from)?,
        Service::Analysis,
        ActiveJobs,
    );
    let changes = JobChanges::default();
    let changes_pool = pool.clone();
    let repo = JobRepo::new(pool, keyring, outbox, usage.clone());
    let channel = trustmesh_runtime::lazy_channel(&settings.ingest.endpoint, &settings.ingest.tls)?;
    let ingest = IngestClient::new(channel, ingest_bearer);

    let worker = AnalysisWorker {
        repo: repo.clone(),
        objects: objects.clone(),
        ingest: ingest.clone(),
        gate: TenantGate::new(settings.work.training_slots),
        folds,
        fold_fanout_min_rows: settings.work.fold_fanout_min_rows,
        placement: placement.clone(),
    };
    // Admitted deliveries wait in the gate for their tenant's turn (their ack wait extended).
    let admitted = RunnerOptions {
        max_in_flight: settings.work.admitted,
        ..RunnerOptions::default()
    };
    let fold_runner = ConsumerRunner::new(
        folds_pull,
        folds_spec,
        publisher.clone(),
        FoldWorker(worker.clone()),
    )
    .with_options(admitted);
    let requested = ConsumerRunner::new(requested_pull, requested_spec, publisher.clone(), worker)
        .with_options(admitted);
    let scores = ConsumerRunner::new(
        scores_pull,
        scores_spec,
        publisher.clone(),
        ScoresHandler {
            repo: repo.clone(),
            placement: placement.clone(),
        },
    );
    let sweep = usage.clone();
    let deletion = DeletionHandler {
        deletion,
        placement: placement.clone(),
        usage,
    };
    let deletion = ConsumerRunner::new(deletion_pull, deletion_spec, publisher, deletion);
    consumers_ready.set_ready();

    let jobs = AnalysisServiceServer::new(JobsHandler::new(
        repo,
        objects,
        ingest,
        placement,
        changes.clone(),
    ));
    let authenticator = Authenticator::new(cache).with_service(service);
    stop_background.disarm();
    Ok(Component::new(SCHEMA)
        .service(move |grpc| grpc.add_service(InterceptedService::new(jobs, authenticator)))
        .infallible_task("outbox relay", move |shutdown| relay.run(shutdown))
        .infallible_task("usage sweep", move |shutdown| sweep.sweep(shutdown))
        .infallible_task("job-change listener", move |shutdown| {
            changes.run(changes_pool, shutdown)
        })
        .task(
            "analysis-requested consumer",
            Some(consumers_ready.clone()),
            move |shutdown| requested.run(shutdown),
        )
        .task(
            "analysis-folds consumer",
            Some(consumers_ready.clone()),
            move |shutdown| fold_runner.run(shutdown),
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
