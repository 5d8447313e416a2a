//! Layered, typed settings: built-in defaults, an optional TOML/YAML file, then environment variables
//! `TRUSTMESH_<SECTION>__<KEY>`; validated before anything starts.
//!
//! Defaults come from the settings types themselves (`#[serde(default)]` over a `Default` impl), so a
//! file or the environment only names what differs. Every source is an explicit value
//! ([`SettingsSource`]): tests build one from a list of pairs and never touch the process environment.
//!
//! [`common`] holds the sections several services share word for word (Postgres, NATS, a peer service).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub mod common;

/// Prefix of every environment variable read as a setting.
pub const ENV_PREFIX: &str = "TRUSTMESH";

/// Separator between section and key in an environment variable (`TRUSTMESH_GRPC__BIND`).
pub const ENV_SEPARATOR: &str = "__";

/// Environment variable naming the optional settings file (`.toml`, `.yaml` or `.yml`).
pub const ENV_CONFIG_FILE: &str = "TRUSTMESH_CONFIG";

/// Process exit code for a bad configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_CODE_CONFIG_ERROR: u8 = 64;

/// Returns the process exit code for a bad configuration: 64 (`EX_USAGE`).
pub const fn exit_code_for_config_error() -> u8 {
    EXIT_CODE_CONFIG_ERROR
}

/// Where settings are read from: an optional file, then environment variables.
#[derive(Clone, Default)]
pub struct SettingsSource {
    file: Option<PathBuf>,
    env: HashMap<String, String>,
}

// NOTE: hand-written so environment values (which may hold secrets) never reach a log line.
impl fmt::Debug for SettingsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&str> = self.env.keys().map(String::as_str).collect();
        keys.sort_unstable();
        f.debug_struct("SettingsSource")
            .field("file", &self.file)
            .field("env_keys", &keys)
            .finish()
    }
}

impl SettingsSource {
    /// Returns an empty source: every setting takes its built-in default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the source of a real process: its environment, and the file named by
    /// `TRUSTMESH_CONFIG` if set.
    pub fn from_process_env() -> Self {
        Self::from_env_vars(std::env::vars())
    }

    /// Returns a source built from environment variables given as pairs: `TRUSTMESH_CONFIG` names
    /// the file; the `TRUSTMESH_<SECTION>__<KEY>` pairs are settings; every other pair is ignored.
    pub fn from_env_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut source = Self::new();
        for (key, value) in vars {
            let (key, value) = (key.into(), value.into());
            if key == ENV_CONFIG_FILE {
                source.file = Some(PathBuf::from(value));
            } else if is_setting_var(&key) {
                source.env.insert(key, value);
            }
        }
        source
    }

    /// Reads the given settings file (`.toml`, `.yaml` or `.yml`; it must exist) below the environment.
    pub fn with_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Returns the settings file this source reads, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Loads and validates settings of type `T` from this source (defaults < file < environment).
    ///
    /// # Errors
    ///
    /// [`SettingsError::Load`] when the file is missing or malformed or a value has the wrong type
    /// (the message names the key and where the value came from); [`SettingsError::Invalid`] when a
    /// value parses but fails [`Validate::validate`].
    pub fn load<T>(&self) -> Result<T, SettingsError>
    where
        T: DeserializeOwned + Validate,
    {
        let mut builder = config::Config::builder();
        if let Some(file) = &self.file {
            builder = builder.add_source(config::File::from(file.as_path()).required(true));
        }
        // NOTE: no `try_parsing`: values stay strings until serde asks for a type, so a secret such
        // as `007` keeps its leading zeros; numbers and booleans still parse from env strings.
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator(ENV_SEPARATOR)
            .source(Some(self.env.clone().into_iter().collect()));
        let settings: T = builder.add_source(env).build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }
}

/// Whether `key` has the `TRUSTMESH_<SECTION>__<KEY>` shape of a setting.
fn is_setting_var(key: &str) -> bool {
    key.strip_prefix(ENV_PREFIX)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| rest.contains(ENV_SEPARATOR))
}

/// Checks of a settings value beyond what its types express.
pub trait Validate {
    /// Checks the value; sections call their fields' `validate` and prefix errors with
    /// [`InvalidSetting::within`].
    ///
    /// # Errors
    ///
    /// The first [`InvalidSetting`] found.
    fn validate(&self) -> Result<(), InvalidSetting>;
}

/// A setting whose value parses but is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{key}`: {message}")]
pub struct InvalidSetting {
    /// Dotted path of the setting (`grpc.tls.cert_file`).
    pub key: String,
    /// What is wrong and what is expected, as a sentence fragment.
    pub message: String,
}

impl InvalidSetting {
    /// Returns an error for the setting at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Returns this error with its key nested under `section` (`tls.cert_file` → `grpc.tls.cert_file`).
    pub fn within(mut self, section: &str) -> Self {
        self.key = format!("{section}.{}", self.key);
        self
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A source could not be read or a value could not be converted to its type; the message
    /// names the key and the source (e.g. ``invalid type: string "many", expected an integer for
    /// key `database.pool_size` in the environment``).
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    /// A value was read but is not acceptable.
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
}
