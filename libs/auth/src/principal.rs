//! Who is calling, and the checks a handler runs before touching a resource.

use std::collections::BTreeSet;

use trustmesh_events::TenantId;
use trustmesh_proto::events::v1::ActorType;

use crate::error::AuthError;
use crate::grant::SupportPrincipal;
use crate::key::KeyId;
use crate::scope::Scope;

/// An API key's identity, resolved from `tm_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrincipal {
    /// The key's tenant.
    pub tenant: TenantId,
    /// The key's id.
    pub key_id: KeyId,
    /// What the key may do.
    pub scopes: BTreeSet<Scope>,
}

impl KeyPrincipal {
    /// Whether the key carries `scope` (directly or through `admin`).
    #[must_use]
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// The key's resource name, `tenants/{tenant}/apiKeys/{key id}` (its audit actor id).
    #[must_use]
    pub fn name(&self) -> String {
        format!("tenants/{}/apiKeys/{}", self.tenant, self.key_id)
    }
}

/// The authenticated caller of a request, put in its extensions by [`crate::Authenticator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A tenant's API key.
    ApiKey(KeyPrincipal),
    /// The platform operator: manages tenants, reads no tenant data.
    Operator,
    /// The operator acting under a tenant's support grant: manages tenants as [`Principal::Operator`]
    /// does, and reads what the grant names, as long as it is valid.
    Support(SupportPrincipal),
    /// Another trustmesh service (the mesh's service credential), reading a tenant's data on its
    /// behalf through the methods that call [`Principal::require_or_service`].
    Service,
}

impl Principal {
    /// The principal the interceptor attached to `request`.
    ///
    /// # Errors
    /// [`AuthError::MissingCredential`] if there is none (the service is not behind the interceptor).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Self, AuthError> {
        request
            .extensions()
            .get::<Self>()
            .ok_or(AuthError::MissingCredential)
    }

    /// Checks that the caller may use `scope` on `resource` (a name `tenants/{tenant}/...` taken from
    /// request field `field`) and returns the resource's tenant.
    ///
    /// A key of another tenant gets [`AuthError::OtherTenant`] (answered as NOT_FOUND, like a
    /// resource that does not exist); a key of the tenant without the scope gets
    /// [`AuthError::MissingScope`]; the operator gets [`AuthError::OperatorDenied`], unless it acts
    /// under a support grant of the tenant that allows `scope` on `resource`.
    ///
    /// # Errors
    /// As above, or [`AuthError::InvalidResourceName`].
    pub fn require(
        &self,
        scope: Scope,
        field: &'static str,
        resource: &str,
    ) -> Result<TenantId, AuthError> {
        let tenant = resource_tenant(field, resource)?;
        match self {
            Self::Support(grant) if grant.allows(&tenant, scope, resource) => Ok(tenant),
            Self::Operator | Self::Support(_) => Err(AuthError::OperatorDenied {
                resource: resource.to_owned(),
            }),
            Self::Service => Err(AuthError::ServiceDenied {
                resource: resource.to_owned(),
            }),
            Self::ApiKey(key) if key.tenant != tenant => Err(AuthError::OtherTenant {
                resource: resource.to_owned(),
            }),
            Self::ApiKey(key) if !key.has(scope) => Err(AuthError::MissingScope {
                scope,
                resource: resource.to_owned(),
            }),
            Self::ApiKey(_) => Ok(tenant),
        }
    }

    /// [`Principal::require`] that also lets the operator through: for tenant management
    /// (API keys, quotas), which the operator may do for any tenant.
    ///
    /// # Errors
    /// As [`Principal::require`], except [`AuthError::OperatorDenied`].
    pub fn require_or_operator(
        &self,
        scope: Scope,
        field: &'static str,
        resource: &str,
    ) -> Result<TenantId, AuthError> {
        match self {
            Self::Operator | Self::Support(_) => resource_tenant(field, resource),
            Self::ApiKey(_) | Self::Service => self.require(scope, field, resource),
        }
    }

    /// [`Principal::require`] that also lets the mesh's services through: for the reads one
    /// service makes of another's data on a tenant's behalf (rows, model outputs).
    ///
    /// # Errors
    /// As [`Principal::require`].
    pub fn require_or_service(
        &self,
        scope: Scope,
        field: &'static str,
        resource: &str,
    ) -> Result<TenantId, AuthError> {
        match self {
            Self::Service => resource_tenant(field, resource),
            Self::ApiKey(_) | Self::Operator | Self::Support(_) => {
                self.require(scope, field, resource)
            }
        }
    }

    /// Checks that the caller is the operator.
    ///
    /// # Errors
    /// [`AuthError::OperatorOnly`] for an API key.
    pub fn require_operator(&self) -> Result<(), AuthError> {
        match self {
            Self::Operator | Self::Support(_) => Ok(()),
            Self::ApiKey(_) | Self::Service => Err(AuthError::OperatorOnly),
        }
    }

    /// The audit actor id: the key's name, `operator`, or `operator:<grant name>` for the operator
    /// under a support grant (so each use of a grant is in the tenant's audit log).
    #[must_use]
    pub fn actor_id(&self) -> String {
        match self {
            Self::ApiKey(key) => key.name(),
            Self::Operator => "operator".to_owned(),
            Self::Support(grant) => format!("operator:{}", grant.name()),
            Self::Service => "service".to_owned(),
        }
    }

    /// The audit actor type.
    #[must_use]
    pub fn actor_type(&self) -> ActorType {
        match self {
            Self::ApiKey(_) => ActorType::ApiKey,
            Self::Operator | Self::Support(_) => ActorType::Operator,
            Self::Service => ActorType::Service,
        }
    }
}

/// The tenant of resource name `resource` (`tenants/{tenant}` or `tenants/{tenant}/...`), taken from
/// request field `field`.
///
/// # Errors
/// [`AuthError::InvalidResourceName`] if it has another shape or an invalid tenant id.
pub fn resource_tenant(field: &'static str, resource: &str) -> Result<TenantId, AuthError> {
    let invalid = || AuthError::InvalidResourceName { field };
    let rest = resource.strip_prefix("tenants/").ok_or_else(invalid)?;
    let tenant = rest.split('/').next().ok_or_else(invalid)?;
    TenantId::parse(tenant).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, scopes: &[Scope]) -> Principal {
        Principal::ApiKey(KeyPrincipal {
            tenant: TenantId::parse(tenant).unwrap(),
            key_id: KeyId::generate(),
            scopes: scopes.iter().copied().collect(),
        })
    }

    #[test]
    fn require_checks_tenant_then_scope() {
        let reader = key("acme", &[Scope::DatasetsRead]);
        let name = "tenants/acme/datasets/1";
        assert_eq!(
            reader.require(Scope::DatasetsRead, "name", name).unwrap(),
            TenantId::parse("acme").unwrap()
        );
        assert_eq!(
            reader.require(Scope::DatasetsWrite, "name", name),
            Err(AuthError::MissingScope {
                scope: Scope::DatasetsWrite,
                resource: name.to_owned()
            })
        );
        let other = "tenants/beta/datasets/1";
        assert_eq!(
            reader.require(Scope::DatasetsRead, "name", other),
            Err(AuthError::OtherTenant {
                resource: other.to_owned()
            })
        );
        // Another tenant's resource looks the same whether or not the scope is held.
        assert_eq!(
            reader.require(Scope::DatasetsWrite, "name", other),
            reader.require(Scope::DatasetsRead, "name", other)
        );
        let admin = key("acme", &[Scope::Admin]);
        assert!(
            admin
                .require(Scope::AuditRead, "parent", "tenants/acme")
                .is_ok()
        );
    }

    #[test]
    fn the_operator_manages_tenants_but_reads_no_data() {
        let op = Principal::Operator;
        assert!(op.require_operator().is_ok());
        assert!(matches!(
            op.require(Scope::DatasetsRead, "name", "tenants/acme/datasets/1"),
            Err(AuthError::OperatorDenied { .. })
        ));
        assert!(
            op.require_or_operator(Scope::Admin, "parent", "tenants/acme")
                .is_ok()
        );
        assert_eq!(
            key("acme", &[Scope::Admin]).require_operator(),
            Err(AuthError::OperatorOnly)
        );
    }

    #[test]
    fn a_support_grant_lets_the_operator_read_only_what_it_names() {
        let grant = crate::grant::SupportPrincipal {
            grant_id: uuid::Uuid::now_v7(),
            tenant: TenantId::parse("acme").unwrap(),
            scopes: [Scope::DatasetsRead].into_iter().collect(),
            resources: vec!["tenants/acme/datasets/1".to_owned()],
        };
        let support = Principal::Support(grant.clone());
        assert_eq!(
            support
                .require(Scope::DatasetsRead, "name", "tenants/acme/datasets/1")
                .unwrap()
                .as_str(),
            "acme"
        );
        // Anything else is the operator's usual denial, word for word.
        for (scope, resource) in [
            (Scope::DatasetsRead, "tenants/acme/datasets/2"),
            (Scope::DatasetsWrite, "tenants/acme/datasets/1"),
            (Scope::DatasetsRead, "tenants/beta/datasets/1"),
            (Scope::DatasetsRead, "tenants/acme"),
        ] {
            assert_eq!(
                support.require(scope, "name", resource),
                Principal::Operator.require(scope, "name", resource),
                "{scope} {resource}"
            );
        }
        // It is still the operator for tenant management, and audited as the grant's use.
        assert!(support.require_operator().is_ok());
        assert_eq!(support.actor_type(), ActorType::Operator);
        assert_eq!(
            support.actor_id(),
            format!(
                "operator:tenants/acme/supportAccessGrants/{}",
                grant.grant_id
            )
        );
    }

    #[test]
    fn resource_names_must_start_with_a_valid_tenant() {
        for bad in [
            "",
            "tenants/",
            "tenants/A/x",
            "datasets/1",
            "tenants/a.b/x",
            "tenants/../x",
        ] {
            assert_eq!(
                resource_tenant("name", bad),
                Err(AuthError::InvalidResourceName { field: "name" }),
                "{bad}"
            );
        }
        assert_eq!(
            resource_tenant("parent", "tenants/acme").unwrap().as_str(),
            "acme"
        );
    }
}
