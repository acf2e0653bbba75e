#!/usr/bin/env bash
# bf16 against fp16 for the same cases, with the GPU's SM clock and power sampled during each run
# (nvidia-smi reads only; no clock or power setting is touched). Asks whether an fp16 case is
# slower because of the kernel or because the tensor cores draw more power on fp16 data and the
# GPU clocks down under its power limit.
#   bash scripts/dtype_clocks.sh [case letters]     (default: C D; ROUNDS=3 alternations)
# Needs a built mla-bench (BUILD_DIR, default build/). Per run: the case's time (us) and the mean
# SM clock (MHz) and power (W) over the samples taken at the power limit (>= 97% of
# power.limit; nvidia-smi is asked every 20 ms, its power figure changes about every 100 ms).
# ITERS graph replays (default 2000: D ~2 s, C ~1 s) hold the GPU there for most of the run; at
# the limit, the clock is what the power of the work allows, which is what differs between
# dtypes. Logs to $OUT. First use (fifteenth session, H100 700 W): docs/PERF.md.
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
limit=$(nvidia-smi --query-gpu=power.limit --format=csv,noheader,nounits 2>/dev/null | head -1)
[[ "$limit" =~ ^[0-9.]+$ ]] || { echo "nvidia-smi gave no power limit ('$limit'): needs an NVIDIA GPU"; exit 2; }
echo "power limit: ${limit} W"

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
      stats=$(awk -F', ' -v limit="$limit" '$2 >= 0.97 * limit { n++; clk += $1; pw += $2 }
                         END { if (n) printf "%.0f MHz %.0f W (%d of %d samples at the power limit)", clk / n, pw / n, n, NR
                               else printf "no sample at the power limit (%d samples)", NR }' "$log")
      echo "$c $dt round $r: ${t:-FAIL} us, $stats"
    done
  done
done
