//! Settings: defaults < file < environment, errors that name the key, secrets kept out of Debug,
//! and exit code 64 for a bad configuration.

use std::net::SocketAddr;
use std::process::ExitCode;

use serde::Deserialize;
use trustmesh_runtime::{
    ExposeSecret as _, GrpcSettings, InvalidSetting, SecretString, SettingsError, SettingsSource,
    ShutdownSettings, TransportMode, Validate, run_main_with,
};

/// A service's settings, the way services write them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    grpc: GrpcSettings,
    shutdown: ShutdownSettings,
    database: DatabaseSettings,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DatabaseSettings {
    host: String,
    pool_size: u32,
    password: SecretString,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            pool_size: 5,
            password: SecretString::from(""),
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|error| error.within("grpc"))?;
        self.shutdown
            .validate()
            .map_err(|error| error.within("shutdown"))?;
        if self.database.pool_size == 0 {
            return Err(InvalidSetting::new(
                "database.pool_size",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Env pairs that make the defaults valid (development plaintext on loopback).
fn dev_env() -> Vec<(&'static str, &'static str)> {
    vec![("TRUSTMESH_GRPC__TLS__MODE", "dev_plaintext_loopback")]
}

#[test]
fn defaults_apply_when_nothing_is_set() -> anyhow::Result<()> {
    let settings: Settings = SettingsSource::from_env_vars(dev_env()).load()?;
    assert_eq!(
        settings.grpc.bind,
        SocketAddr::from(([127, 0, 0, 1], 50051))
    );
    assert_eq!(settings.shutdown.grace_period_secs, 25);
    assert_eq!(
        (settings.database.host.as_str(), settings.database.pool_size),
        ("localhost", 5)
    );
    Ok(())
}

#[test]
fn a_file_overrides_defaults_and_the_environment_overrides_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let toml = dir.path().join("settings.toml");
    std::fs::write(
        &toml,
        "[grpc]\nbind = \"127.0.0.1:7000\"\n[grpc.tls]\nmode = \"dev_plaintext_loopback\"\n\
         [database]\nhost = \"db.internal\"\npool_size = 10\n",
    )?;
    let env = [
        ("TRUSTMESH_CONFIG", toml.to_str().unwrap_or_default()),
        ("TRUSTMESH_DATABASE__POOL_SIZE", "20"),
        ("TRUSTMESH_DATABASE__PASSWORD", "007"),
        ("TRUSTMESH_SHUTDOWN__GRACE_PERIOD_SECS", "5"),
        // Not settings: no section separator, or another prefix.
        ("TRUSTMESH_DEV_DIR", "/tmp"),
        ("PATH", "/usr/bin"),
    ];
    let source = SettingsSource::from_env_vars(env);
    assert_eq!(source.file(), Some(toml.as_path()));
    let settings: Settings = source.load()?;
    assert_eq!(
        settings.grpc.bind,
        SocketAddr::from(([127, 0, 0, 1], 7000)),
        "from the file"
    );
    assert_eq!(
        settings.grpc.tls.mode,
        TransportMode::DevPlaintextLoopback,
        "from the file"
    );
    assert_eq!(settings.database.host, "db.internal", "from the file");
    assert_eq!(
        settings.database.pool_size, 20,
        "the environment wins over the file"
    );
    assert_eq!(
        settings.database.password.expose_secret(),
        "007",
        "kept as a string"
    );
    assert_eq!(
        settings.shutdown.grace_period_secs, 5,
        "the environment wins over the default"
    );

    let yaml = dir.path().join("settings.yaml");
    std::fs::write(
        &yaml,
        "grpc:\n  tls:\n    mode: dev_plaintext_loopback\ndatabase:\n  pool_size: 3\n",
    )?;
    let settings: Settings = SettingsSource::new().with_file(&yaml).load()?;
    assert_eq!(settings.database.pool_size, 3);
    Ok(())
}

#[test]
fn a_value_of_the_wrong_type_is_reported_with_its_key() {
    let mut env = dev_env();
    env.push(("TRUSTMESH_DATABASE__POOL_SIZE", "many"));
    let error = SettingsSource::from_env_vars(env).load::<Settings>().err();
    let message = error.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(error, Some(SettingsError::Load(_))), "{error:?}");
    assert!(message.contains("database.pool_size"), "{message}");

    let error = SettingsSource::from_env_vars([("TRUSTMESH_GRPC__BIND", "not-an-address")])
        .load::<Settings>()
        .err();
    let message = error.map(|error| error.to_string()).unwrap_or_default();
    assert!(message.contains("grpc.bind"), "{message}");
}

#[test]
fn an_unacceptable_value_is_reported_with_its_key() {
    // The default mode is TLS, which needs a certificate.
    let error = SettingsSource::new().load::<Settings>().err();
    assert_eq!(
        error.map(|error| error.to_string()).as_deref(),
        Some("invalid setting `grpc.tls.cert_file`: required when mode is `tls`")
    );

    let env = [
        ("TRUSTMESH_GRPC__TLS__MODE", "dev_plaintext_loopback"),
        ("TRUSTMESH_GRPC__BIND", "0.0.0.0:50051"),
    ];
    let error = SettingsSource::from_env_vars(env).load::<Settings>().err();
    assert!(
        matches!(&error, Some(SettingsError::Invalid(InvalidSetting { key, .. })) if key == "grpc.bind"),
        "{error:?}"
    );
}

#[test]
fn a_missing_file_is_an_error() {
    let error = SettingsSource::new()
        .with_file("/nonexistent/trustmesh.toml")
        .load::<Settings>()
        .err();
    assert!(matches!(error, Some(SettingsError::Load(_))), "{error:?}");
}

#[test]
fn secrets_never_appear_in_debug_output() -> anyhow::Result<()> {
    let mut env = dev_env();
    env.push(("TRUSTMESH_DATABASE__PASSWORD", "hunter2-s3cr3t"));
    let source = SettingsSource::from_env_vars(env);
    let settings: Settings = source.load()?;
    assert_eq!(settings.database.password.expose_secret(), "hunter2-s3cr3t");
    for debug in [
        format!("{settings:?}"),
        format!("{:?}", settings.database),
        format!("{source:?}"),
    ] {
        assert!(!debug.contains("hunter2"), "secret in {debug}");
    }
    Ok(())
}

#[test]
fn run_main_exits_64_on_bad_configuration_without_running_the_service() {
    let source = SettingsSource::from_env_vars([("TRUSTMESH_DATABASE__POOL_SIZE", "many")]);
    let mut ran = false;
    let code = run_main_with("test", &source, |_: Settings, _| {
        ran = true;
        async { Ok::<(), std::io::Error>(()) }
    });
    assert_eq!(code, ExitCode::from(64));
    assert!(!ran);
}

#[test]
fn run_main_maps_the_service_outcome_to_the_exit_code() {
    let source = SettingsSource::from_env_vars(dev_env());
    let ok = run_main_with(
        "test",
        &source,
        |settings: Settings, _shutdown| async move {
            assert_eq!(settings.database.pool_size, 5);
            Ok::<(), std::io::Error>(())
        },
    );
    assert_eq!(ok, ExitCode::SUCCESS);
    let failed = run_main_with("test", &source, |_: Settings, _| async {
        Err(std::io::Error::other("boom"))
    });
    assert_eq!(failed, ExitCode::FAILURE);
}
