//! The process's one shutdown signal (SIGTERM or SIGINT) and the grace period servers drain within.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::settings::{InvalidSetting, Validate};

/// How long shutdown may take (the `shutdown` section of a service's settings).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Seconds in-flight work may take to finish once shutdown starts; then it is cut off.
    /// The default (25) fits Kubernetes' 30 s termination grace period.
    pub grace_period_secs: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            grace_period_secs: 25,
        }
    }
}

impl ShutdownSettings {
    /// Returns the grace period as a [`Duration`].
    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_secs)
    }
}

impl Validate for ShutdownSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.grace_period_secs == 0 {
            return Err(InvalidSetting::new(
                "grace_period_secs",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
}

/// Returns a future that completes when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error.message = %error, "Cannot listen for SIGTERM; only SIGINT stops this process.");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error.message = %error, "Cannot listen for SIGINT; only SIGTERM stops this process.");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("Received SIGTERM; shutting down."),
        () = interrupt => tracing::info!("Received SIGINT; shutting down."),
    }
}

/// Spawns a task that cancels `token` when `signal` completes (e.g. [`shutdown_signal`]).
pub fn cancel_on(signal: impl Future<Output = ()> + Send + 'static, token: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            () = signal => token.cancel(),
            () = token.cancelled() => {}
        }
    });
}

/// Runs `drain` for at most `grace`; returns `Some(output)` if it finished in time, else logs a
/// warning naming `what` and returns `None` (the caller then drops what is left).
pub async fn drain_within<T>(
    what: &str,
    grace: Duration,
    drain: impl Future<Output = T>,
) -> Option<T> {
    if let Ok(output) = tokio::time::timeout(grace, drain).await {
        Some(output)
    } else {
        tracing::warn!(grace_period = ?grace, "The {what} did not drain within the grace period; cutting off what is left.");
        None
    }
}
