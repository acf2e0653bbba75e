#!/usr/bin/env bash
# Reads a kernel's SASS on a machine without a GPU (and without cuobjdump / nvdisasm in its CUDA
# install): compiles one translation unit to a cubin for sm_90a with the kernel flags of
# CMakeLists.txt (nvdisasm reads cubins, not the build's host objects) and disassembles it with
# nvdisasm from NVIDIA's nvidia-cuda-nvdisasm wheel (PyPI), fetched once into .deps/nvdisasm/.
#   bash scripts/local_sass.sh [file.cu] [output.sass]
# Defaults: src/sm90/decode_dense/instantiations/bf16.cu, build-sass/sm90_decode_dense_bf16.sass.
# Prints ptxas's register / spill lines and a count of the instructions worth checking before
# believing a kernel does what was meant: HGMMA (wgmma), UTMALDG (TMA loads), UBLKCP (bulk
# copies), BAR.SYNC by barrier id and thread count, SYNCS (mbarrier operations), WARPSYNC.
# Run from a checkout with .deps/cutlass (scripts/setup_deps.sh). A patched export works too: run
# the script from that tree with DEPS pointing at the checkout's .deps.
set -euo pipefail
root="$(pwd)"
deps="${DEPS:-$root/.deps}"
src="${1:-src/sm90/decode_dense/instantiations/bf16.cu}"
name="$(echo "${src%.cu}" | sed -e "s|^src/||" -e "s|/instantiations||" | tr / _)"  # e.g. sm90_decode_dense_bf16
out="${2:-$root/build-sass/$name.sass}"
mkdir -p "$(dirname "$out")"
[ -f "$deps/cutlass/include/cute/tensor.hpp" ] || { echo "no CUTLASS headers in $deps (run scripts/setup_deps.sh)"; exit 2; }

nvdisasm="$deps/nvdisasm/bin/nvdisasm"
if [ ! -x "$nvdisasm" ]; then
  echo "[local_sass] fetching nvdisasm (nvidia-cuda-nvdisasm wheel)"
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" nvidia-cuda-nvdisasm
  python3 - "$tmp" "$deps/nvdisasm/bin" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
dest = sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for member in z.namelist():
        if member.endswith("/bin/nvdisasm"):
            os.makedirs(dest, exist_ok=True)
            path = os.path.join(dest, "nvdisasm")
            with z.open(member) as s, open(path, "wb") as d:
                d.write(s.read())
            os.chmod(path, 0o755)
            break
    else:
        sys.exit("nvdisasm not found in " + wheel)
PY
  rm -rf "$tmp"
fi

cubin="${out%.sass}.cubin"
nvcc -I include -I src -isystem "$deps/cutlass/include" -O3 -gencode=arch=compute_90a,code=sm_90a \
  --expt-relaxed-constexpr -lineinfo -std=c++20 \
  -Xptxas=-v,--warn-on-spills,--warn-on-local-memory-usage -cubin "$src" -o "$cubin" 2>&1 |
  grep -E "registers|spill|local memory|error" || true
"$nvdisasm" -c -gi "$cubin" > "$out"
echo "SASS: $out"
grep -oE "HGMMA|UTMALDG|UBLKCP|WARPSYNC|SYNCS\.[A-Z0-9.]+" "$out" | sort | uniq -c
grep -oE "BAR\.SYNC[A-Z_.]* 0x[0-9a-f]+(, 0x[0-9a-f]+)?" "$out" | sort | uniq -c
