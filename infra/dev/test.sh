#!/usr/bin/env bash
# The README's test command: installs and starts what the tests need (infra/dev/up.sh), then runs
# format and lint checks and every test of the workspace against real servers.
set -euo pipefail
cd "$(dirname "$0")/../.."
TRUSTMESH_DEV_START=0 bash infra/dev/up.sh
# shellcheck disable=SC1091
. "${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}/env"
# Reuse one build directory outside the clone, so a fresh clone does not rebuild every dependency.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}/target}
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
