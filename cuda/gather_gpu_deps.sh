#!/usr/bin/env bash
# Copies the header-only dependencies that the GPU machine's image lacks (Boost.Hana, xsimd,
# Catch2 v2; it has nvcc, a host compiler, meson and ninja) from this Debian machine into
# .gpu_deps/, which .git/info/exclude keeps out of git. Carry .gpu_deps with the working tree
# to the GPU machine; cuda/check_on_gpu.sh uses it when present.
# --prebuilt also copies this machine's build of the check's programs (build-gpu/, made by
# cuda/check_on_gpu.sh here, where they skip: no GPU) into .gpu_prebuilt/, the check's fallback
# when its own build fails on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu_deps
mkdir -p .gpu_deps/include/boost .gpu_deps/include/catch2 .gpu_deps/pkgconfig
cp -r /usr/include/boost/hana /usr/include/boost/hana.hpp .gpu_deps/include/boost/
cp -r /usr/include/xsimd .gpu_deps/include/
cp /usr/include/catch2/catch.hpp .gpu_deps/include/catch2/
version=$(sed -n 's/^#define XSIMD_VERSION_MAJOR \([0-9]*\)/\1/p' /usr/include/xsimd/config/xsimd_config.hpp).$(sed -n 's/^#define XSIMD_VERSION_MINOR \([0-9]*\)/\1/p' /usr/include/xsimd/config/xsimd_config.hpp).0
cat > .gpu_deps/pkgconfig/xsimd.pc <<PC
prefix=\${pcfiledir}/..
includedir=\${prefix}/include
Name: xsimd
Description: xsimd headers (copied by cuda/gather_gpu_deps.sh)
Version: ${version}
Cflags: -isystem \${includedir}
PC
grep -qx '/.gpu_deps/' .git/info/exclude 2>/dev/null || echo '/.gpu_deps/' >> .git/info/exclude
du -sh .gpu_deps
if [ "${1:-}" = --prebuilt ]; then
  rm -rf .gpu_prebuilt && mkdir .gpu_prebuilt
  cp build-gpu/test/cuda_tests build-gpu/bench/cuda build-gpu/examples/flagship .gpu_prebuilt/
  cp -L build-gpu/libember_cuda.so .gpu_prebuilt/
  echo "$PWD/test/data" > .gpu_prebuilt/test_data_path
  grep -qx '/.gpu_prebuilt/' .git/info/exclude || echo '/.gpu_prebuilt/' >> .git/info/exclude
  du -sh .gpu_prebuilt
fi
