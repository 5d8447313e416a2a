//! [`ObjectStoreSettings`]: the `objects` section of a store-owning service's settings, and
//! [`ObjectStoreSettings::open`], the one place a backend is chosen from it.

use std::path::PathBuf;
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::objects::{LocalDirStore, ObjectError, ObjectStore, S3Settings, S3Store};

/// The object store backend. Keys are prefixed with the owning service's name, so services may
/// share a directory or bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum ObjectStoreSettings {
    /// A local directory.
    Local {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// An S3 bucket (any S3-compatible server).
    S3 {
        /// Endpoint of an S3-compatible server; unset means AWS.
        endpoint: Option<String>,
        /// Region.
        region: String,
        /// Bucket.
        bucket: String,
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: SecretString,
        /// Create the bucket if missing (dev and tests).
        #[serde(default)]
        create_bucket: bool,
    },
}

impl Default for ObjectStoreSettings {
    fn default() -> Self {
        Self::Local {
            dir: PathBuf::from("data/objects"),
        }
    }
}

impl ObjectStoreSettings {
    /// Opens the configured store (creating the directory, or the bucket when asked).
    ///
    /// # Errors
    ///
    /// [`ObjectError`] if the directory cannot be created or the bucket cannot be reached.
    pub async fn open(&self) -> Result<Arc<dyn ObjectStore>, ObjectError> {
        Ok(match self {
            Self::Local { dir } => Arc::new(LocalDirStore::open(dir).await?),
            Self::S3 {
                endpoint,
                region,
                bucket,
                access_key_id,
                secret_access_key,
                create_bucket,
            } => {
                let mut s3 = S3Settings::compatible(
                    endpoint.clone().unwrap_or_default(),
                    region,
                    bucket,
                    access_key_id,
                    secret_access_key.expose_secret(),
                );
                s3.endpoint.clone_from(endpoint);
                s3.create_bucket = *create_bucket;
                Arc::new(S3Store::connect(&s3).await?)
            }
        })
    }
}
