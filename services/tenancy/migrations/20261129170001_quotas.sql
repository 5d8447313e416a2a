-- Per-tenant quota overrides, replicated to tm_auth as `quotas.<tenant>`; 0 means the deployment's
-- default. A tenant without a row has every default. A tenant's deletion removes its row with it.
CREATE TABLE quotas (
    tenant text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    max_requests_per_minute bigint NOT NULL DEFAULT 0
        CHECK (max_requests_per_minute BETWEEN 0 AND 4294967295),
    max_concurrent_jobs bigint NOT NULL DEFAULT 0
        CHECK (max_concurrent_jobs BETWEEN 0 AND 4294967295),
    max_storage_bytes bigint NOT NULL DEFAULT 0 CHECK (max_storage_bytes >= 0),
    update_time timestamptz NOT NULL DEFAULT now()
);
