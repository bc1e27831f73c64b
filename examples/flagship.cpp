// ember's flagship example. Today it tours the tensor core: creation, views that share
// storage, broadcasting copies, dtype conversion, printing, errors and the caching allocator.
// It grows with ember into: train on the digits data -> trace -> save -> reload -> predict.
#include <ember/ember.hpp>

#include <cstdint>
#include <iostream>

namespace em = ember;

int main() {
  em::manual_seed(42);

  // creation
  em::tensor<float> a = em::randn<float>({4, 3});
  std::cout << "a = randn(4, 3):\n" << a << "\n\n";
  auto steps = em::arange<std::int64_t>(0, 12);
  std::cout << "arange(0, 12):\n" << steps << "\n\n";

  // views share storage: writes through a view show in the base
  auto grid = steps.view({3, 4});
  grid.slice(1, 0, 4, 2).fill_(-1);  // every other column
  std::cout << "view(3, 4) with columns 0 and 2 set to -1 through a strided slice:\n"
            << grid << "\n\n";
  std::cout << "its transpose (a view, strides " << grid.t().strides() << "):\n"
            << grid.t() << "\n\n";

  // broadcasting copy and conversion
  auto row = em::from_vector<float>({1.f, 2.f, 3.f}, {3});
  auto tiled = em::empty<float>({2, 3});
  tiled.copy_(row);
  std::cout << "a row broadcast into (2,3), converted to f64:\n" << tiled.to<double>() << "\n\n";

  // bad input gets a clear error, never a crash
  try {
    a.t().view({12});
  } catch (const em::error& e) {
    std::cout << "caught: " << e.what() << "\n\n";
  }

  // the caching allocator reuses freed blocks (no fresh page faults)
  for (int i = 0; i < 10; ++i) auto big = em::full<float>({1 << 22}, 1.f);  // 16 MiB each
  const auto st = em::memory_stats();
  std::cout << "allocator: " << st.allocations << " allocations, " << st.cache_hits
            << " served from the cache, " << st.os_allocations << " from the OS, peak "
            << st.peak / 1024 << " KiB\n";
  return 0;
}
