#!/usr/bin/env bash
# Configures and builds libmla (library, tests, mla-bench) in Release mode.
#   usage: scripts/build.sh [extra cmake -D options...]
#   env:   MLA_BUILD_DIR (default: build/)   MLA_JOBS (default: nproc)
# Expects the dependencies of scripts/setup_deps.sh to be installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MLA_BUILD_DIR:-$root/build}"
jobs="${MLA_JOBS:-$(nproc)}"

generator=()
# A build tree remembers its generator; asking for another one is an error, so only choose one
# for a fresh tree.
if [ ! -f "$build/CMakeCache.txt" ]; then
  if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); else generator=(-G "Unix Makefiles"); fi
fi

echo "[build] configuring $build"
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
echo "[build] building with $jobs jobs"
cmake --build "$build" -j "$jobs"
echo "[build] done: $build"
