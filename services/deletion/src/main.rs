//! The `trustmesh-deletion` binary: telemetry, settings, build, run.

use std::process::ExitCode;

use trustmesh_deletion::{Application, Settings};

fn main() -> ExitCode {
    trustmesh_runtime::run_main("deletion", |settings: Settings, shutdown| async move {
        let _telemetry = trustmesh_telemetry::init("deletion", &settings.telemetry)?;
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}
