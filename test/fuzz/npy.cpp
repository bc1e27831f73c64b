// libFuzzer target for include/ember/io/npy.hpp: arbitrary bytes as an .npy file. Only
// ember::error may escape decode_npy; a decoded tensor is encoded again and must decode to
// the same bytes.
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude test/fuzz/npy.cpp \
//     -o fuzz_npy && ./fuzz_npy -max_total_time=60 test/fuzz/corpus/npy
#include <ember/io/npy.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ember::any_tensor t;
  try {
    t = ember::io::decode_npy(std::span<const std::uint8_t>(data, size));
  } catch (const ember::error&) {
    return 0;
  }
  const auto again = ember::io::encode_npy(t);
  const ember::any_tensor u = ember::io::decode_npy(again);
  if (u.dtype() != t.dtype() || !(u.shape() == t.shape()) || ember::io::encode_npy(u) != again)
    __builtin_trap();
  return 0;
}
