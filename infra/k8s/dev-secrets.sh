#!/usr/bin/env bash
# Prints (to stdout, as YAML) every Secret the k8s layout references, freshly generated, for a
# development cluster:
#
#   TRUSTMESH_DATABASE_URL='postgres://trustmesh:PW@postgres.trustmesh-dev.svc:5432/trustmesh?sslmode=verify-full&sslrootcert=/etc/trustmesh/tls/ca.crt' \
#   TRUSTMESH_S3_ACCESS_KEY_ID=... TRUSTMESH_S3_SECRET_ACCESS_KEY=... \
#     bash infra/k8s/dev-secrets.sh [namespace] > secrets.yaml && kubectl apply -f secrets.yaml && shred -u secrets.yaml
#
# A throwaway CA signs one certificate per service (SANs <service>, <service>.<ns>.svc: its gRPC server
# certificate and the client certificate it presents to other services and NATS) and one for
# NATS (nats, *.nats-headless, ...); a datastore of yours can use ca.crt/ca.key kept in $OUT_DIR
# (default: a temporary directory, deleted). Key files are new random KEKs (`kek 1 <hex>`) and
# Ed25519 seeds (`ed25519 <hex>`); the credentials are random. Running it again makes new keys:
# apply it once per namespace, or lose access to what the old keys encrypted.
# Production: issue certificates from your PKI (cert-manager) and keep keys in your secret manager
# (infra/README.md, "Key management").
set -euo pipefail

NS=${1:-trustmesh-dev}
KUBECTL=${KUBECTL:-kubectl}
: "${TRUSTMESH_DATABASE_URL:?set TRUSTMESH_DATABASE_URL (the administrator's postgres:// URL: the postgres-roles Job provisions the services' roles with it)}"
: "${TRUSTMESH_S3_ACCESS_KEY_ID:?set TRUSTMESH_S3_ACCESS_KEY_ID}"
: "${TRUSTMESH_S3_SECRET_ACCESS_KEY:?set TRUSTMESH_S3_SECRET_ACCESS_KEY}"
SERVICES="tenancy ingest analysis trust-scoring deletion audit notifier"

if [ -n "${OUT_DIR:-}" ]; then
  work=$OUT_DIR
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
umask 077

hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
secret() { head -c 36 /dev/urandom | base64 | tr '+/' '-_'; }
# kubectl builds each Secret client-side (no cluster needed); documents are separated by ---.
emit() { echo "---"; "$KUBECTL" create secret "$@" --namespace "$NS" --dry-run=client -o yaml; }

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 365 \
  -subj "/CN=trustmesh dev CA ($NS)" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null

# issue NAME SAN...: a P-256 server+client certificate signed by the CA, into $work/NAME.{crt,key}.
issue() {
  local name=$1 san="" dns
  shift
  for dns in "$@"; do san="${san:+$san,}DNS:$dns"; done
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -subj "/CN=$name" \
    -keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' \
    "$san" > "$work/$name.ext"
  openssl x509 -req -sha256 -days 365 -in "$work/$name.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
}

for svc in $SERVICES; do
  issue "$svc" "$svc" "$svc.$NS.svc" "$svc.$NS.svc.cluster.local"
  emit generic "trustmesh-$svc-tls" --type kubernetes.io/tls \
    --from-file=tls.crt="$work/$svc.crt" --from-file=tls.key="$work/$svc.key" --from-file=ca.crt="$work/ca.crt"
done
issue nats nats "nats.$NS.svc" "*.nats-headless" "*.nats-headless.$NS.svc" "*.nats-headless.$NS.svc.cluster.local"
emit generic trustmesh-nats-tls --type kubernetes.io/tls \
  --from-file=tls.crt="$work/nats.crt" --from-file=tls.key="$work/nats.key" --from-file=ca.crt="$work/ca.crt"

for svc in ingest analysis trust-scoring notifier; do
  printf 'kek 1 %s\n' "$(hex 32)" > "$work/$svc.kek"
  emit generic "trustmesh-$svc-keys" --from-file=kek="$work/$svc.kek"
done
for svc in audit deletion; do
  printf 'ed25519 %s\n' "$(hex 32)" > "$work/$svc.signing-key"
  emit generic "trustmesh-$svc-keys" --from-file=signing-key="$work/$svc.signing-key"
done

# Each service connects as its own role tm_<schema> (infra/postgres/provision-roles.sql): the
# administrator's URL with the role and a fresh password as credentials. The passwords also go to
# trustmesh-database-roles (key = schema), and the administrator's URL, with the dev CA (which
# signs your dev Postgres's certificate), to trustmesh-database-admin: the postgres-roles Job
# (base/postgres-roles) reads both and provisions the roles; no service reads them.
db_scheme=${TRUSTMESH_DATABASE_URL%%://*}
db_rest=${TRUSTMESH_DATABASE_URL#*://}
db_rest=${db_rest#*@}
db_args=()
role_args=()
for svc in $SERVICES; do
  schema=${svc//-/_}
  password=$(secret)
  db_args+=("--from-literal=$svc=$db_scheme://tm_$schema:$password@$db_rest")
  role_args+=("--from-literal=$schema=$password")
done
emit generic trustmesh-database "${db_args[@]}"
emit generic trustmesh-database-roles "${role_args[@]}"
emit generic trustmesh-database-admin --from-literal=url="$TRUSTMESH_DATABASE_URL" \
  --from-file=ca.crt="$work/ca.crt"
# One NATS password per service user (infra/nats permissions.conf): nats and that service read it.
nats_args=()
for svc in $SERVICES; do nats_args+=("--from-literal=$svc=$(secret)"); done
emit generic trustmesh-nats-users "${nats_args[@]}"
emit generic trustmesh-credentials \
  --from-literal=operator-credential="$(secret)" --from-literal=service-credential="$(secret)"
emit generic trustmesh-s3 \
  --from-literal=access-key-id="$TRUSTMESH_S3_ACCESS_KEY_ID" \
  --from-literal=secret-access-key="$TRUSTMESH_S3_SECRET_ACCESS_KEY"
# The Ingress's public certificate: in dev, one for its host from the same CA.
issue ingress trustmesh.localtest.me
emit tls trustmesh-ingress-tls --cert="$work/ingress.crt" --key="$work/ingress.key"
