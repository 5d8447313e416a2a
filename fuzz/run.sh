#!/usr/bin/env bash
# Bounded fuzzing of every target (the README's test command runs this): installs cargo-fuzz once,
# builds the targets (libFuzzer, no sanitizer: the stable toolchain has none) into a target dir under
# the dev home, and runs each for FUZZ_SECONDS (default 20) from its committed seeds in
# fuzz/corpus/<target>. New inputs go to a temporary directory, not the repository; a crash leaves
# its input under fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
DEV_HOME=${TRUSTMESH_DEV_HOME:-$HOME/.trustmesh-dev}
SECONDS_EACH=${FUZZ_SECONDS:-20}
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  echo "[fuzz] installing cargo-fuzz $CARGO_FUZZ_VERSION (once)" >&2
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export CARGO_TARGET_DIR=$DEV_HOME/fuzz-target
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# -rss_limit_mb=2048 (libFuzzer's default, stated): a target that allocates more fails the run.
for target in $(cargo fuzz list); do
  mkdir -p "$scratch/$target"
  echo "[fuzz] $target for ${SECONDS_EACH}s" >&2
  cargo fuzz run --sanitizer none "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==|SUMMARY)' >&2
done
