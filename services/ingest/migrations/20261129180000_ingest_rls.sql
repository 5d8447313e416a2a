-- Row-level security on the tenant tables (issue 7): a transaction sees only the rows of the tenant
-- named by `trustmesh.tenant` (`trustmesh_bus::schema::rls::tenant_tx`), every row only with
-- `trustmesh.scope = 'service'` (`service_tx`, service-wide work), no row without either. FORCE
-- makes the owning service role subject to it too.
ALTER TABLE datasets ENABLE ROW LEVEL SECURITY;
ALTER TABLE datasets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON datasets USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
