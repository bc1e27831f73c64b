// Vector math with one spelling for scalars and batches: simd::exp(x) is std::exp for a float
// and xsimd::exp for a batch. Functors in expr/ are written once against these.
#pragma once

#include <ember/simd/batch.hpp>

#include <cmath>
#include <type_traits>

namespace ember::simd {

// Scalar overloads (the batch overloads, forwarding to xsimd, are below).
#define EMBER_SIMD_UNARY(name, scalar_expr)      \
  template <class T>                             \
    requires std::is_arithmetic_v<T>             \
  EMBER_ALWAYS_INLINE T name(T x) noexcept {     \
    return static_cast<T>(scalar_expr);          \
  }
EMBER_SIMD_UNARY(exp, std::exp(x))
EMBER_SIMD_UNARY(expm1, std::expm1(x))
EMBER_SIMD_UNARY(log, std::log(x))
EMBER_SIMD_UNARY(log1p, std::log1p(x))
EMBER_SIMD_UNARY(log2, std::log2(x))
EMBER_SIMD_UNARY(sqrt, std::sqrt(x))
EMBER_SIMD_UNARY(sin, std::sin(x))
EMBER_SIMD_UNARY(cos, std::cos(x))
EMBER_SIMD_UNARY(tanh, std::tanh(x))
EMBER_SIMD_UNARY(erf, std::erf(x))
EMBER_SIMD_UNARY(floor, std::floor(x))
EMBER_SIMD_UNARY(ceil, std::ceil(x))
EMBER_SIMD_UNARY(nearbyint, std::nearbyint(x))
EMBER_SIMD_UNARY(abs, (x < T(0) ? T(-x) : x))
#undef EMBER_SIMD_UNARY

template <class T>
  requires std::is_arithmetic_v<T>
EMBER_ALWAYS_INLINE T pow(T a, T b) noexcept {
  return static_cast<T>(std::pow(a, b));
}

/// c ? a : b, lane-wise for batches.
template <class T>
  requires std::is_arithmetic_v<T>
EMBER_ALWAYS_INLINE T select(bool c, T a, T b) noexcept {
  return c ? a : b;
}

/// a * b + c (fused for batches when the instruction set has FMA).
template <class T>
  requires std::is_arithmetic_v<T>
EMBER_ALWAYS_INLINE T fma(T a, T b, T c) noexcept {
  return a * b + c;
}

/// A constant of the value type of V (a scalar or a batch of it).
template <class V, class S>
EMBER_ALWAYS_INLINE V constant(S s) noexcept {
  if constexpr (is_batch_v<V>)
    return V(static_cast<typename V::value_type>(s));
  else
    return static_cast<V>(s);
}

/// Lane-wise logical or of two masks.
EMBER_ALWAYS_INLINE bool lor(bool a, bool b) noexcept { return a || b; }

/// NaN test (x != x), lane-wise.
template <class V>
EMBER_ALWAYS_INLINE auto isnan(const V& x) noexcept {
  return x != x;
}

#if EMBER_HAS_XSIMD
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> exp(const xsimd::batch<T, A>& x) noexcept { return xsimd::exp(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> expm1(const xsimd::batch<T, A>& x) noexcept { return xsimd::expm1(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> log(const xsimd::batch<T, A>& x) noexcept { return xsimd::log(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> log1p(const xsimd::batch<T, A>& x) noexcept { return xsimd::log1p(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> log2(const xsimd::batch<T, A>& x) noexcept { return xsimd::log2(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> sqrt(const xsimd::batch<T, A>& x) noexcept { return xsimd::sqrt(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> sin(const xsimd::batch<T, A>& x) noexcept { return xsimd::sin(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> cos(const xsimd::batch<T, A>& x) noexcept { return xsimd::cos(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> tanh(const xsimd::batch<T, A>& x) noexcept { return xsimd::tanh(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> erf(const xsimd::batch<T, A>& x) noexcept { return xsimd::erf(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> floor(const xsimd::batch<T, A>& x) noexcept { return xsimd::floor(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> ceil(const xsimd::batch<T, A>& x) noexcept { return xsimd::ceil(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> nearbyint(const xsimd::batch<T, A>& x) noexcept { return xsimd::nearbyint(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> abs(const xsimd::batch<T, A>& x) noexcept { return xsimd::abs(x); }
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> pow(const xsimd::batch<T, A>& a, const xsimd::batch<T, A>& b) noexcept {
  return xsimd::pow(a, b);
}
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> select(const xsimd::batch_bool<T, A>& c, const xsimd::batch<T, A>& a,
                                              const xsimd::batch<T, A>& b) noexcept {
  return xsimd::select(c, a, b);
}
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch_bool<T, A> lor(const xsimd::batch_bool<T, A>& a,
                                                const xsimd::batch_bool<T, A>& b) noexcept {
  return a | b;
}
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> fma(const xsimd::batch<T, A>& a, const xsimd::batch<T, A>& b,
                                           const xsimd::batch<T, A>& c) noexcept {
  return xsimd::fma(a, b, c);
}
#endif

}  // namespace ember::simd
