#!/usr/bin/env bash
# A/B timing of custom mla-bench shapes between the base tree (build-ab/base, see ab_bench.sh)
# and this tree, alternating processes so clock drift hits both alike. Each argument is one
# shape as mla-bench options in quotes, e.g.  bash scripts/ab_shapes.sh "--case F" \
#   "--batch 16 --seqlen 2048 --heads 16". ROUNDS (default 3) alternations; logs to $OUT. A third
# tree in build-ab/alt (same kind of export) is timed too when present.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/build-ab/logs}"
mkdir -p "$out"
rounds="${ROUNDS:-3}"
gen=""; command -v ninja >/dev/null && gen="-G Ninja"
common=(-DCMAKE_BUILD_TYPE=Release -DMLA_BUILD_TESTS=OFF -DMLA_BUILD_PYTHON=OFF
        -DMLA_CUTLASS_INCLUDE_DIR="$root/.deps/cutlass/include")
[ -f build-ab/base/CMakeLists.txt ] || { echo "build-ab/base is missing (see ab_bench.sh)"; exit 2; }
( cmake -S build-ab/base -B build-ab/base-build $gen "${common[@]}" &&
  cmake --build build-ab/base-build -j"$(nproc)" --target mla-bench ) > "$out/ab_build_base.log" 2>&1 &
( cmake -S . -B build-ab/new-build $gen "${common[@]}" &&
  cmake --build build-ab/new-build -j"$(nproc)" --target mla-bench ) > "$out/ab_build_new.log" 2>&1 &
sides=(base new)
if [ -f build-ab/alt/CMakeLists.txt ]; then
  ( cmake -S build-ab/alt -B build-ab/alt-build $gen "${common[@]}" &&
    cmake --build build-ab/alt-build -j"$(nproc)" --target mla-bench ) > "$out/ab_build_alt.log" 2>&1 &
  sides+=(alt)
fi
wait
for side in "${sides[@]}"; do
  [ -x build-ab/$side-build/tools/mla-bench/mla-bench ] || { echo "$side build failed"; tail -20 "$out/ab_build_$side.log"; exit 1; }
done
for shape in "$@"; do
  for r in $(seq "$rounds"); do
    for side in "${sides[@]}"; do
      t=$(build-ab/$side-build/tools/mla-bench/mla-bench $shape --no-verify 2>/dev/null |
          awk -F'|' '/^(custom|[A-H]) /{split($2, a, " "); print a[1]}')
      echo "$shape | $side | $t"
    done
  done
done | tee "$out/ab_shapes.txt"
echo "== medians"
for shape in "$@"; do
  for side in "${sides[@]}"; do
    m=$(grep -F -e "$shape | $side |" "$out/ab_shapes.txt" | awk -F'|' '{print $3}' | sort -n |
        awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
    echo "$shape  $side  $m us"
  done
done
