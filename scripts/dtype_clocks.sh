#!/usr/bin/env bash
# bf16 against fp16 for the same cases, with the GPU's SM clock and power sampled during each run
# (nvidia-smi reads only; no clock or power setting is touched). Asks whether an fp16 case is
# slower because of the kernel or because the tensor cores draw more power on fp16 data and the
# GPU clocks down under its power limit.
#   bash scripts/dtype_clocks.sh [case letters]     (default: C D; ROUNDS=3 alternations)
# Needs a built mla-bench (BUILD_DIR, default build/). Per run: the case's time (us) and the
# mean SM clock (MHz) and power (W) over the loaded samples (every 20 ms; those at >= 80% of the
# run's highest power draw). ITERS graph replays (default 2000: D ~1.8 s, C ~1 s) make the
# replays most of those samples; the ceilings measured at each mla-bench start (~0.1 s of GEMM)
# are the rest. Logs to $OUT.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/build-gpu-logs}"
mkdir -p "$out"
bench="${BUILD_DIR:-build}/tools/mla-bench/mla-bench"
[ -x "$bench" ] || { echo "no mla-bench at $bench: build first"; exit 2; }
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(C D)
rounds="${ROUNDS:-3}"

# The case's row: time (us) is the first field after "|".
time_of() { awk -v c="$1" '$1 == c && NF > 10 { for (i = 1; i <= NF; ++i) if ($i == "|") { print $(i + 1); exit } }'; }

for r in $(seq "$rounds"); do
  for c in "${cases[@]}"; do
    for dt in bf16 fp16; do
      log="$out/clocks_${c}_${dt}_$r.csv"
      nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 20 > "$log" 2>/dev/null &
      smi=$!
      t=$("$bench" --case "$c" --dtype "$dt" --no-verify --iters "${ITERS:-2000}" 2>/dev/null | time_of "$c")
      kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
      stats=$(awk -F', ' '{ c[NR] = $1; p[NR] = $2; if ($2 > pmax) pmax = $2 }
                         END { for (i = 1; i <= NR; ++i) if (p[i] >= 0.8 * pmax) { n++; clk += c[i]; pw += p[i] }
                               if (n) printf "%.0f MHz %.0f W (%d of %d samples)", clk / n, pw / n, n, NR; else print "no samples" }' "$log")
      echo "$c $dt round $r: ${t:-FAIL} us, $stats"
    done
  done
done
