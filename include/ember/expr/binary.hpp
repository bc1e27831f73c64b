// binary<F, A, B>: functor F applied to two operands broadcast together. The broadcast shape is
// computed once, when the node is built; incompatible shapes are an error right there.
#pragma once

#include <ember/expr/concepts.hpp>
#include <ember/expr/functors.hpp>

#include <utility>

namespace ember::expr {

template <class F, class A, class B>
struct binary : expression_base<binary<F, A, B>> {
  using value_type = std::conditional_t<fn::predicate<F>, bool, value_type_t<A>>;
  static constexpr std::size_t leaf_count = A::leaf_count + B::leaf_count;
  using a_type = A;
  using b_type = B;
  A a;
  B b;
  ember::shape shape_;

  binary(A x, B y)
      : a(std::move(x)), b(std::move(y)),
        shape_(broadcast_shapes(a.shape(), b.shape(), name(F::id).data())) {}
  const ember::shape& shape() const { return shape_; }
};

}  // namespace ember::expr
