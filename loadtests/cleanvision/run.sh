#!/usr/bin/env bash
# Agreement of `trustmesh check` with CleanVision on the image issue types both have (issue #6).
#
# Creates a venv, installs cleanvision (pinned) from PyPI, builds the `trustmesh` binary, and runs
# agreement.py on the committed image fixtures and on a set generated with PIL (600 images by
# default; GENERATED=N to change, 0 for none). Not part of CI: it downloads packages.
#
# Usage: loadtests/cleanvision/run.sh            (from anywhere in the repository)
# Env:   WORK (scratch dir, default /tmp/trustmesh-cleanvision), GENERATED, SEED,
#        TRUSTMESH (a built binary, skips the cargo build), PYTHON (default python3).
set -euo pipefail

CLEANVISION_VERSION=0.3.6
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${WORK:-/tmp/trustmesh-cleanvision}"
mkdir -p "$work"

if [ ! -x "$work/venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$work/venv"
fi
if ! "$work/venv/bin/python" -c "import cleanvision, sys; sys.exit(cleanvision.__version__ != '$CLEANVISION_VERSION')" 2>/dev/null; then
    "$work/venv/bin/pip" install --quiet "cleanvision==$CLEANVISION_VERSION"
fi

if [ -z "${TRUSTMESH:-}" ]; then
    (cd "$root" && cargo build --quiet -p trustmesh-cli --bin trustmesh)
    target="${CARGO_TARGET_DIR:-$root/target}"
    TRUSTMESH="$target/debug/trustmesh"
fi

"$work/venv/bin/python" "$here/agreement.py" \
    --trustmesh "$TRUSTMESH" \
    --work "$work" \
    --fixtures "$root/libs/quality/fixtures/modality/images" \
    --generated "${GENERATED:-600}" \
    --seed "${SEED:-0}" \
    --json "$work/agreement.json"
