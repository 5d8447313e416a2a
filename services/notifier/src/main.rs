//! The `trustmesh-notifier` binary: telemetry, settings, build, run.

use std::process::ExitCode;

use trustmesh_notifier::{Application, Settings};

fn main() -> ExitCode {
    trustmesh_runtime::run_main("notifier", |settings: Settings, shutdown| async move {
        let _telemetry = trustmesh_telemetry::init("notifier", &settings.telemetry)?;
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}
