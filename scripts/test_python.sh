#!/usr/bin/env bash
# Builds and installs the libmla Python package into a virtual environment, then runs the Python
# tests (tests/python). GPU tests skip themselves without a Hopper GPU and torch.
#
#   bash scripts/test_python.sh [pytest args...]
#
# Environment:
#   MLA_PY_VENV     virtual environment to use/create (default: build-py/venv, git-ignored).
#                   Created with --system-site-packages so that a system-wide torch is visible.
#   MLA_PY_PYTHON   interpreter that creates the venv (default: python3)
#   MLA_PY_NO_BUILD=1  skip the build + install step (test what is installed in the venv)
#
# The build directory build-py/<wheel tag> (pyproject.toml) is reused, so a second run only
# recompiles what changed. Exits non-zero when the build or any test fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MLA_PY_VENV:-$root/build-py/venv}"
python="${MLA_PY_PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[test_python] creating virtual environment $venv"
  "$python" -m venv --system-site-packages "$venv"
fi
py="$venv/bin/python"

# Install only what is missing, so that an offline machine with everything present still works.
missing=()
for spec in nanobind:nanobind scikit_build_core:scikit-build-core numpy:numpy pytest:pytest; do
  module="${spec%%:*}" package="${spec#*:}"
  "$py" -c "import $module" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[test_python] installing ${missing[*]}"
  "$py" -m pip install --quiet "${missing[@]}"
fi

if [ "${MLA_PY_NO_BUILD:-0}" != "1" ]; then
  bash "$root/scripts/setup_deps.sh"
  echo "[test_python] building and installing libmla (build dir: build-py/)"
  log="$(mktemp)"
  if ! "$py" -m pip install --no-build-isolation --no-deps --force-reinstall --quiet "$root" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "[test_python] error: building the Python package failed" >&2
    exit 1
  fi
  rm -f "$log"
fi

cd "$root"
# -p no:cacheprovider: leave no .pytest_cache in the work tree.
exec "$py" -m pytest -p no:cacheprovider -q -rs tests/python "$@"
