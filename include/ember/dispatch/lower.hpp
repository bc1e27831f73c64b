// Lowering: an expression type (expr/) becomes an elementwise program (dispatch/program.hpp),
// at run time over a structure the compiler fully unrolls: one instruction per node, postfix.
// Also the device entry points the elementwise engine calls for non-CPU tensors.
#pragma once

#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>
#include <ember/dispatch/program.hpp>
#include <ember/dispatch/registry.hpp>
#include <ember/eval/evaluator.hpp>
#include <ember/expr/op.hpp>

#include <cstdint>
#include <type_traits>

namespace ember::dispatch {

static_assert(code::f32 == static_cast<std::uint8_t>(dtype::f32) &&
              code::f64 == static_cast<std::uint8_t>(dtype::f64) &&
              code::i32 == static_cast<std::uint8_t>(dtype::i32) &&
              code::i64 == static_cast<std::uint8_t>(dtype::i64) &&
              code::u8 == static_cast<std::uint8_t>(dtype::u8) &&
              code::boolean == static_cast<std::uint8_t>(dtype::boolean) &&
              code::i8 == static_cast<std::uint8_t>(dtype::i8) &&
              code::i16 == static_cast<std::uint8_t>(dtype::i16),
              "dispatch/program.hpp's dtype codes differ from ember::dtype");
static_assert(opc::gelu_tanh_grad == static_cast<std::uint16_t>(op::gelu_tanh_grad) &&
              opc::logical_or == static_cast<std::uint16_t>(op::logical_or) &&
              opc::cast == static_cast<std::uint16_t>(op::cast) &&
              opc::erf == static_cast<std::uint16_t>(op::erf) &&
              opc::add == static_cast<std::uint16_t>(op::add) &&
              opc::where == static_cast<std::uint16_t>(op::where),
              "dispatch/program.hpp's op codes differ from ember::op");

namespace detail {

using ember::detail::check;

template <class T>
inline constexpr bool lowerable_v =
    std::is_arithmetic_v<T> && !std::is_same_v<T, half> && !std::is_same_v<T, bfloat16> &&
    !std::is_same_v<T, std::uint16_t> && !std::is_same_v<T, std::uint32_t> &&
    !std::is_same_v<T, std::uint64_t>;

template <class T>
constexpr std::uint8_t code_of() {
  return static_cast<std::uint8_t>(dtype_of<T>);
}

// ---- the types an expression computes in (compile time) ---------------------------------------
struct type_flags {
  bool all_int = true;   // every node integral or bool: compute in int64
  bool all_f32 = true;   // every node f32 or bool: compute in float
};

template <class T>
constexpr type_flags flags_of_type() {
  type_flags f;
  if constexpr (std::is_same_v<T, bool>) {
  } else if constexpr (std::is_integral_v<T>) {
    f.all_f32 = false;
  } else {
    f.all_int = false;
    f.all_f32 = std::is_same_v<T, float>;
  }
  return f;
}
constexpr type_flags merge(type_flags a, type_flags b) {
  return {a.all_int && b.all_int, a.all_f32 && b.all_f32};
}

template <class E>
struct flags;
template <class E>
constexpr type_flags flags_v = flags<std::remove_cvref_t<E>>::value;

template <class T>
struct flags<tensor<T>> { static constexpr type_flags value = flags_of_type<T>(); };
template <class T>
struct flags<expr::leaf<T>> { static constexpr type_flags value = flags_of_type<T>(); };
template <class T>
struct flags<expr::scalar<T>> { static constexpr type_flags value = flags_of_type<T>(); };
template <class F, class A>
struct flags<expr::unary<F, A>> {
  static constexpr type_flags value =
      merge(flags_of_type<typename expr::unary<F, A>::value_type>(), flags_v<A>);
};
template <class F, class A, class B>
struct flags<expr::binary<F, A, B>> {
  static constexpr type_flags value = merge(
      merge(flags_of_type<typename expr::binary<F, A, B>::value_type>(), flags_v<A>), flags_v<B>);
};
template <class F, class A, class B, class C>
struct flags<expr::ternary<F, A, B, C>> {
  static constexpr type_flags value =
      merge(merge(flags_of_type<typename expr::ternary<F, A, B, C>::value_type>(), flags_v<A>),
            merge(flags_v<B>, flags_v<C>));
};
template <class U, class A>
struct flags<expr::cast<U, A>> {
  static constexpr type_flags value = merge(flags_of_type<U>(), flags_v<A>);
};

/// Ops an integer-valued node may have: their int64 and (for integer nodes inside a float
/// program) double values equal the CPU's integer arithmetic. Transcendental functions, pow and
/// the float-only activations on integers are not lowered.
constexpr bool integer_op(std::uint16_t o) {
  switch (o) {
    case opc::neg: case opc::abs: case opc::square: case opc::relu: case opc::sign:
    case opc::logical_not: case opc::add: case opc::sub: case opc::mul: case opc::div:
    case opc::maximum: case opc::minimum: case opc::eq: case opc::ne: case opc::lt: case opc::le:
    case opc::gt: case opc::ge: case opc::logical_and: case opc::logical_or: case opc::where:
    case opc::clamp: case opc::cast:
      return true;
    default:
      return false;
  }
}

struct lowering {
  elementwise_program& p;
  const shape& out_shape;
  compute ctype;
  int depth = 0;

  void emit(instr in, int pops, int pushes) {
    check(p.n_code < max_code, errc::not_implemented, "elementwise expression on a device: more ",
          "than ", max_code, " nodes (split it, or evaluate a part with em::eval first)");
    depth += pushes - pops;
    check(depth <= max_stack, errc::not_implemented, "elementwise expression on a device: ",
          "nested deeper than ", max_stack, " operands (evaluate a part with em::eval first)");
    p.code[p.n_code++] = in;
  }

  template <class T>
  void node_type_check(std::uint16_t o) {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      check(integer_op(o), errc::not_implemented, "elementwise expression on a device: ",
            name(static_cast<op>(o)), " on integer elements (", dtype_of<T>,
            ") is not supported; convert to a float type first");
      // inside a float program an integer node keeps its type's semantics (truncating
      // division, wrap-around)
      if (ctype != compute::i64 && o != opc::cast)
        emit({opc::cast, code_of<T>(), 0, 0.0}, 0, 0);
    }
  }

  template <class T>
  void tensor_leaf(const tensor<T>& t) {
    if constexpr (!lowerable_v<T>)
      ember::detail::fail(errc::not_implemented, "elementwise expression on a device: ",
                          dtype_of<T>, " operands are not supported; convert them with "
                          ".to<float>() first");
    check(t.shape().size() <= std::size_t(max_rank), errc::not_implemented,
          "elementwise expression on a device: rank ", t.shape().size(), " (at most ", max_rank,
          ")");
    const shape st = ember::detail::broadcast_strides(t.shape(), t.strides(), out_shape);
    const void* data = static_cast<const void*>(t.data());
    int k = 0;
    for (; k < p.n_leaves; ++k) {  // the same view twice (x * x): one leaf
      const leaf_ref& l = p.leaves[k];
      bool same = l.data == data && l.dtype == code_of<T>();
      for (std::size_t d = 0; same && d < st.size(); ++d) same = l.stride[d] == st[d];
      if (same) break;
    }
    if (k == p.n_leaves) {
      check(p.n_leaves < max_leaves, errc::not_implemented, "elementwise expression on a ",
            "device: more than ", max_leaves, " tensor operands (evaluate a part with em::eval ",
            "first)");
      leaf_ref& l = p.leaves[p.n_leaves++];
      l.data = data;
      l.dtype = code_of<T>();
      for (std::size_t d = 0; d < st.size(); ++d) l.stride[d] = st[d];
    }
    emit({opc::leaf, 0, static_cast<std::uint8_t>(k), 0.0}, 0, 1);
  }

  template <class E>
  void node(const E& e) {
    using N = std::remove_cvref_t<E>;
    if constexpr (is_tensor_v<N>) {
      tensor_leaf(e);
    } else if constexpr (requires { e.t; }) {
      tensor_leaf(e.t);
    } else if constexpr (requires { typename N::value_type; e.value; }) {  // scalar
      using T = typename N::value_type;
      emit({opc::scalar, 0, 0, static_cast<double>(e.value)}, 0, 1);
      if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
        check(static_cast<double>(static_cast<T>(static_cast<double>(e.value))) ==
                  static_cast<double>(e.value),
              errc::not_implemented, "elementwise expression on a device: the integer ",
              "constant ", +e.value, " has no exact double");
    } else {
      lower_op(e);
    }
  }

  template <class F, class A>
  void lower_op(const expr::unary<F, A>& e) {
    node(e.a);
    constexpr auto o = static_cast<std::uint16_t>(F::id);
    emit({o, 0, 0, 0.0}, 1, 1);
    node_type_check<typename expr::unary<F, A>::value_type>(o);
  }
  template <class F, class A, class B>
  void lower_op(const expr::binary<F, A, B>& e) {
    node(e.a);
    node(e.b);
    constexpr auto o = static_cast<std::uint16_t>(F::id);
    emit({o, 0, 0, 0.0}, 2, 1);
    node_type_check<typename expr::binary<F, A, B>::value_type>(o);
  }
  template <class F, class A, class B, class C>
  void lower_op(const expr::ternary<F, A, B, C>& e) {
    node(e.a);
    node(e.b);
    node(e.c);
    constexpr auto o = static_cast<std::uint16_t>(F::id);
    emit({o, 0, 0, 0.0}, 3, 1);
    node_type_check<typename expr::ternary<F, A, B, C>::value_type>(o);
  }
  template <class U, class A>
  void lower_op(const expr::cast<U, A>& e) {
    if constexpr (!lowerable_v<U>)
      ember::detail::fail(errc::not_implemented, "elementwise expression on a device: a cast ",
                          "to ", dtype_of<U>, " is not supported");
    node(e.a);
    emit({opc::cast, code_of<U>(), 0, 0.0}, 1, 1);
  }
};

inline bool row_major(const shape& sizes, const shape& strides) {
  std::int64_t expect = 1;
  for (std::size_t d = sizes.size(); d-- > 0;) {
    if (sizes[d] != 1 && strides[d] != expect) return false;
    expect *= sizes[d];
  }
  return true;
}

}  // namespace detail

/// The program that writes expression e into `out` (elements of T, strides in elements, shape
/// out_shape: e broadcasts to it).
template <class T, class E>
elementwise_program lower(T* out, const shape& out_strides, const shape& out_shape, const E& e) {
  elementwise_program p;
  if constexpr (!detail::lowerable_v<T>)
    ember::detail::fail(errc::not_implemented, "elementwise expression on a device: writing ",
                        dtype_of<T>, " elements is not supported; convert first");
  ember::detail::check(out_shape.size() <= std::size_t(max_rank), errc::not_implemented,
                       "elementwise expression on a device: rank ", out_shape.size(),
                       " (at most ", max_rank, ")");
  constexpr detail::type_flags f =
      detail::merge(detail::flags_v<E>, detail::flags_of_type<T>());
  p.ctype = f.all_int ? compute::i64 : f.all_f32 ? compute::f32 : compute::f64;
  p.rank = static_cast<std::int32_t>(out_shape.size());
  p.numel = 1;
  for (std::size_t d = 0; d < out_shape.size(); ++d) {
    p.shape[d] = out_shape[d];
    p.out_stride[d] = out_strides[d];
    p.numel *= out_shape[d];
  }
  p.out = static_cast<void*>(out);
  p.out_dtype = detail::code_of<T>();
  detail::lowering L{p, out_shape, p.ctype};
  L.node(e);
  // flat: the output and every leaf walk the same row-major layout
  bool flat = detail::row_major(out_shape, out_strides);
  for (int k = 0; flat && k < p.n_leaves; ++k)
    for (int d = 0; flat && d < p.rank; ++d)
      flat = out_shape[d] == 1 || p.leaves[k].stride[d] == out_strides[d];
  p.flat = flat;
  return p;
}

/// Writes e into the device tensor memory `out` through the device's elementwise kernel.
template <class T, class E>
void run_elementwise(device dev, T* out, const shape& out_strides, const shape& out_shape,
                     const E& e, const char* what) {
  elementwise_program p = lower(out, out_strides, out_shape, e);
  if (p.numel == 0) return;
  finish(p);
  kernel<op::fused>(dev, dtype_of<T>, what)(p, dev);
}

}  // namespace ember::dispatch
