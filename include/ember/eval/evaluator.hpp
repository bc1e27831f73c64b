// evaluator<E>: the run-time side of an expression node (Eigen's evaluator idea). It mirrors
// the node tree; leaf evaluators carry the tensor's pointer, strides aligned to the output
// shape (0 where broadcast) and the current row. Nodes compute a value at a row position,
// as a scalar or as a SIMD packet. No loops over rows here: traversal lives in assign/reduce.
#pragma once

#include <ember/core/shape.hpp>
#include <ember/expr/binary.hpp>
#include <ember/expr/cast.hpp>
#include <ember/expr/leaf.hpp>
#include <ember/expr/ternary.hpp>
#include <ember/expr/unary.hpp>
#include <ember/simd/batch.hpp>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace ember::detail {

/// How leaves load a packet in the current row (chosen once per assignment, Note [Traversal]):
/// unit: every leaf has inner stride 1; bcast: strides are 0 or 1 (0 = hoisted broadcast);
/// gather: any strides (elements are gathered into a buffer).
enum class load_mode { unit, bcast, gather };

/// Constructs an evaluator whose leaves are flat arrays of the output's element count, read
/// from their first element with stride 1 (Note [Dense operands], eval/assign.hpp).
struct dense_t {};
inline constexpr dense_t dense{};

template <class E>
struct evaluator;

/// Aligns a tensor's strides to an output shape of rank >= its rank: leading and size-1
/// (broadcast) dims get stride 0.
inline shape broadcast_strides(const shape& sizes, const shape& strides, const shape& out) {
  shape st(out.size(), 0);
  const std::size_t lead = out.size() - sizes.size();
  for (std::size_t i = 0; i < sizes.size(); ++i)
    st[lead + i] = sizes[i] == 1 && out[lead + i] != 1 ? 0 : strides[i];
  return st;
}

// ---- vectorizability (compile time) -------------------------------------------------------
template <class E>
struct vec_traits {
  static constexpr bool value = false;
};
template <class T>
struct vec_traits<expr::leaf<T>> {
  static constexpr bool value = simd::has_batch_v<T>;
};
template <class T>
struct vec_traits<expr::scalar<T>> {
  static constexpr bool value = simd::has_batch_v<T>;
};
template <class F, class A>
struct vec_traits<expr::unary<F, A>> {
  static constexpr bool value = F::vectorizable && vec_traits<A>::value && !fn::predicate<F>;
};
template <class F, class A, class B>
struct vec_traits<expr::binary<F, A, B>> {
  // predicates are vectorizable as operands of where (their packet is a mask)
  static constexpr bool value = F::vectorizable && vec_traits<A>::value && vec_traits<B>::value;
};
template <class F, class C, class A, class B>
struct vec_traits<expr::ternary<F, C, A, B>> {
  static constexpr bool cond_ok = [] {
    if constexpr (std::is_same_v<F, fn::where>) {
      // the mask must be a comparison over the same element type as the values
      if constexpr (requires { typename C::a_type; })
        return std::is_same_v<value_type_t<typename C::a_type>, value_type_t<A>>;
      return false;
    } else {
      return vec_traits<C>::value;
    }
  }();
  static constexpr bool value =
      F::vectorizable && cond_ok && vec_traits<C>::value && vec_traits<A>::value && vec_traits<B>::value;
};
template <class U, class A>
struct vec_traits<expr::cast<U, A>> {
  static constexpr bool value = std::is_same_v<U, value_type_t<A>> && vec_traits<A>::value;
};

/// True when E evaluates with SIMD packets (its result must not be bool: stored as bytes).
template <class E>
inline constexpr bool vectorizable_v =
    vec_traits<E>::value && simd::has_batch_v<typename E::value_type>;

// ---- leaves ------------------------------------------------------------------------------------
template <class T>
struct evaluator<expr::leaf<T>> {
  using value_type = T;
  const T* base;
  shape strides;
  std::int64_t pos = 0;    ///< element offset of the current row start (from base)
  std::int64_t inner = 0;  ///< stride along the row
  const T* row = nullptr;
#if EMBER_HAS_XSIMD
  std::conditional_t<simd::has_batch_v<T>, simd::batch<T>, char> bval{};
#endif

  evaluator(const expr::leaf<T>& l, const shape& out)
      : base(l.t.data()), strides(broadcast_strides(l.t.shape(), l.t.strides(), out)) {}
  evaluator(const expr::leaf<T>& l, dense_t) : base(l.t.data()), inner(1), row(base) {}

  template <class F>
  void for_each_leaf(F&& f) {
    f(*this);
  }
  /// Positions the row at pos (+ start*inner); hoists a broadcast value when inner == 0.
  void start_row() {
    row = base + pos;
#if EMBER_HAS_XSIMD
    if constexpr (simd::has_batch_v<T>)
      if (inner == 0) bval = simd::broadcast(*row);
#endif
  }
  T value(std::int64_t i) const { return row[i * inner]; }
#if EMBER_HAS_XSIMD
  template <load_mode M>
  EMBER_PACKET_INLINE auto packet(std::int64_t i) const {
    if constexpr (M == load_mode::unit) {
      return simd::load(row + i);
    } else if constexpr (M == load_mode::bcast) {
      return inner == 0 ? bval : simd::load(row + i);
    } else {
      alignas(64) T buf[simd::width<T>];
      for (std::size_t k = 0; k < simd::width<T>; ++k)
        buf[k] = row[(i + static_cast<std::int64_t>(k)) * inner];
      return simd::load(buf);
    }
  }
  /// A packet of the m (< width) elements at i; the remaining lanes repeat the last one.
  EMBER_PACKET_INLINE auto packet_partial(std::int64_t i, std::int64_t m) const {
    alignas(64) T buf[simd::width<T>];
    for (std::int64_t k = 0; k < static_cast<std::int64_t>(simd::width<T>); ++k)
      buf[k] = row[(i + std::min(k, m - 1)) * inner];
    return simd::load(buf);
  }
  /// The packet when every leaf reads the same elements (Note [Shared leaves]): v itself.
  template <class V>
  EMBER_PACKET_INLINE const V& packet_shared(const V& v) const {
    return v;
  }
#endif
};

template <class T>
struct evaluator<expr::scalar<T>> {
  using value_type = T;
  T v;
#if EMBER_HAS_XSIMD
  std::conditional_t<simd::has_batch_v<T>, simd::batch<T>, char> bv;
#endif
  template <class S>
  evaluator(const expr::scalar<T>& s, const S&) : v(s.value) {
#if EMBER_HAS_XSIMD
    if constexpr (simd::has_batch_v<T>) bv = simd::broadcast(v);
#endif
  }
  template <class F>
  void for_each_leaf(F&&) {}
  T value(std::int64_t) const { return v; }
#if EMBER_HAS_XSIMD
  template <load_mode M>
  EMBER_PACKET_INLINE auto packet(std::int64_t) const {
    return bv;
  }
  EMBER_PACKET_INLINE auto packet_partial(std::int64_t, std::int64_t) const { return bv; }
  template <class V>
  EMBER_PACKET_INLINE auto packet_shared(const V&) const {
    return bv;
  }
#endif
};

// ---- interior nodes ------------------------------------------------------------------------------
template <class F, class A>
struct evaluator<expr::unary<F, A>> {
  using value_type = typename expr::unary<F, A>::value_type;
  evaluator<A> a;
  template <class S>
  evaluator(const expr::unary<F, A>& e, const S& out) : a(e.a, out) {}
  template <class G>
  void for_each_leaf(G&& g) {
    a.for_each_leaf(g);
  }
  auto value(std::int64_t i) const { return F{}(a.value(i)); }
#if EMBER_HAS_XSIMD
  template <load_mode M>
  EMBER_PACKET_INLINE auto packet(std::int64_t i) const {
    return F{}(a.template packet<M>(i));
  }
  EMBER_PACKET_INLINE auto packet_partial(std::int64_t i, std::int64_t m) const { return F{}(a.packet_partial(i, m)); }
  template <class V>
  EMBER_PACKET_INLINE auto packet_shared(const V& v) const {
    return F{}(a.packet_shared(v));
  }
#endif
};

template <class F, class A, class B>
struct evaluator<expr::binary<F, A, B>> {
  using value_type = typename expr::binary<F, A, B>::value_type;
  evaluator<A> a;
  evaluator<B> b;
  template <class S>
  evaluator(const expr::binary<F, A, B>& e, const S& out) : a(e.a, out), b(e.b, out) {}
  template <class G>
  void for_each_leaf(G&& g) {
    a.for_each_leaf(g);
    b.for_each_leaf(g);
  }
  auto value(std::int64_t i) const { return F{}(a.value(i), b.value(i)); }
#if EMBER_HAS_XSIMD
  template <load_mode M>
  EMBER_PACKET_INLINE auto packet(std::int64_t i) const {
    return F{}(a.template packet<M>(i), b.template packet<M>(i));
  }
  EMBER_PACKET_INLINE auto packet_partial(std::int64_t i, std::int64_t m) const {
    return F{}(a.packet_partial(i, m), b.packet_partial(i, m));
  }
  template <class V>
  EMBER_PACKET_INLINE auto packet_shared(const V& v) const {
    return F{}(a.packet_shared(v), b.packet_shared(v));
  }
#endif
};

template <class F, class A, class B, class C>
struct evaluator<expr::ternary<F, A, B, C>> {
  using value_type = typename expr::ternary<F, A, B, C>::value_type;
  evaluator<A> a;
  evaluator<B> b;
  evaluator<C> c;
  template <class S>
  evaluator(const expr::ternary<F, A, B, C>& e, const S& out)
      : a(e.a, out), b(e.b, out), c(e.c, out) {}
  template <class G>
  void for_each_leaf(G&& g) {
    a.for_each_leaf(g);
    b.for_each_leaf(g);
    c.for_each_leaf(g);
  }
  auto value(std::int64_t i) const { return F{}(a.value(i), b.value(i), c.value(i)); }
#if EMBER_HAS_XSIMD
  template <load_mode M>
  EMBER_PACKET_INLINE auto packet(std::int64_t i) const {
    return F{}(a.template packet<M>(i), b.template packet<M>(i), c.template packet<M>(i));
  }
  EMBER_PACKET_INLINE auto packet_partial(std::int64_t i, std::int64_t m) const {
    return F{}(a.packet_partial(i, m), b.packet_partial(i, m), c.packet_partial(i, m));
  }
  template <class V>
  EMBER_PACKET_INLINE auto packet_shared(const V& v) const {
    return F{}(a.packet_shared(v), b.packet_shared(v), c.packet_shared(v));
  }
#endif
};

template <class U, class A>
struct evaluator<expr::cast<U, A>> {
  using value_type = U;
  evaluator<A> a;
  template <class S>
  evaluator(const expr::cast<U, A>& e, const S& out) : a(e.a, out) {}
  template <class G>
  void for_each_leaf(G&& g) {
    a.for_each_leaf(g);
  }
  U value(std::int64_t i) const { return convert<U>(a.value(i)); }
#if EMBER_HAS_XSIMD
  template <load_mode M>
  EMBER_PACKET_INLINE auto packet(std::int64_t i) const {  // only instantiated when U is A's type
    return a.template packet<M>(i);
  }
  EMBER_PACKET_INLINE auto packet_partial(std::int64_t i, std::int64_t m) const { return a.packet_partial(i, m); }
  template <class V>
  EMBER_PACKET_INLINE auto packet_shared(const V& v) const {
    return a.packet_shared(v);
  }
#endif
};

// Note [Shared leaves]: x * x, or E2's four uses of x, are leaves with separate row pointers
// that the compiler cannot prove equal, so every packet is loaded once per use (measured:
// sum(x * x) 10% slower than sum(square(x))). When every leaf reads the same elements (same
// buffer, same strides after coalescing), the traversal loads one packet and evaluates the
// tree on it with packet_shared(v): leaves return v, scalars their broadcast. Same math on the
// same values, so the same bits as the per-leaf path.

/// True when every leaf of E holds T elements (so one packet of T can stand for all leaves).
template <class E, class T>
struct leaves_are : std::false_type {};
template <class T>
struct leaves_are<expr::leaf<T>, T> : std::true_type {};
template <class S, class T>
struct leaves_are<expr::scalar<S>, T> : std::true_type {};
template <class F, class A, class T>
struct leaves_are<expr::unary<F, A>, T> : leaves_are<A, T> {};
template <class F, class A, class B, class T>
struct leaves_are<expr::binary<F, A, B>, T>
    : std::bool_constant<leaves_are<A, T>::value && leaves_are<B, T>::value> {};
template <class F, class A, class B, class C, class T>
struct leaves_are<expr::ternary<F, A, B, C>, T>
    : std::bool_constant<leaves_are<A, T>::value && leaves_are<B, T>::value &&
                         leaves_are<C, T>::value> {};
template <class U, class A, class T>
struct leaves_are<expr::cast<U, A>, T> : leaves_are<A, T> {};

/// Shared-leaf evaluation applies: more than one tensor leaf, all of T (Note [Shared leaves]).
template <class E>
inline constexpr bool shared_leaf_candidate_v =
    vectorizable_v<E> && (E::leaf_count > 1) && leaves_are<E, typename E::value_type>::value;

/// Do all tensor leaves of the evaluator read the same elements (same base and strides)?
template <class Ev>
bool leaves_identical(Ev& ev) {
  const void* base = nullptr;
  const shape* st = nullptr;
  bool same = true;
  ev.for_each_leaf([&](auto& l) {
    if (!st) {
      base = l.base;
      st = &l.strides;
    } else {
      same = same && base == static_cast<const void*>(l.base) && *st == l.strides;
    }
  });
  return same && st != nullptr;
}

}  // namespace ember::detail
