#!/usr/bin/env bash
# One-call GPU session: build (Release, all CPU cores), then the requested stages, logs to $OUT.
# Used on the lent H200 (see docs/PERF.md); works on any machine with a Hopper GPU.
#   bash scripts/gpu_check.sh [stage ...]     stages: build tests sweep sanitize bench profile
#   trace memprofile python sass ab
# A record run for docs/PERF.md (the tests, the sweep and the benches of one tree on one GPU):
#   BENCH_RUNS=2 BENCH_DTYPES="bf16 fp16" bash scripts/gpu_check.sh build tests sweep sanitize bench
# The bench stage ends with scripts/perf_table.py over the runs' JSON files: the table and the
# targets, printed and kept as $OUT/perf_table.md.
# GTEST_FILTER (env) narrows the tests stage. Each stage has a time limit so a hang cannot eat
# the whole call; GPU_TESTS_LIMIT (env, seconds) sets the tests stage's (default 400),
# RACECHECK_LIMIT the racecheck run's (default 420: the Sanitizer* tests took 180 s under it on
# an H100 with the first of SanitizerDenseShortVarlen's two cases among them).
# ab: scripts/ab_bench.sh with this build as the new side against build-ab/base (an export of
# the base commit, carried along), ROUNDS (default 3) whole mla-bench runs per side, AB_CASES
# (env) the case letters (default all eight), AB_LIMIT (env) its time limit (default 300 s).
# With ab among the stages the base tree is built in the background from the start, beside the
# other stages.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/build-gpu-logs}"
mkdir -p "$out"
build="${BUILD_DIR:-build}"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build tests)
status=0
gen=""; command -v ninja >/dev/null && gen="-G Ninja"

base_build_pid=""
if [[ " ${stages[*]} " == *" ab "* && -f build-ab/base/CMakeLists.txt ]]; then
  AB_BUILD_ONLY=1 AB_NEW_BUILD="$build" OUT="$out/ab" bash scripts/ab_bench.sh > "$out/ab_base_build.log" 2>&1 &
  base_build_pid=$!
fi

run_stage() {  # name limit_s command...
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T))"
  timeout --signal=KILL "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  echo "=== $name rc=$rc"
  [ $rc -eq 0 ] || status=1
}

for stage in "${stages[@]}"; do
  case "$stage" in
    build)
      nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > "$out/gpu.txt" 2>&1
      cat "$out/gpu.txt"
      run_stage build 400 bash -c "cmake -S . -B $build $gen -DCMAKE_BUILD_TYPE=Release && cmake --build $build -j\$(nproc)"
      grep -E "spill|Local memory|error" "$out/build.log" | head -20
      ;;
    tests)
      run_stage cpu_tests 120 "$build/tests/mla_cpu_tests" --gtest_brief=1
      run_stage gpu_tests "${GPU_TESTS_LIMIT:-400}" "$build/tests/mla_gpu_tests" --gtest_filter="${GTEST_FILTER:-*-DecodeGpu.FullSweep}"
      ;;
    sweep)
      run_stage sweep 500 "$build/tests/mla_gpu_tests" --gtest_filter='DecodeGpu.FullSweep'
      ;;
    sanitize)
      run_stage memcheck 300 compute-sanitizer --tool memcheck --error-exitcode 9 "$build/tests/mla_gpu_tests" --gtest_filter='DecodeGpu.Sanitizer*'
      run_stage racecheck "${RACECHECK_LIMIT:-420}" compute-sanitizer --tool racecheck --error-exitcode 9 "$build/tests/mla_gpu_tests" --gtest_filter='DecodeGpu.Sanitizer*'
      ;;
    bench)
      # BENCH_DTYPES (default bf16) and BENCH_RUNS (default 1): whole mla-bench runs, each with
      # its own ceilings and JSON (bench_<dtype>_<run>.json); the case rows of every run follow.
      for dt in ${BENCH_DTYPES:-bf16}; do
        for r in $(seq "${BENCH_RUNS:-1}"); do
          run_stage "bench_${dt}_$r" 400 "$build/tools/mla-bench/mla-bench" --dtype "$dt" \
            --json "$out/bench_${dt}_$r.json"
        done
      done
      for f in "$out"/bench_*_*.log; do
        [ -f "$f" ] && echo "--- $(basename "$f" .log)" && grep -E "^(ceilings|fp16 GEMM|launch floor)|^[A-H] " "$f"
      done
      # PERF.md's table with the targets, so that the call's output tail already holds it (its
      # exit status, 1 while a target is missed, is not the stage's).
      bf16_json=("$out"/bench_bf16_*.json) fp16_json=("$out"/bench_fp16_*.json)
      if [ -f "${bf16_json[0]}" ]; then
        table_args=("${bf16_json[@]}")
        [ -f "${fp16_json[0]}" ] && table_args+=(--fp16 "${fp16_json[@]}")
        python3 scripts/perf_table.py "${table_args[@]}" > "$out/perf_table.md" 2>&1
        echo "--- perf_table.py (rc $?)"; cat "$out/perf_table.md"
      fi
      ;;
    sass)
      obj=$(find "$build" -path '*decode_dense*' -name 'bf16.cu.o' | head -1)  # not decode_narrow's
      cuobjdump --dump-sass "$obj" > "$out/decode_bf16.sass" 2>&1
      echo "HGMMA: $(grep -c HGMMA "$out/decode_bf16.sass")  UTMALDG: $(grep -c UTMALDG "$out/decode_bf16.sass")  LDL/STL: $(grep -cE 'LDL|STL' "$out/decode_bf16.sass")"
      ;;
    profile)
      # Kernel durations of one decode step per default case (main kernel, combine), no clock
      # changes: ncu --clock-control none.
      for c in ${PROFILE_CASES:-E F C}; do
        run_stage "profile_$c" 200 ncu --clock-control none -k 'regex:decode_(dense|narrow)_kernel|combine' \
          --launch-skip 2 --launch-count 2 --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed \
          "$build/tools/mla-bench/mla-bench" --case "$c" --no-verify --iters 3
      done
      ;;
    trace)
      # Timeline of the decode kernel per warpgroup (tools/probe/trace_probe.cu): the bf16 kernel
      # rebuilt with MLA_DECODE_TRACE, linked ahead of the library's. TRACE_CASES narrows the shapes;
      # TRACE_SRC takes the kernels from another tree's src/ (e.g. build-ab/base/src, for a trace of
      # the base of an A/B; its device_ops.cuh must have the same Trace as this tree's).
      # TRACE_LIGHT=1: the light Trace (CTA start, SM and epilogue ends only; see trace_probe.cu).
      trace_macro=-DMLA_DECODE_TRACE; [ "${TRACE_LIGHT:-0}" = 1 ] && trace_macro=-DMLA_DECODE_TRACE_LIGHT
      run_stage trace_build 300 nvcc -std=c++20 -O3 "$trace_macro" -I include -I "${TRACE_SRC:-src}" \
        -isystem .deps/cutlass/include -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
        tools/probe/trace_probe.cu "$build/libmla.a" "$build/libmla_reference.a" -lcuda \
        -o "$build/trace_probe"
      run_stage trace 300 "$build/trace_probe" ${TRACE_CASES:-}
      ;;
    memprofile)
      # Where the bytes go for one case: DRAM and L2 traffic, L2 hit rate, memory and tensor
      # utilisation of the main kernel (ncu --clock-control none).
      for c in ${PROFILE_CASES:-C}; do
        run_stage "memprofile_$c" 300 ncu --clock-control none -k 'regex:decode_(dense|narrow)_kernel' \
          --launch-skip 2 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
          --section ComputeWorkloadAnalysis \
          --metrics dram__bytes_read.sum,lts__t_bytes.sum,lts__t_sector_hit_rate.pct,lts__throughput.avg.pct_of_peak_sustained_elapsed \
          "$build/tools/mla-bench/mla-bench" --case "$c" --no-verify --iters 3
      done
      ;;
    python)
      # Offline machine: build the extension with the machine's own python3 / nanobind / torch
      # (plain CMake build, package view in <build>/python/pkg), then run every Python test.
      py=$(command -v python3)
      run_stage python_build 300 bash -c "cmake -S . -B build-pyext ${gen:-} -DCMAKE_BUILD_TYPE=Release -DMLA_BUILD_PYTHON=ON -DMLA_BUILD_TESTS=OFF -DMLA_BUILD_BENCH=OFF -DPython_EXECUTABLE=$py && cmake --build build-pyext -j\$(nproc)"
      PYTHONPATH="$root/build-pyext/python/pkg" run_stage python_tests 400 "$py" -m pytest -p no:cacheprovider -q -rs tests/python
      ;;
    ab)
      [ -n "$base_build_pid" ] && wait "$base_build_pid"  # ab_bench.sh then finds it built
      # shellcheck disable=SC2086  # AB_CASES: several case letters, split on spaces
      run_stage ab "${AB_LIMIT:-300}" env ROUNDS="${ROUNDS:-3}" AB_NEW_BUILD="$build" OUT="$out/ab" \
        bash scripts/ab_bench.sh ${AB_CASES:-}
      # One line per case and side: the runs' times (us), for the reading by eye.
      [ -f "$out/ab/ab.txt" ] && awk -v names="${AB_CASES:-A B C D E F G H}" '
        BEGIN { n = split(names, name, " ") }
        { v[$1" "$2] = v[$1" "$2]" "$3 }
        END { for (k in v) { split(k, f, " "); print name[substr(f[1], 2) + 1]" "f[2]":"v[k] } }' \
        "$out/ab/ab.txt" | sort
      ;;
    *) echo "unknown stage $stage"; status=1 ;;
  esac
done
exit $status
