//! The `trustmesh-audit` binary: telemetry, settings, build, run.

use std::process::ExitCode;

use trustmesh_audit::{Application, Settings};

fn main() -> ExitCode {
    trustmesh_runtime::run_main("audit", |settings: Settings, shutdown| async move {
        let _telemetry = trustmesh_telemetry::init("audit", &settings.telemetry)?;
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}
