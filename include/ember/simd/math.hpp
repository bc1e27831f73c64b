// Vector math with one spelling for scalars and batches: simd::exp(x) is std::exp for a float
// and xsimd::exp for a batch. Functors in expr/ are written once against these.
#pragma once

#include <ember/simd/batch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
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
#undef EMBER_SIMD_UNARY

/// |x|; for floating x the sign bit is cleared, so abs(-0.0) = +0.0 as std::fabs.
template <class T>
  requires std::is_arithmetic_v<T>
EMBER_ALWAYS_INLINE T abs(T x) noexcept {
  if constexpr (std::is_floating_point_v<T>)
    return std::fabs(x);
  else
    return x < T(0) ? T(-x) : x;
}

template <class T>
  requires std::is_arithmetic_v<T>
EMBER_ALWAYS_INLINE T pow(T a, T b) noexcept {
  return static_cast<T>(std::pow(a, b));
}

/// -x (a scalar; the batch overload is below).
template <class T>
  requires std::is_arithmetic_v<T>
EMBER_ALWAYS_INLINE T neg(T x) noexcept {
  return static_cast<T>(-x);
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
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> sqrt(const xsimd::batch<T, A>& x) noexcept { return xsimd::sqrt(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> sin(const xsimd::batch<T, A>& x) noexcept { return xsimd::sin(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> cos(const xsimd::batch<T, A>& x) noexcept { return xsimd::cos(x); }
// Note [Float tanh]: tanh(x) = sign(x) e / (e + 2) with e = expm1(2|x|), one path for every
// input (xsimd's float tanh evaluates a polynomial and an exp-based branch for every lane and
// blends them: 1.4x the time in E2). expm1 is computed without cancellation: with
// 2|x| = k ln 2 + r, |r| <= ln 2 / 2, e = 2^k q(r) + (2^k - 1) where q(r) = e^r - 1 =
// r + r^2 (1/2 + r p(r)) with p a cubic fitted for least maximum relative error (1.4e-8) on
// that interval, and 2^k - 1 exact; for |x| < ln 2 / 4, k = 0 and e = q(2x) keeps full
// relative precision down to the denormals (tanh(x) = x there). k is rounded by adding
// 1.5 * 2^23, which also leaves k in the low mantissa bits for building 2^k. |x| is clamped at
// 9.1 (tanh rounds to 1 above 9.011); min(9.1, NaN) is NaN (minps returns its second operand
// when either is NaN), so NaN propagates without a blend. Measured max error 2.38 ulp near
// |x| = 0.06 (q's 0.8 ulp, the rounding of e + 2, the division), against xsimd's 1.30: the
// price of one path; test/simd/math.cpp holds it to 2.5.
template <class A>
EMBER_ALWAYS_INLINE xsimd::batch<float, A> tanh(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  using I = xsimd::batch<std::int32_t, A>;
  const B y = B(2.0f) * xsimd::min(B(9.1f), xsimd::abs(x));
  const B kshift = xsimd::fma(y, B(1.44269504088896341f), B(0x1.8p23f));
  const B kf = kshift - B(0x1.8p23f);
  const B r = xsimd::fnma(kf, B(-2.12194440e-4f), xsimd::fnma(kf, B(0.693359375f), y));
  B p = xsimd::fma(r, B(0.0013898295583203435f), B(0.008366038091480732f));
  p = xsimd::fma(p, r, B(0.04166685417294502f));
  p = xsimd::fma(p, r, B(0.16666549444198608f));
  p = xsimd::fma(p, r, B(0.5f));
  const B q = xsimd::fma(r * r, p, r);
  const B two_k = xsimd::bitwise_cast<B>((xsimd::bitwise_cast<I>(kshift) << 23) + I(0x3f800000));
  const B e = xsimd::fma(two_k, q, two_k - B(1.0f));
  return xsimd::copysign(e / (e + B(2.0f)), x);
}
template <class A>
EMBER_ALWAYS_INLINE xsimd::batch<double, A> tanh(const xsimd::batch<double, A>& x) noexcept { return xsimd::tanh(x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> abs(const xsimd::batch<T, A>& x) noexcept { return xsimd::abs(x); }
// Note [xsimd edge cases]: xsimd 8 scales exp's result by 2^k with an ldexp that is wrong
// when 2^k is not a normal number, so exp (and expm1, pow, sigmoid, ...) overflowed early
// (float: inf above 88.38 though exp is finite to 88.72; double: above 709.1) and flushed
// denormal results to 0; double log/log2 are wrong for denormal inputs and double erf is NaN
// above ~1e62; floor/ceil/nearbyint (SSE2) and expm1/log1p drop the sign of a zero result,
// AVX-512 negation gives -(+0) = +0, and pow misses C's special cases (pow(x, 0) = 1,
// pow(0, -1) = inf, pow(1, nan) = 1, pow(-inf, 0.5) = inf, ...). The wrappers below restore
// std:: semantics; other lanes keep xsimd's result bit for bit. test/simd/math.cpp checks them.
/// exp(x) = p 2^k with k = round(x / ln 2) is right in xsimd while 2^k is a normal number,
/// x in [(emin - 0.5) ln 2, (emax + 0.5) ln 2], and above its flush-to-0 bound (double: -708.4).
template <class T>
inline constexpr T exp_low = std::is_same_v<T, float> ? T(-87.6) : T(-708.0);
template <class T>
inline constexpr T exp_high = std::is_same_v<T, float> ? T(88.37) : T(709.4);
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> exp(const xsimd::batch<T, A>& x) noexcept {
  using B = xsimd::batch<T, A>;
  B r = xsimd::exp(x);
  const auto edge = (x < B(exp_low<T>)) | (x > B(exp_high<T>));
  if (xsimd::any(edge)) {  // exp(x) = exp(x/2)^2 overflows/underflows exactly where exp does
    const B h = xsimd::exp(x * B(T(0.5)));
    r = xsimd::select(edge, h * h, r);
  }
  return r;
}
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> expm1(const xsimd::batch<T, A>& x) noexcept {
  using B = xsimd::batch<T, A>;
  B r = xsimd::select(x == B(T(0)), x, xsimd::expm1(x));
  const auto big = x > B(exp_high<T>);
  if (xsimd::any(big)) r = xsimd::select(big, simd::exp(x), r);  // e^x - 1 == e^x there
  return r;
}
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> log(const xsimd::batch<T, A>& x) noexcept {
  using B = xsimd::batch<T, A>;
  B r = xsimd::log(x);
  const auto tiny = (x > B(T(0))) & (x < B(std::numeric_limits<T>::min()));
  if (xsimd::any(tiny))  // log(x) = log(x 2^54) - 54 ln 2
    r = xsimd::select(tiny, xsimd::log(x * B(T(0x1p54))) - B(T(54 * 0.693147180559945309417)), r);
  return r;
}
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> log2(const xsimd::batch<T, A>& x) noexcept {
  using B = xsimd::batch<T, A>;
  B r = xsimd::log2(x);
  const auto tiny = (x > B(T(0))) & (x < B(std::numeric_limits<T>::min()));
  if (xsimd::any(tiny)) r = xsimd::select(tiny, xsimd::log2(x * B(T(0x1p54))) - B(T(54)), r);
  return r;
}
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> erf(const xsimd::batch<T, A>& x) noexcept {
  using B = xsimd::batch<T, A>;  // erf(x) rounds to +-1 for |x| > 6 in float and double
  return xsimd::select(xsimd::abs(x) > B(T(6)), xsimd::copysign(B(T(1)), x), xsimd::erf(x));
}
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> log1p(const xsimd::batch<T, A>& x) noexcept { return xsimd::select(x == xsimd::batch<T, A>(T(0)), x, xsimd::log1p(x)); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> floor(const xsimd::batch<T, A>& x) noexcept { return xsimd::copysign(xsimd::floor(x), x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> ceil(const xsimd::batch<T, A>& x) noexcept { return xsimd::copysign(xsimd::ceil(x), x); }
template <class T, class A> EMBER_ALWAYS_INLINE xsimd::batch<T, A> nearbyint(const xsimd::batch<T, A>& x) noexcept { return xsimd::copysign(xsimd::nearbyint(x), x); }
/// -x by flipping the sign bit (xsimd 8's AVX-512 negation computes 0 - x, giving -(+0) = +0).
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> neg(const xsimd::batch<T, A>& x) noexcept {
  return x ^ xsimd::batch<T, A>(T(-0.0));
}
/// a^b as exp(b log|a|) (xsimd's method, with ember's exp) plus C's special cases.
// Note [Float pow]: |a|^b = exp(b log|a|). In float, log's relative rounding error (2^-24) is
// multiplied by |b log a| (up to ~104 for finite results) and becomes the result's relative
// error: xsimd's float pow was off by up to 138 ulp. For float the product is formed in double
// (two half-width double packets): error below 1 ulp of the float result, at ~2x the time.
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> pow_magnitude(const xsimd::batch<T, A>& x, const xsimd::batch<T, A>& b) noexcept {
  using B = xsimd::batch<T, A>;
  if constexpr (std::is_same_v<T, float> && xsimd::batch<double, A>::size * 2 == B::size) {
    using D = xsimd::batch<double, A>;
    constexpr std::size_t W = B::size, H = D::size;
    alignas(64) float xf[W], bf[W], rf[W];
    alignas(64) double xd[W], bd[W], rd[W];
    x.store_aligned(xf);
    b.store_aligned(bf);
    for (std::size_t i = 0; i < W; ++i) {
      xd[i] = xf[i];
      bd[i] = bf[i];
    }
    for (std::size_t h = 0; h < W; h += H) {
      const D y = D::load_aligned(bd + h) * simd::log(D::load_aligned(xd + h));
      simd::exp(y).store_aligned(rd + h);
    }
    for (std::size_t i = 0; i < W; ++i) rf[i] = static_cast<float>(rd[i]);
    return B::load_aligned(rf);
  } else {
    return simd::exp(b * simd::log(x));
  }
}
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> pow(const xsimd::batch<T, A>& a, const xsimd::batch<T, A>& b) noexcept {
  using B = xsimd::batch<T, A>;
  const B zero(T(0)), one(T(1)), inf(std::numeric_limits<T>::infinity());
  const auto b_int = xsimd::is_flint(b);  // false for inf and NaN
  const auto b_odd = b_int & !xsimd::is_flint(b * B(T(0.5)));
  const B mag = pow_magnitude(xsimd::abs(a), b);  // |a|^b, also right for |a| = 0, inf
  B r = xsimd::select(b_odd & (a < zero), simd::neg(mag), mag);
  r = xsimd::select((a < zero) & (a > -inf) & !b_int & !xsimd::isinf(b),
                    B(std::numeric_limits<T>::quiet_NaN()), r);  // negative base, fractional b
  r = xsimd::select(((a == zero) | xsimd::isinf(a)) & b_odd, xsimd::copysign(mag, a), r);
  return xsimd::select((a == one) | (b == zero) | ((a == -one) & xsimd::isinf(b)), one, r);
}
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch<T, A> select(const xsimd::batch_bool<T, A>& c, const xsimd::batch<T, A>& a,
                                              const xsimd::batch<T, A>& b) noexcept {
  return xsimd::select(c, a, b);
}
/// NaN test for batches: xsimd's isnan (on AVX, xsimd 8's != is an ordered compare that is
/// false for NaN, so x != x would not detect it).
template <class T, class A>
EMBER_ALWAYS_INLINE xsimd::batch_bool<T, A> isnan(const xsimd::batch<T, A>& x) noexcept {
  return xsimd::isnan(x);
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
