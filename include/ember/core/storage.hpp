// storage: a ref-counted, aligned buffer on one device (from the caching allocator, or user
// memory for from_blob), with the version counter autograd uses to detect in-place changes.
#pragma once

#include <ember/core/allocator.hpp>
#include <ember/core/device.hpp>
#include <ember/core/object_pool.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <utility>

namespace ember::detail {

class storage_impl {
 public:
  /// Allocates `nbytes` on `dev` through that device's caching allocator.
  storage_impl(std::size_t nbytes, device dev)
      : data_(nbytes ? allocator_for(dev).allocate(nbytes) : nullptr),
        nbytes_(nbytes),
        device_(dev),
        owner_(nbytes ? &allocator_for(dev) : nullptr) {}

  /// Wraps memory the caller owns; `deleter` (may be empty) runs when the storage dies.
  storage_impl(void* data, std::size_t nbytes, device dev, std::function<void(void*)> deleter)
      : data_(data), nbytes_(nbytes), device_(dev), deleter_(std::move(deleter)) {}

  storage_impl(const storage_impl&) = delete;
  storage_impl& operator=(const storage_impl&) = delete;
  ~storage_impl() {
    if (owner_) {
      owner_->deallocate(data_, nbytes_);
    } else if (deleter_) {
      deleter_(data_);
    }
  }

  void* data() const noexcept { return data_; }
  std::size_t nbytes() const noexcept { return nbytes_; }
  device dev() const noexcept { return device_; }
  bool owns_memory() const noexcept { return owner_ != nullptr; }

  /// Note [Version counter]: bumped by every in-place write through any view of this storage.
  /// Autograd records it when saving a tensor and compares at backward time.
  std::uint64_t version() const noexcept { return version_.load(std::memory_order_relaxed); }
  void bump_version() noexcept { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void* data_;
  std::size_t nbytes_;
  device device_;
  allocator* owner_ = nullptr;
  std::function<void(void*)> deleter_;
  std::atomic<std::uint64_t> version_{0};
};

using storage_ptr = std::shared_ptr<storage_impl>;

inline storage_ptr make_storage(std::size_t nbytes, device dev) {
  return make_pooled<storage_impl>(nbytes, dev);  // Note [Object pool]
}

/// Copies bytes between devices; a backend (cuda/) installs the hook for non-CPU devices.
using copy_bytes_fn = void (*)(void* dst, device dst_dev, const void* src, device src_dev,
                               std::size_t nbytes);
inline copy_bytes_fn& device_copy_hook() noexcept {
  static copy_bytes_fn f = nullptr;
  return f;
}

inline void copy_bytes(void* dst, device dst_dev, const void* src, device src_dev,
                       std::size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  auto f = device_copy_hook();
  check(f != nullptr, errc::device, "copy from ", src_dev, " to ", dst_dev,
        ": no backend for this device is linked (build with CUDA and link ember_cuda)");
  f(dst, dst_dev, src, src_dev, nbytes);
}

}  // namespace ember::detail
