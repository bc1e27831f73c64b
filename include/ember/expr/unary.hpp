// unary<F, A>: functor F applied to one operand. Data only: the operand (by value) and shape.
#pragma once

#include <ember/expr/concepts.hpp>
#include <ember/expr/functors.hpp>

#include <utility>

namespace ember::expr {

template <class F, class A>
struct unary : expression_base<unary<F, A>> {
  using value_type = std::conditional_t<fn::predicate<F>, bool, value_type_t<A>>;
  static constexpr std::size_t leaf_count = A::leaf_count;
  A a;

  explicit unary(A x) : a(std::move(x)) {}
  const ember::shape& shape() const { return a.shape(); }
};

}  // namespace ember::expr
