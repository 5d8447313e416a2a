//! Deletions as stored and as the API shows them: names, scope, state, and the DELETION job.

use time::OffsetDateTime;
use trustmesh_events::TenantId;
use trustmesh_proto::events::v1 as ev;
use trustmesh_proto::v1;
use uuid::Uuid;

/// What a deletion covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Dataset,
    Tenant,
}

impl Scope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Dataset => "dataset",
            Self::Tenant => "tenant",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "dataset" => Some(Self::Dataset),
            "tenant" => Some(Self::Tenant),
            _ => None,
        }
    }

    pub(crate) fn api(self) -> v1::DeletionScope {
        match self {
            Self::Dataset => v1::DeletionScope::Dataset,
            Self::Tenant => v1::DeletionScope::Tenant,
        }
    }

    pub(crate) fn event(self) -> ev::DeletionScope {
        match self {
            Self::Dataset => ev::DeletionScope::Dataset,
            Self::Tenant => ev::DeletionScope::Tenant,
        }
    }
}

/// Lifecycle state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    InProgress,
    Completed,
    Failed,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    pub(crate) fn api(self) -> v1::DeletionState {
        match self {
            Self::InProgress => v1::DeletionState::InProgress,
            Self::Completed => v1::DeletionState::Completed,
            Self::Failed => v1::DeletionState::Failed,
        }
    }

    pub(crate) fn job(self) -> v1::JobState {
        match self {
            Self::InProgress => v1::JobState::Running,
            Self::Completed => v1::JobState::Succeeded,
            Self::Failed => v1::JobState::Failed,
        }
    }
}

/// `tenants/{tenant}/deletions/{id}`.
pub(crate) fn deletion_name(tenant: &str, id: Uuid) -> String {
    format!("tenants/{tenant}/deletions/{id}")
}

/// `tenants/{tenant}/jobs/{id}`: a deletion's job shares its id.
pub(crate) fn job_name(tenant: &str, id: Uuid) -> String {
    format!("tenants/{tenant}/jobs/{id}")
}

/// `tenants/{tenant}/deletions/{id}/certificate`.
pub(crate) fn certificate_name(tenant: &str, id: Uuid) -> String {
    format!("{}/certificate", deletion_name(tenant, id))
}

/// Parses `tenants/{tenant}/deletions/{id}` (or with `/certificate` when `certificate`).
pub(crate) fn parse_deletion_name(name: &str, certificate: bool) -> Option<(TenantId, Uuid)> {
    let rest = name.strip_prefix("tenants/")?;
    let rest = if certificate {
        rest.strip_suffix("/certificate")?
    } else {
        rest
    };
    let mut parts = rest.split('/');
    let (Some(tenant), Some("deletions"), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((TenantId::parse(tenant).ok()?, Uuid::parse_str(id).ok()?))
}

/// A stored deletion.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct DeletionRow {
    pub(crate) id: Uuid,
    pub(crate) tenant: String,
    pub(crate) scope: String,
    pub(crate) target: String,
    pub(crate) reason: String,
    pub(crate) requested_by: String,
    pub(crate) request_id: Option<String>,
    pub(crate) expected_services: Vec<String>,
    pub(crate) state: String,
    pub(crate) attempts: i32,
    pub(crate) job_version: i64,
    pub(crate) error_code: Option<String>,
    pub(crate) error_message: Option<String>,
    pub(crate) create_time: OffsetDateTime,
    pub(crate) update_time: OffsetDateTime,
    pub(crate) complete_time: Option<OffsetDateTime>,
}

/// A stored receipt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ReceiptRow {
    pub(crate) service: String,
    pub(crate) deleted: sqlx::types::Json<std::collections::BTreeMap<String, u64>>,
    pub(crate) residue: sqlx::types::Json<std::collections::BTreeMap<String, u64>>,
    pub(crate) residue_found: bool,
    pub(crate) deks_destroyed: i64,
    pub(crate) complete_time: OffsetDateTime,
}

pub(crate) fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        // NOTE: always below 10^9, so it fits.
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

impl DeletionRow {
    pub(crate) fn state(&self) -> State {
        // NOTE: the column's CHECK constraint admits only the three values.
        State::parse(&self.state).unwrap_or(State::Failed)
    }

    pub(crate) fn scope(&self) -> Scope {
        // NOTE: the column's CHECK constraint admits only the two values.
        Scope::parse(&self.scope).unwrap_or(Scope::Dataset)
    }

    pub(crate) fn name(&self) -> String {
        deletion_name(&self.tenant, self.id)
    }

    /// The services whose receipt is still missing.
    pub(crate) fn missing(&self, receipts: &[ReceiptRow]) -> Vec<String> {
        self.expected_services
            .iter()
            .filter(|s| !receipts.iter().any(|r| &r.service == *s))
            .cloned()
            .collect()
    }

    /// The DELETION job of this deletion.
    pub(crate) fn job(&self, receipts: &[ReceiptRow]) -> v1::Job {
        let state = self.state();
        let expected = self.expected_services.len().max(1);
        let received = self.expected_services.len() - self.missing(receipts).len();
        let progress = match state {
            State::Completed => 1.0,
            State::InProgress | State::Failed => received as f64 / expected as f64,
        };
        let (step, step_index) = match state {
            State::InProgress => ("collect-receipts", 1),
            State::Completed => ("certificate-issued", 2),
            State::Failed => ("failed", 1),
        };
        let error = match (&self.error_code, &self.error_message) {
            (Some(code), Some(message)) => Some(v1::JobError {
                code: code.clone(),
                message: message.clone(),
            }),
            _ => None,
        };
        let end_time = match state {
            State::InProgress => None,
            State::Completed | State::Failed => Some(timestamp(self.update_time)),
        };
        v1::Job {
            name: job_name(&self.tenant, self.id),
            kind: v1::JobKind::Deletion.into(),
            state: state.job().into(),
            progress,
            step: step.to_owned(),
            step_index,
            step_count: 2,
            error,
            target: self.target.clone(),
            output: self.name(),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            start_time: Some(timestamp(self.create_time)),
            end_time,
            request_id: self.request_id.clone().unwrap_or_default(),
        }
    }

    /// The API view with `receipts`.
    pub(crate) fn api(&self, receipts: &[ReceiptRow]) -> v1::Deletion {
        v1::Deletion {
            name: self.name(),
            scope: self.scope().api().into(),
            target: self.target.clone(),
            state: self.state().api().into(),
            reason: self.reason.clone(),
            requested_by: self.requested_by.clone(),
            expected_services: self.expected_services.clone(),
            receipts: receipts.iter().map(ReceiptRow::api).collect(),
            job: Some(self.job(receipts)),
            create_time: Some(timestamp(self.create_time)),
            complete_time: self.complete_time.map(timestamp),
        }
    }
}

impl ReceiptRow {
    pub(crate) fn api(&self) -> v1::DeletionReceipt {
        v1::DeletionReceipt {
            service: self.service.clone(),
            deleted: self.deleted.0.clone().into_iter().collect(),
            residue_found: self.residue_found,
            residue: self.residue.0.clone().into_iter().collect(),
            deks_destroyed: u32::try_from(self.deks_destroyed).unwrap_or(u32::MAX),
            complete_time: Some(timestamp(self.complete_time)),
        }
    }

    pub(crate) fn facts(&self) -> crate::certificate::ReceiptFacts {
        crate::certificate::ReceiptFacts {
            service: self.service.clone(),
            deleted: self.deleted.0.clone(),
            residue: self.residue.0.clone(),
            residue_found: self.residue_found,
            deks_destroyed: u64::try_from(self.deks_destroyed).unwrap_or(0),
            complete_time: self.complete_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_names_round_trip_and_reject_other_shapes() {
        let id = Uuid::now_v7();
        let name = deletion_name("acme", id);
        assert_eq!(
            parse_deletion_name(&name, false),
            Some((TenantId::parse("acme").unwrap(), id))
        );
        assert_eq!(
            parse_deletion_name(&certificate_name("acme", id), true),
            Some((TenantId::parse("acme").unwrap(), id))
        );
        for bad in [
            format!("tenants/acme/jobs/{id}"),
            format!("tenants/a.b/deletions/{id}"),
            "tenants/acme/deletions/nope".to_owned(),
            format!("{name}/extra"),
        ] {
            assert_eq!(parse_deletion_name(&bad, false), None, "{bad}");
        }
    }
}
