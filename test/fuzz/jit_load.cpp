// libFuzzer target for include/ember/jit/archive.hpp: a whole-model file (safetensors bytes whose
// metadata holds the graph text) must load into a graph_module or throw ember::error; never
// crash, hang or read out of bounds. The seed is a saved MLP (test/fuzz/corpus/jit_load).
// Build and run:
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined
//     -fno-sanitize-recover=undefined -Iinclude test/fuzz/jit_load.cpp -o fuzz_jit_load
//   ./fuzz_jit_load -max_total_time=60 test/fuzz/corpus/jit_load
#include <ember/io/safetensors.hpp>
#include <ember/jit/archive.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

volatile std::size_t fuzz_sink;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const ember::state_dict sd = ember::io::parse_safetensors(data, size, "fuzz");
    const auto m = ember::jit::load_state_dict(sd, "fuzz");
    fuzz_sink = ember::jit::to_string(m.graph()).size();  // a loaded graph prints
  } catch (const ember::error&) {
    // any ember::error is a clean rejection
  }
  return 0;
}
