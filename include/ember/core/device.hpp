// device: where a tensor's storage lives (cpu, or cuda:N). A runtime property of every storage.
#pragma once

#include <ember/core/error.hpp>

#include <cstdint>
#include <ostream>
#include <string>

namespace ember {

enum class device_type : std::uint8_t { cpu = 0, cuda = 1 };

/// A device: `em::device::cpu()` (== `em::cpu`) or `em::device::cuda(n)`.
struct device {
  device_type type = device_type::cpu;
  std::int16_t index = 0;

  static constexpr device cpu() noexcept { return {}; }
  static device cuda(int index = 0) {
    detail::check(index >= 0 && index < 64, errc::device, "device::cuda: invalid device index ",
                  index);
    return {device_type::cuda, static_cast<std::int16_t>(index)};
  }
  constexpr bool is_cpu() const noexcept { return type == device_type::cpu; }
  constexpr bool is_cuda() const noexcept { return type == device_type::cuda; }
  friend constexpr bool operator==(device a, device b) noexcept {
    return a.type == b.type && (a.type == device_type::cpu || a.index == b.index);
  }
  /// "cpu" or "cuda:N".
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

inline std::ostream& operator<<(std::ostream& os, device d) { return os << d.str(); }

/// The CPU device: `t.device() == em::cpu`.
inline constexpr device cpu = device::cpu();

}  // namespace ember
