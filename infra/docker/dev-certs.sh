#!/bin/bash
# Issues a throwaway CA, one certificate per trustmesh service and one for the infrastructure, for the
# docker-compose layout, into $CERTS_DIR (default /certs, a named volume), once: a second run finds
# them and does nothing.
#
# Every hop of the layout is TLS (the services refuse plaintext off loopback: gRPC, Postgres with
# verify-full, NATS, S3), so the containers need certificates before they start.
#   trustmesh/<service>.{pem,key}  uid 10001 (the trustmesh image): CN and the one DNS name are the
#       service's (the container name), server and client auth: each service serves gRPC with it and
#       presents it to the services it calls and to NATS (mTLS); a listener reads the caller's service
#       name from it (libs/auth peer.rs). It must name exactly one service.
#   <consumer>/server.{pem,key}    the infrastructure's certificate, naming nats, postgres, s3, gateway
#       and localhost (never a service), one copy of the key per consumer, owned by the user that
#       process runs as, mode 0600: postgres/ uid 999, nats/ s3/ gateway/ root.
# ca.pem is world-readable; the CA key is deleted once the certificates are issued.
# The same layout from Rust, for development: `trustmesh dev-certs --out DIR` (infra/dev).
# For production use certificates from your own CA (cert-manager, Vault PKI, ...): see infra/README.md.
set -euo pipefail

CERTS_DIR=${CERTS_DIR:-/certs}
SERVICES="tenancy ingest analysis trust-scoring deletion audit notifier"
NAMES=${DEV_CERT_NAMES:-nats postgres s3 gateway localhost}
DAYS=${DEV_CERT_DAYS:-365}

present=true
for cert in nats/server $(for svc in $SERVICES; do echo "trustmesh/$svc"; done); do
  if ! [ -s "$CERTS_DIR/$cert.pem" ] \
     || ! openssl x509 -checkend 86400 -noout -in "$CERTS_DIR/$cert.pem" >/dev/null 2>&1; then
    present=false
  fi
done
if [ -s "$CERTS_DIR/ca.pem" ] && [ "$present" = true ]; then
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
for svc in $SERVICES; do
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
    -subj "/CN=$svc" -keyout "$work/$svc.key" -out "$work/$svc.csr" 2>/dev/null
  sed "s/^subjectAltName=.*/subjectAltName=DNS:$svc/" "$work/ext.cnf" > "$work/$svc.cnf"
  openssl x509 -req -sha256 -days "$DAYS" -in "$work/$svc.csr" -CA "$work/ca.pem" \
    -CAkey "$work/ca.key" -CAcreateserial -extfile "$work/$svc.cnf" -out "$work/$svc.pem" 2>/dev/null
done

mkdir -p "$CERTS_DIR"
install -m 0644 "$work/ca.pem" "$CERTS_DIR/ca.pem"
install -d -m 0755 "$CERTS_DIR/trustmesh"
for svc in $SERVICES; do
  install -m 0644 -o 10001 -g 10001 "$work/$svc.pem" "$CERTS_DIR/trustmesh/$svc.pem"
  install -m 0600 -o 10001 -g 10001 "$work/$svc.key" "$CERTS_DIR/trustmesh/$svc.key"
done
for consumer in postgres:999 nats:0 s3:0 gateway:0; do
  dir=${consumer%%:*}
  uid=${consumer##*:}
  install -d -m 0755 "$CERTS_DIR/$dir"
  install -m 0644 -o "$uid" -g "$uid" "$work/server.pem" "$CERTS_DIR/$dir/server.pem"
  install -m 0600 -o "$uid" -g "$uid" "$work/server.key" "$CERTS_DIR/$dir/server.key"
done
echo "dev-certs: issued a CA, a certificate per service ($SERVICES) and one for: $NAMES"
