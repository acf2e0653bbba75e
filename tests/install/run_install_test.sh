#!/usr/bin/env bash
# Install test: `cmake --install` a libmla build into a temporary prefix, then configure, build
# and run the consumer in this folder through find_package(libmla). Also configures the consumer
# through add_subdirectory (and builds it when MLA_INSTALL_TEST_SUBDIR_BUILD=1: that compiles
# every kernel a second time, so it is off by default).
#   usage: tests/install/run_install_test.sh [build-dir (default: build/)]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$(cd "${1:-$root/build}" 2>/dev/null && pwd)" || { echo "[install-test] FAILED: build dir '${1:-$root/build}' does not exist (run scripts/build.sh)" >&2; exit 1; }
trap 'echo "[install-test] FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
[ -f "$build/CMakeCache.txt" ] || { echo "[install-test] FAILED: $build is not a configured build" >&2; exit 1; }

tmp="$(mktemp -d)"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
gen=()
if command -v ninja >/dev/null 2>&1; then gen=(-G Ninja); fi

echo "[install-test] cmake --install $build -> $tmp/prefix"
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; exit 1; }
for f in include/mla/decode.h include/mla/status.h; do
  [ -f "$tmp/prefix/$f" ] || { echo "[install-test] FAILED: $f not installed" >&2; exit 1; }
done

echo "[install-test] find_package(libmla) consumer"
cmake -S "$here" -B "$tmp/consumer" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/configure.log" || { cat "$tmp/configure.log"; exit 1; }
cmake --build "$tmp/consumer" >"$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
out="$("$tmp/consumer/consumer")"
echo "  $out"
grep -q "InvalidArgument: batch > 0 failed: batch=0" <<<"$out" || {
  echo "[install-test] FAILED: unexpected consumer output" >&2; exit 1; }

echo "[install-test] add_subdirectory consumer"
cmake -S "$here" -B "$tmp/sub" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DMLA_USE_SUBDIRECTORY=ON \
      -DMLA_SOURCE_DIR="$root" >"$tmp/sub-configure.log" || { cat "$tmp/sub-configure.log"; exit 1; }
if grep -q "mla_cpu_tests\|mla-bench" "$tmp/sub/build.ninja" "$tmp/sub/Makefile" 2>/dev/null; then
  echo "[install-test] FAILED: add_subdirectory pulled in libmla's tests or mla-bench" >&2; exit 1
fi
if [ "${MLA_INSTALL_TEST_SUBDIR_BUILD:-0}" = 1 ]; then
  cmake --build "$tmp/sub" --target consumer -j "${MLA_JOBS:-$(nproc)}" >"$tmp/sub-build.log" || { cat "$tmp/sub-build.log"; exit 1; }
  out="$("$tmp/sub/consumer")"
  echo "  $out"
  grep -q "InvalidArgument: batch > 0 failed: batch=0" <<<"$out" || {
    echo "[install-test] FAILED: unexpected consumer output (add_subdirectory)" >&2; exit 1; }
else
  echo "  configured (set MLA_INSTALL_TEST_SUBDIR_BUILD=1 to build it too)"
fi
echo "[install-test] OK"
