-- Row-level security on trustmesh-store's tables (issue 7), in every schema that runs these
-- migrations: an object's metadata and a DEK both belong to one tenant. A transaction sees only the
-- rows of the tenant named by `trustmesh.tenant` (`trustmesh_bus::schema::rls::tenant_tx`: every
-- `ObjectsRepo` method, a DEK's creation, use, rewrap and destruction), every row only with
-- `trustmesh.scope = 'service'` (`service_tx`: the KEK rotation's search for DEKs wrapped by an older
-- KEK, across tenants), no row without either. FORCE makes the owning service role subject to it too.
ALTER TABLE objects ENABLE ROW LEVEL SECURITY;
ALTER TABLE objects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON objects USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
ALTER TABLE deks ENABLE ROW LEVEL SECURITY;
ALTER TABLE deks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deks USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
