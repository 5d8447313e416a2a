//! The `trustmesh-trust-scoring` binary: telemetry, settings, build, run.

use std::process::ExitCode;

use trustmesh_trust_scoring::{Application, Settings};

fn main() -> ExitCode {
    trustmesh_runtime::run_main("trust-scoring", |settings: Settings, shutdown| async move {
        let _telemetry = trustmesh_telemetry::init("trust-scoring", &settings.telemetry)?;
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}
