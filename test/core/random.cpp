// Tests of include/ember/core/random.hpp: Philox known answers, determinism, distributions.
#include <ember/core/random.hpp>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

namespace em = ember;
using words = std::array<std::uint32_t, 4>;

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors", "[random]") {
  CHECK(em::generator::philox4x32_10({0, 0, 0, 0}, {0, 0}) ==
        words{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(em::generator::philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                                     {0xffffffffu, 0xffffffffu}) ==
        words{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  CHECK(em::generator::philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                                     {0xa4093822u, 0x299f31d0u}) ==
        words{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
  // block b of seed s is the bijection of counter (lo(b), hi(b), 0, 0) under key (lo(s), hi(s))
  CHECK(em::generator(0).block(0) == words{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
}

TEST_CASE("generator hands out consecutive blocks; seeding resets", "[random]") {
  em::generator g(123);
  CHECK(g.reserve(3) == 0);
  CHECK(g.reserve(2) == 3);
  CHECK(g.offset() == 5);
  g.seed(123);
  CHECK(g.offset() == 0);
  CHECK(g.initial_seed() == 123);
  CHECK(em::generator(1).block(0) != em::generator(2).block(0));
}

TEST_CASE("uniform and normal transforms", "[random]") {
  CHECK(em::detail::uniform_f32(0) == 0.0f);
  CHECK(em::detail::uniform_f32(0xffffffffu) == Approx(1.0f - 0x1.0p-24f).epsilon(0));
  CHECK(em::detail::uniform_f32(0xffffffffu) < 1.0f);
  CHECK(em::detail::uniform_f64(0xffffffffu, 0xffffffffu) < 1.0);
  em::generator g(5);
  const std::int64_t n = 200000;
  std::vector<double> v(n);
  em::detail::fill_normal<double>(g, n, [&](std::int64_t i, double x) { v[i] = x; });
  double m = 0, m2 = 0;
  for (double x : v) m += x;
  m /= n;
  for (double x : v) m2 += (x - m) * (x - m);
  const double sd = std::sqrt(m2 / (n - 1));
  CHECK(std::fabs(m) < 0.01);  // 4.5 sigma of the mean's standard error
  CHECK(std::fabs(sd - 1.0) < 0.01);
  for (double x : v) REQUIRE(std::isfinite(x));
}

TEST_CASE("randint covers [lo, hi) uniformly, including negative ranges", "[random]") {
  em::generator g(9);
  std::vector<int> counts(7, 0);
  em::detail::fill_randint(g, -3, 4, 70000, [&](std::int64_t, std::int64_t x) {
    REQUIRE(x >= -3);
    REQUIRE(x < 4);
    ++counts[static_cast<std::size_t>(x + 3)];
  });
  for (int c : counts) CHECK(std::abs(c - 10000) < 500);  // ~5 sigma
}

TEST_CASE("mulhi64 is the high half of the 128-bit product", "[random]") {
  using em::detail::mulhi64;
  STATIC_REQUIRE(mulhi64(~0ULL, ~0ULL) == ~0ULL - 1);  // (2^64-1)^2 = 2^128 - 2^65 + 1
  STATIC_REQUIRE(mulhi64(1ULL << 32, 1ULL << 32) == 1);
  STATIC_REQUIRE(mulhi64(12345, 67890) == 0);
  STATIC_REQUIRE(mulhi64(0x8000000000000000ULL, 6) == 3);
}
