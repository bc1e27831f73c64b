// Elementwise functors: stateless structs with one templated call that works for a scalar T and
// an xsimd batch of T, plus traits (op id, vectorizable, rough cost, predicate = yields bool).
// Parameters (slopes, bounds) are scalar operands, never functor state.
// Note [Inlined functors]: the calls are always inlined. An expression's packet code is one
// large function, and GCC declined to inline a transcendental functor into it (tanh's call,
// with its argument and result through memory, was ~30% of E2 on AVX2: 20.6 -> 14.9 ms).
#pragma once

#include <ember/expr/op.hpp>
#include <ember/simd/math.hpp>

#include <numbers>

namespace ember::fn {

using simd::constant;

// ---- unary ---------------------------------------------------------------------------------
struct neg {
  static constexpr op id = op::neg; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::neg(x); }
};
struct abs {
  static constexpr op id = op::abs; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::abs(x); }
};
struct exp {
  static constexpr op id = op::exp; static constexpr bool vectorizable = true; static constexpr int cost = 10;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::exp(x); }
};
struct expm1 {
  static constexpr op id = op::expm1; static constexpr bool vectorizable = true; static constexpr int cost = 12;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::expm1(x); }
};
struct log {
  static constexpr op id = op::log; static constexpr bool vectorizable = true; static constexpr int cost = 10;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::log(x); }
};
struct log1p {
  static constexpr op id = op::log1p; static constexpr bool vectorizable = true; static constexpr int cost = 12;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::log1p(x); }
};
struct log2 {
  static constexpr op id = op::log2; static constexpr bool vectorizable = true; static constexpr int cost = 10;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::log2(x); }
};
struct sqrt {
  static constexpr op id = op::sqrt; static constexpr bool vectorizable = true; static constexpr int cost = 4;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::sqrt(x); }
};
struct rsqrt {  // exact 1/sqrt(x), not the ~12-bit hardware estimate
  static constexpr op id = op::rsqrt; static constexpr bool vectorizable = true; static constexpr int cost = 6;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return constant<V>(1) / simd::sqrt(x); }
};
struct square {
  static constexpr op id = op::square; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return x * x; }
};
struct sin {
  static constexpr op id = op::sin; static constexpr bool vectorizable = true; static constexpr int cost = 12;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::sin(x); }
};
struct cos {
  static constexpr op id = op::cos; static constexpr bool vectorizable = true; static constexpr int cost = 12;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::cos(x); }
};
struct tanh {
  static constexpr op id = op::tanh; static constexpr bool vectorizable = true; static constexpr int cost = 12;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::tanh(x); }
};
struct sigmoid {  // 1 / (1 + e^-x): saturates to exactly 0 and 1
  static constexpr op id = op::sigmoid; static constexpr bool vectorizable = true; static constexpr int cost = 12;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept {
    return constant<V>(1) / (constant<V>(1) + simd::exp(-x));
  }
};
struct relu {  // NaN propagates, as torch.relu
  static constexpr op id = op::relu; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept {
    return simd::select(x < constant<V>(0), constant<V>(0), x);
  }
};
struct gelu {  // x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
  static constexpr op id = op::gelu; static constexpr bool vectorizable = true; static constexpr int cost = 16;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept {
    return constant<V>(0.5) * x * (constant<V>(1) + simd::erf(x * constant<V>(std::numbers::sqrt2 / 2)));
  }
};
struct gelu_tanh {  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  static constexpr op id = op::gelu_tanh; static constexpr bool vectorizable = true; static constexpr int cost = 16;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept {
    const V k0 = constant<V>(0.7978845608028654), k1 = constant<V>(0.044715);
    return constant<V>(0.5) * x * (constant<V>(1) + simd::tanh(k0 * (x + k1 * x * x * x)));
  }
};
/// The derivative of gelu_tanh (PyTorch's formula, one tanh): 0.5 (1 + t) + 0.5 x (1 - t^2)
/// k (1 + 3 c x^2), t = tanh(k (x + c x^3)). Gradient formulas use it (autograd/fused.hpp):
/// written with the elementwise ops instead, x and t appear three and two times each, and an
/// expression tree computes every appearance (F1's backward: 4x the time on AVX2).
struct gelu_tanh_grad {
  static constexpr op id = op::gelu_tanh_grad; static constexpr bool vectorizable = true; static constexpr int cost = 20;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept {
    const V k = constant<V>(0.7978845608028654), c = constant<V>(0.044715), one = constant<V>(1),
            half = constant<V>(0.5);
    const V x2 = x * x;
    const V t = simd::tanh(k * (x + c * (x2 * x)));
    return half * (one + t) + (half * k) * x * ((one - t * t) * (one + constant<V>(3 * 0.044715) * x2));
  }
};
struct silu {  // x * sigmoid(x)
  static constexpr op id = op::silu; static constexpr bool vectorizable = true; static constexpr int cost = 12;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept {
    return x / (constant<V>(1) + simd::exp(-x));
  }
};
struct softplus {  // log(1 + e^x), linear above 20 (torch's threshold)
  static constexpr op id = op::softplus; static constexpr bool vectorizable = true; static constexpr int cost = 24;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept {
    return simd::select(x > constant<V>(20), x, simd::log1p(simd::exp(x)));
  }
};
struct sign {  // -1, 0 or 1 (0 for NaN)
  static constexpr op id = op::sign; static constexpr bool vectorizable = true; static constexpr int cost = 2;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept {
    const V z = constant<V>(0), o = constant<V>(1);
    return simd::select(x > z, o, z) - simd::select(x < z, o, z);
  }
};
struct floor {
  static constexpr op id = op::floor; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::floor(x); }
};
struct ceil {
  static constexpr op id = op::ceil; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::ceil(x); }
};
struct round {  // half to even, as torch.round
  static constexpr op id = op::round; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::nearbyint(x); }
};
struct reciprocal {  // exact 1/x
  static constexpr op id = op::reciprocal; static constexpr bool vectorizable = true; static constexpr int cost = 4;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return constant<V>(1) / x; }
};
struct erf {
  static constexpr op id = op::erf; static constexpr bool vectorizable = true; static constexpr int cost = 14;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x) const noexcept { return simd::erf(x); }
};
struct logical_not {
  static constexpr op id = op::logical_not; static constexpr bool vectorizable = false; static constexpr int cost = 1;
  static constexpr bool predicate = true;
  template <class V> auto operator()(const V& x) const noexcept { return !x; }
};

// ---- binary ----------------------------------------------------------------------------------
struct add {
  static constexpr op id = op::add; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& a, const V& b) const noexcept { return a + b; }
};
struct sub {
  static constexpr op id = op::sub; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& a, const V& b) const noexcept { return a - b; }
};
struct mul {
  static constexpr op id = op::mul; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& a, const V& b) const noexcept { return a * b; }
};
struct div {
  static constexpr op id = op::div; static constexpr bool vectorizable = true; static constexpr int cost = 4;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& a, const V& b) const noexcept { return a / b; }
};
struct pow {
  static constexpr op id = op::pow; static constexpr bool vectorizable = true; static constexpr int cost = 24;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& a, const V& b) const noexcept { return simd::pow(a, b); }
};
struct maximum {  // NaN propagates, as torch.maximum
  static constexpr op id = op::maximum; static constexpr bool vectorizable = true; static constexpr int cost = 2;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& a, const V& b) const noexcept {
    return simd::select(simd::lor(a > b, simd::isnan(a)), a, b);
  }
};
struct minimum {
  static constexpr op id = op::minimum; static constexpr bool vectorizable = true; static constexpr int cost = 2;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& a, const V& b) const noexcept {
    return simd::select(simd::lor(a < b, simd::isnan(a)), a, b);
  }
};
#define EMBER_COMPARISON(name_, sym)                                                           \
  struct name_ {                                                                               \
    static constexpr op id = op::name_; static constexpr bool vectorizable = true;             \
    static constexpr int cost = 1; static constexpr bool predicate = true;                     \
    template <class V> auto operator()(const V& a, const V& b) const noexcept { return a sym b; } \
  };
EMBER_COMPARISON(eq, ==)
struct ne {  // !(a == b): xsimd 8 implements != on AVX as an ordered compare (false for NaN)
  static constexpr op id = op::ne; static constexpr bool vectorizable = true;
  static constexpr int cost = 1; static constexpr bool predicate = true;
  template <class V> auto operator()(const V& a, const V& b) const noexcept { return !(a == b); }
};
EMBER_COMPARISON(lt, <)
EMBER_COMPARISON(le, <=)
EMBER_COMPARISON(gt, >)
EMBER_COMPARISON(ge, >=)
#undef EMBER_COMPARISON
struct logical_and {
  static constexpr op id = op::logical_and; static constexpr bool vectorizable = false; static constexpr int cost = 1;
  static constexpr bool predicate = true;
  template <class V> auto operator()(const V& a, const V& b) const noexcept { return a && b; }
};
struct logical_or {
  static constexpr op id = op::logical_or; static constexpr bool vectorizable = false; static constexpr int cost = 1;
  static constexpr bool predicate = true;
  template <class V> auto operator()(const V& a, const V& b) const noexcept { return a || b; }
};
struct leaky_relu {  // (x, slope)
  static constexpr op id = op::leaky_relu; static constexpr bool vectorizable = true; static constexpr int cost = 2;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x, const V& s) const noexcept {
    return simd::select(x > constant<V>(0), x, x * s);
  }
};
struct elu {  // (x, alpha)
  static constexpr op id = op::elu; static constexpr bool vectorizable = true; static constexpr int cost = 12;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x, const V& alpha) const noexcept {
    return simd::select(x > constant<V>(0), x, alpha * simd::expm1(x));
  }
};

// ---- ternary ---------------------------------------------------------------------------------
struct where {  // (cond, a, b)
  static constexpr op id = op::where; static constexpr bool vectorizable = true; static constexpr int cost = 1;
  template <class C, class V> V operator()(const C& c, const V& a, const V& b) const noexcept {
    return simd::select(c, a, b);
  }
};
struct clamp {  // (x, lo, hi); NaN propagates
  static constexpr op id = op::clamp; static constexpr bool vectorizable = true; static constexpr int cost = 2;
  template <class V> EMBER_ALWAYS_INLINE V operator()(const V& x, const V& lo, const V& hi) const noexcept {
    return simd::select(x < lo, lo, simd::select(x > hi, hi, x));
  }
};

/// True when functor F yields bool (comparisons, logical ops).
template <class F>
concept predicate = requires { F::predicate; } && F::predicate;

}  // namespace ember::fn
