//! The `trustmesh-analysis` binary: telemetry, settings, build, run.

use std::process::ExitCode;

use tonic::{Request, Status};
use trustmesh_analysis::{Application, Settings};

/// NOTE: the placeholder for `libs/auth`'s API-key interceptor, not wired into the services yet:
/// every call passes, and the tenant comes from the resource name.
fn no_auth_yet(request: Request<()>) -> Result<Request<()>, Status> {
    Ok(request)
}

fn main() -> ExitCode {
    trustmesh_runtime::run_main("analysis", |settings: Settings, shutdown| async move {
        let _telemetry = trustmesh_telemetry::init("analysis", &settings.telemetry)?;
        tracing::warn!(
            "API-key authentication is not wired yet (libs/auth): every caller is trusted."
        );
        Application::build(settings, no_auth_yet)
            .await?
            .run_until_stopped(shutdown)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}
