-- Deletion requests, the receipts of every store-owning service, signed certificates and the keys
-- that signed them. Only ids, resource names, counts and times: no customer content.

CREATE TABLE deletions (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    scope text NOT NULL CHECK (scope IN ('dataset', 'tenant')),
    target text NOT NULL,
    reason text NOT NULL,
    requested_by text NOT NULL,
    request_id text,
    expected_services text[] NOT NULL,
    state text NOT NULL CHECK (state IN ('in_progress', 'completed', 'failed')),
    -- Times deletion.requested was published (1 + retries).
    attempts integer NOT NULL DEFAULT 1,
    -- Version of the job's last job.updated event.
    job_version bigint NOT NULL DEFAULT 1,
    -- When missing receipts lead to a retry or to FAILED.
    next_check_at timestamptz NOT NULL,
    error_code text,
    error_message text,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    complete_time timestamptz
);

CREATE UNIQUE INDEX deletions_request_id ON deletions (tenant, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX deletions_due ON deletions (next_check_at) WHERE state = 'in_progress';
CREATE INDEX deletions_target ON deletions (tenant, target) WHERE state = 'in_progress';

CREATE TABLE receipts (
    deletion_id uuid NOT NULL REFERENCES deletions (id),
    service text NOT NULL,
    deleted jsonb NOT NULL,
    residue jsonb NOT NULL,
    residue_found boolean NOT NULL,
    deks_destroyed bigint NOT NULL,
    complete_time timestamptz NOT NULL,
    PRIMARY KEY (deletion_id, service)
);

CREATE TABLE certificates (
    deletion_id uuid PRIMARY KEY REFERENCES deletions (id),
    document bytea NOT NULL,
    signature bytea NOT NULL,
    key_id text NOT NULL,
    issue_time timestamptz NOT NULL
);

CREATE TABLE signing_keys (
    key_id text PRIMARY KEY,
    public_key bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    retire_time timestamptz
);
