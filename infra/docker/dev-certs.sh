#!/bin/bash
# Issues a throwaway CA and one server certificate for the docker-compose layout, into $CERTS_DIR
# (default /certs, a named volume), once: a second run finds them and does nothing.
#
# Every hop of the layout is TLS (the services refuse plaintext off loopback: gRPC, Postgres with
# verify-full, NATS, S3), so the containers need certificates before they start. The certificate
# names every container (its subjectAltName), and each consumer gets its own copy of the key, owned
# by the user that process runs as, mode 0600:
#   trustmesh/  uid 10001 (the trustmesh image)     postgres/  uid 999 (the postgres image)
#   nats/, s3/, gateway/  root (those images' default user)
# ca.pem is world-readable; the CA key is deleted once the certificate is issued.
# For production use certificates from your own CA (cert-manager, Vault PKI, ...): see infra/README.md.
set -euo pipefail

CERTS_DIR=${CERTS_DIR:-/certs}
NAMES=${DEV_CERT_NAMES:-tenancy ingest analysis trust-scoring deletion audit notifier nats postgres s3 gateway localhost}
DAYS=${DEV_CERT_DAYS:-365}

if [ -s "$CERTS_DIR/ca.pem" ] && [ -s "$CERTS_DIR/trustmesh/server.pem" ] \
   && openssl x509 -checkend 86400 -noout -in "$CERTS_DIR/trustmesh/server.pem" >/dev/null; then
  echo "dev-certs: certificates in $CERTS_DIR are present and valid"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

san="IP:127.0.0.1"
for name in $NAMES; do san="$san,DNS:$name"; done

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days "$DAYS" \
  -subj "/CN=trustmesh dev CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
  -subj "/CN=trustmesh dev server" -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
cat > "$work/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san
EXT
openssl x509 -req -sha256 -days "$DAYS" -in "$work/server.csr" -CA "$work/ca.pem" \
  -CAkey "$work/ca.key" -CAcreateserial -extfile "$work/ext.cnf" -out "$work/server.pem" 2>/dev/null

mkdir -p "$CERTS_DIR"
install -m 0644 "$work/ca.pem" "$CERTS_DIR/ca.pem"
for consumer in trustmesh:10001 postgres:999 nats:0 s3:0 gateway:0; do
  dir=${consumer%%:*}
  uid=${consumer##*:}
  install -d -m 0755 "$CERTS_DIR/$dir"
  install -m 0644 -o "$uid" -g "$uid" "$work/server.pem" "$CERTS_DIR/$dir/server.pem"
  install -m 0600 -o "$uid" -g "$uid" "$work/server.key" "$CERTS_DIR/$dir/server.key"
done
echo "dev-certs: issued a CA and a server certificate for: $NAMES"
