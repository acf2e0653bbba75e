#!/usr/bin/env bash
# Correctness of a candidate patch on a Hopper GPU in one call, next to the unpatched tree:
#   bash scripts/patch_check.sh docs/experiments/a.patch [b.patch ...]
# 1. The working tree as it is (build/) and an export of it with the patches applied in order
#    (build-patch/tree, built in build-patch/build) are built side by side; the working tree
#    itself is not touched, so this is safe to run in a checkout.
# 2. compute-sanitizer racecheck on RACE_FILTER (default: DecodeGpu.SanitizerDenseShortVarlen,
#    the dense shapes with staged request transitions) with the unpatched build (neither built
#    nor racechecked with SKIP_BASE=1), then on RACE_FILTER_PATCHED (default: the same) with
#    the patched build.
# 3. The patched build's FullSweep and its other GPU tests.
# EXTRA_PATCHES (env, space-separated) adds a third tree with only those patches
# (build-patch/extra), built beside the others and racechecked on RACE_FILTER after the base:
# e.g. a fix alone on the working tree next to the fix stacked on another patch.
# Logs go to $OUT (default build-patch/logs); the summary lines are printed. Each step has a time
# limit (RACE_LIMIT per racecheck, default 200 s); with the defaults the whole script needs about
# 40 + 2 x 150 + 65 + 90 s on an H100 (racecheck's time is a guess: not yet measured on this
# filter); EXTRA_PATCHES adds one racecheck, so under the device's 600 s per command the last
# steps may be cut (the racechecks come first). Exit status 1 when a build, a racecheck or a test
# failed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 2
[ $# -ge 1 ] || { echo "usage: scripts/patch_check.sh patch [patch ...]"; exit 2; }
out="${OUT:-$root/build-patch/logs}"
mkdir -p "$out"
status=0
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
common=(-DCMAKE_BUILD_TYPE=Release -DMLA_BUILD_PYTHON=OFF -DMLA_BUILD_BENCH=OFF
        -DMLA_CUTLASS_INCLUDE_DIR="$root/.deps/cutlass/include")
nvidia-smi --query-gpu=name,clocks.sm,power.draw --format=csv,noheader 2>&1 | head -1

# The export: every file of the working tree except build outputs, dependencies and git data.
export_tree() {  # dir patch...: the working tree exported to dir with the patches applied
  local dir=$1; shift
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -c --exclude='./build*' --exclude='./.deps' --exclude='./.git' --exclude='./.whl' . |
    tar -x -C "$dir"
  for p in "$@"; do
    if ! patch -d "$dir" -p1 -s < "$p" > "$out/patch.log" 2>&1; then
      echo "patch $p does not apply to $dir:"; cat "$out/patch.log"; exit 1
    fi
    echo "applied $p to $dir"
  done
}
rm -rf build-patch/build build-patch/extra-build
export_tree build-patch/tree "$@"
extra=()
# shellcheck disable=SC2206  # EXTRA_PATCHES: patch paths split on spaces
[ -n "${EXTRA_PATCHES:-}" ] && extra=(${EXTRA_PATCHES})
[ ${#extra[@]} -gt 0 ] && export_tree build-patch/extra "${extra[@]}"

build_tree() {  # source build name: configures and builds, log in $out/build_<name>.log
  { cmake -S "$1" -B "$2" "${gen[@]}" "${common[@]}" && cmake --build "$2" -j"$(nproc)"; } \
    > "$out/build_$3.log" 2>&1
}
# The unpatched build serves only the base racecheck: not built with SKIP_BASE=1.
base_rc=0
if [ "${SKIP_BASE:-0}" != 1 ]; then
  build_tree . build base &
  base_pid=$!
fi
extra_rc=0
if [ ${#extra[@]} -gt 0 ]; then
  build_tree build-patch/extra build-patch/extra-build extra &
  extra_pid=$!
fi
build_tree build-patch/tree build-patch/build patched
patched_rc=$?
if [ "${SKIP_BASE:-0}" != 1 ]; then wait "$base_pid"; base_rc=$?; fi
if [ ${#extra[@]} -gt 0 ]; then wait "$extra_pid"; extra_rc=$?; fi
echo "build: base rc=$base_rc, patched rc=$patched_rc, extra rc=$extra_rc"
grep -hE "spill|error" "$out"/build_*.log | grep -v " 0 bytes spill" | head -10
[ $patched_rc -eq 0 ] || { tail -20 "$out/build_patched.log"; exit 1; }
[ $base_rc -eq 0 ] || { tail -20 "$out/build_base.log"; status=1; }  # the patched checks still run

step() {  # name limit_s command...: runs it with a limit, prints rc and the summary lines
  local name=$1 limit=$2; shift 2
  timeout --signal=KILL "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "=== $name rc=$rc ($(date +%T))"
  grep -E "RACECHECK SUMMARY|ERROR SUMMARY|^\[  (PASSED|FAILED) |^\[==========\]|worst|merges|few SMs" \
    "$out/$name.log" | head -20
  # Where racecheck hazards are, by source line and kernel instance.
  grep -oE "kernel\.cuh:[0-9]+|attend<[^>]*>" "$out/$name.log" | sort | uniq -c | head -12
  [ $rc -eq 0 ] || status=1
}
racecheck() {  # name build filter
  step "racecheck_$1" "${RACE_LIMIT:-200}" compute-sanitizer --tool racecheck --error-exitcode 9 \
    "$2/tests/mla_gpu_tests" --gtest_filter="$3"
}
race_filter="${RACE_FILTER:-DecodeGpu.SanitizerDenseShortVarlen}"
if [ "${SKIP_BASE:-0}" != 1 ] && [ $base_rc -eq 0 ]; then
  racecheck base build "$race_filter"
fi
if [ ${#extra[@]} -gt 0 ]; then
  if [ $extra_rc -eq 0 ]; then
    racecheck extra build-patch/extra-build "$race_filter"
  else
    tail -20 "$out/build_extra.log"; status=1
  fi
fi
racecheck patched build-patch/build "${RACE_FILTER_PATCHED:-$race_filter}"
tests=build-patch/build/tests/mla_gpu_tests
step sweep_patched 100 "$tests" --gtest_filter='DecodeGpu.FullSweep'
step tests_patched 150 "$tests" --gtest_filter='-DecodeGpu.FullSweep'
exit $status
