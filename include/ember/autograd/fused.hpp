// Note [Fused backward]: materializing an elementwise expression whose leaves require grad
// records ONE node that keeps the expression (leaf handles, no intermediates). Its backward
// derives, at compile time, the gradient expression of every leaf by the chain rule over the
// expression type (backprop below: one rule per functor, in derivative()), then evaluates each
// needed one in a fused pass that recomputes intermediates, summing over broadcast dims. A sum
// of an expression records one node the same way. For create_graph (double backward) the node
// replays its expression one operator at a time (tiny nodes with their own fused backward) and
// differentiates that; a tiny node's recorded gradient expression is itself replayed operator
// by operator. So only single-operator expression types ever get nodes of their own: a small
// set, shared by every expression of a program, however often one differentiates (compile
// time: recording each derivative as a node of its own type instantiated a second tower of
// derivative types per functor; the contract program compiled in 191 s with it, 125 s without).
#pragma once

#include <ember/autograd/engine.hpp>
#include <ember/eval/assign.hpp>
#include <ember/eval/evaluator.hpp>
#include <ember/expr/binary.hpp>
#include <ember/expr/cast.hpp>
#include <ember/expr/functors.hpp>
#include <ember/expr/leaf.hpp>
#include <ember/expr/ternary.hpp>
#include <ember/expr/unary.hpp>

#include <array>
#include <cmath>
#include <numbers>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::autograd::detail {

// ---- node builders (no operator overloads needed here) ------------------------------------------
template <class F, class A>
auto un(const A& a) {
  return expr::unary<F, A>(a);
}
template <class F, class A, class B>
auto bin(const A& a, const B& b) {
  return expr::binary<F, A, B>(a, b);
}
template <class C, class A, class B>
auto sel(const C& c, const A& a, const B& b) {
  return expr::ternary<fn::where, C, A, B>(c, a, b);
}
template <class T>
auto lit(double v) {
  return expr::scalar<T>(static_cast<T>(v));
}
template <class A, class B>
auto mul(const A& a, const B& b) {
  return bin<fn::mul>(a, b);
}
/// Exactly zero with u's shape (NaN in u stays out of it).
template <class U>
auto zero_like(const U& u) {
  using T = value_type_t<U>;
  return sel(bin<fn::eq>(u, u), lit<T>(0), lit<T>(0));
}

/// No gradient reaches this leaf along its path (under a comparison, an integer cast, ...).
struct no_grad_t {};

/// d(F(x))/dx times the upstream u, as an expression of x and u.
template <class F, class X, class U>
auto derivative(F, const X& x, const U& u) {
  using T = value_type_t<X>;
  using std::numbers::pi;
  if constexpr (std::is_same_v<F, fn::neg>) {
    return un<fn::neg>(u);
  } else if constexpr (std::is_same_v<F, fn::abs>) {
    return mul(u, un<fn::sign>(x));
  } else if constexpr (std::is_same_v<F, fn::exp> || std::is_same_v<F, fn::expm1>) {
    return mul(u, un<fn::exp>(x));
  } else if constexpr (std::is_same_v<F, fn::log>) {
    return bin<fn::div>(u, x);
  } else if constexpr (std::is_same_v<F, fn::log1p>) {
    return bin<fn::div>(u, bin<fn::add>(x, lit<T>(1)));
  } else if constexpr (std::is_same_v<F, fn::log2>) {
    return bin<fn::div>(u, mul(x, lit<T>(std::numbers::ln2)));
  } else if constexpr (std::is_same_v<F, fn::sqrt>) {
    return bin<fn::div>(u, mul(lit<T>(2), un<fn::sqrt>(x)));
  } else if constexpr (std::is_same_v<F, fn::rsqrt>) {
    return mul(u, mul(lit<T>(-0.5), bin<fn::div>(un<fn::rsqrt>(x), x)));
  } else if constexpr (std::is_same_v<F, fn::square>) {
    return mul(u, mul(lit<T>(2), x));
  } else if constexpr (std::is_same_v<F, fn::sin>) {
    return mul(u, un<fn::cos>(x));
  } else if constexpr (std::is_same_v<F, fn::cos>) {
    return mul(u, un<fn::neg>(un<fn::sin>(x)));
  } else if constexpr (std::is_same_v<F, fn::tanh>) {
    return mul(u, bin<fn::sub>(lit<T>(1), un<fn::square>(un<fn::tanh>(x))));
  } else if constexpr (std::is_same_v<F, fn::sigmoid>) {
    const auto s = un<fn::sigmoid>(x);
    return mul(u, mul(s, bin<fn::sub>(lit<T>(1), s)));
  } else if constexpr (std::is_same_v<F, fn::relu>) {
    return sel(bin<fn::gt>(x, lit<T>(0)), u, lit<T>(0));
  } else if constexpr (std::is_same_v<F, fn::gelu>) {
    // Phi(x) + x phi(x)
    const auto cdf = mul(lit<T>(0.5), bin<fn::add>(lit<T>(1), un<fn::erf>(mul(x, lit<T>(std::numbers::sqrt2 / 2)))));
    const auto pdf = mul(lit<T>(0.5 * std::numbers::inv_sqrtpi * std::numbers::sqrt2),
                         un<fn::exp>(mul(lit<T>(-0.5), un<fn::square>(x))));
    return mul(u, bin<fn::add>(cdf, mul(x, pdf)));
  } else if constexpr (std::is_same_v<F, fn::gelu_tanh>) {
    // PyTorch's formula, in one functor (x and tanh evaluated once: fn::gelu_tanh_grad)
    return mul(u, un<fn::gelu_tanh_grad>(x));
  } else if constexpr (std::is_same_v<F, fn::gelu_tanh_grad>) {
    // (create_graph) with t = tanh(k (x + c x^3)), g = k (1 + 3 c x^2):
    // f = 0.5 (1 + t) + 0.5 x (1 - t^2) g, f' = (1 - t^2) (g + x (3 k c x - t g^2))
    constexpr double k = 0.7978845608028654, c = 0.044715;
    const auto x2 = un<fn::square>(x);
    const auto t = un<fn::tanh>(mul(lit<T>(k), bin<fn::add>(x, mul(lit<T>(c), mul(x2, x)))));
    const auto g = mul(lit<T>(k), bin<fn::add>(lit<T>(1), mul(lit<T>(3 * c), x2)));
    const auto inner = bin<fn::add>(g, mul(x, bin<fn::sub>(mul(lit<T>(3 * k * c), x), mul(t, un<fn::square>(g)))));
    return mul(u, mul(bin<fn::sub>(lit<T>(1), un<fn::square>(t)), inner));
  } else if constexpr (std::is_same_v<F, fn::silu>) {
    const auto s = un<fn::sigmoid>(x);
    return mul(u, mul(s, bin<fn::add>(lit<T>(1), mul(x, bin<fn::sub>(lit<T>(1), s)))));
  } else if constexpr (std::is_same_v<F, fn::softplus>) {
    return sel(bin<fn::gt>(x, lit<T>(20)), u, mul(u, un<fn::sigmoid>(x)));
  } else if constexpr (std::is_same_v<F, fn::sign> || std::is_same_v<F, fn::floor> ||
                       std::is_same_v<F, fn::ceil> || std::is_same_v<F, fn::round>) {
    return zero_like(u);
  } else if constexpr (std::is_same_v<F, fn::reciprocal>) {
    return mul(un<fn::neg>(u), un<fn::square>(un<fn::reciprocal>(x)));
  } else if constexpr (std::is_same_v<F, fn::erf>) {
    return mul(u, mul(lit<T>(2 * std::numbers::inv_sqrtpi), un<fn::exp>(un<fn::neg>(un<fn::square>(x)))));
  } else {
    static_assert(sizeof(F) == 0, "ember autograd: no derivative rule for this unary functor");
  }
}

/// Gradients of binary F(a, b) with respect to a (Side 0) and b (Side 1), times u.
template <int Side, class F, class A, class B, class U>
auto derivative2(F, const A& a, const B& b, const U& u) {
  using T = value_type_t<A>;
  if constexpr (std::is_same_v<F, fn::add>) {
    return u;
  } else if constexpr (std::is_same_v<F, fn::sub>) {
    if constexpr (Side == 0) return u; else return un<fn::neg>(u);
  } else if constexpr (std::is_same_v<F, fn::mul>) {
    if constexpr (Side == 0) return mul(u, b); else return mul(u, a);
  } else if constexpr (std::is_same_v<F, fn::div>) {
    if constexpr (Side == 0) return bin<fn::div>(u, b);
    else return un<fn::neg>(bin<fn::div>(mul(u, a), un<fn::square>(b)));
  } else if constexpr (std::is_same_v<F, fn::pow>) {
    if constexpr (Side == 0) {  // b a^(b-1), 0 where b == 0 (as PyTorch)
      return sel(bin<fn::eq>(b, lit<T>(0)), lit<T>(0),
                 mul(u, mul(b, bin<fn::pow>(a, bin<fn::sub>(b, lit<T>(1))))));
    } else {  // a^b log a, 0 where a == 0 and b >= 0
      const auto g = mul(u, mul(bin<fn::pow>(a, b), un<fn::log>(a)));
      return sel(bin<fn::eq>(a, lit<T>(0)), sel(bin<fn::ge>(b, lit<T>(0)), lit<T>(0), g), g);
    }
  } else if constexpr (std::is_same_v<F, fn::maximum> || std::is_same_v<F, fn::minimum>) {
    // ties split the gradient in halves, as PyTorch
    const auto half = sel(bin<fn::eq>(a, b), mul(u, lit<T>(0.5)), u);
    constexpr bool max = std::is_same_v<F, fn::maximum>;
    if constexpr (Side == 0) {
      if constexpr (max) return sel(bin<fn::lt>(a, b), lit<T>(0), half);
      else return sel(bin<fn::gt>(a, b), lit<T>(0), half);
    } else {
      if constexpr (max) return sel(bin<fn::gt>(a, b), lit<T>(0), half);
      else return sel(bin<fn::lt>(a, b), lit<T>(0), half);
    }
  } else if constexpr (std::is_same_v<F, fn::leaky_relu>) {
    if constexpr (Side == 0) return sel(bin<fn::gt>(a, lit<T>(0)), u, mul(u, b));
    else return mul(u, sel(bin<fn::gt>(a, lit<T>(0)), lit<T>(0), a));
  } else if constexpr (std::is_same_v<F, fn::elu>) {
    if constexpr (Side == 0) return sel(bin<fn::gt>(a, lit<T>(0)), u, mul(u, mul(b, un<fn::exp>(a))));
    else return mul(u, sel(bin<fn::gt>(a, lit<T>(0)), lit<T>(0), un<fn::expm1>(a)));
  } else {
    static_assert(sizeof(F) == 0, "ember autograd: no derivative rule for this binary functor");
  }
}

template <class E>
inline constexpr bool differentiable_v =
    is_floating_v<value_type_t<E>> && !std::is_same_v<value_type_t<E>, half> &&
    !std::is_same_v<value_type_t<E>, bfloat16>;

/// A tuple of E::leaf_count entries: no_grad_t for each leaf position.
template <std::size_t N>
auto no_grads() {
  return []<std::size_t... I>(std::index_sequence<I...>) {
    return std::tuple<decltype((void)I, no_grad_t{})...>{};
  }(std::make_index_sequence<N>{});
}

template <class F, class A, class U>
auto backprop_unary(const expr::unary<F, A>& e, const U& u);
template <class V, class A, class U>
auto backprop_unary(const expr::cast<V, A>& e, const U& u);
template <class F, class A, class B, class U>
auto backprop_binary(const expr::binary<F, A, B>& e, const U& u);
template <class F, class C, class A, class B, class U>
auto backprop_ternary(const expr::ternary<F, C, A, B>& e, const U& u);

/// The gradient expression of every leaf position of e for upstream u (chain rule over the
/// type), as a tuple with one entry per leaf, left to right.
template <class E, class U>
auto backprop(const E& e, const U& u) {
  if constexpr (E::leaf_count == 0) {
    return std::tuple<>{};
  } else if constexpr (!differentiable_v<E>) {
    return no_grads<E::leaf_count>();
  } else if constexpr (requires { e.t; }) {  // leaf
    return std::make_tuple(u);
  } else if constexpr (requires { e.c; }) {  // ternary
    return backprop_ternary(e, u);
  } else if constexpr (requires { e.b; }) {  // binary
    return backprop_binary(e, u);
  } else {
    return backprop_unary(e, u);
  }
}

template <class F, class A, class U>
auto backprop_unary(const expr::unary<F, A>& e, const U& u) {
  return backprop(e.a, derivative(F{}, e.a, u));
}
template <class V, class A, class U>
auto backprop_unary(const expr::cast<V, A>& e, const U& u) {
  if constexpr (differentiable_v<A>)
    return backprop(e.a, expr::cast<value_type_t<A>, U>(u));
  else
    return no_grads<A::leaf_count>();
}

template <class F, class A, class B, class U>
auto backprop_binary(const expr::binary<F, A, B>& e, const U& u) {
  auto ga = [&] {
    if constexpr (A::leaf_count == 0) return std::tuple<>{};
    else return backprop(e.a, derivative2<0>(F{}, e.a, e.b, u));
  }();
  auto gb = [&] {
    if constexpr (B::leaf_count == 0) return std::tuple<>{};
    else return backprop(e.b, derivative2<1>(F{}, e.a, e.b, u));
  }();
  return std::tuple_cat(std::move(ga), std::move(gb));
}

template <class F, class C, class A, class B, class U>
auto backprop_ternary(const expr::ternary<F, C, A, B>& e, const U& u) {
  using T = value_type_t<A>;
  if constexpr (std::is_same_v<F, fn::where>) {
    auto ga = [&] {
      if constexpr (A::leaf_count == 0) return std::tuple<>{};
      else return backprop(e.b, sel(e.a, u, lit<T>(0)));
    }();
    auto gb = [&] {
      if constexpr (B::leaf_count == 0) return std::tuple<>{};
      else return backprop(e.c, sel(e.a, lit<T>(0), u));
    }();
    return std::tuple_cat(no_grads<C::leaf_count>(), std::move(ga), std::move(gb));
  } else {  // clamp(x, lo, hi): the gradient passes where lo <= x <= hi
    static_assert(std::is_same_v<F, fn::clamp>);
    auto gx = backprop(e.a, sel(bin<fn::ge>(e.a, e.b), sel(bin<fn::le>(e.a, e.c), u, lit<T>(0)),
                                lit<T>(0)));
    return std::tuple_cat(std::move(gx), no_grads<A::leaf_count + B::leaf_count>());
  }
}

// ---- leaves ----------------------------------------------------------------------------------
/// Calls f(leaf_node&) for every tensor leaf node, left to right (mutable).
template <class E, class F>
void for_each_leaf_node(E& e, F&& f) {
  if constexpr (requires { e.t; }) {
    f(e);
  } else if constexpr (requires { e.c; }) {
    for_each_leaf_node(e.a, f);
    for_each_leaf_node(e.b, f);
    for_each_leaf_node(e.c, f);
  } else if constexpr (requires { e.b; }) {
    for_each_leaf_node(e.a, f);
    for_each_leaf_node(e.b, f);
  } else if constexpr (requires { e.a; }) {
    for_each_leaf_node(e.a, f);
  }
}

template <class E>
bool expression_requires_grad(const E& e) {
  if (!is_grad_enabled()) return false;
  bool any = false;
  ember::detail::for_each_tensor_leaf(e, [&](const auto& t) { any = any || t.requires_grad(); });
  return any;
}

template <class E>
constexpr int depth() {
  if constexpr (requires(E e) { e.c; })
    return 1 + std::max({depth<decltype(E::a)>(), depth<decltype(E::b)>(), depth<decltype(E::c)>()});
  else if constexpr (requires(E e) { e.b; })
    return 1 + std::max(depth<decltype(E::a)>(), depth<decltype(E::b)>());
  else if constexpr (requires(E e) { e.a; })
    return 1 + depth<decltype(E::a)>();
  else
    return 0;
}

// ---- replay (create_graph) -------------------------------------------------------------------
/// evaluate() for replayed single operators: the lean loops, then the recorded node.
template <class E>
auto replay_eval(const E& e) {
  auto r = ember::detail::evaluate_raw<E, true>(e);
  if constexpr (differentiable_v<E>)
    if (expression_requires_grad(e)) return ember::detail::record_fused(std::move(r), e);
  return r;
}

/// A node for a replayed operand: a tensor becomes a leaf, a scalar stays inline.
template <class X>
auto as_node(const X& x) {
  if constexpr (is_tensor_v<X>) return expr::leaf<value_type_t<X>>(x);
  else return x;
}

template <class F, class A>
auto replay_unary(const expr::unary<F, A>& e);
template <class V, class A>
auto replay_unary(const expr::cast<V, A>& e);
template <class F, class A, class B>
auto replay_binary(const expr::binary<F, A, B>& e);
template <class F, class A, class B, class C>
auto replay_ternary(const expr::ternary<F, A, B, C>& e);

/// Evaluates e one operator at a time (each a tiny recorded node), on the saved leaves.
template <class E>
auto replay(const E& e) {
  if constexpr (requires { e.t; }) {
    return e.t;
  } else if constexpr (E::leaf_count == 0) {
    if constexpr (requires { e.value; }) return e;  // a scalar stays inline
    else return ember::detail::evaluate_raw<E, true>(e);
  } else if constexpr (requires { e.c; }) {
    return replay_ternary(e);
  } else if constexpr (requires { e.b; }) {
    return replay_binary(e);
  } else {
    return replay_unary(e);
  }
}
template <class F, class A>
auto replay_unary(const expr::unary<F, A>& e) {
  auto a = as_node(replay(e.a));
  return replay_eval(expr::unary<F, decltype(a)>(a));
}
template <class V, class A>
auto replay_unary(const expr::cast<V, A>& e) {
  auto a = as_node(replay(e.a));
  return replay_eval(expr::cast<V, decltype(a)>(a));
}
template <class F, class A, class B, class C>
auto replay_ternary(const expr::ternary<F, A, B, C>& e) {
  auto a = as_node(replay(e.a));
  auto b = as_node(replay(e.b));
  auto c = as_node(replay(e.c));
  return replay_eval(expr::ternary<F, decltype(a), decltype(b), decltype(c)>(a, b, c));
}
template <class F, class A, class B>
auto replay_binary(const expr::binary<F, A, B>& e) {
  auto a = as_node(replay(e.a));
  auto b = as_node(replay(e.b));
  return replay_eval(expr::binary<F, decltype(a), decltype(b)>(a, b));
}

// ---- the fused nodes ---------------------------------------------------------------------------
/// Evaluates leaf gradient expression g into a tensor shaped like `leaf_shape` (summing over
/// broadcast dims; out_shape is the shape the expression was broadcast to).
/// Recorded (create_graph), the gradient expression is replayed one operator at a time rather
/// than recorded as one fused node of its own type: the derivative types then never get nodes
/// (whose backward would instantiate their own derivatives, and so on), only the single
/// operators do, a small set shared by every expression (Note [Fused backward]).
template <bool Record, class T, class G>
tensor<T> leaf_gradient(const G& g, const shape& out_shape, const shape& leaf_shape) {
  tensor<T> r;
  if constexpr (Record && G::leaf_count > 0) {
    if (expression_requires_grad(g)) r = replay(g);
    else r = ember::detail::evaluate_raw<G, true>(g);
  } else {
    r = ember::detail::evaluate_raw<G, true>(g);
  }
  if (r.shape() == leaf_shape) return r;
  if (r.shape() != out_shape) r = r.expand(out_shape);
  return sum_to(r, leaf_shape);
}

/// Backward of an expression node for upstream expression U (shape broadcast to out_shape).
/// Writes one gradient per leaf position into grads (null where none is needed).
template <bool Record, class E, class U>
void fused_gradients(const E& e, const U& u, const shape& out_shape,
                     const std::vector<char>& needed, variable_list& grads) {
  using T = value_type_t<E>;
  auto gs = backprop(e, u);
  // per leaf position (no heap: eager graphs run this once per node)
  std::array<const ember::detail::tensor_impl*, E::leaf_count> ids{};
  std::array<const shape*, E::leaf_count> shapes{};
  {
    std::size_t k = 0;
    for_each_leaf_node(const_cast<E&>(e), [&](auto& l) {
      ids[k] = l.t.impl_ptr().get();
      shapes[k++] = &l.t.shape();
    });
  }
  [&]<std::size_t... P>(std::index_sequence<P...>) {
    auto one = [&](auto pc, const auto& g) {
      constexpr std::size_t p = decltype(pc)::value;
      using G = std::remove_cvref_t<decltype(g)>;
      if constexpr (!std::is_same_v<G, no_grad_t>) {
        if (!needed[p]) return;
        using L = value_type_t<G>;
        if constexpr (std::is_same_v<L, T> || differentiable_v<G>) {
          tensor<L> r = leaf_gradient<Record, L>(g, out_shape, *shapes[p]);
          // positions holding the same tensor share one gradient (summed here)
          std::size_t first = p;
          for (std::size_t q = 0; q < p; ++q)
            if (ids[q] == ids[p] && needed[q]) {
              first = q;
              break;
            }
          if (!grads[first]) {
            grads[first] = r.impl_ptr();
          } else if (Record || !r.device().is_cpu()) {
            grads[first] = add_grads(tensor<L>(grads[first]), r).impl_ptr();
          } else {  // our own buffer: accumulate in place (one buffer per leaf, not per use)
            const tensor<L> acc(grads[first]);
            ember::detail::for_each_element(
                acc.shape(), {&acc.strides(), &r.strides()}, [](L& a, const L& b) { a += b; },
                acc.data(), static_cast<const L*>(r.data()));
          }
        }
      }
    };
    (void)one;  // unused when the expression has no tensor leaf
    (one(std::integral_constant<std::size_t, P>{}, std::get<P>(gs)), ...);
  }(std::make_index_sequence<std::tuple_size_v<decltype(gs)>>{});
}

/// Version check of every saved leaf (an in-place change since forward is an error).
template <class E>
using leaf_version_array = std::array<std::uint64_t, E::leaf_count>;

template <class E>
void check_versions(const E& e, const leaf_version_array<E>& versions, const std::string& op) {
  std::size_t k = 0;
  for_each_leaf_node(const_cast<E&>(e), [&](auto& l) {
    const auto v = versions[k++];
    check(l.t.version() == v, errc::autograd, op, ": a tensor of shape ", l.t.shape(),
          " saved for backward was modified by an in-place operation (version ", v, " -> ",
          l.t.version(), "); clone() it before modifying it");
  });
}

template <class E>
leaf_version_array<E> leaf_versions(const E& e) {
  leaf_version_array<E> v{};
  std::size_t k = 0;
  for_each_leaf_node(const_cast<E&>(e), [&](auto& l) { v[k++] = l.t.version(); });
  return v;
}

template <class E>
struct root_name {
  static std::string get() { return "fused_backward"; }
};
template <class F, class A>
struct root_name<expr::unary<F, A>> {
  static std::string get() { return std::string(ember::name(F::id)) + "_backward"; }
};
template <class F, class A, class B>
struct root_name<expr::binary<F, A, B>> {
  static std::string get() { return std::string(ember::name(F::id)) + "_backward"; }
};
template <class F, class A, class B, class C>
struct root_name<expr::ternary<F, A, B, C>> {
  static std::string get() { return std::string(ember::name(F::id)) + "_backward"; }
};
template <class V, class A>
struct root_name<expr::cast<V, A>> {
  static std::string get() { return "to_backward"; }
};
template <class T>
struct root_name<expr::leaf<T>> {
  static std::string get() { return "clone_backward"; }
};

/// create_graph: the vector-Jacobian product of e's operator-by-operator replay (tiny
/// recorded nodes) with upstream ug, one gradient per leaf position (each distinct tensor's
/// gradient at its first needed position).
template <class E, class T>
variable_list replay_vjp(const E& e, const tensor<T>& ug, const std::vector<char>& needed) {
  const tensor<T> y = replay(e);
  std::vector<tensor<T>> inputs;
  std::vector<const ember::detail::tensor_impl*> ids;
  std::vector<std::ptrdiff_t> slot;  // leaf position -> index in inputs, or -1
  std::size_t p = 0;
  for_each_leaf_node(const_cast<E&>(e), [&](auto& l) {
    std::ptrdiff_t s = -1;
    if constexpr (std::is_same_v<value_type_t<decltype(l.t)>, T>) {
      const auto* id = l.t.impl_ptr().get();
      if (needed[p] && l.t.requires_grad() && std::find(ids.begin(), ids.end(), id) == ids.end()) {
        s = static_cast<std::ptrdiff_t>(inputs.size());
        ids.push_back(id);
        inputs.push_back(l.t);
      }
    }
    slot.push_back(s);
    ++p;
  });
  variable_list out(needed.size());
  if (inputs.empty() || !y.requires_grad()) return out;
  auto gs = grad_impl<T>({y}, inputs, {ug},
                              {.retain_graph = true, .create_graph = true, .allow_unused = true});
  for (std::size_t q = 0; q < slot.size(); ++q)
    if (slot[q] >= 0) out[q] = var(gs[static_cast<std::size_t>(slot[q])]);
  return out;
}

/// The recorded node of a materialized expression (Note [Fused backward]).
template <class E>
class fused_node final : public node {
 public:
  using T = value_type_t<E>;
  fused_node(E e, std::size_t leaves) : e_(std::move(e)), versions_(leaf_versions(*e_)) {
    (void)leaves;
  }
  std::string name() const override { return root_name<E>::get(); }
  void release_saved() override { e_.reset(); }

  variable_list apply(variable_list&& grads) override {
    check(e_.has_value(), errc::autograd, name(), ": saved tensors were already freed");
    const E& e = *e_;
    check_versions(e, versions_, name());
    std::vector<char> needed;
    for (const auto& ed : next) needed.push_back(ed.valid());
    variable_list out(next.size());
    const tensor<T> g(grads.at(0));
    if (!is_grad_enabled()) {
      fused_gradients<false>(e, expr::leaf<T>(g), e.shape(), needed, out);
      return out;
    }
    if constexpr (depth<E>() <= 1) {  // one operator: its derivative, recorded
      fused_gradients<true>(e, expr::leaf<T>(g), e.shape(), needed, out);
      return out;
    } else {
      return replay_vjp(e, g, needed);
    }
  }

 private:
  std::optional<E> e_;
  leaf_version_array<E> versions_;
};

/// The recorded node of sum(e, dims) over an expression: the same derivation with the upstream
/// broadcast back over the reduced dims.
template <class E>
class fused_sum_node final : public node {
 public:
  using T = value_type_t<E>;
  fused_sum_node(E e, std::vector<bool> mask, bool keepdim)
      : e_(std::move(e)), versions_(leaf_versions(*e_)), mask_(std::move(mask)), keepdim_(keepdim) {}
  std::string name() const override { return "sum_backward"; }
  void release_saved() override { e_.reset(); }

  variable_list apply(variable_list&& grads) override {
    check(e_.has_value(), errc::autograd, name(), ": saved tensors were already freed");
    const E& e = *e_;
    check_versions(e, versions_, name());
    std::vector<char> needed;
    for (const auto& ed : next) needed.push_back(ed.valid());
    tensor<T> g(grads.at(0));
    if (!keepdim_) {  // put the reduced dims back (size 1)
      shape k;
      const shape& es = e.shape();
      for (std::size_t d = 0; d < es.size(); ++d) k.push_back(mask_[d] ? 1 : es[d]);
      g = g.reshape(k);
    }
    if (is_grad_enabled()) return replay_vjp(e, g.expand(e.shape()), needed);
    variable_list out(next.size());
    fused_gradients<false>(e, expr::leaf<T>(g), e.shape(), needed, out);
    return out;
  }

 private:
  std::optional<E> e_;
  leaf_version_array<E> versions_;
  std::vector<bool> mask_;
  bool keepdim_;
};

template <class E>
void add_leaf_edges(node& fn, const E& e) {
  for_each_leaf_node(const_cast<E&>(e), [&](auto& l) {
    if constexpr (differentiable_v<decltype(l)>) fn.next.push_back(gradient_edge(l.t));
    else fn.next.push_back(edge{});
  });
}

template <class E>
std::shared_ptr<node> make_fused_node(const E& e) {
  auto fn = std::make_shared<fused_node<E>>(e, E::leaf_count);
  for_each_leaf_node(const_cast<E&>(e), [&](auto& l) {
    if constexpr (differentiable_v<decltype(l)>) fn->next.push_back(gradient_edge(l.t));
    else fn->next.push_back(edge{});
  });
  return fn;
}

}  // namespace ember::autograd::detail

namespace ember::detail {

/// Called by reduce<sum_op>() when a leaf requires grad: one sum node over the expression.
template <class T, class E>
tensor<T> record_fused_sum(tensor<T> out, const E& e, const std::vector<bool>& mask, bool keepdim) {
  if constexpr (!autograd::detail::differentiable_v<E>) {
    return out;
  } else {
    auto fn = std::make_shared<autograd::detail::fused_sum_node<E>>(e, mask, keepdim);
    autograd::detail::add_leaf_edges(*fn, e);
    return autograd::detail::set_history(std::move(out), fn, 0);
  }
}

/// Called by evaluate() when a leaf requires grad: out gets one fused node as its history.
template <class T, class E>
tensor<T> record_fused(tensor<T> out, const E& e) {
  if constexpr (!autograd::detail::differentiable_v<E>) {
    return out;
  } else {
    auto fn = autograd::detail::make_fused_node(e);
    return autograd::detail::set_history(std::move(out), fn, 0);
  }
}

/// assign() with recording: dst = e written in place. Leaves that are dst itself are saved as
/// a snapshot (their old value and history), since dst is overwritten.
template <class T, class E>
void assign_recorded(const tensor<T>& dst, const E& e_in, const char* op) {
  autograd::detail::check_inplace(dst, op);
  E e = e_in;
  autograd::detail::for_each_leaf_node(e, [&](auto& l) {
    if (l.t.impl_ptr() != dst.impl_ptr()) return;
    using L = value_type_t<decltype(l.t)>;
    tensor<L> snap;
    {
      no_grad_guard ng;
      snap = l.t.clone();
    }
    if (l.t.requires_grad()) snap.impl().autograd = std::make_shared<autograd_meta>(*l.t.impl().autograd);
    l.t = snap;
  });
  tensor<T> tmp;
  {
    no_grad_guard ng;
    tmp = evaluate(e);
  }
  tmp = record_fused(std::move(tmp), e);
  tensor<T> shaped = tmp;
  if (tmp.shape() != dst.shape()) {
    shaped = tmp.expand(dst.shape());
  }
  {
    no_grad_guard ng;
    write_elementwise(dst, expr::leaf<T>(tmp));
  }
  dst.impl().storage->bump_version();
  if (shaped.requires_grad()) autograd::detail::rebase_history(dst, shaped);
}

}  // namespace ember::detail
