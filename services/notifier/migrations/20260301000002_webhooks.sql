-- Webhook endpoints (signing secrets sealed with the tenant's DEK: never plaintext) and their
-- deliveries, which replace the record-only log of the first version. Event ids, types, resource
-- names and HTTP outcomes only: no customer content, no response bodies.

DROP TABLE deliveries;

CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    url text NOT NULL,
    event_types text[] NOT NULL,
    description text NOT NULL DEFAULT '',
    disabled boolean NOT NULL DEFAULT false,
    -- `tenant` or `gone` (the endpoint answered HTTP 410).
    disabled_by text,
    secret_sealed bytea NOT NULL,
    -- Bumped by every rotation: the sealed secret's object version.
    secret_version bigint NOT NULL DEFAULT 1,
    request_id text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, request_id)
);

CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant, id);

CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    endpoint uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    -- The dataset the event concerns, if any (so a dataset deletion removes its deliveries).
    dataset text,
    -- The exact body signed on every attempt: type, time and resource names.
    payload text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempt_count integer NOT NULL DEFAULT 0,
    last_http_status integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    last_attempt_time timestamptz,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    -- A replica working on it holds it until then.
    lease_until timestamptz,
    UNIQUE (endpoint, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_time) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (tenant, endpoint, id DESC);
CREATE INDEX webhook_deliveries_by_dataset ON webhook_deliveries (tenant, dataset) WHERE dataset IS NOT NULL;
