//! The `trustmesh-analysis` binary: telemetry, settings, build, run.

use std::process::ExitCode;

use trustmesh_analysis::{Application, Settings};

fn main() -> ExitCode {
    trustmesh_runtime::run_main("analysis", |settings: Settings, shutdown| async move {
        let _telemetry = trustmesh_telemetry::init("analysis", &settings.telemetry)?;
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}
