// The caching allocator: freed blocks are kept in size classes and reused instead of being
// returned to the OS; per-device allocator registry; memory_stats / empty_cache.
#pragma once

#include <ember/core/config.hpp>
#include <ember/core/device.hpp>
#include <ember/core/error.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <atomic>
#include <thread>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ember {

/// Counters of one device's allocator (bytes unless named otherwise).
struct allocator_stats {
  std::size_t in_use = 0;          ///< bytes requested by live storages
  std::size_t peak = 0;            ///< highest in_use since start or reset_peak_memory_stats()
  std::size_t cached = 0;          ///< bytes of freed blocks kept for reuse
  std::size_t reserved = 0;        ///< bytes held from the OS: live blocks (rounded) + cached
  std::uint64_t allocations = 0;   ///< allocation requests served
  std::uint64_t cache_hits = 0;    ///< requests served from the cache (no OS call, no page faults)
  std::uint64_t os_allocations = 0;  ///< blocks obtained from the OS
  std::uint64_t os_frees = 0;        ///< blocks returned to the OS
};

/// A device memory allocator. Blocks are EMBER_ALIGNMENT-aligned; deallocate gets the size back.
class allocator {
 public:
  virtual ~allocator() = default;
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* p, std::size_t bytes) noexcept = 0;
  virtual allocator_stats stats() const = 0;
  virtual void empty_cache() noexcept = 0;
  virtual void reset_peak() noexcept = 0;
  virtual void set_cache_limit(std::size_t bytes) noexcept = 0;
};

namespace detail {

/// Note [Size classes]: requests are rounded up to 64-byte multiples below 512 B, and above to
/// one of four classes per power of two (waste <= 25%), so a block freed by one op is reused
/// by the next op of a similar size. Powers of two map to themselves (64 MiB stays 64 MiB).
constexpr std::size_t size_class(std::size_t n) noexcept {
  if (n <= 512) return n == 0 ? 64 : (n + 63) & ~std::size_t{63};
  const int k = std::bit_width(n - 1);                 // 2^(k-1) < n <= 2^k
  const std::size_t step = std::size_t{1} << (k - 3);  // a quarter of 2^(k-1)
  return (n + step - 1) & ~(step - 1);
}

/// Raw CPU memory: aligned_alloc; blocks of 2 MiB and more are 2 MiB-aligned and advised as
/// transparent huge pages on Linux (Note [Huge pages]).
struct cpu_memory_source {
  static constexpr std::size_t huge = std::size_t{2} << 20;
  static void* allocate(std::size_t bytes) noexcept {
    const std::size_t align = bytes >= huge ? huge : alignment;
    bytes = (bytes + align - 1) / align * align;  // aligned_alloc wants a multiple
    void* p = std::aligned_alloc(align, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE) && !defined(EMBER_NO_HUGE_PAGES)
    // Note [Huge pages]: on VMs a first touch costs ~10 us per 4 KiB page; a 2 MiB page
    // replaces 512 faults by one. Advisory only: the kernel may ignore it.
    if (p && bytes >= huge) ::madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
  }
  static void deallocate(void* p, std::size_t) noexcept { std::free(p); }
};

/// A lock for the allocator's short critical sections (a free-list pop or push): one atomic
/// exchange to take it and a store to release it, against pthread's two atomic operations
/// (lock and unlock were ~7% of an eager add of 16 floats, bench O1). A waiting thread yields
/// its core, so a holder that was preempted gets to finish.
class spin_mutex {
 public:
  void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire))
      while (locked_.load(std::memory_order_relaxed)) std::this_thread::yield();
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

/// The caching allocator over a raw memory source (CPU here; the CUDA backend reuses it).
template <class Source>
class caching_allocator final : public allocator {
 public:
  explicit caching_allocator(std::size_t cache_limit) : limit_(cache_limit) {}
  ~caching_allocator() override { empty_cache(); }

  void* allocate(std::size_t bytes) override {
    const std::size_t cls = size_class(bytes);
    {
      std::lock_guard lock(mu_);
      ++stats_.allocations;
      std::vector<void*>* list = nullptr;
      if (cls <= small_max) {
        list = &small_[cls / 64 - 1];
      } else if (auto it = free_.find(cls); it != free_.end()) {
        list = &it->second;
      }
      if (list && !list->empty()) {
        void* p = list->back();
        list->pop_back();
        stats_.cached -= cls;
        ++stats_.cache_hits;
        note_alloc(bytes);
        return p;
      }
    }
    void* p = Source::allocate(cls);
    if (!p) {  // give the cache back to the OS and try once more
      empty_cache();
      p = Source::allocate(cls);
    }
    std::lock_guard lock(mu_);
    if (!p)
      detail::fail(errc::memory, "allocate: out of memory allocating ", bytes, " bytes (",
                   stats_.in_use, " bytes in use)");
    ++stats_.os_allocations;
    stats_.reserved += cls;
    note_alloc(bytes);
    return p;
  }

  void deallocate(void* p, std::size_t bytes) noexcept override {
    if (!p) return;
    const std::size_t cls = size_class(bytes);
    {
      std::lock_guard lock(mu_);
      stats_.in_use -= bytes;
      if (stats_.cached + cls <= limit_) {
        try {
          (cls <= small_max ? small_[cls / 64 - 1] : free_[cls]).push_back(p);
          stats_.cached += cls;
          return;
        } catch (...) {  // bookkeeping failed: fall through and release the block
        }
      }
      stats_.reserved -= cls;
      ++stats_.os_frees;
    }
    Source::deallocate(p, cls);
  }

  allocator_stats stats() const override {
    std::lock_guard lock(mu_);
    return stats_;
  }

  void empty_cache() noexcept override {
    std::unordered_map<std::size_t, std::vector<void*>> blocks;
    {
      std::lock_guard lock(mu_);
      blocks.swap(free_);
      for (std::size_t i = 0; i < small_.size(); ++i)
        if (!small_[i].empty()) blocks[(i + 1) * 64].swap(small_[i]);
      for (auto& [cls, v] : blocks) {
        stats_.reserved -= cls * v.size();
        stats_.os_frees += v.size();
      }
      stats_.cached = 0;
    }
    for (auto& [cls, v] : blocks)
      for (void* p : v) Source::deallocate(p, cls);
  }

  void reset_peak() noexcept override {
    std::lock_guard lock(mu_);
    stats_.peak = stats_.in_use;
  }

  void set_cache_limit(std::size_t bytes) noexcept override {
    {
      std::lock_guard lock(mu_);
      limit_ = bytes;
      if (stats_.cached <= limit_) return;
    }
    empty_cache();
  }

 private:
  void note_alloc(std::size_t bytes) noexcept {
    stats_.in_use += bytes;
    stats_.peak = std::max(stats_.peak, stats_.in_use);
  }

  // the small classes (64-byte steps up to 512 B: most eager ops on small tensors) in an
  // array, the rest in a map keyed by class
  static constexpr std::size_t small_max = 512;
  mutable spin_mutex mu_;
  std::array<std::vector<void*>, small_max / 64> small_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  allocator_stats stats_;
  std::size_t limit_;
};

inline std::size_t cpu_cache_limit_from_env() {
  if (const char* s = std::getenv("EMBER_CPU_CACHE_LIMIT")) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (end != s) return static_cast<std::size_t>(v);
  }
  return EMBER_DEFAULT_CPU_CACHE_LIMIT;
}

/// The process-wide CPU allocator. Deliberately never destroyed, so that tensors with static
/// storage duration can still free their memory at exit.
inline allocator& cpu_allocator() {
  static auto* a = new caching_allocator<cpu_memory_source>(cpu_cache_limit_from_env());
  return *a;
}

/// Allocators of non-CPU device types, registered by backends (the CUDA backend in cuda/).
/// `get(index)` returns the allocator of device `index`, or nullptr if there is no such device.
struct device_allocator_registry {
  allocator* (*get)(int index) = nullptr;
  /// Waits for the device's queued work (the backend's cudaDeviceSynchronize).
  void (*synchronize)(int index) = nullptr;
};

inline device_allocator_registry& cuda_allocators() {
  static device_allocator_registry r;
  return r;
}

}  // namespace detail

/// The allocator behind a device; an error when no backend provides that device.
inline allocator& allocator_for(device d) {
  if (d.is_cpu()) return detail::cpu_allocator();
  auto& reg = detail::cuda_allocators();
  allocator* a = reg.get ? reg.get(d.index) : nullptr;
  detail::check(a != nullptr, errc::device, "device ", d,
                " is not available: ember was built without its CUDA backend or no such GPU "
                "exists (link ember_cuda and check em::cuda::is_available())");
  return *a;
}

namespace cuda {
/// True when a CUDA backend is linked in and sees at least one GPU.
inline bool is_available() {
  auto& reg = detail::cuda_allocators();
  return reg.get != nullptr && reg.get(0) != nullptr;
}
/// The number of GPUs the CUDA backend sees (0 without one).
inline int device_count() {
  auto& reg = detail::cuda_allocators();
  int n = 0;
  while (reg.get != nullptr && n < 64 && reg.get(n) != nullptr) ++n;
  return n;
}
/// Waits until the work queued on GPU `index` (default: the first) has finished. Kernels run
/// asynchronously; copies to the CPU and item() wait by themselves, timings need this.
inline void synchronize(int index = 0) {
  auto& reg = detail::cuda_allocators();
  detail::check(reg.synchronize != nullptr && reg.get != nullptr && reg.get(index) != nullptr,
                errc::device, "cuda::synchronize: no GPU ", index,
                " (ember_cuda not linked, or no such device)");
  reg.synchronize(index);
}
}  // namespace cuda

/// Allocator counters of a device: `em::memory_stats().in_use`, `.peak`, `.cached`, ...
inline allocator_stats memory_stats(device d = cpu) { return allocator_for(d).stats(); }

/// Returns the device's cached (free) blocks to the OS / driver.
inline void empty_cache(device d = cpu) { allocator_for(d).empty_cache(); }

/// Restarts peak tracking at the current in-use bytes.
inline void reset_peak_memory_stats(device d = cpu) { allocator_for(d).reset_peak(); }

/// Caps the bytes of freed blocks the device's allocator keeps (default 4 GiB on CPU, or the
/// EMBER_CPU_CACHE_LIMIT environment variable); set 0 to disable caching.
inline void set_cache_limit(std::size_t bytes, device d = cpu) {
  allocator_for(d).set_cache_limit(bytes);
}

}  // namespace ember
