#!/usr/bin/env bash
# Step-by-step reproduction of the libmla._C segfault seen on the GPU machine (numpy arrays into
# _C.check_status), then the full Python test suite. Run it on the GPU machine after the plain
# CMake build of the extension:
#
#   cmake -S . -B build-pyext -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLA_BUILD_PYTHON=ON \
#     -DMLA_BUILD_TESTS=OFF -DMLA_BUILD_BENCH=OFF -DPython_EXECUTABLE=$(command -v python3) \
#     && cmake --build build-pyext -j16
#   bash scripts/py_gpu_debug.sh [build dir, default build-pyext]
#
# Every step is its own python process under a time limit, so a crash or hang in one step only
# marks that step (CRASH rc=139 is SIGSEGV) and the next step still runs. The first crashing
# step is re-run under gdb (when installed) for a native backtrace. Exits non-zero when a step
# or pytest failed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${1:-build-pyext}"
py="${PYTHON:-$(command -v python3)}"
export PYTHONPATH="$root/$build/python/pkg${PYTHONPATH:+:$PYTHONPATH}"
step_timeout="${STEP_TIMEOUT:-120}"

if ! ls "$build"/python/pkg/libmla/_C*.so >/dev/null 2>&1; then
  echo "no extension in $build/python/pkg/libmla: build it first (see the top of this script)" >&2
  exit 2
fi

failed=0
first_crash=""
declare -A code_of

# Shared prelude of every step: fresh FlashMLA-shaped inputs as in tests/python/test_cpu.py.
prelude='
import sys, faulthandler
faulthandler.enable()
import numpy as np
rng = np.random.default_rng()
def make(b=4, s_q=2, h_q=16, h_kv=1):
    lens = rng.integers(0, 300, size=b).astype(np.int32)
    max_pages = max(1, -(-int(lens.max()) // 64))
    num_pages = b * max_pages + 2
    q = rng.standard_normal((b, s_q, h_q, 576)).astype(np.float16)
    k = rng.standard_normal((num_pages, 64, h_kv, 576)).astype(np.float16)
    bt = rng.permutation(num_pages)[: b * max_pages].reshape(b, max_pages).astype(np.int32)
    return q, k, bt, lens
def show(tag, x):
    print(tag, x, flush=True)
'

step() {  # step NAME CODE
  local name="$1" code="$2" rc
  code_of[$name]="$code"
  echo
  echo "=== step $name"
  timeout -k 5 "$step_timeout" "$py" -X faulthandler -c "$prelude$code" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "=== step $name: OK"
  else
    failed=1
    case $rc in
      124|137) echo "=== step $name: TIMEOUT (rc=$rc)" ;;
      139|134|135|136) echo "=== step $name: CRASH (rc=$rc, signal $((rc - 128)))"
                       [ -z "$first_crash" ] && first_crash="$name" ;;
      *) echo "=== step $name: FAILED (rc=$rc)" ;;
    esac
  fi
}

step env '
import platform
show("python", platform.python_version() + " " + sys.executable)
show("numpy", np.__version__)
try:
    import nanobind; show("nanobind", nanobind.__version__)
except Exception as e:
    show("nanobind", "not importable: %r" % e)
import ctypes
name_of = ctypes.pythonapi.PyCapsule_GetName
name_of.restype, name_of.argtypes = ctypes.c_char_p, [ctypes.py_object]
a = np.zeros((2, 8), np.float16)
show("numpy __dlpack__() capsule", name_of(a.__dlpack__()))
try:
    show("numpy __dlpack__(max_version=(1,0)) capsule", name_of(a.__dlpack__(max_version=(1, 0))))
except Exception as e:
    show("numpy __dlpack__(max_version) raised", repr(e))
ro = a.copy(); ro.setflags(write=False)
try:
    show("numpy read-only __dlpack__() capsule", name_of(ro.__dlpack__()))
except Exception as e:
    show("numpy read-only __dlpack__() raised", repr(e))
'

step import '
from libmla import _C
show("_C", _C.__file__)
show("version", _C.__version__)
show("hopper_problem", repr(_C.hopper_problem()))
'

step numpy_describe '
from libmla import _C
q, k, bt, lens = make()
for n, a in [("q", q), ("k", k), ("bt", bt), ("lens", lens)]:
    show(n, _C.describe(a))
    assert _C.describe(a)["data"] == a.ctypes.data, n
'

step numpy_check_status '
from libmla import _C
for i in range(20):
    q, k, bt, lens = make(b=int(rng.integers(1, 9)), h_kv=int(rng.choice([1, 2, 4])))
    res = _C.check_status(q, k, bt, lens, 512, 0.0, False)
    show(i, res)
    assert res == ("Ok", ""), res
'

step numpy_check_status_readonly '
from libmla import _C
q, k, bt, lens = make()
for a in (q, k, bt, lens):
    a.setflags(write=False)
res = _C.check_status(q, k, bt, lens, 512, 0.0, False)
show("read-only inputs", res)
assert res == ("Ok", ""), res
'

step numpy_check_status_after_torch_import '
import torch
show("torch", torch.__version__ + " cuda available: " + str(torch.cuda.is_available()))
from libmla import _C
q, k, bt, lens = make()
res = _C.check_status(q, k, bt, lens, 512, 0.0, False)
show("check_status", res)
assert res == ("Ok", ""), res
'

step numpy_check_status_after_cuda_init '
import torch, libmla
torch.zeros(1, device="cuda")
show("hopper_available", libmla.hopper_available())
from libmla import _C
q, k, bt, lens = make()
res = _C.check_status(q, k, bt, lens, 512, 0.0, False)
show("check_status", res)
assert res == ("Ok", ""), res
'

step torch_cpu_check_status '
import torch
from libmla import _C
q, k, bt, lens = make()
for dt in (torch.float16, torch.bfloat16):
    args = [torch.from_numpy(q).to(dt), torch.from_numpy(k).to(dt), torch.from_numpy(bt),
            torch.from_numpy(lens)]
    for n, a in zip(["q", "k", "bt", "lens"], args):
        show(n, _C.describe(a))
    res = _C.check_status(*args, 512, 0.0, False)
    show(dt, res)
    assert res == ("Ok", ""), res
'

step torch_cuda_check_status '
import torch
from libmla import _C
q, k, bt, lens = make()
for dt in (torch.float16, torch.bfloat16):
    args = [torch.from_numpy(q).to(dt).cuda(), torch.from_numpy(k).to(dt).cuda(),
            torch.from_numpy(bt).cuda(), torch.from_numpy(lens).cuda()]
    for n, a in zip(["q", "k", "bt", "lens"], args):
        show(n, _C.describe(a))
    res = _C.check_status(*args, 512, 0.0, False)
    show(dt, res)
    assert res == ("Ok", ""), res
'

step bad_inputs_raise '
from libmla import _C
q, k, bt, lens = make()
cases = {
    "list as q": ([[1.0]], k, bt, lens),
    "int as block_table": (q, k, 3, lens),
    "float32 q": (q.astype(np.float32), k, bt, lens),
    "1-D q": (q.reshape(-1), k, bt, lens),
    "0-D lens": (q, k, bt, np.int32(5)),
    "int64 lens": (q, k, bt, lens.astype(np.int64)),
    "strided lens": (q, k, bt, np.repeat(lens, 2)[::2]),
}
for name, args in cases.items():
    try:
        res = _C.check_status(*args, 512, 0.0, False)
        show(name, "returned %r" % (res,))
    except (TypeError, ValueError) as e:
        show(name, "%s: %s" % (type(e).__name__, e))
'

if [ -n "$first_crash" ] && command -v gdb >/dev/null 2>&1; then
  echo
  echo "=== native backtrace of step $first_crash (gdb)"
  tmp="$(mktemp --suffix=.py)"
  printf '%s%s' "$prelude" "${code_of[$first_crash]}" >"$tmp"
  timeout -k 5 300 gdb -q -batch -ex run -ex bt -ex "info sharedlibrary" --args "$py" "$tmp" 2>&1 |
    grep -v "^\[New Thread\|^\[Thread " | tail -n 120
  rm -f "$tmp"
elif [ -n "$first_crash" ]; then
  echo "(gdb not installed: no native backtrace)"
fi

echo
echo "=== full pytest"
timeout -k 10 "${PYTEST_TIMEOUT:-500}" "$py" -X faulthandler -m pytest -p no:cacheprovider -q -rs tests/python
rc=$?
echo "=== pytest rc=$rc"
[ $rc -ne 0 ] && failed=1
exit $failed
