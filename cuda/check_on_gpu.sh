#!/usr/bin/env bash
# The CUDA backend's checks on a machine with an NVIDIA GPU (the H100/H200 is the reference),
# in a few minutes:
#   1. builds libember_cuda, cuda_tests and bench/cuda (meson + ninja, -Dcuda=enabled);
#   2. runs cuda_tests: memory and copies, the fused kernels and reductions against the CPU,
#      cuBLAS products, float64 gradchecks through GPU ops, every oracle forward case (PyTorch
#      1.13's values) on the GPU, and the digits MLP trained on the GPU and on the CPU;
#   3. runs the flagship example with --device cuda (MLP and CNN trained on the GPU);
#   4. runs bench/cuda and bench/cuda_torch.py (PyTorch eager on the same GPU) and prints each
#      ratio next to its target (docs/benchmarks.md, "GPU").
# Headers the GPU image lacks come from .gpu_deps/ (cuda/gather_gpu_deps.sh, run beforehand on
# a Debian machine that has them). Results go to $1 (default $OUT, else /tmp/ember-gpu):
# build.log, tests.log, tests-jit.log, flagship.log, bench.txt, summary.txt. Exit status: 0 when the build,
# the tests and the flagship pass.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=${1:-${OUT:-/tmp/ember-gpu}}
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/summary.txt"
date -u +"date %Y-%m-%d %H:%M UTC" | tee -a "$out/summary.txt"

# the image's meson and ninja may be Python packages only
if ! command -v meson >/dev/null 2>&1; then meson() { python3 -m mesonbuild.mesonmain "$@"; }; fi
if ! command -v ninja >/dev/null 2>&1; then ninja() { python3 -m ninja "$@"; }; fi
{ c++ --version | head -1; meson --version; ninja --version; command -v pkg-config || echo "no pkg-config"; } \
  2>&1 | sed 's/^/env: /' | tee -a "$out/summary.txt"

args=(-Dcuda=enabled -Dtests=true -Dexamples=true -Dbenchmarks=true -Dbuildtype=release)
if [ -d .gpu_deps/include ]; then
  args+=("-Dcpp_args=-isystem$here/.gpu_deps/include")
  export PKG_CONFIG_PATH="$here/.gpu_deps/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
fi
start=$(date +%s)
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Binaries built by this script on the Debian machine (cuda/gather_gpu_deps.sh --prebuilt) save
# the build here when every library they need resolves; their test data path is the build
# machine's (EMBER_TEST_DATA), recreated here as a link.
prebuilt=0
if [ -x .gpu_prebuilt/cuda_tests ] && [ "${EMBER_GPU_BUILD:-0}" != 1 ]; then
  export LD_LIBRARY_PATH="$here/.gpu_prebuilt:$LD_LIBRARY_PATH"
  if ldd .gpu_prebuilt/cuda_tests .gpu_prebuilt/cuda .gpu_prebuilt/flagship | grep -q "not found"; then
    ldd .gpu_prebuilt/cuda_tests | grep "not found" | sed 's/^/prebuilt: /' | tee -a "$out/summary.txt"
  else
    prebuilt=1
  fi
fi
if [ $prebuilt = 1 ]; then
  echo "using the carried binaries in .gpu_prebuilt" | tee -a "$out/summary.txt"
  data=$(cat .gpu_prebuilt/test_data_path)
  if [ ! -e "$data" ]; then mkdir -p "$(dirname "$data")" && ln -s "$here/test/data" "$data"; fi
  rm -rf build-gpu && mkdir -p build-gpu/test build-gpu/bench build-gpu/examples
  cp .gpu_prebuilt/cuda_tests build-gpu/test/; cp .gpu_prebuilt/cuda build-gpu/bench/
  cp .gpu_prebuilt/flagship build-gpu/examples/
elif ! { rm -rf build-gpu && meson setup build-gpu "${args[@]}" && ninja -C build-gpu test/cuda_tests bench/cuda examples/flagship; } \
    >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  echo "BUILD FAILED (log: $out/build.log)" | tee -a "$out/summary.txt"
  exit 1
fi
echo "build $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"

# NVRTC for the compiled fused kernels (Note [Kernel JIT]): the toolkit's, else the one a pip
# install of PyTorch brings (nvidia-cuda-nvrtc); without it programs are interpreted
if ! ls /usr/local/cuda/lib64/libnvrtc.so.* >/dev/null 2>&1 && [ -z "${EMBER_NVRTC:-}" ]; then
  dirs=$(python3 -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null)
  found=$(find $dirs /usr/lib /usr/local -name 'libnvrtc.so.1[0-9]*' 2>/dev/null | grep -v builtins | head -1)
  [ -n "$found" ] && export EMBER_NVRTC=$found
fi
echo "nvrtc: $(ls /usr/local/cuda/lib64/libnvrtc.so.* 2>/dev/null | head -1) ${EMBER_NVRTC:-}" | tee -a "$out/summary.txt"
# a fresh disk cache, so the runs below compile (and the second finds the first's kernels)
export EMBER_CUDA_CACHE=/tmp/ember-jit-cache
rm -rf "$EMBER_CUDA_CACHE"

timeout 180 ./build-gpu/test/cuda_tests >"$out/tests.log" 2>&1
status=$?
tail -5 "$out/tests.log"
grep -E "test accuracy|GPU\(s\) visible|^jit: " "$out/tests.log" | tee -a "$out/summary.txt"
grep -E "^(All tests passed|test cases:)" "$out/tests.log" | sed 's/^/cuda_tests: /' | tee -a "$out/summary.txt"
# again with every expression through its compiled kernel (every oracle case included)
start_jit=$(date +%s)
EMBER_CUDA_JIT=always timeout 240 ./build-gpu/test/cuda_tests >"$out/tests-jit.log" 2>&1 || status=1
tail -3 "$out/tests-jit.log"
grep -E "^jit: " "$out/tests-jit.log" | sed 's/^/EMBER_CUDA_JIT=always: /' | tee -a "$out/summary.txt"
grep -E "^(All tests passed|test cases:)" "$out/tests-jit.log" | sed 's/^/cuda_tests EMBER_CUDA_JIT=always: /' | tee -a "$out/summary.txt"
echo "EMBER_CUDA_JIT=always run $(( $(date +%s) - start_jit )) s, cache $(ls "$EMBER_CUDA_CACHE" | wc -l) kernels" | tee -a "$out/summary.txt"

# the flagship example, unchanged, on the GPU (its last line: ok, or FAILED)
timeout 90 ./build-gpu/examples/flagship examples/data/digits.csv.gz --device cuda >"$out/flagship.log" 2>&1
flagship=$?
grep -E "^== |epoch 20|reloaded|^ok|FAILED" "$out/flagship.log" | sed 's/^/flagship --device cuda: /' | tee -a "$out/summary.txt"
[ $flagship -eq 0 ] || status=1

timeout 90 ./build-gpu/bench/cuda >"$out/bench.txt" 2>&1
timeout 90 python3 bench/cuda_torch.py >>"$out/bench.txt" 2>&1
cat "$out/bench.txt"
python3 - "$out/bench.txt" <<'PY' | tee -a "$out/summary.txt"
import sys
v = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) >= 2:
        try: v[p[0]] = float(p[1])
        except ValueError: pass
def show(name, value, target, ok):
    print(f"{name:<48} {value:8.3f}   target {target:<8} {'met' if ok else 'MISSED'}")
if "G1_fraction_of_copy_bandwidth" in v:
    f = v["G1_fraction_of_copy_bandwidth"]
    show("G1 fused E1 bandwidth / D2D copy bandwidth", f, ">= 0.80", f >= 0.80)
if "G1_interpreter_fraction" in v:
    print(f"{'G1 (the interpreter, for comparison)':<48} {v['G1_interpreter_fraction']:8.3f}")
if "G2_sgemm_ms" in v and "torch_G2_sgemm_ms" in v:
    r = v["torch_G2_sgemm_ms"] / v["G2_sgemm_ms"]
    show("G2 sgemm 8192^3 speed vs torch.mm", r, ">= 0.90", r >= 0.90)
if "G3_mlp_step_ms" in v and "torch_G3_mlp_step_ms" in v:
    r = v["G3_mlp_step_ms"] / v["torch_G3_mlp_step_ms"]
    show("G3 MLP step time / PyTorch eager", r, "<= 1.00", r <= 1.0)
PY
exit $status
