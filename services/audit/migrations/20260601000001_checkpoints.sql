-- Signed checkpoints: an Ed25519 signature, by the key `key_id`, over the canonical checkpoint
-- `trustmesh.audit.checkpoint.v1\n{tenant}\n{sequence}\n{hex hash}\n{unix micros of signed_at}\n`,
-- committing to the tenant's chain up to `sequence` (whose chain hash is `hash`).
CREATE TABLE checkpoints (
    tenant text NOT NULL,
    sequence bigint NOT NULL CHECK (sequence > 0),
    hash bytea NOT NULL,
    signed_at timestamptz NOT NULL,
    key_id text NOT NULL,
    signature bytea NOT NULL,
    PRIMARY KEY (tenant, sequence)
);

-- The last checkpoint of each chain, to know when the next is due.
ALTER TABLE chain_heads
    ADD COLUMN checkpointed_sequence bigint NOT NULL DEFAULT 0,
    ADD COLUMN checkpointed_at timestamptz NOT NULL DEFAULT now();

CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
