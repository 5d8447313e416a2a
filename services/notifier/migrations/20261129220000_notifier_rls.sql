-- Row-level security on the tenant tables (issue 7): endpoints, their deliveries and the deleted
-- datasets' tombstones are all per tenant. A transaction sees only the rows of the tenant named by
-- `trustmesh.tenant` (`trustmesh_bus::schema::rls::tenant_tx`: the API, the consumer queueing a
-- tenant's event, a deletion of one tenant or dataset), every row only with
-- `trustmesh.scope = 'service'` (`service_tx`: the dispatcher, which leases due deliveries of every
-- tenant), no row without either. FORCE makes the owning service role subject to it too.
-- `outbox` and `processed_messages` hold no tenant's rows (events in flight, message ids).
ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_endpoints USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
ALTER TABLE deleted_datasets ENABLE ROW LEVEL SECURITY;
ALTER TABLE deleted_datasets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deleted_datasets USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
