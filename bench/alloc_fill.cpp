// B0: allocate-and-fill in a loop. Every call allocates a fresh buffer, fills it with 1.0f and
// releases it. Large case: 16M floats (64 MiB), where page faults dominate unless the memory is
// reused; small case: 1024 floats (4 KiB), where allocator overhead dominates.
// Competitors: ember (full, empty + fill_), std::vector<float>(n, 1.f), libtorch (when built
// with EMBER_BENCH_HAVE_TORCH). Ratios are against std::vector in the same run.
//
//   ./alloc_fill                          # default: caching allocator on
//   EMBER_CPU_CACHE_LIMIT=0 ./alloc_fill  # ember's cache disabled
//   BENCH_REPS=31 ./alloc_fill            # more samples
#include "harness.hpp"

#include <ember/ember.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#if EMBER_BENCH_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

std::string read_first_line(const char* path) {
  std::ifstream f(path);
  std::string s;
  if (!f || !std::getline(f, s)) return "n/a";
  return s;
}

void add_competitors(bench::suite& s, std::int64_t n) {
  s.add("std::vector<float>(n, 1.f)", [n] {
    std::vector<float> v(static_cast<std::size_t>(n), 1.f);
    bench::keep(v.data());
  });
  s.add("ember::full<float>({n}, 1.f)", [n] {
    auto t = ember::full<float>({n}, 1.f);
    bench::keep(t.data());
  });
  s.add("ember::empty<float>({n}).fill_(1.f)", [n] {
    auto t = ember::empty<float>({n});
    t.fill_(1.f);
    bench::keep(t.data());
  });
#if EMBER_BENCH_HAVE_TORCH
  s.add("torch::full({n}, 1.f)", [n] {
    auto t = torch::full({n}, 1.f);
    bench::keep(t.data_ptr<float>());
  });
  s.add("torch::empty({n}).fill_(1.f)", [n] {
    auto t = torch::empty({n});
    t.fill_(1.f);
    bench::keep(t.data_ptr<float>());
  });
#endif
}

/// Checks that every competitor really produces n ones (guards against a broken benchmark).
bool sanity(std::int64_t n) {
  bool ok = true;
  auto e = ember::full<float>({n}, 1.f);
  for (std::int64_t i = 0; i < n; i += n / 7 + 1) ok = ok && e.data()[i] == 1.f;
  ok = ok && e.data()[n - 1] == 1.f;
  auto f = ember::empty<float>({n});
  f.fill_(1.f);
  ok = ok && f.data()[0] == 1.f && f.data()[n - 1] == 1.f;
#if EMBER_BENCH_HAVE_TORCH
  auto t = torch::full({n}, 1.f);
  ok = ok && t.numel() == n && t.data_ptr<float>()[n - 1] == 1.f;
#endif
  return ok;
}

void print_stats(const char* when) {
  const auto st = ember::memory_stats();
  const double hit_pct = st.allocations ? 100.0 * static_cast<double>(st.cache_hits) /
                                              static_cast<double>(st.allocations)
                                        : 0.0;
  std::printf(
      "\nember::memory_stats() %s:\n"
      "  allocations %llu, cache_hits %llu (%.1f%%), os_allocations %llu, os_frees %llu\n"
      "  in_use %zu B, peak %zu B, cached %zu B, reserved %zu B\n",
      when, static_cast<unsigned long long>(st.allocations),
      static_cast<unsigned long long>(st.cache_hits),
      hit_pct,
      static_cast<unsigned long long>(st.os_allocations),
      static_cast<unsigned long long>(st.os_frees), st.in_use, st.peak, st.cached, st.reserved);
}

}  // namespace

int main() {
#if EMBER_BENCH_HAVE_TORCH
  at::set_num_threads(1);
#endif
  const char* limit = std::getenv("EMBER_CPU_CACHE_LIMIT");
  std::printf("B0 allocate-and-fill (single thread)\n");
  std::printf("  EMBER_CPU_CACHE_LIMIT=%s, transparent_hugepage=%s\n", limit ? limit : "(unset)",
              read_first_line("/sys/kernel/mm/transparent_hugepage/enabled").c_str());
#if EMBER_BENCH_HAVE_TORCH
  std::printf("  libtorch %s, %d thread(s)\n", TORCH_VERSION, at::get_num_threads());
#else
  std::printf("  libtorch: not built in (EMBER_BENCH_HAVE_TORCH=0)\n");
#endif

  constexpr std::int64_t big = std::int64_t{16} << 20;  // 16M floats = 64 MiB
  constexpr std::int64_t small = 1024;                   // 4 KiB
  if (!sanity(big) || !sanity(small)) {
    std::fprintf(stderr, "sanity check failed: a competitor did not fill with 1.0f\n");
    return 1;
  }

  {
    bench::suite s("B0 allocate + fill + free, 16M floats (64 MiB)", {.reps = 15, .warmup = 2});
    add_competitors(s, big);
    s.run();
    s.print("std::vector<float>(n, 1.f)");
  }
  print_stats("after the 64 MiB loop");

  {
    bench::suite s("B0b allocate + fill + free, 1024 floats (4 KiB)",
                   {.reps = 15, .warmup = 2, .iters = 20000});
    add_competitors(s, small);
    s.run();
    s.print("std::vector<float>(n, 1.f)");
  }
  print_stats("at exit");
  return 0;
}
