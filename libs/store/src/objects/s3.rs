//! [`S3Store`]: objects in an S3 bucket (AWS or any S3-compatible server) through `aws-sdk-s3`.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};

use super::{BodyStream, ObjectError, ObjectKey, ObjectMeta, ObjectPrefix, ObjectStore};

/// The default multipart part size: objects larger than this are uploaded in parts of this size.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// S3's smallest part (except the last).
const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// How many keys one DeleteObjects request may name.
const DELETE_BATCH: usize = 1000;

/// How to reach a bucket.
#[derive(Clone)]
pub struct S3Settings {
    /// The endpoint of an S3-compatible server (`None`: AWS's regional endpoint). Plain `http://` is
    /// accepted only for loopback hosts.
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub force_path_style: bool,
    /// Create the bucket if it does not exist (dev and tests).
    pub create_bucket: bool,
    /// Objects larger than this go up as a multipart upload in parts of this size (at least 5 MiB).
    pub part_size: usize,
}

impl S3Settings {
    /// Settings for an S3-compatible server at `endpoint` with static credentials, path-style
    /// addressing, bucket auto-creation and [`DEFAULT_PART_SIZE`] parts.
    #[must_use]
    pub fn compatible(
        endpoint: impl Into<String>,
        region: impl Into<String>,
        bucket: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            region: region.into(),
            bucket: bucket.into(),
            access_key_id: access_key_id.into(),
            secret_access_key: SecretString::from(secret_access_key.into()),
            force_path_style: true,
            create_bucket: true,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    fn validate(&self) -> Result<(), ObjectError> {
        if self.part_size < MIN_PART_SIZE {
            return Err(ObjectError::InvalidSettings(format!(
                "part_size {} is below S3's minimum of {MIN_PART_SIZE}",
                self.part_size
            )));
        }
        if let Some(endpoint) = &self.endpoint {
            if let Some(rest) = endpoint.strip_prefix("http://") {
                let authority = rest.split('/').next().unwrap_or_default();
                let host = authority
                    .rsplit_once(':')
                    .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
                    .map_or(authority, |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    return Err(ObjectError::InvalidSettings(format!(
                        "endpoint {endpoint} is plaintext HTTP to a host that is not on loopback; use https"
                    )));
                }
                tracing::warn!(
                    endpoint,
                    "The S3 endpoint is plaintext HTTP: allowed only because it is on loopback."
                );
            } else if !endpoint.starts_with("https://") {
                return Err(ObjectError::InvalidSettings(format!(
                    "endpoint {endpoint} must start with https:// (or http:// on loopback)"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("force_path_style", &self.force_path_style)
            .field("create_bucket", &self.create_bucket)
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// An [`ObjectStore`] in one S3 bucket.
///
/// Objects larger than the part size are written with a multipart upload (aborted on failure).
/// Wherever the server implements versioning, deletes remove every version and delete marker
/// (ListObjectVersions, then DeleteObjects by version id), since a plain DELETE on a versioned
/// bucket only hides the data behind a marker; and [`ObjectStore::count_versions`] counts them all.
/// That holds whatever the bucket's versioning state was at connect time: versioning switched on
/// (or suspended) later still leaves nothing behind.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    part_size: usize,
    versioning: bool,
}

impl S3Store {
    /// Connects to the bucket (creating it if the settings say so) and finds out whether the server
    /// keeps object versions.
    ///
    /// # Errors
    ///
    /// [`ObjectError::InvalidSettings`], or [`ObjectError::S3`] if the bucket cannot be reached.
    pub async fn connect(settings: &S3Settings) -> Result<Self, ObjectError> {
        settings.validate()?;
        let credentials = Credentials::new(
            &settings.access_key_id,
            settings.secret_access_key.expose_secret(),
            None,
            None,
            "trustmesh-settings",
        );
        // NOTE: checksums only where the API requires them: S3-compatible servers differ in their
        // support of the newer default (trailing CRC checksums); integrity is the AEAD's job anyway.
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(settings.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let client = Client::from_conf(config.build());
        let bucket = settings.bucket.clone();

        if settings.create_bucket {
            let exists = match client.head_bucket().bucket(&bucket).send().await {
                Ok(_) => true,
                Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => false,
                Err(e) => return Err(s3_error("HeadBucket", e)),
            };
            if !exists {
                match client.create_bucket().bucket(&bucket).send().await {
                    Ok(_) => {}
                    Err(e)
                        if e.as_service_error().is_some_and(|e| {
                            e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
                        }) => {}
                    Err(e) => return Err(s3_error("CreateBucket", e)),
                }
            }
        }

        // NOTE: whether the server implements versions (probed with the call deletes rely on), not
        // whether this bucket has versioning on now: an operator may enable it while the mesh runs,
        // and a bucket that never had it lists each object once, as version "null", which
        // DeleteObjects removes like any other version.
        let versioning = match client
            .list_object_versions()
            .bucket(&bucket)
            .max_keys(1)
            .send()
            .await
        {
            Ok(_) => true,
            // Servers without versions (s3s-fs) answer NotImplemented; any other failure is an
            // error, not a guess that could leave old versions behind.
            Err(e) if e.code() == Some("NotImplemented") => false,
            Err(e) => return Err(s3_error("ListObjectVersions", e)),
        };
        Ok(Self {
            client,
            bucket,
            part_size: settings.part_size,
            versioning,
        })
    }

    /// The underlying SDK client (for operations this trait does not cover, e.g. bucket policies).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket.
    #[must_use]
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether the server implements object versions (then deletes remove, and
    /// [`ObjectStore::count_versions`] counts, every version and delete marker).
    #[must_use]
    pub fn versioning(&self) -> bool {
        self.versioning
    }

    async fn put_single(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), ObjectError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", e))?;
        Ok(())
    }

    /// Uploads `buffer` and then the rest of `body` as parts of an upload already created.
    async fn upload_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        mut buffer: BytesMut,
        mut body: BodyStream,
    ) -> Result<(u64, Vec<CompletedPart>), ObjectError> {
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut finished = false;
        loop {
            while !finished && buffer.len() <= self.part_size {
                match body.next().await {
                    Some(piece) => buffer.extend_from_slice(&piece?),
                    None => finished = true,
                }
            }
            let part = if buffer.len() > self.part_size {
                buffer.split_to(self.part_size).freeze()
            } else {
                buffer.split().freeze()
            };
            let part_number = i32::try_from(parts.len() + 1)
                .map_err(|_| ObjectError::InvalidSettings("too many parts".to_owned()))?;
            size += part.len() as u64;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(upload_id)
                .part_number(part_number)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(|e| s3_error("UploadPart", e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            if finished && buffer.is_empty() {
                return Ok((size, parts));
            }
        }
    }

    /// Every (key, version id) under `prefix`, delete markers included, page by page.
    async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<String>)>, ObjectError> {
        let mut out = Vec::new();
        let mut key_marker = None;
        let mut version_marker = None;
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| s3_error("ListObjectVersions", e))?;
            for v in page.versions() {
                if let Some(key) = v.key() {
                    out.push((key.to_owned(), v.version_id().map(str::to_owned)));
                }
            }
            for m in page.delete_markers() {
                if let Some(key) = m.key() {
                    out.push((key.to_owned(), m.version_id().map(str::to_owned)));
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
        }
    }

    async fn delete_batch(
        &self,
        targets: Vec<(String, Option<String>)>,
    ) -> Result<u64, ObjectError> {
        let mut deleted = 0;
        for batch in targets.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|(key, version)| {
                    ObjectIdentifier::builder()
                        .key(key)
                        .set_version_id(version.clone())
                        .build()
                        .map_err(|e| s3_error_boxed("DeleteObjects", e.into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| s3_error_boxed("DeleteObjects", e.into()))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_error("DeleteObjects", e))?;
            if let Some(failed) = out.errors().first() {
                return Err(s3_error_boxed(
                    "DeleteObjects",
                    format!(
                        "{} of {} deletions failed, first: {}",
                        out.errors().len(),
                        batch.len(),
                        failed.code().unwrap_or("unknown")
                    )
                    .into(),
                ));
            }
            deleted += batch.len() as u64;
        }
        Ok(deleted)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_stream(&self, key: &ObjectKey, mut body: BodyStream) -> Result<u64, ObjectError> {
        // Buffer up to one part; a body that fits goes up in one PutObject.
        let mut buffer = BytesMut::new();
        while buffer.len() <= self.part_size {
            match body.next().await {
                Some(piece) => buffer.extend_from_slice(&piece?),
                None => {
                    let size = buffer.len() as u64;
                    self.put_single(key, buffer.freeze()).await?;
                    return Ok(size);
                }
            }
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                s3_error_boxed("CreateMultipartUpload", "no upload id in the answer".into())
            })?
            .to_owned();
        let completed = match self.upload_parts(key, &upload_id, buffer, body).await {
            Ok((size, parts)) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| size)
                .map_err(|e| s3_error("CompleteMultipartUpload", e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Best effort: an abandoned upload's parts would otherwise linger (ciphertext only).
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<BodyStream, ObjectError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Err(ObjectError::NotFound);
            }
            Err(e) => return Err(s3_error("GetObject", e)),
        };
        let stream = futures::stream::try_unfold(out.body, |mut body| async move {
            match body.try_next().await {
                Ok(Some(piece)) => Ok(Some((piece, body))),
                Ok(None) => Ok(None),
                Err(e) => Err(s3_error_boxed("GetObject", e.into())),
            }
        });
        Ok(stream.boxed())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        if self.versioning {
            let targets = self
                .list_versions(key.as_str())
                .await?
                .into_iter()
                .filter(|(k, _)| k == key.as_str())
                .collect::<Vec<_>>();
            self.delete_batch(targets).await?;
            return Ok(());
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", e))?;
        Ok(())
    }

    async fn list(&self, prefix: &ObjectPrefix) -> Result<Vec<ObjectMeta>, ObjectError> {
        let mut out: Vec<ObjectMeta> = self
            .list_current(prefix.as_str())
            .await?
            .into_iter()
            // A key this store could not have written (another tool's) is not listed.
            .filter_map(|(key, size)| {
                Some(ObjectMeta {
                    key: ObjectKey::new(key).ok()?,
                    size,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete_prefix(&self, prefix: &ObjectPrefix) -> Result<u64, ObjectError> {
        let targets = self.stored_under(prefix).await?;
        self.delete_batch(targets).await
    }

    async fn count_versions(&self, prefix: &ObjectPrefix) -> Result<u64, ObjectError> {
        Ok(self.stored_under(prefix).await?.len() as u64)
    }
}

impl S3Store {
    /// Every current object under `prefix` with its size, whatever its key, page by page.
    async fn list_current(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error("ListObjectsV2", e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    let size = u64::try_from(object.size().unwrap_or_default()).unwrap_or_default();
                    out.push((key.to_owned(), size));
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated().unwrap_or(false) => token = Some(next.to_owned()),
                Some(_) | None => return Ok(out),
            }
        }
    }

    /// What a prefix deletion removes and the residue scan counts, the one list both use so they
    /// agree: every version and delete marker (or, without versions, every object) under `prefix`,
    /// keys [`ObjectStore::list`] would not show included.
    async fn stored_under(
        &self,
        prefix: &ObjectPrefix,
    ) -> Result<Vec<(String, Option<String>)>, ObjectError> {
        if self.versioning {
            return self.list_versions(prefix.as_str()).await;
        }
        Ok(self
            .list_current(prefix.as_str())
            .await?
            .into_iter()
            .map(|(key, _)| (key, None))
            .collect())
    }
}

fn s3_error<E, R>(operation: &'static str, e: SdkError<E, R>) -> ObjectError
where
    E: std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    ObjectError::S3 {
        operation,
        source: Box::new(e),
    }
}

fn s3_error_boxed(operation: &'static str, source: super::BoxError) -> ObjectError {
    ObjectError::S3 { operation, source }
}
