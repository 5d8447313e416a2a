//! The start-up every trustmesh service shares, so a service's `component()` only builds what is
//! its own (consumers, handlers, tasks).
//!
//! [`connect`] opens the service's Postgres pool (migrating its schema and creating the bus tables)
//! and its NATS JetStream context (ensuring the streams), marking the readiness dependencies
//! `postgres` and `nats` ready as it goes. [`Foundations::start_key_cache`] then loads the
//! `tm_auth` key cache (dependency `tm_auth key cache`) on the [`Foundations::background`] token.
//! Every failure is one [`StartError`].
//!
//! [`calls`]: a call's request id and audit entry, for every service's gRPC handlers.
//!
//! [`deletion`]: [`ResourceDeletion`], the `deletion.requested` handler of a service whose tenant
//! data is one table of resources with one encrypted object each (analysis, trust-scoring).
//!
//! [`app`]: [`Application`], a service binary's component on its own gRPC and admin listeners, for
//! any service whose settings are [`ServiceSettings`]; [`application!`] declares both for a service.

pub mod app;
pub mod calls;
pub mod deletion;
pub mod usage;

pub use app::{Application, ServiceSettings};
pub use calls::{AUDIT_RESOURCE_MAX, CallError, call_entry, call_entry_for, request_id, settle};
pub use deletion::{Answer, CheckedDeletion, ResourceDeletion, Resources, log_outcome};
pub use usage::{CountUsage, UsageReporter};

use async_nats::jetstream;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::{CancellationToken, DropGuard};
use trustmesh_auth::{CacheOptions, KeyCache, KeyStoreError};
use trustmesh_bus::schema::roles::current_role_privileges;
use trustmesh_bus::{ensure_schema, ensure_streams_with_replicas};
use trustmesh_runtime::settings::common::{DatabaseSettings, NatsSettings};
use trustmesh_runtime::{ExposeSecret, Readiness};
use trustmesh_store::{PgSettings, SchemaName};

/// Why the shared start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Postgres could not be reached or migrated.
    #[error("postgres setup failed")]
    Postgres(#[from] trustmesh_store::PgError),
    /// The bus tables could not be created.
    #[error("bus schema setup failed")]
    BusSchema(#[from] trustmesh_bus::SchemaError),
    /// NATS could not be reached.
    #[error("cannot connect to NATS")]
    Nats(#[from] async_nats::ConnectError),
    /// The streams could not be ensured.
    #[error("JetStream setup failed")]
    JetStream(#[from] trustmesh_bus::SetupError),
    /// The API-key cache could not open or load `tm_auth`.
    #[error("API-key cache setup failed")]
    KeyStore(#[from] KeyStoreError),
}

/// What [`connect`] opened: the service's pool, bus schema and JetStream context, and the token its
/// background work (the key cache's watch) runs on.
#[derive(Debug)]
pub struct Foundations {
    /// The pool, its `search_path` the service's schema (migrated).
    pub pool: PgPool,
    /// The service's schema as the bus names it (its outbox and processed-messages tables exist).
    pub bus_schema: trustmesh_bus::SchemaName,
    /// JetStream on the service's own NATS connection; every stream exists.
    pub jetstream: jetstream::Context,
    /// Replicas of every stream, and of the `tm_auth` bucket (`nats.stream_replicas`).
    pub stream_replicas: usize,
    /// The service, whose audit log records the auth layer's refusals (`trustmesh_auth::denials`).
    pub service: Option<trustmesh_events::Service>,
    /// Cancels the background work; hand it to `Component::cancel_on_exit`.
    pub background: CancellationToken,
    /// Cancels [`Self::background`] when dropped, so the key cache's watch stops if the service
    /// fails to build after [`connect`]; disarm it once the component is built.
    pub stop_background: DropGuard,
}

/// Connects to Postgres (migrating schema `schema` with `migrators`, in order, and creating the bus
/// tables there) and to NATS as `trustmesh-<service>` (ensuring the streams).
///
/// The database URL should name the service's own role (`tm_<schema>`, provisioned by
/// `trustmesh_bus::schema::roles::provision_service_role` or `infra/postgres/provision-roles.sql`): a
/// superuser or `BYPASSRLS` role is accepted for dev, with a warning, since row-level security does
/// not apply to it.
///
/// Registers the readiness dependencies `postgres` and `nats` on `readiness` and marks each ready
/// once its side is set up. Consumers are the service's own: it ensures them on
/// [`Foundations::jetstream`].
///
/// # Errors
///
/// [`StartError`] naming what could not be set up.
pub async fn connect(
    service: &str,
    schema: &str,
    database: &DatabaseSettings,
    nats: &NatsSettings,
    migrators: &[&Migrator],
    readiness: &Readiness,
) -> Result<Foundations, StartError> {
    let postgres_ready = readiness.register("postgres");
    let nats_ready = readiness.register("nats");

    let store_schema = SchemaName::new(schema)?;
    let mut pg = PgSettings::new(database.url.expose_secret(), store_schema.clone());
    pg.max_connections = database.max_connections;
    let pool = trustmesh_store::connect(&pg).await?;
    trustmesh_store::migrate(&pool, &store_schema, migrators).await?;
    let bus_schema = trustmesh_bus::SchemaName::new(schema)?;
    ensure_schema(&pool, &bus_schema).await?;
    let (superuser, bypass_rls) = current_role_privileges(&pool).await?;
    if superuser || bypass_rls {
        tracing::warn!(
            service,
            superuser,
            bypass_rls,
            "Connected to Postgres as a role that bypasses row-level security: tenant rows are not isolated by the database. Outside dev, connect as the service's own role (tm_<schema>, infra/postgres)."
        );
    }
    postgres_ready.set_ready();

    let client = nats_options(service, nats)
        .connect(nats.url.as_str())
        .await?;
    let jetstream = jetstream::new(client);
    ensure_streams_with_replicas(&jetstream, nats.stream_replicas).await?;
    nats_ready.set_ready();

    let background = CancellationToken::new();
    let stop_background = background.clone().drop_guard();
    Ok(Foundations {
        pool,
        bus_schema,
        jetstream,
        stream_replicas: nats.stream_replicas,
        service: trustmesh_events::Service::from_name(service),
        background,
        stop_background,
    })
}

/// The NATS client options of `service`: named `trustmesh-<service>`, with the service's own inbox
/// prefix (the only inboxes its NATS user may subscribe to, `infra/nats`) and, when configured, its
/// user and password, and TLS 1.3 (`nats.tls`: required once `ca_file` is set, trusting only that
/// CA, presenting the service's client certificate if `cert_file`/`key_file` are set).
#[must_use]
pub fn nats_options(service: &str, nats: &NatsSettings) -> async_nats::ConnectOptions {
    let mut options = async_nats::ConnectOptions::new().name(format!("trustmesh-{service}"));
    if let Some(ca) = &nats.tls.ca_file {
        options = options.require_tls(true);
        match trustmesh_runtime::tls::nats_client_config(&nats.tls) {
            Ok(Some(config)) => options = options.tls_client_config(config),
            Ok(None) => {}
            Err(error) => {
                // The same files through async-nats's own loader: the connection then fails
                // naming the file (and never falls back to plaintext: TLS stays required).
                tracing::warn!(
                    error.message = %error,
                    "Cannot build the TLS 1.3 configuration for NATS."
                );
                options = options.add_root_certificates(ca.clone());
                if let (Some(cert), Some(key)) = (&nats.tls.cert_file, &nats.tls.key_file) {
                    options = options.add_client_certificate(cert.clone(), key.clone());
                }
            }
        }
    }
    if let Some(known) = trustmesh_events::Service::from_name(service) {
        options = options.custom_inbox_prefix(known.nats_inbox_prefix());
    }
    if let Some(user) = &nats.user {
        let password = nats
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned())
            .unwrap_or_default();
        options = options.user_and_password(user.clone(), password);
    }
    options
}

impl Foundations {
    /// Loads the API-key cache from `tm_auth` (creating the bucket if missing), kept current by a
    /// watch that runs until [`Self::background`] is cancelled.
    ///
    /// Registers the readiness dependency `tm_auth key cache` on `readiness` and marks it ready
    /// once the cache is loaded.
    ///
    /// # Errors
    ///
    /// [`StartError::KeyStore`] when `tm_auth` cannot be opened or loaded.
    pub async fn start_key_cache(
        &self,
        options: CacheOptions,
        readiness: &Readiness,
    ) -> Result<KeyCache, StartError> {
        let keys_ready = readiness.register("tm_auth key cache");
        // NOTE: the bucket as replicated as the streams: on a cluster, losing its one node would
        // otherwise refuse every key once the cache goes stale.
        let options = CacheOptions {
            replicas: self.stream_replicas,
            audit_denials_as: options.audit_denials_as.or(self.service),
            ..options
        };
        let cache = KeyCache::start(&self.jetstream, options, self.background.clone()).await?;
        keys_ready.set_ready();
        Ok(cache)
    }
}
