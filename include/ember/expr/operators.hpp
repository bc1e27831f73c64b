// The user-facing elementwise vocabulary: operator overloads (expression/expression and
// expression/scalar) and the named functions of the API (exp, relu, where, clamp, cast, ...).
// Each builds a node; nothing is computed until the expression is materialized.
#pragma once

#include <ember/eval/assign.hpp>
#include <ember/expr/binary.hpp>
#include <ember/expr/cast.hpp>
#include <ember/expr/functors.hpp>
#include <ember/expr/leaf.hpp>
#include <ember/expr/ternary.hpp>
#include <ember/expr/unary.hpp>
#include <ember/io/print.hpp>

#include <ostream>
#include <type_traits>

namespace ember {

namespace detail {

/// A tensor operand becomes a leaf node; a node stays itself.
template <class X>
auto as_expr(const X& x) {
  if constexpr (is_tensor_v<X>)
    return expr::leaf<value_type_t<X>>(x);
  else
    return x;
}
template <class X>
using as_expr_t = decltype(as_expr(std::declval<const X&>()));

template <class A, class B>
constexpr void require_same_element_type() {
  static_assert(std::is_same_v<value_type_t<A>, value_type_t<B>>,
                "ember: an elementwise operation mixes element types (e.g. tensor<float> with "
                "tensor<double>); convert one side with .to<U>() or em::cast<U>(expr)");
}

template <class A>
constexpr void require_floating() {
  static_assert(is_floating_v<value_type_t<A>> && !std::is_same_v<value_type_t<A>, half> &&
                    !std::is_same_v<value_type_t<A>, bfloat16>,
                "ember: this function needs a float or double expression; convert integer or "
                "bool tensors with .to<float>() or em::cast<float>(expr)");
}

template <class F, class A>
auto make_unary(const A& a) {
  return expr::unary<F, as_expr_t<A>>(as_expr(a));
}
template <class F, class A, class B>
auto make_binary(const A& a, const B& b) {
  require_same_element_type<A, B>();
  return expr::binary<F, as_expr_t<A>, as_expr_t<B>>(as_expr(a), as_expr(b));
}
template <class A, class S>
auto make_scalar(S s) {
  return expr::scalar<value_type_t<A>>(convert<value_type_t<A>>(s));
}

}  // namespace detail

// ---- arithmetic and comparison operators --------------------------------------------------------
#define EMBER_BINARY_OPERATOR(sym, F)                                               \
  template <operand A, operand B>                                                   \
  auto operator sym(const A& a, const B& b) {                                       \
    return detail::make_binary<F>(a, b);                                            \
  }                                                                                 \
  template <operand A, arithmetic_scalar S>                                         \
  auto operator sym(const A& a, S s) {                                              \
    return detail::make_binary<F>(a, detail::make_scalar<A>(s));                    \
  }                                                                                 \
  template <arithmetic_scalar S, operand B>                                         \
  auto operator sym(S s, const B& b) {                                              \
    return detail::make_binary<F>(detail::make_scalar<B>(s), b);                    \
  }
EMBER_BINARY_OPERATOR(+, fn::add)
EMBER_BINARY_OPERATOR(-, fn::sub)
EMBER_BINARY_OPERATOR(*, fn::mul)
EMBER_BINARY_OPERATOR(/, fn::div)
EMBER_BINARY_OPERATOR(==, fn::eq)
EMBER_BINARY_OPERATOR(!=, fn::ne)
EMBER_BINARY_OPERATOR(<, fn::lt)
EMBER_BINARY_OPERATOR(<=, fn::le)
EMBER_BINARY_OPERATOR(>, fn::gt)
EMBER_BINARY_OPERATOR(>=, fn::ge)
EMBER_BINARY_OPERATOR(&&, fn::logical_and)
EMBER_BINARY_OPERATOR(||, fn::logical_or)

// ---- binary functions ------------------------------------------------------------------------------
#undef EMBER_BINARY_OPERATOR
#define EMBER_BINARY_FUNCTION(name_, F)                                             \
  template <operand A, operand B>                                                   \
  auto name_(const A& a, const B& b) {                                              \
    return detail::make_binary<F>(a, b);                                            \
  }                                                                                 \
  template <operand A, arithmetic_scalar S>                                         \
  auto name_(const A& a, S s) {                                                     \
    return detail::make_binary<F>(a, detail::make_scalar<A>(s));                    \
  }                                                                                 \
  template <arithmetic_scalar S, operand B>                                         \
  auto name_(S s, const B& b) {                                                     \
    return detail::make_binary<F>(detail::make_scalar<B>(s), b);                    \
  }
EMBER_BINARY_FUNCTION(pow, fn::pow)
EMBER_BINARY_FUNCTION(maximum, fn::maximum)
EMBER_BINARY_FUNCTION(minimum, fn::minimum)
EMBER_BINARY_FUNCTION(add, fn::add)
EMBER_BINARY_FUNCTION(sub, fn::sub)
EMBER_BINARY_FUNCTION(mul, fn::mul)
EMBER_BINARY_FUNCTION(div, fn::div)
#undef EMBER_BINARY_FUNCTION

template <operand A>
auto operator-(const A& a) {
  return detail::make_unary<fn::neg>(a);
}
template <operand A>
auto operator!(const A& a) {
  return detail::make_unary<fn::logical_not>(a);
}

// ---- named unary functions --------------------------------------------------------------------------
#define EMBER_UNARY_FUNCTION(name_, F, needs_float)                                 \
  template <operand A>                                                              \
  auto name_(const A& a) {                                                          \
    if constexpr (needs_float) detail::require_floating<A>();                        \
    return detail::make_unary<F>(a);                                                \
  }
EMBER_UNARY_FUNCTION(neg, fn::neg, false)
EMBER_UNARY_FUNCTION(abs, fn::abs, false)
EMBER_UNARY_FUNCTION(exp, fn::exp, true)
EMBER_UNARY_FUNCTION(expm1, fn::expm1, true)
EMBER_UNARY_FUNCTION(log, fn::log, true)
EMBER_UNARY_FUNCTION(log1p, fn::log1p, true)
EMBER_UNARY_FUNCTION(log2, fn::log2, true)
EMBER_UNARY_FUNCTION(sqrt, fn::sqrt, true)
EMBER_UNARY_FUNCTION(rsqrt, fn::rsqrt, true)
EMBER_UNARY_FUNCTION(square, fn::square, false)
EMBER_UNARY_FUNCTION(sin, fn::sin, true)
EMBER_UNARY_FUNCTION(cos, fn::cos, true)
EMBER_UNARY_FUNCTION(tanh, fn::tanh, true)
EMBER_UNARY_FUNCTION(sigmoid, fn::sigmoid, true)
EMBER_UNARY_FUNCTION(relu, fn::relu, false)
EMBER_UNARY_FUNCTION(gelu, fn::gelu, true)
EMBER_UNARY_FUNCTION(gelu_tanh, fn::gelu_tanh, true)
EMBER_UNARY_FUNCTION(silu, fn::silu, true)
EMBER_UNARY_FUNCTION(softplus, fn::softplus, true)
EMBER_UNARY_FUNCTION(sign, fn::sign, false)
EMBER_UNARY_FUNCTION(floor, fn::floor, true)
EMBER_UNARY_FUNCTION(ceil, fn::ceil, true)
EMBER_UNARY_FUNCTION(round, fn::round, true)
EMBER_UNARY_FUNCTION(reciprocal, fn::reciprocal, true)
EMBER_UNARY_FUNCTION(erf, fn::erf, true)
EMBER_UNARY_FUNCTION(logical_not, fn::logical_not, false)
#undef EMBER_UNARY_FUNCTION

// ---- other elementwise functions ---------------------------------------------------------------------
/// max(x, slope * x): leaky_relu(e, 0.1f).
template <operand A, arithmetic_scalar S = double>
auto leaky_relu(const A& a, S slope = 0.01) {
  return detail::make_binary<fn::leaky_relu>(a, detail::make_scalar<A>(slope));
}
/// x if x > 0 else alpha * (exp(x) - 1).
template <operand A, arithmetic_scalar S = double>
auto elu(const A& a, S alpha = 1.0) {
  detail::require_floating<A>();
  return detail::make_binary<fn::elu>(a, detail::make_scalar<A>(alpha));
}

/// Elements clamped to [lo, hi] (NaN stays NaN).
template <operand A, arithmetic_scalar L, arithmetic_scalar H>
auto clamp(const A& a, L lo, H hi) {
  using X = detail::as_expr_t<A>;
  using S = expr::scalar<value_type_t<A>>;
  return expr::ternary<fn::clamp, X, S, S>(detail::as_expr(a), detail::make_scalar<A>(lo),
                                           detail::make_scalar<A>(hi));
}

/// cond ? a : b elementwise, broadcasting all three; a or b may be scalars.
template <operand C, class A, class B>
  requires(operand<A> || arithmetic_scalar<A>) && (operand<B> || arithmetic_scalar<B>) &&
          (operand<A> || operand<B>)
auto where(const C& cond, const A& a, const B& b) {
  static_assert(std::is_same_v<value_type_t<C>, bool>,
                "ember::where: the condition must be a bool expression (e.g. a > 0.f) or a "
                "tensor<bool>");
  auto side = [](const auto& x, auto other_tag) {
    using O = typename decltype(other_tag)::type;
    if constexpr (arithmetic_scalar<std::remove_cvref_t<decltype(x)>>)
      return detail::make_scalar<O>(x);
    else
      return detail::as_expr(x);
  };
  using V = std::conditional_t<operand<A>, A, B>;
  auto xa = side(a, std::type_identity<V>{});
  auto xb = side(b, std::type_identity<V>{});
  detail::require_same_element_type<decltype(xa), decltype(xb)>();
  return expr::ternary<fn::where, detail::as_expr_t<C>, decltype(xa), decltype(xb)>(
      detail::as_expr(cond), xa, xb);
}

/// Converts elements to U inside an expression: cast<double>(a) * b64.
template <class U, operand A>
auto cast(const A& a) {
  static_assert(is_element_v<U>, "ember::cast<U>: U must be a tensor element type");
  return expr::cast<U, detail::as_expr_t<A>>(detail::as_expr(a));
}

/// Prints an expression by evaluating it.
template <expression E>
std::ostream& operator<<(std::ostream& os, const E& e) {
  return os << e.eval();
}

}  // namespace ember
