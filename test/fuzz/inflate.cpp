// libFuzzer target for include/ember/io/inflate.hpp: arbitrary bytes as raw deflate, gzip and
// zlib streams. Only ember::error may escape the decoders; anything else (a crash, a sanitizer
// report, another exception) is a bug. The output cap keeps each run small.
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude test/fuzz/inflate.cpp \
//     -o fuzz_inflate && ./fuzz_inflate -max_total_time=60 test/fuzz/corpus/inflate
#include <ember/io/inflate.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> in(data, size);
  const ember::io::inflate_options opts{.max_output = std::size_t{1} << 20};
  try {
    (void)ember::io::inflate(in, opts);
  } catch (const ember::error&) {
  }
  try {
    const auto out = ember::io::gunzip(in, opts);
    if (out.size() > opts.max_output) __builtin_trap();
  } catch (const ember::error&) {
  }
  try {
    (void)ember::io::zlib_decompress(in, opts);
  } catch (const ember::error&) {
  }
  return 0;
}
