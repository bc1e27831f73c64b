// The runtime element-type tag (dtype), the element types a tensor may hold, and dtype_of<T>.
#pragma once

#include <ember/core/half.hpp>

#include <complex>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string_view>
#include <type_traits>

namespace ember {

/// Element types. Append-only: the numeric values are part of ember's file formats.
enum class dtype : std::uint8_t {
  f32 = 0,
  f64 = 1,
  i32 = 2,
  i64 = 3,
  u8 = 4,
  boolean = 5,
  bf16 = 6,
  f16 = 7,
  i8 = 8,
  i16 = 9,
};

/// The dtype's short name: "f32", "i64", "bool", ...
constexpr std::string_view to_string(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::f64: return "f64";
    case dtype::i32: return "i32";
    case dtype::i64: return "i64";
    case dtype::u8: return "u8";
    case dtype::boolean: return "bool";
    case dtype::bf16: return "bf16";
    case dtype::f16: return "f16";
    case dtype::i8: return "i8";
    case dtype::i16: return "i16";
  }
  return "unknown";
}

inline std::ostream& operator<<(std::ostream& os, dtype t) { return os << to_string(t); }

/// Bytes per element.
constexpr std::size_t item_size(dtype t) noexcept {
  switch (t) {
    case dtype::f64:
    case dtype::i64: return 8;
    case dtype::f32:
    case dtype::i32: return 4;
    case dtype::bf16:
    case dtype::f16:
    case dtype::i16: return 2;
    case dtype::u8:
    case dtype::boolean:
    case dtype::i8: return 1;
  }
  return 0;
}

constexpr bool is_floating_point(dtype t) noexcept {
  return t == dtype::f32 || t == dtype::f64 || t == dtype::bf16 || t == dtype::f16;
}

/// True for the C++ types a tensor can hold.
template <class T>
inline constexpr bool is_element_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int32_t> ||
    std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint8_t> || std::is_same_v<T, bool> ||
    std::is_same_v<T, bfloat16> || std::is_same_v<T, half> || std::is_same_v<T, std::int8_t> ||
    std::is_same_v<T, std::int16_t>;

template <class T>
concept element = is_element_v<T>;

namespace detail {
template <class T>
struct dtype_of_impl {
  static_assert(is_element_v<T>,
                "ember: this type cannot be a tensor element; use float, double, std::int8_t, "
                "std::int16_t, std::int32_t, std::int64_t, std::uint8_t, bool, ember::half or "
                "ember::bfloat16");
};
template <> struct dtype_of_impl<float> { static constexpr dtype value = dtype::f32; };
template <> struct dtype_of_impl<double> { static constexpr dtype value = dtype::f64; };
template <> struct dtype_of_impl<std::int32_t> { static constexpr dtype value = dtype::i32; };
template <> struct dtype_of_impl<std::int64_t> { static constexpr dtype value = dtype::i64; };
template <> struct dtype_of_impl<std::uint8_t> { static constexpr dtype value = dtype::u8; };
template <> struct dtype_of_impl<bool> { static constexpr dtype value = dtype::boolean; };
template <> struct dtype_of_impl<bfloat16> { static constexpr dtype value = dtype::bf16; };
template <> struct dtype_of_impl<half> { static constexpr dtype value = dtype::f16; };
template <> struct dtype_of_impl<std::int8_t> { static constexpr dtype value = dtype::i8; };
template <> struct dtype_of_impl<std::int16_t> { static constexpr dtype value = dtype::i16; };
}  // namespace detail

/// The dtype tag of a C++ element type: dtype_of<float> == dtype::f32.
template <class T>
inline constexpr dtype dtype_of = detail::dtype_of_impl<T>::value;

/// True for float, double, half and bfloat16.
template <class T>
inline constexpr bool is_floating_v =
    std::is_floating_point_v<T> || std::is_same_v<T, half> || std::is_same_v<T, bfloat16>;

/// Calls f(T{}) with the C++ type of a runtime dtype (for untyped code: loaders, printing).
template <class F>
decltype(auto) visit_dtype(dtype t, F&& f) {
  switch (t) {
    case dtype::f32: return f(float{});
    case dtype::f64: return f(double{});
    case dtype::i32: return f(std::int32_t{});
    case dtype::i64: return f(std::int64_t{});
    case dtype::u8: return f(std::uint8_t{});
    case dtype::boolean: return f(bool{});
    case dtype::bf16: return f(bfloat16{});
    case dtype::f16: return f(half{});
    case dtype::i8: return f(std::int8_t{});
    case dtype::i16: return f(std::int16_t{});
  }
  return f(float{});
}

/// Converts one element between element types: through float for half/bfloat16, `!= 0` to bool.
template <class To, class From>
constexpr To convert(From v) noexcept {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    if constexpr (std::is_same_v<From, half> || std::is_same_v<From, bfloat16>)
      return static_cast<float>(v) != 0.0f;
    else
      return v != From{};
  } else if constexpr (std::is_same_v<From, half> || std::is_same_v<From, bfloat16>) {
    return static_cast<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, half> || std::is_same_v<To, bfloat16>) {
    return To(static_cast<float>(v));
  } else {
    return static_cast<To>(v);
  }
}

}  // namespace ember
