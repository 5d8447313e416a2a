-- Tenants and API keys. Keys are stored as SHA-256 digests of their secrets only; the secret is
-- returned once by CreateApiKey and never written anywhere.
CREATE TABLE tenants (
    id text PRIMARY KEY,
    display_name text NOT NULL,
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled', 'deleting')),
    disable_reason text NOT NULL DEFAULT '',
    request_id text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id text PRIMARY KEY,
    tenant text NOT NULL REFERENCES tenants (id),
    display_name text NOT NULL,
    scopes text[] NOT NULL,
    secret_digest bytea NOT NULL CHECK (length(secret_digest) = 32),
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    revoke_time timestamptz,
    request_id text,
    UNIQUE (tenant, request_id)
);

-- ListApiKeys: newest first within a tenant (key ids are UUIDv7, so they sort by creation).
CREATE INDEX api_keys_by_tenant ON api_keys (tenant, key_id DESC);
