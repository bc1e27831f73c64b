#!/usr/bin/env bash
# One entry point for users and CI:
#   ./build.sh example   install what is missing, build, run the flagship example
#   ./build.sh test      install what is missing, build, run the whole test suite
# Options through the environment: BUILD_DIR (default build), SANITIZE=1 (ASan+UBSan build).
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
    dir=${BUILD_DIR:-build}
    opts=(-Dtests=true)
    if [ "${SANITIZE:-0}" = 1 ]; then
      dir=${BUILD_DIR:-build-sanitize}
      # also built for the host's widest SIMD (AVX2/AVX-512 here), so CI covers both the
      # default x86-64 (SSE2) code paths and the wide ones
      # -O0 without -g: the sanitizers need no debug info to name functions, and with any
      # optimization their instrumentation of the heavy template TUs takes 1.8x (-Og) to 3x
      # (-O1) as long to compile; the examples are not tests: the sanitizer build leaves them out
      opts+=(-Db_sanitize=address,undefined -Db_lundef=false -Doptimization=0 -Ddebug=false
             -Dcpp_args=-march=native -Dexamples=false)
    else
      opts+=(-Dexamples=true)
    fi
    setup "$dir" "${opts[@]}"
    ninja -C "$dir"
    status=0
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 meson test -C "$dir" --print-errorlogs \
      --num-processes 2 || status=$?
    python3 .ci/count_tests.py "$dir/meson-logs/testlog.json"
    exit $status
    ;;
  *)
    echo "usage: ./build.sh example | test" >&2
    exit 2
    ;;
esac
