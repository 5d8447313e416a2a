//! Analysis jobs: the `AnalysisService` handler ([`grpc`]) with its job-change feed ([`changes`]),
//! the `jobs` table ([`repo`]), the `analysis-requested` worker ([`worker`]), the `analysis-scores`
//! consumer ([`scores`]) and the `analysis-deletion` consumer ([`deletion`]); plus resource names,
//! the sealed job spec and the job's steps here.

pub(crate) mod changes;
pub(crate) mod deletion;
pub(crate) mod folds;
pub(crate) mod grpc;
pub(crate) mod repo;
pub(crate) mod scores;
pub(crate) mod worker;

use trustmesh_events::TenantId;
use trustmesh_proto::v1::{ColumnOverride, JobState};
use uuid::Uuid;

use crate::error::AnalysisError;

/// `tenants/{tenant}/{collection}/{id}`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceName {
    pub(crate) tenant: TenantId,
    pub(crate) id: Uuid,
}

impl ResourceName {
    /// Parses `tenants/{tenant}/{collection}/{id}`.
    pub(crate) fn parse(field: &str, collection: &str, name: &str) -> Result<Self, AnalysisError> {
        let invalid = || {
            AnalysisError::InvalidArgument(format!(
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

    /// A job name.
    pub(crate) fn job(name: &str) -> Result<Self, AnalysisError> {
        Self::parse("name", "jobs", name)
    }

    /// `tenants/{tenant}/jobs/{id}`.
    pub(crate) fn job_string(tenant: &TenantId, id: Uuid) -> String {
        format!("tenants/{tenant}/jobs/{id}")
    }

    /// `tenants/{tenant}/datasets/{id}`.
    pub(crate) fn dataset_string(tenant: &TenantId, id: Uuid) -> String {
        format!("tenants/{tenant}/datasets/{id}")
    }
}

/// Parses `tenants/{tenant}`.
pub(crate) fn parse_parent(parent: &str) -> Result<TenantId, AnalysisError> {
    parent
        .strip_prefix("tenants/")
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or_else(|| AnalysisError::InvalidArgument("parent must be tenants/{tenant}".to_owned()))
}

/// What the job was asked to do, sealed into its row (column names are customer content).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct JobSpec {
    /// The label column's name.
    #[prost(string, tag = "1")]
    pub(crate) label_column: String,
    /// Issue types asked for (`trustmesh.v1.IssueType` numbers); empty means all.
    #[prost(int32, repeated, tag = "2")]
    pub(crate) issue_types: Vec<i32>,
    /// Column role overrides.
    #[prost(message, repeated, tag = "3")]
    pub(crate) column_overrides: Vec<ColumnOverride>,
    /// Cross-validation folds.
    #[prost(uint32, tag = "4")]
    pub(crate) cv_folds: u32,
    /// Neighbours in the kNN graph.
    #[prost(uint32, tag = "5")]
    pub(crate) knn_k: u32,
    /// Random seed.
    #[prost(uint64, tag = "6")]
    pub(crate) seed: u64,
    /// Speed/quality preset (`trustmesh.v1.AnalysisPreset`); FAST trains lighter models.
    #[prost(int32, tag = "7")]
    pub(crate) preset: i32,
}

/// One step of a job: name, 1-based index, progress once it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Step {
    pub(crate) name: &'static str,
    pub(crate) index: u32,
    pub(crate) progress: f64,
}

/// The steps every analysis job goes through.
pub(crate) mod steps {
    use super::Step;

    /// Reading the dataset's schema and rows from ingest.
    pub(crate) const READ_ROWS: Step = Step {
        name: "read-rows",
        index: 1,
        progress: 0.05,
    };
    /// Turning the dataset's columns into the models' table.
    pub(crate) const FEATURIZE: Step = Step {
        name: "featurize",
        index: 2,
        progress: 0.2,
    };
    /// AutoML: featurization and K-fold cross-validated models for out-of-sample predicted
    /// probabilities.
    pub(crate) const TRAIN_FOLDS: Step = Step {
        name: "train-folds",
        index: 3,
        progress: 0.3,
    };
    /// Storing the encrypted model outputs.
    pub(crate) const STORE_OUTPUTS: Step = Step {
        name: "store-outputs",
        index: 4,
        progress: 0.7,
    };
    /// trust-scoring runs the issue detectors.
    pub(crate) const DETECT_ISSUES: Step = Step {
        name: "detect-issues",
        index: 5,
        progress: 0.8,
    };
    /// The number of steps.
    pub(crate) const COUNT: u32 = 5;
}

/// A job state as stored.
pub(crate) fn state_code(state: JobState) -> i16 {
    i16::try_from(i32::from(state)).unwrap_or_default()
}

/// Whether a stored state is terminal.
pub(crate) fn is_terminal(state: i16) -> bool {
    [JobState::Succeeded, JobState::Failed, JobState::Cancelled]
        .into_iter()
        .any(|s| state_code(s) == state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_parse_and_reject_other_shapes() {
        let name = "tenants/acme/jobs/01900000-0000-7000-8000-000000000001";
        let parsed = ResourceName::job(name).unwrap();
        assert_eq!(ResourceName::job_string(&parsed.tenant, parsed.id), name);
        for bad in [
            "tenants/ac.me/jobs/01900000-0000-7000-8000-000000000001",
            "tenants/acme/datasets/01900000-0000-7000-8000-000000000001",
            "tenants/acme/jobs/nope",
            "acme",
        ] {
            assert!(ResourceName::job(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_parent("tenants/acme").unwrap().as_str(), "acme");
        assert!(parse_parent("tenants/acme/jobs").is_err());
        assert!(is_terminal(state_code(JobState::Cancelled)));
        assert!(!is_terminal(state_code(JobState::Running)));
    }
}
