//! Tenant-scoped repositories: every query that touches tenant data takes a [`TenantScope`].

use std::fmt;

use trustmesh_events::TenantId;

/// The tenant a request acts for: a validated [`TenantId`], which every repository method takes and
/// binds into its `WHERE tenant = $1`, so a repository query without a tenant cannot be written.
///
/// Built once per request from the authenticated caller (never from a client-supplied resource name
/// alone).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TenantScope {
    tenant: TenantId,
}

impl TenantScope {
    /// A scope for `tenant`.
    #[must_use]
    pub fn new(tenant: TenantId) -> Self {
        Self { tenant }
    }

    /// The tenant.
    #[must_use]
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant id as a string, for binding into queries.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.tenant.as_str()
    }
}

impl fmt::Debug for TenantScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TenantScope")
            .field(&self.tenant.as_str())
            .finish()
    }
}

impl From<TenantId> for TenantScope {
    fn from(tenant: TenantId) -> Self {
        Self::new(tenant)
    }
}
