-- trust-scoring's reports and corrections. No customer content in plaintext: the report body
-- (class names in its class health) is sealed with the service's keyring, per-row results (given
-- and suggested labels) are an encrypted object, and corrected labels are sealed.
CREATE TABLE IF NOT EXISTS reports (
    tenant            text             NOT NULL,
    -- The report of job J has J's id: one report per job, however often its analysis completes.
    id                uuid             NOT NULL,
    dataset           uuid             NOT NULL,
    row_count         bigint           NOT NULL CHECK (row_count >= 0),
    flagged_row_count bigint           NOT NULL CHECK (flagged_row_count >= 0),
    health_score      double precision NOT NULL,
    report_sealed     bytea            NOT NULL,
    created_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);

CREATE TABLE IF NOT EXISTS corrections (
    tenant           text        NOT NULL,
    report           uuid        NOT NULL,
    row_index        bigint      NOT NULL CHECK (row_index >= 0),
    action           smallint    NOT NULL,
    label_sealed     bytea,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, report, row_index),
    FOREIGN KEY (tenant, report) REFERENCES reports (tenant, id) ON DELETE CASCADE
);
