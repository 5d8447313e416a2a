-- The datasets a dataset deletion has removed, so that an event about one that arrives later (a
-- redelivery, a consumer catching up after a restart) queues no delivery for it again. Dataset names
-- only, like the deletion service's own record; a tenant's deletion removes its rows (its endpoints
-- go with it, so nothing can be queued for the tenant afterwards).

CREATE TABLE deleted_datasets (
    tenant text NOT NULL,
    dataset text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, dataset)
);
