#!/usr/bin/env bash
# Installs libmla's third-party build dependencies into the git-ignored folder .deps/:
#   .deps/cutlass/include   CUTLASS/CuTe headers from the pinned nvidia-cutlass wheel (PyPI)
# GoogleTest comes from the system (Debian's libgtest-dev / googletest); this script installs it
# with apt-get when it is missing and apt-get is usable.
# Idempotent: a second run with everything present does nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$root/.deps"
CUTLASS_VERSION="4.2.0.0"   # pinned: nvidia-cutlass on PyPI
mkdir -p "$deps"

if [ ! -f "$deps/cutlass/include/cute/tensor.hpp" ] || [ "$(cat "$deps/cutlass/VERSION" 2>/dev/null)" != "$CUTLASS_VERSION" ]; then
  echo "[setup] fetching nvidia-cutlass==$CUTLASS_VERSION headers"
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "nvidia-cutlass==$CUTLASS_VERSION"
  rm -rf "$deps/cutlass"
  mkdir -p "$deps/cutlass"
  python3 - "$tmp"/nvidia_cutlass-*.whl "$deps/cutlass/include" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "cutlass_library/source/include/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
  echo "$CUTLASS_VERSION" > "$deps/cutlass/VERSION"
  rm -rf "$tmp"
fi

have_gtest() {
  [ -f /usr/include/gtest/gtest.h ] || return 1
  local lib
  for lib in /usr/lib/*/libgtest.a /usr/lib/libgtest.a /usr/lib64/libgtest.a; do
    [ -f "$lib" ] && return 0
  done
  return 1
}
if ! have_gtest; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing GoogleTest (libgtest-dev)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgtest-dev >/dev/null
  else
    echo "[setup] warning: GoogleTest not found and apt-get unavailable; tests will not build" >&2
  fi
fi
for tool in cmake nvcc; do
  command -v "$tool" >/dev/null 2>&1 || { echo "[setup] error: '$tool' not found on PATH" >&2; exit 1; }
done
echo "[setup] dependencies ready in $deps"
