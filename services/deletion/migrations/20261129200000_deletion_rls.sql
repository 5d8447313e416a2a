-- Row-level security on the tenant tables (issue 7): a transaction sees only the rows of the tenant
-- named by `trustmesh.tenant` (`trustmesh_bus::schema::rls::tenant_tx`), every row only with
-- `trustmesh.scope = 'service'` (`service_tx`: the sweeper), no row without either. FORCE makes
-- the owning service role subject to it too.
ALTER TABLE deletions ENABLE ROW LEVEL SECURITY;
ALTER TABLE deletions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deletions USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');

-- Receipts and certificates have no tenant column: they belong to the tenant of their deletion. The
-- policy reads `deletions`, itself under the policy above, so a receipt or certificate is visible
-- (and writable) exactly when its deletion is.
ALTER TABLE receipts ENABLE ROW LEVEL SECURITY;
ALTER TABLE receipts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON receipts
    USING (EXISTS (SELECT 1 FROM deletions d WHERE d.id = deletion_id))
    WITH CHECK (EXISTS (SELECT 1 FROM deletions d WHERE d.id = deletion_id));
ALTER TABLE certificates ENABLE ROW LEVEL SECURITY;
ALTER TABLE certificates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON certificates
    USING (EXISTS (SELECT 1 FROM deletions d WHERE d.id = deletion_id))
    WITH CHECK (EXISTS (SELECT 1 FROM deletions d WHERE d.id = deletion_id));

-- `signing_keys` holds the service's public keys (no tenant data): not under a tenant policy.
