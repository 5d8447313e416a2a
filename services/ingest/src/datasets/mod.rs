//! Datasets: the `DatasetService` handler ([`grpc`]), its Postgres repository ([`repo`]), CSV, JSONL
//! and Parquet parsing ([`csv`], [`jsonl`], [`parquet`]), image archives ([`images`]) and schema inference ([`schema`]); plus
//! resource names and the sealed payloads here.

pub mod csv;
pub(crate) mod data_uri;
pub(crate) mod grpc;
pub(crate) mod images;
pub(crate) mod jsonl;
pub(crate) mod parquet;
pub(crate) mod pipeline;
pub(crate) mod repo;
pub(crate) mod schema;

use std::fmt;

use trustmesh_events::TenantId;
use trustmesh_proto::v1::{ColumnData, Schema};
use trustmesh_store::{EncryptedError, ObjectKey};
use uuid::Uuid;

use crate::error::IngestError;

/// `tenants/{tenant}/datasets/{dataset}`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatasetName {
    pub(crate) tenant: TenantId,
    pub(crate) id: Uuid,
}

impl DatasetName {
    /// Parses a dataset resource name.
    pub(crate) fn parse(name: &str) -> Result<Self, IngestError> {
        let invalid = || {
            IngestError::InvalidArgument(
                "name must be tenants/{tenant}/datasets/{dataset}".to_owned(),
            )
        };
        let rest = name.strip_prefix("tenants/").ok_or_else(invalid)?;
        let (tenant, id) = rest.split_once("/datasets/").ok_or_else(invalid)?;
        let tenant = parse_tenant(tenant)?;
        let id = Uuid::try_parse(id).map_err(|_| invalid())?;
        Ok(Self { tenant, id })
    }

    /// The key of the raw upload object.
    pub(crate) fn raw_key(&self) -> Result<ObjectKey, IngestError> {
        object_key(self.id, "raw")
    }

    /// The key of the parsed rows object.
    pub(crate) fn rows_key(&self) -> Result<ObjectKey, IngestError> {
        object_key(self.id, "rows")
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenants/{}/datasets/{}", self.tenant, self.id)
    }
}

fn object_key(id: Uuid, part: &str) -> Result<ObjectKey, IngestError> {
    ObjectKey::new(format!("datasets/{id}/{part}"))
        .map_err(|e| IngestError::Objects(EncryptedError::InvalidObjectId(e)))
}

/// Parses `tenants/{tenant}`.
pub(crate) fn parse_parent(parent: &str) -> Result<TenantId, IngestError> {
    let tenant = parent.strip_prefix("tenants/").ok_or_else(|| {
        IngestError::InvalidArgument("parent must be tenants/{tenant}".to_owned())
    })?;
    parse_tenant(tenant)
}

fn parse_tenant(tenant: &str) -> Result<TenantId, IngestError> {
    TenantId::parse(tenant)
        .map_err(|e| IngestError::InvalidArgument(format!("invalid tenant in resource name: {e}")))
}

/// A dataset's display name and description, sealed into its metadata row.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SealedMeta {
    /// Display name.
    #[prost(string, tag = "1")]
    pub(crate) display_name: String,
    /// Description.
    #[prost(string, tag = "2")]
    pub(crate) description: String,
}

/// What an upload revealed (file name, digest, schema: column names are customer content), sealed
/// into the metadata row.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SealedUpload {
    /// The file name as given.
    #[prost(string, tag = "1")]
    pub(crate) filename: String,
    /// SHA-256 of the upload, hex.
    #[prost(string, tag = "2")]
    pub(crate) sha256: String,
    /// The inferred schema.
    #[prost(message, optional, tag = "3")]
    pub(crate) schema: Option<Schema>,
}

/// The parsed dataset, column by column: the plaintext of the encrypted `rows` object.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredRows {
    /// Rows.
    #[prost(uint64, tag = "1")]
    pub(crate) row_count: u64,
    /// Columns in schema order, each with `row_count` values.
    #[prost(message, repeated, tag = "2")]
    pub(crate) columns: Vec<ColumnData>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_round_trip_and_reject_bad_tenants() {
        let name = "tenants/acme/datasets/01900000-0000-7000-8000-000000000001";
        assert_eq!(DatasetName::parse(name).unwrap().to_string(), name);
        for bad in [
            "tenants/ac.me/datasets/01900000-0000-7000-8000-000000000001",
            "tenants/acme/jobs/01900000-0000-7000-8000-000000000001",
            "tenants/acme/datasets/not-a-uuid",
            "acme",
        ] {
            assert!(DatasetName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_parent("tenants/acme").unwrap().as_str(), "acme");
        assert!(parse_parent("tenants/acme/x").is_err());
    }
}
