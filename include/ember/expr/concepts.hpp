// What an expression is: the concepts and traits of expression nodes and operands, the common
// user-facing members (eval, shape, item), and the declarations the evaluator defines.
#pragma once

#include <ember/core/dtype.hpp>
#include <ember/core/shape.hpp>

#include <cstddef>
#include <type_traits>

namespace ember {

template <class T>
class tensor;

namespace detail {

/// Materializes an expression into a new contiguous tensor (defined in eval/assign.hpp).
template <class E>
tensor<typename E::value_type> evaluate(const E& e);

/// Writes an expression into an existing tensor (broadcasting it to dst's shape, converting
/// nothing: types must match), handling aliasing (defined in eval/assign.hpp).
template <class T, class E>
void assign(const tensor<T>& dst, const E& e, const char* op);

struct expression_tag {};

}  // namespace detail

/// True for expression nodes (leaf, scalar, unary, binary, ternary, cast).
template <class E>
inline constexpr bool is_expression_v =
    std::is_base_of_v<detail::expression_tag, std::remove_cvref_t<E>>;

template <class E>
concept expression = is_expression_v<E>;

/// tensor<T>, or a class derived from it (nn::buffer<T>): it stands in expressions as a leaf.
namespace detail {
template <class X>
concept derived_from_tensor =
    requires { typename X::value_type; } && std::is_base_of_v<tensor<typename X::value_type>, X>;
}  // namespace detail
template <class X>
struct is_tensor : std::bool_constant<detail::derived_from_tensor<X>> {};
template <class T>
struct is_tensor<tensor<T>> : std::true_type {};
template <class X>
inline constexpr bool is_tensor_v = is_tensor<std::remove_cvref_t<X>>::value;

/// Anything that can stand in an elementwise expression: a node or a tensor.
template <class X>
concept operand = expression<X> || is_tensor_v<X>;

/// Arithmetic C++ scalars (any of them converts to the expression's element type).
template <class S>
concept arithmetic_scalar = std::is_arithmetic_v<std::remove_cvref_t<S>>;

/// The element type of an operand.
template <class X>
using value_type_t = typename std::remove_cvref_t<X>::value_type;

/// The user-facing members every node shares (one thin base, not a tower).
template <class Derived>
struct expression_base : detail::expression_tag {
  /// Evaluates the expression in one fused pass into a new tensor.
  auto eval() const { return detail::evaluate(self()); }
  std::int64_t dim() const { return self().shape().rank(); }
  std::int64_t numel() const { return self().shape().numel(); }
  /// The value of a one-element expression.
  auto item() const { return eval().item(); }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

}  // namespace ember
