#!/usr/bin/env bash
# The README's test command: installs and starts what the tests need (infra/dev/up.sh), then runs
# format and lint checks and every test of the workspace against real servers, then the Python
# client's tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
TRUSTMESH_DEV_START=0 bash infra/dev/up.sh
# shellcheck disable=SC1091
. "${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}/env"
# Reuse one build directory outside the clone, so a fresh clone does not rebuild every dependency.
# Incremental caches only grow the build directory in CI-style runs.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}/target}
bash infra/dev/prune-target.sh "$CARGO_TARGET_DIR"
cargo fmt --all -- --check
# The deployment artefacts (Kubernetes overlays, compose file, NATS configs), validated offline.
bash infra/k8s/validate.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
# Bounded fuzzing of the upload parser and the crypto envelope (fuzz/README.md).
bash fuzz/run.sh
# The Python client (sdk/python), built from proto/ into a venv under the dev home, tested against a
# standalone mesh its tests start (the binary built here).
VENV=${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}/venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
rm -rf sdk/python/build
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check './sdk/python[test]'
# `cargo test --workspace` built the CLI for its integration tests ($CARGO_TARGET_DIR/debug/trustmesh);
# a run narrowed by arguments may not have.
[ $# -eq 0 ] || cargo build --locked -p trustmesh-cli
TRUSTMESH_BIN="$CARGO_TARGET_DIR/debug/trustmesh" "$VENV/bin/python" -m pytest -p no:cacheprovider sdk/python/tests
