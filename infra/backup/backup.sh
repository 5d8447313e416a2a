#!/usr/bin/env bash
# A trustmesh backup: the Postgres database WITHOUT the wrapped data-encryption keys, plus a copy of
# the object store. Keys never travel with data backups, so a tenant deleted after this backup was
# taken (its DEKs destroyed in the live system) cannot be read back from it. See README.md.
#
#   infra/backup/backup.sh OUT_DIR                 data backup (database minus keys, objects)
#   infra/backup/backup.sh --keys OUT_FILE         key backup (the wrapped DEKs only; short retention)
#
# Environment: TRUSTMESH_DATABASE_URL (postgres://...), TRUSTMESH_OBJECTS_DIR (the local object
# store; for S3 copy the bucket with its own tooling, versions included).
set -euo pipefail
DB=${TRUSTMESH_DATABASE_URL:?set TRUSTMESH_DATABASE_URL}
say() { printf '[backup] %s\n' "$*" >&2; }

if [ "${1:-}" = "--keys" ]; then
  out=${2:?usage: backup.sh --keys OUT_FILE}
  # Every service's `deks` table (wrapped DEKs and shredding tombstones), data only.
  pg_dump --data-only --no-owner --table='*.deks' --file="$out" "$DB"
  chmod 600 "$out"
  say "key backup written to $out (keep it no longer than the backup retention in the certificates)"
  exit 0
fi

out=${1:?usage: backup.sh OUT_DIR | backup.sh --keys OUT_FILE}
objects=${TRUSTMESH_OBJECTS_DIR:?set TRUSTMESH_OBJECTS_DIR}
[ ! -e "$out" ] || { say "$out exists; choose a new directory"; exit 2; }
mkdir -p "$out"
chmod 700 "$out"
# The `deks` tables' definitions are kept (a restore recreates them empty); their rows are not.
pg_dump --format=custom --no-owner --exclude-table-data='*.deks' --file="$out/postgres.dump" "$DB"
cp -a "$objects" "$out/objects"
{
  echo "taken_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "database=postgres.dump (pg_dump custom format; rows of every *.deks table excluded)"
  echo "objects=objects/ (ciphertext only)"
} > "$out/MANIFEST"
say "data backup written to $out ($(du -sh "$out" | cut -f1))"
