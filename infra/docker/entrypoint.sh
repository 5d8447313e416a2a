#!/bin/bash
# The image's entrypoint: picks the process from the first argument, after two preparations that
# container runtimes make necessary.
#
#   tenancy | ingest | analysis | trust-scoring | deletion | audit | notifier   -> trustmesh-<name>
#   standalone [flags]                                                            -> trustmesh standalone
#   healthcheck [path]        GET http://127.0.0.1:<admin port><path> (default /readyz), exit 0 on 200
#   anything else                                                                 -> trustmesh <args>
#
# Preparations (both optional, driven by environment variables):
#   TRUSTMESH_KEYS_FROM=<dir>  copies every file of <dir> (a mounted Kubernetes/Docker secret) into
#       TRUSTMESH_KEYS_DIR (default /run/trustmesh/keys) with mode 0600. The services refuse key files
#       that group or others can read, and mounted secrets are root-owned or group-readable (fsGroup),
#       so they cannot be used in place. Point `keys.kek_file` / `keys.signing_key_file` at the copies.
#   TRUSTMESH_EXTRA_CA_FILE=<pem>  appends a private CA to the system roots into
#       /run/trustmesh/ca-bundle.pem and exports SSL_CERT_FILE, which the NATS and S3 clients read
#       (Postgres takes `sslrootcert` in its URL, peers `*.tls.ca_file`).
set -euo pipefail

RUN_DIR=${TRUSTMESH_RUN_DIR:-/run/trustmesh}

prepare_keys() {
  local from=${TRUSTMESH_KEYS_FROM:-}
  [ -n "$from" ] || return 0
  local to=${TRUSTMESH_KEYS_DIR:-$RUN_DIR/keys}
  if [ ! -d "$from" ]; then
    echo "trustmesh-entrypoint: TRUSTMESH_KEYS_FROM=$from is not a directory" >&2
    exit 64
  fi
  (umask 077 && mkdir -p "$to")
  local copied=0 file
  for file in "$from"/*; do
    # Kubernetes secret volumes hold `..data` symlinks and timestamped directories: copy only the
    # visible names, which resolve to the current version.
    [ -f "$file" ] || continue
    install -m 0600 "$file" "$to/$(basename "$file")"
    copied=$((copied + 1))
  done
  if [ "$copied" = 0 ]; then
    # A service would otherwise create a fresh key, which other replicas do not share.
    echo "trustmesh-entrypoint: no key file in $from" >&2
    exit 64
  fi
}

prepare_ca() {
  local ca=${TRUSTMESH_EXTRA_CA_FILE:-}
  [ -n "$ca" ] || return 0
  (umask 022 && mkdir -p "$RUN_DIR")
  cat /etc/ssl/certs/ca-certificates.crt "$ca" > "$RUN_DIR/ca-bundle.pem"
  export SSL_CERT_FILE=$RUN_DIR/ca-bundle.pem
}

healthcheck() {
  local path=${1:-/readyz}
  local bind=${TRUSTMESH_ADMIN__BIND:-127.0.0.1:9464}
  local port=${bind##*:}
  # bash's /dev/tcp: the image carries no HTTP client.
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
  local status
  IFS=' ' read -r _ status _ <&3 || exit 1
  [ "$status" = 200 ]
}

case "${1:-}" in
  healthcheck)
    shift
    healthcheck "$@"
    ;;
  tenancy | ingest | analysis | trust-scoring | deletion | audit | notifier)
    service=$1
    shift
    prepare_keys
    prepare_ca
    exec "/usr/local/bin/trustmesh-$service" "$@"
    ;;
  *)
    prepare_keys
    prepare_ca
    exec /usr/local/bin/trustmesh "$@"
    ;;
esac
