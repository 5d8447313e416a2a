-- Row-level security on the tenant tables (issue 7): a transaction sees only the rows of the tenant
-- named by `trustmesh.tenant` (`trustmesh_bus::schema::rls::tenant_tx` / `set_tenant`), every row
-- only with `trustmesh.scope = 'service'` (`service_tx`: start-up reconciliation of `tm_auth`), no
-- row without either. FORCE makes the owning service role subject to it too.
--
-- `tenants` is not under it: it is the operator's registry of tenants (created, disabled and
-- deleted by the operator, read by id to authorize every call), not a tenant's data. A tenant's
-- deletion removes its grants and quota with its row (ON DELETE CASCADE: referential actions are
-- not subject to row-level security).
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
ALTER TABLE support_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE support_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON support_grants USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
ALTER TABLE quotas ENABLE ROW LEVEL SECURITY;
ALTER TABLE quotas FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON quotas USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
