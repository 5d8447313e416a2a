//! The `trustmesh-deletion` binary: telemetry, settings, build, run.

use std::process::ExitCode;

use tonic::{Request, Status};
use trustmesh_deletion::{Application, Settings};

/// NOTE: the placeholder for `libs/auth`'s API-key interceptor until the binaries wire it (as in
/// `ingest`): every call passes as anonymous, and the tenant comes from the resource name.
fn no_auth_yet(request: Request<()>) -> Result<Request<()>, Status> {
    Ok(request)
}

fn main() -> ExitCode {
    trustmesh_runtime::run_main("deletion", |settings: Settings, shutdown| async move {
        let _telemetry = trustmesh_telemetry::init("deletion", &settings.telemetry)?;
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
