#!/usr/bin/env bash
# Issues a local mesh CA and a certificate per service (and one for nats) for development, into
# $TRUSTMESH_DEV_HOME/certs (default ~/.trustmesh-dev/certs) or the directory given as $1, with
# `trustmesh dev-certs` (sdk/cli; the same Rust implementation the tests use, trustmesh_testkit::tls).
# Idempotent: the CA and every certificate present are kept; only missing ones are issued.
# Each certificate's CN and DNS name are the service's (plus localhost, 127.0.0.1, ::1), for server
# and client authentication. Not run by up.sh: it builds the CLI (a few minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEV_HOME=${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}
OUT=${1:-$DEV_HOME/certs}
cargo run --quiet -p trustmesh-cli --bin trustmesh -- dev-certs --out "$OUT" >&2
cat <<HINT
# A service with TLS 1.3 and mTLS, e.g. ingest (its clients: TRUSTMESH_<PEER>__TLS__{CA,CERT,KEY}_FILE):
export TRUSTMESH_GRPC__TLS__CERT_FILE=$OUT/ingest.pem TRUSTMESH_GRPC__TLS__KEY_FILE=$OUT/ingest.key
export TRUSTMESH_GRPC__TLS__CLIENT_CA_FILE=$OUT/ca.pem
# NATS with TLS and the per-service users (also set TRUSTMESH_NATS_PASSWORD_<SERVICE> for each):
#   TRUSTMESH_NATS_TLS_CERT_FILE=$OUT/nats.pem TRUSTMESH_NATS_TLS_KEY_FILE=$OUT/nats.key \\
#   TRUSTMESH_NATS_TLS_CA_FILE=$OUT/ca.pem nats-server -c infra/nats/nats-server-tls.conf
# and each service: TRUSTMESH_NATS__TLS__CA_FILE=$OUT/ca.pem TRUSTMESH_NATS__TLS__CERT_FILE=$OUT/ingest.pem
#   TRUSTMESH_NATS__TLS__KEY_FILE=$OUT/ingest.key TRUSTMESH_NATS__USER=ingest TRUSTMESH_NATS__PASSWORD=...
HINT
