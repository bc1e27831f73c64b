#!/usr/bin/env bash
# One entry point for users and CI:
#   ./build.sh example   install what is missing, build, run the flagship example
#   ./build.sh test      install what is missing, build, run the whole test suite
# Options through the environment: BUILD_DIR (default build for the example, build-tests for
# the tests, build-plain with SANITIZE=0), SANITIZE=0 (tests without
# ASan+UBSan, at -O1; the default builds them under the sanitizers, as CI does).
set -euo pipefail
cd "$(dirname "$0")"

need=(g++ meson ninja-build pkg-config libboost-dev libxsimd-dev catch2 zlib1g-dev)
install_missing() {
  local missing=()
  for p in "${need[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "build.sh: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

setup() {  # setup DIR [meson options...]
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@"
  else
    meson configure "$dir" "$@" >/dev/null
  fi
}

cmd=${1:-}
case "$cmd" in
  example)
    install_missing
    dir=${BUILD_DIR:-build}
    setup "$dir" -Dtests=false -Dexamples=true
    ninja -C "$dir" examples/flagship
    "$dir/examples/flagship"
    ;;
  test)
    install_missing
    opts=(-Dtests=true)
    if [ "${SANITIZE:-1}" = 1 ]; then
      dir=${BUILD_DIR:-build-tests}
      # Note [Sanitized build with clang]: the sanitized suite is compiled by clang++ (Debian's
      # clang and its sanitizer runtimes, installed here): at -O0 under ASan+UBSan it compiles
      # these template-heavy tests in about half GCC's time (measured on test/autograd/fused.cpp:
      # 170 s user with GCC 12, 81 s with clang 14), and it holds the code to a second
      # compiler's reading of the standard. GCC still builds the examples (first README
      # command), the plain test build (SANITIZE=0) and CI's nn_optim_data contract program.
      # EMBER_TEST_CXX=g++ builds this suite with GCC instead.
      test_cxx=${EMBER_TEST_CXX:-clang++}
      # Note [Linking with lld]: the sanitized executables are 50-180 MB of -O0 code; LLVM's
      # linker links the largest (nn_tests) in 2.5 s where GNU ld takes 19 s (measured), and
      # the links come last in the build, when one core is often idle
      test_ld=""
      if [ "$test_cxx" = clang++ ]; then
        need+=(clang lld)
        install_missing
        rt="libclang-rt-$(clang++ -dumpversion | cut -d. -f1)-dev"
        dpkg -s "$rt" >/dev/null 2>&1 || need+=("$rt")
        test_ld=lld
      fi
      # a build folder configured with another compiler is set up again
      if [ -f "$dir/meson-info/intro-targets.json" ]; then
        has_clang=0; want_clang=0
        grep -q '"compiler": \["[^"]*clang' "$dir/meson-info/intro-targets.json" && has_clang=1
        [[ "$test_cxx" == *clang* ]] && want_clang=1
        [ $has_clang = $want_clang ] || rm -rf "$dir"
      fi
      # Note [One sanitized test build]: the test suite is built once, under ASan+UBSan (what CI
      # runs; SANITIZE=0 gives a plain -O1 build). -O0 without -g: the sanitizers need no debug
      # info to name functions, and any optimization makes their instrumentation of the
      # template-heavy tests 1.8x (-Og) to 3x (-O1) slower to compile. UBSan's null and
      # alignment checks (one check site for both, at every reference binding in the
      # templates) take a third of the compile time and are left out: a null access still
      # crashes under ASan's handler, and the fuzzers (test/fuzz, .ci/run) keep every UBSan
      # check on the loaders, where misaligned reads could come from a file. ASan's checks are
      # calls into its runtime instead of inline code (call threshold 0): the same checks, a
      # smaller program to compile, 15-23% less compile time (measured on
      # test/autograd/index_join.cpp: 44 s -> 34 s); the tests run slower, which costs seconds.
      # The examples are not tests: this build leaves them out, and compiles the CUDA kernels
      # to PTX only (no GPU here runs them; meson.build, gpu_sass).
      # GCC only: with clang 14 it saves nothing (ops/conv.cpp: 22.5 s user either way)
      asan_calls=""
      [[ "$test_cxx" == *clang* ]] || asan_calls="--param=asan-instrumentation-with-call-threshold=0"
      opts+=(-Db_sanitize=address,undefined -Db_lundef=false -Doptimization=0 -Ddebug=false
             "-Dcpp_args=-fno-sanitize=null,alignment $asan_calls"
             -Dexamples=false -Dgpu_sass=false)
    else
      dir=${BUILD_DIR:-build-plain}
      opts+=(-Dexamples=true)
    fi
    install_missing
    if [ "${SANITIZE:-1}" = 1 ]; then
      if [ -n "$test_ld" ]; then export CXX_LD=$test_ld; fi
      CXX=$test_cxx setup "$dir" "${opts[@]}"
    else
      setup "$dir" "${opts[@]}"
    fi
    ninja -C "$dir"
    status=0
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$PWD/test/ubsan.supp meson test -C "$dir" --print-errorlogs \
      --num-processes 2 || status=$?
    python3 .ci/count_tests.py "$dir/meson-logs/testlog.json"
    exit $status
    ;;
  *)
    echo "usage: ./build.sh example | test" >&2
    exit 2
    ;;
esac
