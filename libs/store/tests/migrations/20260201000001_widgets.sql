-- A stand-in for a service's own migration.
CREATE TABLE widgets (tenant text NOT NULL, id uuid PRIMARY KEY, label_sealed bytea NOT NULL);
