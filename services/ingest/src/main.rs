//! The `trustmesh-ingest` binary: telemetry, settings, build, run.

use std::process::ExitCode;

use trustmesh_ingest::{Application, Settings};

fn main() -> ExitCode {
    trustmesh_runtime::run_main("ingest", |settings: Settings, shutdown| async move {
        let _telemetry = trustmesh_telemetry::init("ingest", &settings.telemetry)?;
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}
