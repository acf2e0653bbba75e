#!/usr/bin/env bash
# The main job: installs the dependencies, builds libmla into build/ (or $MLA_BUILD_DIR), then runs mla-bench, which
# verifies the decode kernel against the GPU reference and times it on this GPU (DESIGN.md
# section 5). Arguments go to mla-bench unchanged, e.g.
#   scripts/bench.sh                      # default cases A..H
#   scripts/bench.sh --case C --json c.json
#   scripts/bench.sh --batch 4 --seqlen 4096 --heads 128 --mtp 2 --causal
# Setup and build logs go to stderr so that stdout carries only mla-bench's table.
# Exit status: mla-bench's (0 all verified, 1 failure, 2 bad options, 3 no Hopper GPU), or the
# failing setup/build step's.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${MLA_BUILD_DIR:-$root/build}"  # same default and override as scripts/build.sh

"$root/scripts/setup_deps.sh" >&2
if [ -x "$root/scripts/build.sh" ]; then
  "$root/scripts/build.sh" >&2
else
  # Fallback while scripts/build.sh is absent: configure and build the tool directly.
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build "$build" --target mla-bench -j "$(nproc)" >&2
fi

bench="$build/tools/mla-bench/mla-bench"
if [ ! -x "$bench" ]; then
  echo "bench.sh: $bench was not built (see the build log above)" >&2
  exit 1
fi
exec "$bench" "$@"
