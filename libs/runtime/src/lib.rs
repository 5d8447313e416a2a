//! The scaffold every trustmesh service binary stands on, so none repeats it.
//!
//! # Layout
//!
//! - [`settings`]: layered settings (defaults < TOML/YAML file < `TRUSTMESH_<SECTION>__<KEY>`),
//!   validation, exit code 64 for a bad configuration.
//! - [`entry`]: [`run_main`], the whole of a service's `main.rs`.
//! - [`shutdown`]: [`shutdown_signal`] (SIGTERM/SIGINT) and the grace period.
//! - [`readiness`]: the [`Readiness`] latch, released once every dependency is ready, lost for good
//!   when shutdown starts.
//! - [`grpc`]: [`GrpcServer`]: the caller's services plus `grpc.health.v1` and reflection, over TLS 1.3
//!   (or plaintext on loopback in development), drained on shutdown.
//! - [`observe`]: the per-RPC span and status/duration record every gRPC call gets.
//! - [`admin`]: [`AdminServer`]: `/livez`, `/readyz`, `/metrics`.
//! - [`host`]: [`Component`] (a service's gRPC services and background tasks) and [`Host`], which
//!   serves components on one gRPC and one admin port: one in a service binary, all seven in
//!   `trustmesh standalone`.
//! - [`tls`]: TLS 1.3-only rustls configurations from PEM files.
//! - [`client`]: [`connect_channel`] to another service.
//!
//! A service's `Application::build` (`trustmesh_service_kit::Application`) registers its
//! dependencies on a [`Readiness`] and hosts its [`Component`] on a [`Host`], whose
//! `run_until_stopped` serves a [`GrpcServer`] and an [`AdminServer`] through [`serve`].
//!
//! # Example
//!
//! The servers used directly, without [`Host`], in a binary's `lib.rs` and `main.rs`:
//!
//! ```no_run
//! use serde::Deserialize;
//! use tokio_util::sync::CancellationToken;
//! use trustmesh_runtime::{
//!     AdminServer, AdminSettings, GrpcServer, GrpcSettings, InvalidSetting, Readiness, ServerError,
//!     ShutdownSettings, Validate,
//! };
//!
//! /// Every field has a default, so a file or `TRUSTMESH_<SECTION>__<KEY>` names only what differs.
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Settings {
//!     grpc: GrpcSettings,
//!     admin: AdminSettings,
//!     shutdown: ShutdownSettings,
//! }
//!
//! impl Validate for Settings {
//!     fn validate(&self) -> Result<(), InvalidSetting> {
//!         self.grpc.validate().map_err(|error| error.within("grpc"))?;
//!         self.shutdown.validate().map_err(|error| error.within("shutdown"))
//!     }
//! }
//!
//! struct Application {
//!     grpc: GrpcServer,
//!     admin: AdminServer,
//! }
//!
//! impl Application {
//!     async fn build(settings: Settings) -> Result<Self, ServerError> {
//!         let readiness = Readiness::new();
//!         let nats = readiness.register("nats");
//!         // ... connect to NATS, ensure streams (in real code, mark ready once done) ...
//!         nats.set_ready();
//!         let grpc = GrpcServer::builder(settings.grpc, readiness.clone())
//!             // .add_service(DatasetServiceServer::new(handler))
//!             // .on_rpc(move |method, code, elapsed| {
//!             //     metrics.rpc().record(method, trustmesh_runtime::code_name(code), elapsed)
//!             // })
//!             // .span_parent(|span, headers| trustmesh_telemetry::continue_trace(span, headers))
//!             .file_descriptor_set(trustmesh_proto::FILE_DESCRIPTOR_SET)
//!             .grace_period(settings.shutdown.grace_period())
//!             .build()
//!             .await?;
//!         let admin = AdminServer::bind(&settings.admin, readiness, String::new).await?;
//!         Ok(Self { grpc, admin })
//!     }
//!
//!     async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ServerError> {
//!         trustmesh_runtime::serve(self.grpc, self.admin, shutdown).await
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     trustmesh_runtime::run_main("ingest", |settings: Settings, shutdown| async move {
//!         // let _telemetry = trustmesh_telemetry::init("ingest", &settings.telemetry)?;
//!         Application::build(settings).await?.run_until_stopped(shutdown).await
//!     })
//! }
//! ```

pub mod admin;
pub mod client;
pub mod entry;
mod error;
pub mod grpc;
pub mod host;
pub mod observe;
pub mod readiness;
pub mod settings;
pub mod shutdown;
pub mod tls;
mod tls_incoming;

use tokio_util::sync::CancellationToken;

pub use admin::{AdminServer, AdminSettings, METRICS_CONTENT_TYPE, MetricsRenderer};
pub use client::{connect_channel, lazy_channel};
pub use entry::{cause_chain, run_main, run_main_with};
pub use error::{ConnectError, ServerError};
pub use grpc::{GrpcServer, GrpcServerBuilder, GrpcSettings};
pub use host::{Component, Host, HostError, TaskError, instrumented};
pub use observe::{RpcRecorder, SpanParent, UNKNOWN_METHOD, code_name};
pub use readiness::{Dependency, Readiness, ReadinessStatus, ReadinessWatch};
/// Secret settings values (`SecretString`), re-exported with serde support so services name one version.
pub use secrecy::{self, ExposeSecret, SecretString};
pub use settings::{
    EXIT_CODE_CONFIG_ERROR, InvalidSetting, SettingsError, SettingsSource, Validate,
    exit_code_for_config_error,
};
pub use shutdown::{ShutdownSettings, cancel_on, drain_within, shutdown_signal};
pub use tls::{ClientTls, ServerTls, TlsError, TransportMode, install_default_crypto_provider};

/// Runs `grpc` and `admin` until `shutdown` is cancelled, in the order that keeps probes honest:
/// readiness is lost first, the gRPC server drains within its grace period, and only then does the
/// admin server stop (so `/readyz` answers 503 during the drain). If either server fails, the other
/// is stopped too.
///
/// # Errors
///
/// The first [`ServerError`] either server returned.
pub async fn serve(
    grpc: GrpcServer,
    admin: AdminServer,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let grpc_stop = shutdown.child_token();
    let admin_stop = CancellationToken::new();
    let grpc_run = grpc.run_until_stopped(grpc_stop.clone());
    let admin_run = admin.run_until_stopped(admin_stop.clone());
    tokio::pin!(grpc_run, admin_run);
    tokio::select! {
        grpc_result = &mut grpc_run => {
            admin_stop.cancel();
            let admin_result = admin_run.await;
            grpc_result.and(admin_result)
        }
        admin_result = &mut admin_run => {
            tracing::warn!("The admin server stopped before shutdown; stopping the gRPC server.");
            grpc_stop.cancel();
            let grpc_result = grpc_run.await;
            admin_result.and(grpc_result)
        }
    }
}
