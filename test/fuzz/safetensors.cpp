// libFuzzer target for include/ember/io/safetensors.hpp: parse_safetensors on arbitrary bytes
// must return a state_dict or throw ember::error (io); never crash, hang or read out of bounds.
// Build (one command line) and run:
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined
//     -fno-sanitize-recover=undefined -Iinclude test/fuzz/safetensors.cpp -o fuzz_safetensors
//   ./fuzz_safetensors -max_total_time=60 test/fuzz/corpus/safetensors
#include <ember/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

volatile unsigned fuzz_sink;  // keeps the reads of tensor bytes

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const ember::state_dict sd = ember::io::parse_safetensors(data, size, "fuzz");
    // Read every byte of every tensor (ASan checks the storage really is that large).
    unsigned sum = 0;
    for (const auto& [name, t] : sd) {
      const auto* p = static_cast<const std::uint8_t*>(t.impl_ptr()->storage->data());
      for (std::size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
      if (t.device() != ember::cpu || t.dtype() > ember::dtype::i16) std::abort();
    }
    fuzz_sink = sum;
  } catch (const ember::error& e) {
    if (e.category() != ember::errc::io) std::abort();  // anything else is a bug
  }
  return 0;
}
