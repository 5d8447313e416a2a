#!/usr/bin/env bash
# Stops the dev servers that infra/dev/up.sh started (nats-server, s3s-fs). PostgreSQL is the
# machine's own service and keeps running. Data stays under $TRUSTMESH_DEV_HOME unless --wipe.
set -euo pipefail
DEV_HOME=${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}
for name in nats s3; do
  pidfile=$DEV_HOME/run/$name.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")" && printf '[infra/dev] stopped %s\n' "$name" >&2
  fi
  rm -f "$pidfile"
done
if [ "${1:-}" = --wipe ]; then rm -rf "$DEV_HOME/data"; printf '[infra/dev] wiped data\n' >&2; fi
