// object_pool: thread-local free lists for the small bookkeeping objects every tensor has (its
// tensor_impl and storage_impl, with their shared_ptr control blocks). Tensor data does not go
// through here: the caching allocator (core/allocator.hpp) serves it.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>

// Note [Object pool]: an eager op creates a tensor_impl and a storage_impl, two heap blocks
// besides its data. malloc and free of both took ~17% of an eager add of 16 floats (bench O1,
// glibc's tcache path). Each thread keeps a free list per block size (16-byte steps) and
// serves those blocks without malloc's bookkeeping:
//  - a block freed on another thread joins that thread's list (blocks are plain
//    operator-new memory, so any thread may release them);
//  - a list keeps at most `pool_max_blocks` blocks, and the rest go back to operator delete,
//    so a producer/consumer pair of threads cannot grow one list without bound;
//  - a thread's lists are released when the thread exits; blocks freed after that (by a
//    static tensor destroyed at program exit) go straight to operator delete;
//  - under AddressSanitizer a block waiting in a list is poisoned, so a use after free of a
//    tensor is still reported (until the block is handed out again, as with ASan's own
//    quarantine);
//  - `-DEMBER_OBJECT_POOL=0` turns the pool off (plain operator new and delete).
#ifndef EMBER_OBJECT_POOL
#define EMBER_OBJECT_POOL 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define EMBER_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMBER_POOL_ASAN 1
#endif
#endif
#ifdef EMBER_POOL_ASAN
#include <sanitizer/asan_interface.h>
#define EMBER_POOL_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define EMBER_POOL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define EMBER_POOL_POISON(p, n) ((void)(p), (void)(n))
#define EMBER_POOL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace ember::detail {

inline constexpr int pool_max_blocks = 256;

/// One thread's free list of blocks of `Size` bytes.
template <std::size_t Size>
class block_pool {
  struct node {
    node* next;
  };

 public:
  explicit block_pool(bool& dead) noexcept : dead_(dead) {}
  block_pool(const block_pool&) = delete;
  block_pool& operator=(const block_pool&) = delete;
  ~block_pool() {
    dead_ = true;
    while (head_) {
      EMBER_POOL_UNPOISON(head_, Size);
      node* n = head_->next;
      ::operator delete(static_cast<void*>(head_));
      head_ = n;
    }
  }

  void* get() {
    if (!head_) return ::operator new(Size);
    node* n = head_;
    EMBER_POOL_UNPOISON(n, Size);
    head_ = n->next;
    --count_;
    return n;
  }
  void put(void* p) noexcept {
    if (count_ >= pool_max_blocks) return ::operator delete(p);
    head_ = ::new (p) node{head_};
    ++count_;
    EMBER_POOL_POISON(p, Size);
  }
  int size() const noexcept { return count_; }

 private:
  node* head_ = nullptr;
  int count_ = 0;
  bool& dead_;
};

/// This thread's pool of `Size`-byte blocks, or nullptr once the thread's pools are gone.
template <std::size_t Size>
block_pool<Size>* local_pool() noexcept {
  thread_local bool dead = false;  // trivially destructible: still readable after the pool dies
  thread_local block_pool<Size> pool(dead);
  return dead ? nullptr : &pool;
}

/// A std allocator over the thread-local pools (for std::allocate_shared; single objects only
/// are pooled).
template <class T>
struct pooled_allocator {
  using value_type = T;
  static constexpr std::size_t block = (sizeof(T) + 15) / 16 * 16;

  pooled_allocator() noexcept = default;
  template <class U>
  pooled_allocator(const pooled_allocator<U>&) noexcept {}  // NOLINT: rebinding is implicit

  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__,
                  "ember: pooled objects must not be over-aligned");
#if EMBER_OBJECT_POOL
    if (n == 1)
      if (auto* p = local_pool<block>()) return static_cast<T*>(p->get());
#endif
    return static_cast<T*>(::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept {
#if EMBER_OBJECT_POOL
    if (n == 1)
      if (auto* pool = local_pool<block>()) return pool->put(p);
#endif
    ::operator delete(static_cast<void*>(p));
  }
  template <class U>
  friend bool operator==(const pooled_allocator&, const pooled_allocator<U>&) noexcept {
    return true;
  }
};

/// std::make_shared through the thread-local pools (Note [Object pool]).
template <class T, class... Args>
std::shared_ptr<T> make_pooled(Args&&... args) {
  return std::allocate_shared<T>(pooled_allocator<T>{}, std::forward<Args>(args)...);
}

}  // namespace ember::detail
