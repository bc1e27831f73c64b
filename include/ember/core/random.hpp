// The random number generator: Philox4x32-10 (counter-based), the global default generator,
// manual_seed, and the uniform/normal/integer transforms the factories use.
#pragma once

#include <ember/core/error.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <numbers>

namespace ember {

/// Note [Generator]: ember's generator is Philox4x32-10 (Salmon et al., SC'11; the same
/// generator as cuRAND's and NumPy's Philox). It is counter based: block number b under key
/// (seed) gives four independent 32-bit words, so block b can be computed anywhere (any
/// thread, the GPU) without generating the blocks before it. A generator hands out
/// consecutive ranges of blocks; every factory documents how it maps blocks to elements:
///   rand<float>:  element i uses word i%4 of block start+i/4:        (w >> 8) * 2^-24
///   rand<double>: element i uses words 2(i%2), 2(i%2)+1 of block start+i/2 (53 bits)
///   randn:        Box-Muller on uniform pairs, (u1, u2) -> r cos, r sin (u1 in (0, 1])
///   randint:      64 random bits per element, lo + (bits * (hi - lo)) >> 64
/// Same seed, same calls => same values, on every platform and for any thread count.
class generator {
 public:
  static constexpr std::uint64_t default_seed = 67280421310721ULL;

  explicit generator(std::uint64_t seed = default_seed) noexcept { this->seed(seed); }

  void seed(std::uint64_t s) noexcept {
    std::lock_guard lock(mu_);
    seed_ = s;
    offset_ = 0;
  }
  std::uint64_t initial_seed() const noexcept { return seed_; }

  /// Reserves `blocks` consecutive counter blocks and returns the first one.
  std::uint64_t reserve(std::uint64_t blocks) noexcept {
    std::lock_guard lock(mu_);
    const std::uint64_t start = offset_;
    offset_ += blocks;
    return start;
  }
  /// The blocks handed out so far (with the seed, the full state).
  std::uint64_t offset() const noexcept { return offset_; }
  void set_offset(std::uint64_t off) noexcept {
    std::lock_guard lock(mu_);
    offset_ = off;
  }

  /// The four words of counter block `b` (a pure function of seed and b).
  std::array<std::uint32_t, 4> block(std::uint64_t b) const noexcept { return philox(seed_, b); }

  static std::array<std::uint32_t, 4> philox(std::uint64_t key, std::uint64_t counter) noexcept {
    return philox4x32_10({static_cast<std::uint32_t>(counter),
                          static_cast<std::uint32_t>(counter >> 32), 0u, 0u},
                         {static_cast<std::uint32_t>(key), static_cast<std::uint32_t>(key >> 32)});
  }

  /// The Philox4x32 bijection with 10 rounds on a full 128-bit counter and 64-bit key.
  static std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> c,
                                                    std::array<std::uint32_t, 2> k) noexcept {
    for (int r = 0; r < 10; ++r) {
      const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * c[0];
      const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * c[2];
      c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<std::uint32_t>(p1),
           static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<std::uint32_t>(p0)};
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
    return c;
  }

 private:
  mutable std::mutex mu_;
  std::uint64_t seed_ = default_seed;
  std::uint64_t offset_ = 0;
};

/// The generator used by rand/randn/randint/dropout/init when none is passed.
inline generator& default_generator() {
  static generator g;
  return g;
}

/// Seeds the default generator: `em::manual_seed(42)` makes every later random call repeat.
inline void manual_seed(std::uint64_t seed) { default_generator().seed(seed); }

namespace detail {

inline float uniform_f32(std::uint32_t w) noexcept {
  return static_cast<float>(w >> 8) * 0x1.0p-24f;
}
inline double uniform_f64(std::uint32_t hi, std::uint32_t lo) noexcept {
  return static_cast<double>(((std::uint64_t{hi} << 32) | lo) >> 11) * 0x1.0p-53;
}

/// Fills out[0..n) with U[0,1) values of type T (float, double; others via double).
template <class T, class Store>
void fill_uniform(generator& g, std::int64_t n, Store store) {
  if (n <= 0) return;
  if constexpr (std::is_same_v<T, float>) {
    const std::uint64_t start = g.reserve(static_cast<std::uint64_t>((n + 3) / 4));
    for (std::int64_t i = 0; i < n; i += 4) {
      const auto w = g.block(start + static_cast<std::uint64_t>(i / 4));
      for (std::int64_t j = 0; j < 4 && i + j < n; ++j) store(i + j, uniform_f32(w[j]));
    }
  } else {
    const std::uint64_t start = g.reserve(static_cast<std::uint64_t>((n + 1) / 2));
    for (std::int64_t i = 0; i < n; i += 2) {
      const auto w = g.block(start + static_cast<std::uint64_t>(i / 2));
      store(i, uniform_f64(w[0], w[1]));
      if (i + 1 < n) store(i + 1, uniform_f64(w[2], w[3]));
    }
  }
}

/// Fills out[0..n) with standard normal values (Box-Muller, Note [Generator]).
template <class T, class Store>
void fill_normal(generator& g, std::int64_t n, Store store) {
  if (n <= 0) return;
  constexpr double two_pi = 2.0 * std::numbers::pi;
  if constexpr (std::is_same_v<T, float>) {
    const std::uint64_t start = g.reserve(static_cast<std::uint64_t>((n + 3) / 4));
    for (std::int64_t i = 0; i < n; i += 4) {
      const auto w = g.block(start + static_cast<std::uint64_t>(i / 4));
      for (int pair = 0; pair < 2; ++pair) {
        const double u1 = 1.0 - uniform_f32(w[2 * pair]);  // (0, 1]
        const double u2 = uniform_f32(w[2 * pair + 1]);
        const double r = std::sqrt(-2.0 * std::log(u1));
        const std::int64_t k = i + 2 * pair;
        if (k < n) store(k, r * std::cos(two_pi * u2));
        if (k + 1 < n) store(k + 1, r * std::sin(two_pi * u2));
      }
    }
  } else {
    const std::uint64_t start = g.reserve(static_cast<std::uint64_t>((n + 1) / 2));
    for (std::int64_t i = 0; i < n; i += 2) {
      const auto w = g.block(start + static_cast<std::uint64_t>(i / 2));
      const double u1 = 1.0 - uniform_f64(w[0], w[1]);
      const double u2 = uniform_f64(w[2], w[3]);
      const double r = std::sqrt(-2.0 * std::log(u1));
      store(i, r * std::cos(two_pi * u2));
      if (i + 1 < n) store(i + 1, r * std::sin(two_pi * u2));
    }
  }
}

/// The high 64 bits of the 128-bit product a * b.
constexpr std::uint64_t mulhi64(std::uint64_t a, std::uint64_t b) noexcept {
  const std::uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
  const std::uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  const std::uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
  return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

/// Fills out[0..n) with integers uniform in [lo, hi).
template <class Store>
void fill_randint(generator& g, std::int64_t lo, std::int64_t hi, std::int64_t n, Store store) {
  if (n <= 0) return;
  const std::uint64_t range = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
  const std::uint64_t start = g.reserve(static_cast<std::uint64_t>((n + 1) / 2));
  for (std::int64_t i = 0; i < n; i += 2) {
    const auto w = g.block(start + static_cast<std::uint64_t>(i / 2));
    for (int j = 0; j < 2 && i + j < n; ++j) {
      const std::uint64_t bits = (std::uint64_t{w[2 * j]} << 32) | w[2 * j + 1];
      const std::uint64_t off = mulhi64(bits, range);
      store(i + j, static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + off));
    }
  }
}

}  // namespace detail
}  // namespace ember
