//! The admin HTTP server: `/livez`, `/readyz` and `/metrics`.
//!
//! It serves no customer data and no RPC, so it is plain HTTP: probes and Prometheus scrape it on the
//! pod network. Keep it off public ingress.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::ServerError;
use crate::readiness::Readiness;
use crate::settings::{InvalidSetting, Validate};

/// `Content-Type` of `/metrics` (OpenMetrics text, what `prometheus-client` renders).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the metrics exposition served at `/metrics` (e.g. `move || metrics.render()`).
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// The admin listener's settings (the `admin` section of a service's settings).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:9464`.
    pub bind: SocketAddr,
}

impl AdminSettings {
    /// A free port on loopback (tests, examples).
    #[must_use]
    pub fn any_loopback_port() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

impl Validate for AdminSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        Ok(())
    }
}

/// A bound admin server, ready to [`run_until_stopped`](Self::run_until_stopped).
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: MetricsRenderer,
}

impl AdminServer {
    /// Binds the admin listener: `/readyz` follows `readiness`, `/metrics` serves what `metrics` renders.
    ///
    /// # Errors
    ///
    /// [`ServerError::Bind`] when the address cannot be bound.
    pub async fn bind(
        settings: &AdminSettings,
        readiness: Readiness,
        metrics: impl Fn() -> String + Send + Sync + 'static,
    ) -> Result<Self, ServerError> {
        let bind_error = |source| ServerError::Bind {
            addr: settings.bind,
            source,
        };
        let listener = TcpListener::bind(settings.bind).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let state = AdminState {
            readiness,
            metrics: Arc::new(metrics),
        };
        let router = Router::new()
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .route("/metrics", get(render_metrics))
            .with_state(state);
        tracing::info!(server.addr = %local_addr, "Admin HTTP server listening.");
        Ok(Self {
            listener,
            local_addr,
            router,
        })
    }

    /// Returns the address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `stop` is cancelled. Stop it *after* the gRPC server drained, so `/readyz`
    /// answers 503 during the drain ([`crate::serve`] does this).
    ///
    /// # Errors
    ///
    /// [`ServerError::Admin`] when serving fails.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> Result<(), ServerError> {
        let local_addr = self.local_addr;
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(ServerError::Admin)?;
        tracing::info!(server.addr = %local_addr, "Admin HTTP server stopped.");
        Ok(())
    }
}

async fn livez() -> &'static str {
    "alive\n"
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    let status = state.readiness.status();
    let code = if status.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{status}\n"))
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        (state.metrics)(),
    )
}
