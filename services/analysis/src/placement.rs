//! Which tenants' work and calls a replica takes (infra/README.md, "Deployment profiles").
//!
//! A dedicated replica (`work.dedicated_tenant`) keeps one tenant's jobs in its own database and
//! bucket: its consumers are filtered on that tenant's subjects, and it answers only that tenant's
//! calls. The shared replicas (`work.dedicated_elsewhere`) acknowledge a dedicated tenant's messages
//! without acting on them and refuse its calls, so none of its rows or objects lands in the shared
//! database or bucket when something is misrouted.

use std::sync::Arc;

use trustmesh_events::TenantId;

use crate::error::AnalysisError;
use crate::settings::WorkSettings;

/// The tenants a replica serves, from its `work` settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placement {
    /// A dedicated replica's tenant.
    own: Option<TenantId>,
    /// Tenants whose dedicated replicas do their work.
    elsewhere: Arc<[TenantId]>,
}

impl Placement {
    /// The placement `work` describes (its tenant ids are validated with the settings; an invalid
    /// one is ignored here).
    pub(crate) fn of(work: &WorkSettings) -> Self {
        let parse = |t: &String| TenantId::parse(t).ok();
        Self {
            own: work.dedicated_tenant.as_ref().and_then(parse),
            elsewhere: work.dedicated_elsewhere.iter().filter_map(parse).collect(),
        }
    }

    /// A dedicated replica's tenant.
    pub(crate) fn dedicated_tenant(&self) -> Option<&TenantId> {
        self.own.as_ref()
    }

    /// Whether `tenant`'s work is left to its dedicated replicas: this replica's consumers
    /// acknowledge its messages without acting on them.
    pub(crate) fn left_to_dedicated(&self, tenant: &TenantId) -> bool {
        self.elsewhere.contains(tenant)
    }

    /// Whether this replica answers `tenant`'s calls: a dedicated replica its tenant's only, a
    /// shared one every tenant's but those left to dedicated replicas.
    pub(crate) fn serves(&self, tenant: &TenantId) -> bool {
        match &self.own {
            Some(own) => own == tenant,
            None => !self.left_to_dedicated(tenant),
        }
    }

    /// Refuses a call on `tenant`'s resources this replica does not serve (the ingress routed the
    /// tenant to the wrong deployment).
    pub(crate) fn check(&self, tenant: &TenantId) -> Result<(), AnalysisError> {
        if self.serves(tenant) {
            Ok(())
        } else {
            Err(AnalysisError::ServedElsewhere {
                tenant: tenant.as_str().to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use trustmesh_service_kit::CallError as _;

    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    #[test]
    fn a_dedicated_tenant_is_served_by_its_replica_only() {
        let shared = Placement::of(&WorkSettings {
            dedicated_elsewhere: vec!["vip".to_owned()],
            ..WorkSettings::default()
        });
        let own = Placement::of(&WorkSettings {
            dedicated_tenant: Some("vip".to_owned()),
            ..WorkSettings::default()
        });
        let (vip, acme) = (tenant("vip"), tenant("acme"));
        assert!(shared.left_to_dedicated(&vip) && !shared.serves(&vip));
        assert!(shared.serves(&acme) && !shared.left_to_dedicated(&acme));
        assert!(own.serves(&vip) && !own.serves(&acme));
        assert!(!own.left_to_dedicated(&vip));
        assert_eq!(
            own.check(&acme).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        assert!(Placement::default().serves(&vip));
    }
}
