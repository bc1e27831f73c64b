// An emulated device for the tests: a backend registered as cuda:0 whose memory is host
// memory, readable only inside its kernels (Note [Guarded device memory]), and whose kernels
// are the host builds of the CUDA kernels' per-element code (dispatch/program.hpp) and a
// reference GEMM. With it, tensors "on cuda:0" take the whole
// device path of the dispatch layer on a machine without a GPU. Construct an emulated_device
// for the scope of a test; it unregisters itself.
#pragma once

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include <sys/mman.h>
#include <unistd.h>

namespace ember_test {

namespace emulated_detail {
namespace em = ember;
namespace dp = ember::dispatch;

// Note [Guarded device memory]: the emulated device's memory is mapped PROT_NONE except while
// an emulated kernel or copy runs, so host code that reads or writes device memory directly
// (what would crash or read garbage with a real GPU) faults in the tests too.
struct guarded_memory {
  std::mutex mu;
  std::map<void*, std::size_t> regions;  // live mappings and their lengths
  int open = 0;                          // kernels running (nesting)

  static std::size_t round(std::size_t n) {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return (n + page - 1) / page * page;
  }
  void protect_all(int prot) {
    for (auto& [p, n] : regions)
      if (::mprotect(p, n, prot) != 0) {
        std::perror("emulated device: mprotect");
        std::abort();
      }
  }
};

inline guarded_memory& guarded() {
  static auto* g = new guarded_memory;
  return *g;
}

/// Opens the device memory to the host for the scope of one emulated kernel or copy.
struct device_access {
  device_access() {
    auto& g = guarded();
    std::lock_guard lock(g.mu);
    if (g.open++ == 0) g.protect_all(PROT_READ | PROT_WRITE);
  }
  ~device_access() {
    auto& g = guarded();
    std::lock_guard lock(g.mu);
    if (--g.open == 0) g.protect_all(PROT_NONE);
  }
  device_access(const device_access&) = delete;
  device_access& operator=(const device_access&) = delete;
};

struct guarded_source {
  static void* allocate(std::size_t bytes) noexcept {
    auto& g = guarded();
    const std::size_t n = guarded_memory::round(bytes);
    std::lock_guard lock(g.mu);
    void* p = ::mmap(nullptr, n, g.open ? PROT_READ | PROT_WRITE : PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    g.regions[p] = n;
    return p;
  }
  static void deallocate(void* p, std::size_t) noexcept {
    auto& g = guarded();
    std::lock_guard lock(g.mu);
    auto it = g.regions.find(p);
    if (it == g.regions.end()) return;
    ::munmap(p, it->second);
    g.regions.erase(it);
  }
};

inline em::allocator* allocator_of(int index) {
  static auto* a = new em::detail::caching_allocator<guarded_source>(1u << 30);
  return index == 0 ? a : nullptr;
}

inline void copy(void* dst, em::device, const void* src, em::device, std::size_t n) {
  const device_access open;
  std::memcpy(dst, src, n);
}

inline void synchronize(int) {}

inline void fused(const dp::elementwise_program& p, em::device d) {
  const device_access open;
  REQUIRE(d == em::device::cuda(0));
  dp::run_on_host(p);
}

inline void reduce(const dp::reduce_problem& r, em::device) {
  const device_access open;
  switch (static_cast<em::dtype>(r.dtype)) {
    case em::dtype::f32: dp::reduce_on_host<float>(r); break;
    case em::dtype::f64: dp::reduce_on_host<double>(r); break;
    case em::dtype::i64: dp::reduce_on_host<std::int64_t>(r); break;
    case em::dtype::i32: dp::reduce_on_host<std::int32_t>(r); break;
    default: FAIL("unexpected reduce dtype");
  }
}

// the reference product, in the problem's own strides (what cuBLAS computes)
template <class T>
void gemm_typed(const dp::gemm_problem& g) {
  for (std::int64_t b = 0; b < g.batch; ++b) {
    const T* a = static_cast<const T*>(g.a) + b * g.stride_a;
    const T* bm = static_cast<const T*>(g.b) + b * g.stride_b;
    T* c = static_cast<T*>(g.c) + b * g.stride_c;
    for (std::int64_t i = 0; i < g.m; ++i)
      for (std::int64_t j = 0; j < g.n; ++j) {
        double acc = 0;
        for (std::int64_t l = 0; l < g.k; ++l)
          acc += static_cast<double>(a[i * g.a_rs + l * g.a_cs]) * static_cast<double>(bm[l * g.b_rs + j * g.b_cs]);
        T& out = c[i * g.c_rs + j];
        out = static_cast<T>(g.alpha * acc + (g.beta == 0 ? 0.0 : g.beta * static_cast<double>(out)));
      }
  }
}

inline void gemm(const dp::gemm_problem& g, em::device) {
  const device_access open;
  // what cuBLAS requires of the operands (Note [Device GEMM])
  REQUIRE((g.a_cs == 1 || g.a_rs == 1));
  REQUIRE((g.b_cs == 1 || g.b_rs == 1));
  if (g.dtype == dp::code::f32) gemm_typed<float>(g);
  else gemm_typed<double>(g);
}

inline void dropout(const dp::dropout_problem& p, em::device) {
  const device_access open;
  if (p.dtype == dp::code::f64) dp::dropout_on_host<double>(p);
  else dp::dropout_on_host<float>(p);
}

inline void index(const dp::index_problem& p, em::device) {
  const device_access open;
  REQUIRE(dp::index_on_host(p));
}

inline const em::dtype all_types[] = {em::dtype::f32, em::dtype::f64, em::dtype::i32,
                                      em::dtype::i64, em::dtype::u8,  em::dtype::boolean,
                                      em::dtype::i8,  em::dtype::i16};

}  // namespace emulated_detail

/// Registers the emulated backend for its lifetime.
struct emulated_device {
  emulated_device() {
    namespace ed = emulated_detail;
    ember::detail::cuda_allocators().get = &ed::allocator_of;
    ember::detail::cuda_allocators().synchronize = &ed::synchronize;
    ember::detail::device_copy_hook() = &ed::copy;
    for (ember::dtype t : ed::all_types) {
      ember::dispatch::register_kernel<ember::op::fused>(ember::device_type::cuda, t, &ed::fused);
      ember::dispatch::register_kernel<ember::op::sum>(ember::device_type::cuda, t, &ed::reduce);
      ember::dispatch::register_kernel<ember::op::embedding>(ember::device_type::cuda, t, &ed::index);
    }
    for (ember::dtype t : {ember::dtype::f32, ember::dtype::f64}) {
      ember::dispatch::register_kernel<ember::op::matmul>(ember::device_type::cuda, t, &ed::gemm);
      ember::dispatch::register_kernel<ember::op::dropout>(ember::device_type::cuda, t, &ed::dropout);
    }
  }
  ~emulated_device() {
    ember::detail::cuda_allocators().get = nullptr;
    ember::detail::cuda_allocators().synchronize = nullptr;
    ember::detail::device_copy_hook() = nullptr;
    for (ember::dtype t : emulated_detail::all_types) {
      ember::dispatch::register_kernel<ember::op::fused>(ember::device_type::cuda, t, nullptr);
      ember::dispatch::register_kernel<ember::op::sum>(ember::device_type::cuda, t, nullptr);
      ember::dispatch::register_kernel<ember::op::embedding>(ember::device_type::cuda, t, nullptr);
      ember::dispatch::register_kernel<ember::op::matmul>(ember::device_type::cuda, t, nullptr);
      ember::dispatch::register_kernel<ember::op::dropout>(ember::device_type::cuda, t, nullptr);
    }
  }
  emulated_device(const emulated_device&) = delete;
  emulated_device& operator=(const emulated_device&) = delete;
};

}  // namespace ember_test
