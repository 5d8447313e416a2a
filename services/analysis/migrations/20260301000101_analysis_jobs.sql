-- analysis jobs. No customer content in plaintext: the job's spec (label column name, column
-- overrides: column names are customer content) is sealed with the service's keyring; model outputs
-- are encrypted objects. Error messages are ours and never quote the data.
CREATE TABLE IF NOT EXISTS jobs (
    tenant        text             NOT NULL,
    id            uuid             NOT NULL,
    dataset       uuid             NOT NULL,
    task_type     smallint         NOT NULL,
    spec_sealed   bytea            NOT NULL,
    state         smallint         NOT NULL,
    progress      double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    step          text             NOT NULL DEFAULT '',
    step_index    integer          NOT NULL DEFAULT 0,
    step_count    integer          NOT NULL DEFAULT 0,
    error_code    text             NOT NULL DEFAULT '',
    error_message text             NOT NULL DEFAULT '',
    output        text             NOT NULL DEFAULT '',
    -- Model outputs are stored (set once, with `analysis.completed` in the same transaction).
    outputs_ready boolean          NOT NULL DEFAULT false,
    row_count     bigint           NOT NULL DEFAULT 0 CHECK (row_count >= 0),
    -- Bumped on every change; `job.updated` carries it so consumers can drop stale updates.
    version       bigint           NOT NULL DEFAULT 1,
    request_id    uuid,
    created_at    timestamptz      NOT NULL DEFAULT now(),
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    started_at    timestamptz,
    ended_at      timestamptz,
    PRIMARY KEY (tenant, id)
);

-- StartAnalysis retries with the same request id return the original job.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_request_id ON jobs (tenant, request_id)
    WHERE request_id IS NOT NULL;
