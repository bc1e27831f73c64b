// Tests of include/ember/core/dtype.hpp and half.hpp: tags, sizes, conversions, f16/bf16 rounding.
#include <ember/core/dtype.hpp>

#include <catch2/catch.hpp>
#include <bit>
#include <cmath>
#include <limits>
#include <sstream>

namespace em = ember;

TEST_CASE("dtype_of, item_size and names", "[dtype]") {
  STATIC_REQUIRE(em::dtype_of<float> == em::dtype::f32);
  STATIC_REQUIRE(em::dtype_of<double> == em::dtype::f64);
  STATIC_REQUIRE(em::dtype_of<std::int32_t> == em::dtype::i32);
  STATIC_REQUIRE(em::dtype_of<std::int64_t> == em::dtype::i64);
  STATIC_REQUIRE(em::dtype_of<std::uint8_t> == em::dtype::u8);
  STATIC_REQUIRE(em::dtype_of<bool> == em::dtype::boolean);
  STATIC_REQUIRE(em::dtype_of<em::half> == em::dtype::f16);
  STATIC_REQUIRE(em::dtype_of<em::bfloat16> == em::dtype::bf16);
  STATIC_REQUIRE(em::item_size(em::dtype::f64) == 8);
  STATIC_REQUIRE(em::item_size(em::dtype::bf16) == 2);
  STATIC_REQUIRE(em::item_size(em::dtype::boolean) == 1);
  STATIC_REQUIRE(!em::is_element_v<char>);
  STATIC_REQUIRE(!em::is_element_v<long double>);
  CHECK(em::to_string(em::dtype::boolean) == "bool");
  std::ostringstream os;
  os << em::dtype::f16;
  CHECK(os.str() == "f16");
  CHECK(em::is_floating_point(em::dtype::bf16));
  CHECK_FALSE(em::is_floating_point(em::dtype::i64));
  // the numeric values are part of the file formats: append-only
  CHECK(static_cast<int>(em::dtype::f32) == 0);
  CHECK(static_cast<int>(em::dtype::f16) == 7);
  CHECK(em::visit_dtype(em::dtype::i16, [](auto v) { return sizeof(v); }) == 2);
}

TEST_CASE("convert between element types", "[dtype]") {
  CHECK(em::convert<std::int64_t>(-2.7f) == -2);  // truncation toward zero, like static_cast
  CHECK(em::convert<bool>(0.5) == true);
  CHECK(em::convert<bool>(1e-50) == true);  // no detour through float
  CHECK(em::convert<bool>(0.0f) == false);
  CHECK(em::convert<bool>(std::int64_t{0}) == false);
  CHECK(em::convert<float>(em::half(2.5f)) == 2.5f);
  CHECK(em::convert<bool>(em::half(0.0f)) == false);
  CHECK(float(em::convert<em::bfloat16>(3)) == 3.0f);
}

TEST_CASE("half: exact values, rounding to nearest even, specials", "[dtype][half]") {
  CHECK(em::half(1.0f).bits == 0x3c00);
  CHECK(em::half(-2.0f).bits == 0xc000);
  CHECK(em::half(65504.0f).bits == 0x7bff);  // largest finite
  CHECK(em::half(65520.0f).bits == 0x7c00);  // rounds to inf
  CHECK(em::half(0.0f).bits == 0x0000);
  CHECK(em::half(-0.0f).bits == 0x8000);
  CHECK(em::half(std::numeric_limits<float>::infinity()).bits == 0x7c00);
  CHECK(std::isnan(float(em::half(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(em::half(0x1.0p-24f).bits == 0x0001);      // smallest subnormal
  CHECK(em::half(0x1.0p-25f).bits == 0x0000);      // tie to even -> 0
  CHECK(em::half(0x1.8p-25f).bits == 0x0001);      // above the tie
  CHECK(em::half(0x1.0p-14f).bits == 0x0400);      // smallest normal
  CHECK(em::half(1.0f + 0x1.0p-11f).bits == 0x3c00);  // tie between 1 and 1+2^-10: even
  CHECK(em::half(1.0f + 0x1.8p-11f).bits == 0x3c01);
  CHECK(em::half(1.0f + 0x3.0p-11f).bits == 0x3c02);  // tie, rounds up to even
  // every finite half converts to float and back exactly
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const auto h = em::half::from_bits(static_cast<std::uint16_t>(b));
    const float f = h;
    if (std::isnan(f)) continue;
    REQUIRE(em::half(f).bits == b);
  }
  CHECK(float(em::half::from_bits(0x0001)) == 0x1.0p-24f);
  CHECK(float(em::half::from_bits(0x3555)) == Approx(0.333251953125f));
}

TEST_CASE("bfloat16: truncation with round to nearest even", "[dtype][bf16]") {
  CHECK(em::bfloat16(1.0f).bits == 0x3f80);
  CHECK(float(em::bfloat16(3.140625f)) == 3.140625f);  // exactly representable
  CHECK(em::bfloat16(std::bit_cast<float>(0x3f808000u)).bits == 0x3f80);  // tie -> even
  CHECK(em::bfloat16(std::bit_cast<float>(0x3f818000u)).bits == 0x3f82);  // tie -> even (up)
  CHECK(em::bfloat16(std::bit_cast<float>(0x3f808001u)).bits == 0x3f81);
  CHECK(std::isnan(float(em::bfloat16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isinf(float(em::bfloat16(std::numeric_limits<float>::infinity()))));
}
