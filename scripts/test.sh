#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, then runs every test suite.
#   CPU tests     build/tests/mla_cpu_tests   (must pass everywhere)
#   GPU tests     build/tests/mla_gpu_tests   (reported as SKIPPED without a Hopper GPU)
#   install test  tests/install/run_install_test.sh (cmake --install + find_package consumer)
#   Python tests  scripts/test_python.sh, when present
# Every suite runs even if an earlier one failed, so one run reports everything; the exit status
# is non-zero if any step failed.
#   env: MLA_BUILD_DIR (default build/), MLA_JOBS (default nproc)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MLA_BUILD_DIR="${MLA_BUILD_DIR:-$root/build}"
build="$MLA_BUILD_DIR"
cd "$root"

failed=()
step() {
  local name="$1"; shift
  echo
  echo "==== [test] $name"
  if "$@"; then
    echo "==== [test] $name: OK"
  else
    echo "==== [test] $name: FAILED (exit $?)"
    failed+=("$name")
  fi
}

step "setup dependencies" bash scripts/setup_deps.sh || true
if [ ${#failed[@]} -eq 0 ]; then
  step "build" bash scripts/build.sh
fi

if [ ${#failed[@]} -eq 0 ]; then
  step "CPU tests" "$build/tests/mla_cpu_tests"
  step "GPU tests" "$build/tests/mla_gpu_tests"
  step "install test" bash tests/install/run_install_test.sh "$build"
  if [ -f scripts/test_python.sh ]; then
    step "Python tests" bash scripts/test_python.sh
  fi
fi

echo
if [ ${#failed[@]} -ne 0 ]; then
  echo "[test] FAILED: ${failed[*]}"
  exit 1
fi
echo "[test] all test steps passed"
