-- The webhook delivery log: per tenant, which event the notifier would deliver (delivery itself is a
-- later issue). Event ids, types and resource names only: no customer content.

CREATE TABLE deliveries (
    event_id uuid PRIMARY KEY,
    tenant text NOT NULL,
    event_type text NOT NULL,
    resource text NOT NULL,
    -- The dataset the event concerns, if any (so a dataset deletion removes its records).
    dataset text,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending'))
);

CREATE INDEX deliveries_tenant ON deliveries (tenant, recorded_at);
CREATE INDEX deliveries_dataset ON deliveries (tenant, dataset) WHERE dataset IS NOT NULL;
