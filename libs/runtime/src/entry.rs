//! `main.rs` in one call: load settings (exit 64 on a bad configuration), start the Tokio runtime,
//! turn SIGTERM/SIGINT into a cancelled token, run the service, and map its outcome to an exit code.

use std::error::Error;
use std::future::Future;
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::settings::{SettingsSource, Validate, exit_code_for_config_error};
use crate::shutdown::{cancel_on, shutdown_signal};

/// Runs service `service` with settings from the process environment (and `TRUSTMESH_CONFIG`):
/// `app(settings, shutdown)` should init telemetry, build the application and run it until
/// `shutdown` is cancelled (on SIGTERM or SIGINT).
///
/// Returns exit code 64 for a bad configuration (the message goes to stderr), 1 when `app` fails
/// (the cause chain is logged), and 0 otherwise.
pub fn run_main<S, F, Fut, E>(service: &str, app: F) -> ExitCode
where
    S: DeserializeOwned + Validate,
    F: FnOnce(S, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    run_main_with(service, &SettingsSource::from_process_env(), app)
}

/// [`run_main`] with an explicit settings source.
pub fn run_main_with<S, F, Fut, E>(service: &str, source: &SettingsSource, app: F) -> ExitCode
where
    S: DeserializeOwned + Validate,
    F: FnOnce(S, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    crate::tls::install_default_crypto_provider();
    let settings: S = match source.load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{service}: bad configuration: {}", cause_chain(&error));
            return ExitCode::from(exit_code_for_config_error());
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{service}: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on(shutdown_signal(), shutdown.clone());
        app(settings, shutdown).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error: Box<dyn Error + Send + Sync> = error.into();
            let chain = cause_chain(error.as_ref());
            tracing::error!(error.cause_chain = %chain, "{service} stopped on an error.");
            eprintln!("{service}: {chain}");
            ExitCode::FAILURE
        }
    }
}

/// Returns `error` and its sources as one line: `outer: inner: root`.
pub fn cause_chain(error: &(dyn Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}
