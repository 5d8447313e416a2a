-- The per-tenant hash-chained audit log: hash_i = SHA-256(hash_{i-1} || canonical(event_i)), where
-- canonical is the protobuf encoding of the AuditEvent rebuilt from these columns, and hash_0 is 32
-- zero bytes. Events hold ids and outcomes, never content.
CREATE TABLE chain_heads (
    tenant text PRIMARY KEY,
    sequence bigint NOT NULL,
    hash bytea NOT NULL
);

CREATE TABLE events (
    tenant text NOT NULL,
    sequence bigint NOT NULL CHECK (sequence > 0),
    event_id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    producer text NOT NULL,
    meta_request_id text NOT NULL,
    actor_type integer NOT NULL,
    actor_id text NOT NULL,
    on_behalf_of text NOT NULL,
    action text NOT NULL,
    resource text NOT NULL,
    outcome integer NOT NULL,
    grpc_code integer NOT NULL,
    reason text NOT NULL,
    request_id text NOT NULL,
    trace_id text NOT NULL,
    source_ip text NOT NULL,
    user_agent text NOT NULL,
    records_affected bigint NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (tenant, sequence),
    UNIQUE (tenant, event_id)
);

CREATE INDEX events_by_time ON events (tenant, occurred_at);

-- Append-only: no role may change or remove an event through SQL (VerifyLog still detects a change
-- made by someone who disables this).
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
