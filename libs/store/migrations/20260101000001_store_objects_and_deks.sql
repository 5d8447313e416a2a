-- trustmesh-store's tables, created in the schema of the service that runs these migrations.

-- Metadata of encrypted objects. The object's bytes live in object storage (ciphertext only); the
-- customer-visible name is sealed too. Every query filters on tenant (TenantScope).
CREATE TABLE IF NOT EXISTS objects (
    tenant      text        NOT NULL,
    object      text        NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    size        bigint      NOT NULL CHECK (size >= 0),
    sealed_size bigint      NOT NULL CHECK (sealed_size >= 0),
    name_sealed bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, object)
);

-- Data-encryption keys, only ever wrapped by the service's key-encryption key. Destroying a tenant's
-- keys (crypto-shredding) erases `wrapped` and keeps the row as the record of when it happened.
CREATE TABLE IF NOT EXISTS deks (
    service      text        NOT NULL,
    tenant       text        NOT NULL,
    version      bigint      NOT NULL CHECK (version > 0),
    kek_version  bigint      NOT NULL CHECK (kek_version >= 0),
    wrapped      bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    PRIMARY KEY (service, tenant, version),
    CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS deks_behind ON deks (service, kek_version) WHERE destroyed_at IS NULL;
