-- Support grants: a tenant's time-limited, scoped access for the operator, replicated to tm_auth.
-- A tenant's deletion removes its grants with it.
CREATE TABLE support_grants (
    grant_id uuid PRIMARY KEY,
    tenant text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    grantee text NOT NULL,
    reason text NOT NULL,
    scopes text[] NOT NULL,
    resources text[] NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    revoke_time timestamptz,
    request_id text,
    UNIQUE (tenant, request_id)
);

-- ListSupportAccessGrants: newest first within a tenant (grant ids are UUIDv7).
CREATE INDEX support_grants_by_tenant ON support_grants (tenant, grant_id DESC);
