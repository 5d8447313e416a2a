//! What an API key may do.

use std::fmt;

use serde::{Deserialize, Serialize};
use trustmesh_proto::v1;

/// A permission an API key carries (ARCHITECTURE.md §5); `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// `datasets:write`: create and upload datasets.
    #[serde(rename = "datasets:write")]
    DatasetsWrite,
    /// `datasets:read`: read datasets and their rows.
    #[serde(rename = "datasets:read")]
    DatasetsRead,
    /// `analysis:run`: start, cancel and watch analyses.
    #[serde(rename = "analysis:run")]
    AnalysisRun,
    /// `reports:read`: read reports, rows and exports.
    #[serde(rename = "reports:read")]
    ReportsRead,
    /// `audit:read`: read and export the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// `deletion:write`: delete datasets and the tenant.
    #[serde(rename = "deletion:write")]
    DeletionWrite,
    /// `admin`: everything, including keys, webhooks and support grants.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Self; 7] = [
        Self::DatasetsWrite,
        Self::DatasetsRead,
        Self::AnalysisRun,
        Self::ReportsRead,
        Self::AuditRead,
        Self::DeletionWrite,
        Self::Admin,
    ];

    /// The scope's name, e.g. `datasets:read`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DatasetsWrite => "datasets:write",
            Self::DatasetsRead => "datasets:read",
            Self::AnalysisRun => "analysis:run",
            Self::ReportsRead => "reports:read",
            Self::AuditRead => "audit:read",
            Self::DeletionWrite => "deletion:write",
            Self::Admin => "admin",
        }
    }

    /// The scope of an API enum value; `None` for `SCOPE_UNSPECIFIED` and unknown numbers.
    #[must_use]
    pub fn from_proto(value: i32) -> Option<Self> {
        match v1::Scope::try_from(value).ok()? {
            v1::Scope::Unspecified => None,
            v1::Scope::DatasetsWrite => Some(Self::DatasetsWrite),
            v1::Scope::DatasetsRead => Some(Self::DatasetsRead),
            v1::Scope::AnalysisRun => Some(Self::AnalysisRun),
            v1::Scope::ReportsRead => Some(Self::ReportsRead),
            v1::Scope::AuditRead => Some(Self::AuditRead),
            v1::Scope::DeletionWrite => Some(Self::DeletionWrite),
            v1::Scope::Admin => Some(Self::Admin),
        }
    }

    /// The API enum value of this scope.
    #[must_use]
    pub const fn to_proto(self) -> v1::Scope {
        match self {
            Self::DatasetsWrite => v1::Scope::DatasetsWrite,
            Self::DatasetsRead => v1::Scope::DatasetsRead,
            Self::AnalysisRun => v1::Scope::AnalysisRun,
            Self::ReportsRead => v1::Scope::ReportsRead,
            Self::AuditRead => v1::Scope::AuditRead,
            Self::DeletionWrite => v1::Scope::DeletionWrite,
            Self::Admin => v1::Scope::Admin,
        }
    }

    /// The scope named `name` (`datasets:read`, ...), if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_proto_values_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(Scope::from_name(scope.as_str()), Some(scope));
            assert_eq!(Scope::from_proto(scope.to_proto() as i32), Some(scope));
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{scope}\""));
        }
        assert_eq!(Scope::from_proto(0), None);
        assert_eq!(Scope::from_proto(99), None);
    }
}
