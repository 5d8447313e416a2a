//! Profiles: where the mesh is, which tenant, and the API key, kept in
//! `~/.config/trustmesh/config.toml` (or `$TRUSTMESH_CONFIG`) readable by its owner only.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trustmesh_sdk::SecretString;

use super::UsageError;

/// The profiles file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConfigFile {
    /// Profiles by name.
    #[serde(default)]
    pub(crate) profiles: BTreeMap<String, Profile>,
}

/// One profile.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct Profile {
    /// The gRPC endpoint (`https://...`, or `http://` to loopback in development).
    pub(crate) endpoint: String,
    /// The tenant the key belongs to.
    pub(crate) tenant: String,
    /// The CA that signs the endpoint's certificate (PEM), for `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_file: Option<PathBuf>,
    /// The API key (kept here only with owner-only permissions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_key: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("endpoint", &self.endpoint)
            .field("tenant", &self.tenant)
            .field("ca_file", &self.ca_file)
            .field("api_key", &self.api_key.as_ref().map(|_| ".."))
            .finish()
    }
}

/// `$TRUSTMESH_CONFIG`, or `$XDG_CONFIG_HOME/trustmesh/config.toml`, or
/// `~/.config/trustmesh/config.toml`.
pub(crate) fn path() -> PathBuf {
    if let Some(path) = std::env::var_os("TRUSTMESH_CONFIG") {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config"),
        PathBuf::from,
    );
    base.join("trustmesh/config.toml")
}

impl ConfigFile {
    /// The file at `path` (empty when it does not exist).
    pub(crate) fn load(path: &Path) -> Result<Self, UsageError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                UsageError(format!(
                    "{} is not a valid profiles file: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(UsageError(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Writes the file to `path` with mode 0600 (its directory 0700).
    pub(crate) fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| UsageError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let text = toml::to_string_pretty(self)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
        // An existing file keeps its mode on open: make it owner-only before the key goes in.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(())
    }
}

/// The API key: `$TRUSTMESH_API_KEY`, else the profile's.
pub(crate) fn api_key(profile: &Profile) -> Option<SecretString> {
    std::env::var("TRUSTMESH_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .or_else(|| profile.api_key.clone())
        .map(SecretString::from)
}
