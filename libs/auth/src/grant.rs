//! Support grants: a tenant's time-limited, scoped access for the operator, who otherwise reads no
//! tenant data.
//!
//! A tenant admin creates one through `tenancy` (`CreateSupportAccessGrant`); its [`GrantRecord`]
//! replicates to every service through `tm_auth` like an API key, and its revocation within the same
//! bound (see [`crate::cache`]). The operator uses it by sending the operator credential and the
//! grant id in [`GRANT_HEADER`]; the interceptor then attaches a [`SupportPrincipal`], which
//! [`crate::Principal::require`] lets through only for the grant's tenant, scopes and resources.

use std::collections::BTreeSet;

use trustmesh_events::TenantId;
use uuid::Uuid;

use crate::record::GrantRecord;
use crate::scope::Scope;

/// The request metadata header naming the support grant the operator acts under.
pub const GRANT_HEADER: &str = "x-trustmesh-support-grant";

/// The operator acting under a valid (known, unrevoked, unexpired) support grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportPrincipal {
    /// The grant id.
    pub grant_id: Uuid,
    /// The tenant that granted it.
    pub tenant: TenantId,
    /// What the grant allows (never `admin`).
    pub scopes: BTreeSet<Scope>,
    /// The resources it is restricted to (with their sub-resources); empty: the whole tenant.
    pub resources: Vec<String>,
}

impl SupportPrincipal {
    /// The principal of `record`, if it is a usable grant: valid tenant, not revoked.
    ///
    /// `admin` is dropped from its scopes: a grant never makes the operator a tenant admin.
    pub(crate) fn of(record: &GrantRecord) -> Option<Self> {
        if record.revoked {
            return None;
        }
        Some(Self {
            grant_id: record.grant_id,
            tenant: TenantId::parse(record.tenant.as_str()).ok()?,
            scopes: record
                .scopes
                .iter()
                .copied()
                .filter(|s| *s != Scope::Admin)
                .collect(),
            resources: record.resources.clone(),
        })
    }

    /// The grant's resource name, `tenants/{tenant}/supportAccessGrants/{grant id}`.
    #[must_use]
    pub fn name(&self) -> String {
        format!(
            "tenants/{}/supportAccessGrants/{}",
            self.tenant, self.grant_id
        )
    }

    /// Whether the grant allows `scope` on `resource` of `tenant`.
    #[must_use]
    pub fn allows(&self, tenant: &TenantId, scope: Scope, resource: &str) -> bool {
        self.tenant == *tenant
            && self.scopes.contains(&scope)
            && (self.resources.is_empty()
                || self
                    .resources
                    .iter()
                    .any(|granted| covers(granted, resource)))
    }
}

/// Whether granted name `granted` covers `resource`: the same name, or one of its sub-resources
/// (`granted/...`). A name with an empty, `.` or `..` segment is covered by nothing, so no
/// spelling reaches past the granted resource.
#[must_use]
pub fn covers(granted: &str, resource: &str) -> bool {
    let clean = resource
        .split('/')
        .all(|segment| !matches!(segment, "" | "." | ".."));
    clean
        && (resource == granted
            || resource
                .strip_prefix(granted)
                .is_some_and(|rest| rest.starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(scopes: &[Scope], resources: &[&str]) -> SupportPrincipal {
        SupportPrincipal {
            grant_id: Uuid::now_v7(),
            tenant: TenantId::parse("acme").unwrap(),
            scopes: scopes.iter().copied().collect(),
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn a_grant_allows_its_tenant_scopes_and_resources_only() {
        let acme = TenantId::parse("acme").unwrap();
        let beta = TenantId::parse("beta").unwrap();
        let one = grant(&[Scope::DatasetsRead], &["tenants/acme/datasets/1"]);
        assert!(one.allows(&acme, Scope::DatasetsRead, "tenants/acme/datasets/1"));
        assert!(one.allows(&acme, Scope::DatasetsRead, "tenants/acme/datasets/1/rows"));
        assert!(!one.allows(&acme, Scope::DatasetsRead, "tenants/acme/datasets/2"));
        assert!(!one.allows(&acme, Scope::DatasetsRead, "tenants/acme/datasets/10"));
        assert!(!one.allows(&acme, Scope::DatasetsRead, "tenants/acme"));
        assert!(!one.allows(&acme, Scope::DatasetsWrite, "tenants/acme/datasets/1"));
        assert!(!one.allows(&beta, Scope::DatasetsRead, "tenants/beta/datasets/1"));

        let whole = grant(&[Scope::ReportsRead], &[]);
        assert!(whole.allows(&acme, Scope::ReportsRead, "tenants/acme/reports/7"));
        assert!(!whole.allows(&beta, Scope::ReportsRead, "tenants/beta/reports/7"));
        assert!(!whole.allows(&acme, Scope::AuditRead, "tenants/acme"));
    }

    #[test]
    fn no_spelling_reaches_past_the_granted_resource() {
        for resource in [
            "tenants/acme/datasets/1/../2",
            "tenants/acme/datasets/1/./x",
            "tenants/acme/datasets/1//x",
            "tenants/acme/datasets/1/",
        ] {
            assert!(!covers("tenants/acme/datasets/1", resource), "{resource}");
        }
    }

    #[test]
    fn revoked_records_and_admin_scopes_grant_nothing() {
        let mut record = GrantRecord {
            grant_id: Uuid::now_v7(),
            tenant: "acme".to_owned(),
            scopes: [Scope::Admin, Scope::DatasetsRead].into_iter().collect(),
            resources: Vec::new(),
            expires_at: i64::MAX,
            revoked: false,
        };
        let principal = SupportPrincipal::of(&record).unwrap();
        assert_eq!(
            principal.scopes,
            [Scope::DatasetsRead].into_iter().collect::<BTreeSet<_>>()
        );
        record.revoked = true;
        assert_eq!(SupportPrincipal::of(&record), None);
        record.revoked = false;
        record.tenant = "../x".to_owned();
        assert_eq!(SupportPrincipal::of(&record), None);
    }
}
