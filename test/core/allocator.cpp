// Tests of include/ember/core/allocator.hpp: size classes, reuse, alignment, stats, cache limit.
#include <ember/core/allocator.hpp>
#include <ember/core/object_pool.hpp>
#include <ember/ops/factory.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <thread>
#include <vector>

namespace em = ember;
using cpu_cache = em::detail::caching_allocator<em::detail::cpu_memory_source>;

TEST_CASE("size classes: 64-byte steps, then four per power of two", "[allocator]") {
  using em::detail::size_class;
  CHECK(size_class(0) == 64);
  CHECK(size_class(1) == 64);
  CHECK(size_class(64) == 64);
  CHECK(size_class(65) == 128);
  CHECK(size_class(512) == 512);
  CHECK(size_class(513) == 640);  // 512 * 1.25
  CHECK(size_class(1000) == 1024);
  CHECK(size_class(1025) == 1280);
  CHECK(size_class(std::size_t{64} << 20) == std::size_t{64} << 20);  // powers of two are exact
  CHECK(size_class((std::size_t{64} << 20) + 1) == std::size_t{80} << 20);
  for (std::size_t n = 1; n < 100000; n += 37) {
    const std::size_t c = size_class(n);
    REQUIRE(c >= n);
    REQUIRE(c <= n + n / 4 + 64);  // waste <= 25% (plus the 64-byte minimum)
    REQUIRE(c % 64 == 0);
  }
}

TEST_CASE("freed blocks are reused and stats track them", "[allocator]") {
  cpu_cache a(std::size_t{1} << 30);
  void* p = a.allocate(1000);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % em::alignment == 0);
  auto s = a.stats();
  CHECK(s.in_use == 1000);
  CHECK(s.reserved == 1024);
  CHECK(s.os_allocations == 1);
  a.deallocate(p, 1000);
  s = a.stats();
  CHECK(s.in_use == 0);
  CHECK(s.cached == 1024);
  CHECK(s.peak == 1000);
  void* q = a.allocate(1010);  // same size class: the same block comes back
  CHECK(q == p);
  s = a.stats();
  CHECK(s.cache_hits == 1);
  CHECK(s.os_allocations == 1);
  CHECK(s.cached == 0);
  void* r = a.allocate(5000);  // other class: a new block
  CHECK(r != q);
  CHECK(a.stats().peak == 6010);
  a.deallocate(q, 1010);
  a.deallocate(r, 5000);
  a.reset_peak();
  CHECK(a.stats().peak == 0);
  a.empty_cache();
  s = a.stats();
  CHECK(s.cached == 0);
  CHECK(s.reserved == 0);
  CHECK(s.os_frees == 2);
}

TEST_CASE("blocks are 64-byte aligned at every size; huge blocks 2 MiB-aligned", "[allocator]") {
  cpu_cache a(std::size_t{1} << 30);
  for (std::size_t n : {1u, 3u, 63u, 100u, 4096u, 100000u, 3000000u}) {
    void* p = a.allocate(n);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
    if (n >= (2u << 20)) CHECK(reinterpret_cast<std::uintptr_t>(p) % (2u << 20) == 0);
    a.deallocate(p, n);
  }
}

TEST_CASE("the cache limit bounds cached bytes; limit 0 disables caching", "[allocator]") {
  cpu_cache a(4096);
  void* p = a.allocate(3000);  // class 3072
  void* q = a.allocate(3000);
  a.deallocate(p, 3000);
  a.deallocate(q, 3000);  // would exceed 4096 cached: released
  auto s = a.stats();
  CHECK(s.cached == 3072);
  CHECK(s.os_frees == 1);
  a.set_cache_limit(0);
  CHECK(a.stats().cached == 0);
  void* r = a.allocate(100);
  a.deallocate(r, 100);
  CHECK(a.stats().cached == 0);
  CHECK(a.stats().reserved == 0);
}

TEST_CASE("the allocator is safe to use from several threads", "[allocator]") {
  cpu_cache a(std::size_t{1} << 30);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&a, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::size_t n = 64 + static_cast<std::size_t>((i * 131 + t * 17) % 5000);
        auto* p = static_cast<unsigned char*>(a.allocate(n));
        p[0] = p[n - 1] = 1;
        a.deallocate(p, n);
      }
    });
  for (auto& t : ts) t.join();
  const auto s = a.stats();
  CHECK(s.in_use == 0);
  CHECK(s.allocations == 8000);
  CHECK(s.cache_hits + s.os_allocations == 8000);
  CHECK(s.reserved == s.cached);
}

TEST_CASE("the object pool: blocks cross threads, lists stay bounded", "[allocator][pool]") {
  // Note [Object pool]: tensor_impl and storage_impl blocks come from thread-local free lists
  using block = std::array<char, 48>;
  using alloc = em::detail::pooled_allocator<block>;
  auto* mine = em::detail::local_pool<alloc::block>();
  REQUIRE(mine != nullptr);
  const int before = mine->size();
  // blocks allocated on another thread (which then exits) are released here
  std::vector<block*> from_other;
  std::thread([&] {
    for (int i = 0; i < 600; ++i) {
      block* b = alloc{}.allocate(1);
      b->fill(static_cast<char>(i));
      from_other.push_back(b);
    }
  }).join();
  for (std::size_t i = 0; i < from_other.size(); ++i)
    CHECK((*from_other[i])[47] == static_cast<char>(i));
  for (block* b : from_other) alloc{}.deallocate(b, 1);
  if (EMBER_OBJECT_POOL) {
    CHECK(mine->size() == em::detail::pool_max_blocks);  // the rest went back to the heap
    CHECK(before <= em::detail::pool_max_blocks);
    block* again = alloc{}.allocate(1);  // served from the list: one of the freed blocks
    CHECK(std::find(from_other.begin(), from_other.end(), again) != from_other.end());
    alloc{}.deallocate(again, 1);
  } else {
    CHECK(mine->size() == before);  // -DEMBER_OBJECT_POOL=0: plain new and delete
  }
  // tensors made on worker threads and freed here, and the other way round, keep their values
  std::vector<em::tensor<float>> made;
  std::thread([&] {
    for (int i = 0; i < 300; ++i) made.push_back(em::full<float>({3}, float(i)) + 1.f);
  }).join();
  for (int i = 0; i < 300; ++i) CHECK(made[static_cast<std::size_t>(i)].at({2}) == float(i + 1));
  std::thread([m = std::move(made)]() mutable { m.clear(); }).join();
  const em::tensor<float> t = em::arange<float>(0, 5) * 2.f;
  CHECK(t.at({4}) == 8.f);
}

TEST_CASE("tensors draw from the global CPU cache: a freed buffer is reused", "[allocator]") {
  const em::shape big{1 << 18};  // 1 MiB of floats
  const void* first = nullptr;
  {
    auto t = em::zeros<float>(big);
    first = t.data();
    CHECK(em::memory_stats().in_use >= std::size_t{1} << 20);
  }
  const auto before = em::memory_stats();
  auto u = em::empty<float>(big);
  const auto after = em::memory_stats();
  CHECK(u.data() == first);
  CHECK(after.cache_hits == before.cache_hits + 1);
  CHECK(after.os_allocations == before.os_allocations);
  CHECK(after.peak >= after.in_use);
}

TEST_CASE("a device without a backend is a clear error", "[allocator][device]") {
  try {
    em::memory_stats(em::device::cuda(0));
    FAIL("no error");
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::device);
    CHECK_THAT(e.what(), Catch::Matchers::Contains("cuda:0 is not available"));
  }
  CHECK_THROWS_AS(em::zeros<float>({2}, em::device::cuda(1)), em::error);
}
