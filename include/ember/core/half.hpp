// Storage types for 16-bit floats: ember::half (IEEE binary16) and ember::bfloat16, with
// round-to-nearest-even conversion from float and exact conversion to float.
#pragma once

#include <ember/core/config.hpp>

#include <bit>
#include <cstdint>
#include <ostream>

namespace ember {

/// IEEE 754 binary16. Arithmetic goes through float: `half h = 1.5f; float f = h;`.
struct half {
  std::uint16_t bits = 0;

  constexpr half() = default;
  constexpr half(float f) noexcept : bits(from_float(f)) {}  // NOLINT: implicit like float
  constexpr operator float() const noexcept { return to_float(bits); }
  static constexpr half from_bits(std::uint16_t b) noexcept {
    half h;
    h.bits = b;
    return h;
  }

  static constexpr std::uint16_t from_float(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const std::uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u)  // inf or nan: keep a quiet nan payload bit
      return static_cast<std::uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow
    if (abs < 0x38800000u) {  // result is subnormal or zero: align to 2^-24 units
      if (abs < 0x33000000u) return static_cast<std::uint16_t>(sign);  // < 2^-25 rounds to 0
      const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
      const int shift = 126 - static_cast<int>(abs >> 23);  // 14 (2^-15) .. 24 (2^-25)
      const std::uint32_t half_ulp = 1u << (shift - 1);
      std::uint32_t r = mant >> shift;
      const std::uint32_t rem = mant & ((1u << shift) - 1u);
      if (rem > half_ulp || (rem == half_ulp && (r & 1u))) ++r;
      return static_cast<std::uint16_t>(sign | r);
    }
    // normal: rebias exponent (127 -> 15) and round 23 -> 10 mantissa bits to nearest even
    std::uint32_t r = abs - 0x38000000u;
    const std::uint32_t rem = r & 0x1fffu;
    r >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }

  static constexpr float to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t mant = h & 0x3ffu;
    if (exp == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
      if (mant == 0) return std::bit_cast<float>(sign);
      int e = -1;  // normalize the subnormal
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      mant &= 0x3ffu;
      return std::bit_cast<float>(sign | (static_cast<std::uint32_t>(112 - e) << 23) | (mant << 13));
    }
    return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  }
};

/// bfloat16: the upper 16 bits of a float, rounded to nearest even.
struct bfloat16 {
  std::uint16_t bits = 0;

  constexpr bfloat16() = default;
  constexpr bfloat16(float f) noexcept : bits(from_float(f)) {}  // NOLINT: implicit like float
  constexpr operator float() const noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
  }
  static constexpr bfloat16 from_bits(std::uint16_t b) noexcept {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  static constexpr std::uint16_t from_float(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet nan
    const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
    return static_cast<std::uint16_t>((x + rounding) >> 16);
  }
};

inline std::ostream& operator<<(std::ostream& os, half h) { return os << static_cast<float>(h); }
inline std::ostream& operator<<(std::ostream& os, bfloat16 h) { return os << static_cast<float>(h); }

}  // namespace ember
