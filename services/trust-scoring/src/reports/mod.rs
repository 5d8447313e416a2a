//! Reports: the `TrustService` handler ([`grpc`]), the `reports` and `corrections` tables
//! ([`repo`]), the `trust-scoring-analysis` consumer that scores an analysis ([`scoring`]), the
//! modality checks' rows and summaries ([`modality`]), the row selection of `ListRows` ([`rows`]) and the cleanset export ([`export`]); plus resource
//! names, the stored rows and the mapping between the API's issue types and the quality engine's.

pub(crate) mod export;
pub(crate) mod grpc;
pub(crate) mod modality;
pub(crate) mod repo;
pub(crate) mod rows;
pub(crate) mod scoring;

use trustmesh_events::TenantId;
use trustmesh_proto::v1::{IssueType, RowResult};
use trustmesh_quality::detectors::IssueType as Check;
use trustmesh_store::{EncryptedError, ObjectKey};
use uuid::Uuid;

use crate::error::TrustError;

/// `tenants/{tenant}/{collection}/{id}`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceName {
    pub(crate) tenant: TenantId,
    pub(crate) id: Uuid,
}

impl ResourceName {
    /// Parses `tenants/{tenant}/{collection}/{id}`; `field` names the request field in errors.
    pub(crate) fn parse(field: &str, collection: &str, name: &str) -> Result<Self, TrustError> {
        let invalid = || {
            TrustError::InvalidArgument(format!(
                "{field} must be tenants/{{tenant}}/{collection}/{{id}}"
            ))
        };
        let rest = name.strip_prefix("tenants/").ok_or_else(invalid)?;
        let (tenant, id) = rest
            .split_once(&format!("/{collection}/"))
            .ok_or_else(invalid)?;
        let tenant = TenantId::parse(tenant).map_err(|_| invalid())?;
        let id = Uuid::try_parse(id).map_err(|_| invalid())?;
        Ok(Self { tenant, id })
    }

    /// `tenants/{tenant}/{collection}/{id}`.
    pub(crate) fn format(tenant: &TenantId, collection: &str, id: Uuid) -> String {
        format!("tenants/{tenant}/{collection}/{id}")
    }
}

/// Parses `tenants/{tenant}`.
pub(crate) fn parse_parent(parent: &str) -> Result<TenantId, TrustError> {
    parent
        .strip_prefix("tenants/")
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or_else(|| TrustError::InvalidArgument("parent must be tenants/{tenant}".to_owned()))
}

/// A report's per-row results: the plaintext of its encrypted `rows` object.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredRows {
    /// One per row, in dataset order; corrections are not part of it.
    #[prost(message, repeated, tag = "1")]
    pub(crate) rows: Vec<RowResult>,
}

/// The object key of report `id`'s rows.
pub(crate) fn rows_key(id: Uuid) -> Result<ObjectKey, TrustError> {
    ObjectKey::new(format!("reports/{id}/rows"))
        .map_err(|e| TrustError::Objects(EncryptedError::InvalidObjectId(e)))
}

/// The API's issue type of a quality-engine check, if it has one (`well_labeled` is not an issue).
pub(crate) fn api_issue_type(check: Check) -> Option<IssueType> {
    match check {
        Check::Null => Some(IssueType::Null),
        Check::Label => Some(IssueType::Label),
        Check::Outlier => Some(IssueType::Outlier),
        Check::NearDuplicate => Some(IssueType::NearDuplicate),
        Check::ExactDuplicate => Some(IssueType::ExactDuplicate),
        Check::NonIid => Some(IssueType::NonIid),
        Check::ClassImbalance => Some(IssueType::ClassImbalance),
        Check::UnderperformingGroup => Some(IssueType::UnderperformingGroup),
        Check::DataValuation => Some(IssueType::DataValuation),
        Check::Ambiguous => Some(IssueType::Ambiguous),
        Check::WellLabeled => None,
    }
}

/// The quality-engine checks for the issue types asked for (`i32` API values); empty means the
/// engine's default set. Types the engine has no check for (image, text) are left out.
pub(crate) fn checks_for(issue_types: &[i32]) -> Vec<Check> {
    if issue_types.is_empty() {
        return trustmesh_quality::detectors::DetectorConfig::default().issue_types;
    }
    Check::ALL
        .into_iter()
        .filter(|check| api_issue_type(*check).is_some_and(|t| issue_types.contains(&i32::from(t))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_issue_types_map_both_ways() {
        let name = "tenants/acme/reports/01900000-0000-7000-8000-000000000001";
        let parsed = ResourceName::parse("name", "reports", name).unwrap();
        assert_eq!(
            ResourceName::format(&parsed.tenant, "reports", parsed.id),
            name
        );
        assert!(ResourceName::parse("name", "reports", "tenants/acme/jobs/x").is_err());
        assert!(parse_parent("tenants/a.b").is_err());
        let label = i32::from(IssueType::Label);
        let dark = i32::from(IssueType::Dark);
        assert_eq!(checks_for(&[label, dark]), [Check::Label]);
        assert!(checks_for(&[]).contains(&Check::Label));
        assert_eq!(api_issue_type(Check::WellLabeled), None);
    }
}
