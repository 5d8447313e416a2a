//! The `trustmesh-tenancy` binary: telemetry, settings, build, run.

use std::process::ExitCode;

use trustmesh_tenancy::{Application, Settings};

fn main() -> ExitCode {
    trustmesh_runtime::run_main("tenancy", |settings: Settings, shutdown| async move {
        let _telemetry = trustmesh_telemetry::init("tenancy", &settings.telemetry)?;
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}
