#!/usr/bin/env bash
# A/B timing of two source trees on one GPU, alternating runs so that clock and thermal drift hit
# both alike. The base tree is a plain export of a commit, made on the build machine:
#   mkdir -p build-ab/base && git archive <commit> | tar -x -C build-ab/base
# then, on the GPU machine (with .deps/cutlass present; build-ab/base carried along):
#   bash scripts/ab_bench.sh [shapes...]     (default: all eight cases; ROUNDS=4 alternations)
# Case letters (A..H) are timed by whole mla-bench runs (all eight cases, verified, as the
# method of record), one per tree per round. Runs of one case alone with --no-verify
# (`--case C --no-verify`) spread far more from run to run (case C: 490-547 us against 498-500
# in whole runs on the same GPU, docs/PERF.md, eleventh session), so they are not used. A shape
# given as mla-bench shape options in one quoted argument is timed by its own verified run, e.g.
#   bash scripts/ab_bench.sh C E "--batch 1 --seqlen 32768 --heads 16"
# A third tree in build-ab/alt (same kind of export) is timed too when present. BENCH_ARGS (env)
# adds mla-bench options to every run, e.g. BENCH_ARGS="--dtype fp16". AB_NEW_BUILD (env): a
# build tree of this checkout that already holds mla-bench (e.g. build/ after gpu_check.sh
# build), used for the new side instead of building build-ab/new-build. AB_BUILD_ONLY=1 (env):
# build the trees and stop (gpu_check.sh's ab stage starts this early, in the background).
# Prints one line per run and the per-case medians; logs to $OUT.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/build-ab/logs}"
mkdir -p "$out"
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(A B C D E F G H)
rounds="${ROUNDS:-4}"
gen=""; command -v ninja >/dev/null && gen="-G Ninja"
common=(-DCMAKE_BUILD_TYPE=Release -DMLA_BUILD_TESTS=OFF -DMLA_BUILD_PYTHON=OFF
        -DMLA_CUTLASS_INCLUDE_DIR="$root/.deps/cutlass/include")

if [ ! -f build-ab/base/CMakeLists.txt ]; then
  echo "build-ab/base is missing: export the base commit there first (see the header)"; exit 2
fi
( cmake -S build-ab/base -B build-ab/base-build $gen "${common[@]}" &&
  cmake --build build-ab/base-build -j"$(nproc)" --target mla-bench ) > "$out/ab_build_base.log" 2>&1 &
new_build="${AB_NEW_BUILD:-build-ab/new-build}"
if [ -z "${AB_NEW_BUILD:-}" ]; then
  ( cmake -S . -B build-ab/new-build $gen "${common[@]}" &&
    cmake --build build-ab/new-build -j"$(nproc)" --target mla-bench ) > "$out/ab_build_new.log" 2>&1 &
fi
sides=(base new)
if [ -f build-ab/alt/CMakeLists.txt ]; then
  sides+=(alt)
  ( cmake -S build-ab/alt -B build-ab/alt-build $gen "${common[@]}" &&
    cmake --build build-ab/alt-build -j"$(nproc)" --target mla-bench ) > "$out/ab_build_alt.log" 2>&1 &
fi
wait
[ "${AB_BUILD_ONLY:-0}" = 1 ] && exit 0
bench_of() {  # side
  if [ "$1" = new ]; then echo "$new_build/tools/mla-bench/mla-bench"; else echo "build-ab/$1-build/tools/mla-bench/mla-bench"; fi
}
for side in "${sides[@]}"; do
  [ -x "$(bench_of "$side")" ] || { echo "$side build failed"; tail -20 "$out/ab_build_$side.log" 2>/dev/null; exit 1; }
done

# Shape k is logged as "s<k>". The time is the first field after "|" of the row whose first
# field is the case letter (or "custom").
time_of() {  # label < mla-bench output
  awk -v c="$1" '$1 == c && NF > 10 { for (i = 1; i <= NF; ++i) if ($i == "|") { print $(i + 1); exit } }'
}
: > "$out/ab.txt"
letters=()
for c in "${cases[@]}"; do [[ "$c" =~ ^[A-H]$ ]] && letters+=("$c"); done
for r in $(seq "$rounds"); do
  for side in "${sides[@]}"; do
    bench="$(bench_of "$side")"
    if [ ${#letters[@]} -gt 0 ]; then
      "$bench" ${BENCH_ARGS:-} > "$out/run_${side}_$r.txt" 2>/dev/null ||
        echo "WARNING: $side, round $r: mla-bench failed (a case failed verification?), see $out/run_${side}_$r.txt"
    fi
    for k in "${!cases[@]}"; do
      c="${cases[$k]}"
      if [[ "$c" =~ ^[A-H]$ ]]; then
        t=$(time_of "$c" < "$out/run_${side}_$r.txt")
      else
        read -ra args <<< "$c"
        t=$("$bench" "${args[@]}" ${BENCH_ARGS:-} 2>/dev/null | time_of custom)
      fi
      echo "s$k $side ${t:-FAIL}" >> "$out/ab.txt"
      echo "$c | $side | round $r | ${t:-FAIL}"
    done
  done
done
echo "--- medians (us)"
for k in "${!cases[@]}"; do
  for side in "${sides[@]}"; do
    printf '%s | %-4s | %s\n' "${cases[$k]}" "$side" "$(awk -v c="s$k" -v s="$side" '$1 == c && $2 == s { print $3 }' "$out/ab.txt" | sort -n |
      awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
  done
done
