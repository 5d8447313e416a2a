#!/usr/bin/env bash
# Restores a data backup of infra/backup/backup.sh into a NEW database and object directory, taking
# the keys from the live system (or from a key backup): whatever was crypto-shredded since the backup
# stays unreadable. See README.md.
#
#   infra/backup/restore.sh BACKUP_DIR TARGET_DATABASE_URL TARGET_OBJECTS_DIR \
#       (--keys-from LIVE_DATABASE_URL | --keys-file KEY_BACKUP)
set -euo pipefail
backup=${1:?usage: restore.sh BACKUP_DIR TARGET_DATABASE_URL TARGET_OBJECTS_DIR (--keys-from URL | --keys-file FILE)}
target=${2:?target database URL}
objects=${3:?target objects directory}
mode=${4:?--keys-from LIVE_DATABASE_URL or --keys-file KEY_BACKUP}
source=${5:?the live database URL or the key backup file}
say() { printf '[restore] %s\n' "$*" >&2; }

[ -f "$backup/postgres.dump" ] || { say "$backup holds no postgres.dump"; exit 2; }
[ ! -e "$objects" ] || { say "$objects exists; restore into a new directory"; exit 2; }
# The target database must be new: create it through the server's maintenance database.
name=${target##*/}
name=${name%%\?*}
admin=${target%/*}/postgres
if [ "$(psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" = 1 ]; then
  say "database $name exists; restore into a new one"
  exit 2
fi
psql "$admin" -q -c "CREATE DATABASE \"$name\""
pg_restore --no-owner --exit-on-error --dbname="$target" "$backup/postgres.dump"

case "$mode" in
  --keys-from)
    # The live wrapped DEKs, table by table: a deleted tenant's keys are tombstones there.
    for table in $(psql "$source" -tAc "SELECT quote_ident(table_schema) || '.deks' FROM information_schema.tables WHERE table_name = 'deks'"); do
      psql "$source" -q -c "\\copy $table TO STDOUT" | psql "$target" -q -c "\\copy $table FROM STDIN"
    done
    ;;
  --keys-file)
    psql "$target" -q -v ON_ERROR_STOP=1 -f "$source"
    ;;
  *)
    say "unknown key source $mode"
    exit 2
    ;;
esac
cp -a "$backup/objects" "$objects"
say "restored $backup into $name and $objects"
