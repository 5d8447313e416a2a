#!/usr/bin/env bash
# Keeps the shared build directory from filling the disk (infra/dev/test.sh runs this first).
# Every clone at another path links its own copy of each of the workspace's ~60 test binaries, so a
# build directory reused across clones only grows; on a full disk the linker dies with SIGBUS. With
# less than PRUNE_BELOW_GB (default 30) free, the older executables of each binary name are removed
# (cargo relinks what it needs); with less than CLEAN_BELOW_GB (default 10) still free, the whole
# debug build directory goes.
set -euo pipefail
dir=$1
mkdir -p "$dir"
free_gb() { df -Pk "$dir" | awk 'NR == 2 { print int($4 / 1048576) }'; }
[ "$(free_gb)" -ge "${PRUNE_BELOW_GB:-30}" ] && exit 0
echo "[prune-target] $(free_gb) GB free: removing older test executables under $dir" >&2
for deps in "$dir"/debug/deps "$dir"/release/deps; do
  [ -d "$deps" ] || continue
  # Newest first; a name seen again (`<name>-<16 hex>`) is an older build of the same binary.
  find "$deps" -maxdepth 1 -type f -perm -u+x ! -name '*.so' -printf '%T@ %p\n' | sort -rn |
    awk '{ name = $2; sub(/-[0-9a-f]{16}$/, "", name); if (seen[name]++) print $2 }' |
    xargs -r rm -f
done
rm -rf "$dir"/debug/incremental
if [ "$(free_gb)" -lt "${CLEAN_BELOW_GB:-10}" ]; then
  echo "[prune-target] still $(free_gb) GB free: removing $dir/debug" >&2
  rm -rf "$dir"/debug
fi
echo "[prune-target] $(free_gb) GB free" >&2
