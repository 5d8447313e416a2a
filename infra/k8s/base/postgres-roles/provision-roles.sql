-- One Postgres role per service, owning only its schema (issue 7; the same steps as
-- `trustmesh_bus::schema::roles::provision_service_role`, which tests run against a real server).
-- Run as an administrator (superuser, or CREATEROLE and member of the roles), once per service and
-- again whenever a password changes:
--
--   for svc in tenancy ingest analysis trust_scoring deletion audit notifier; do
--     psql "$ADMIN_URL" -v schema=$svc -v password="$(cat secrets/pg-$svc)" -f infra/postgres/provision-roles.sql
--   done
--
-- infra/docker runs this loop in its one-shot `postgres-roles` container at every start; on
-- Kubernetes the `postgres-roles` Job does (infra/k8s/base/postgres-roles, with a copy of this file
-- that validate.sh keeps identical); `trustmesh standalone` and the multi-process tests do the same
-- in Rust (`provision_for_admin_url`).
--
-- Each service then connects as `tm_<schema>` (its own `TRUSTMESH_DATABASE__URL`, with
-- `sslmode=verify-full` off loopback): it may migrate its schema and nothing else, cannot read
-- another service's schema, and is subject to the row-level security its tenant tables FORCE.
\set ON_ERROR_STOP on
\set role tm_ :schema
BEGIN;
SELECT format('%s ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION PASSWORD %L',
              CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') THEN 'ALTER' ELSE 'CREATE' END,
              :'role', :'password') \gexec
CREATE SCHEMA IF NOT EXISTS :"schema";
ALTER SCHEMA :"schema" OWNER TO :"role";
-- Tables, views and free sequences created before the role existed change owner too.
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
              n.nspname, c.relname, :'role')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :'schema' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
  AND pg_get_userbyid(c.relowner) <> :'role'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('a', 'i')) \gexec
-- Nothing on any other schema.
SELECT format('REVOKE ALL ON SCHEMA %1$I FROM %2$I; REVOKE ALL ON ALL TABLES IN SCHEMA %1$I FROM %2$I; REVOKE ALL ON ALL SEQUENCES IN SCHEMA %1$I FROM %2$I',
              nspname, :'role')
FROM pg_namespace
WHERE nspname <> :'schema' AND nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%' \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
COMMIT;
