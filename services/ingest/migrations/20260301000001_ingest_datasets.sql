-- ingest's dataset metadata. No customer content in plaintext: the display name and description
-- (`meta_sealed`) and the file name, digest and schema (`upload_sealed`, column names are customer
-- content) are sealed with the service's keyring; rows and the raw upload are encrypted objects.
CREATE TABLE IF NOT EXISTS datasets (
    tenant        text        NOT NULL,
    id            uuid        NOT NULL,
    state         smallint    NOT NULL,
    format        smallint    NOT NULL DEFAULT 0,
    size_bytes    bigint      NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    row_count     bigint      NOT NULL DEFAULT 0 CHECK (row_count >= 0),
    column_count  integer     NOT NULL DEFAULT 0 CHECK (column_count >= 0),
    modality      smallint    NOT NULL DEFAULT 0,
    meta_sealed   bytea       NOT NULL,
    upload_sealed bytea,
    request_id    uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);

-- CreateDataset retries with the same request id return the original dataset.
CREATE UNIQUE INDEX IF NOT EXISTS datasets_request_id ON datasets (tenant, request_id)
    WHERE request_id IS NOT NULL;
