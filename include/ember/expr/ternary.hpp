// ternary<F, A, B, C>: functor F over three operands broadcast together (where, clamp).
#pragma once

#include <ember/expr/concepts.hpp>
#include <ember/expr/functors.hpp>

#include <utility>

namespace ember::expr {

template <class F, class A, class B, class C>
struct ternary : expression_base<ternary<F, A, B, C>> {
  using value_type = value_type_t<B>;
  static constexpr std::size_t leaf_count = A::leaf_count + B::leaf_count + C::leaf_count;
  A a;
  B b;
  C c;
  ember::shape shape_;

  ternary(A x, B y, C z)
      : a(std::move(x)), b(std::move(y)), c(std::move(z)),
        shape_(broadcast_shapes(broadcast_shapes(a.shape(), b.shape(), name(F::id).data()),
                                c.shape(), name(F::id).data())) {}
  const ember::shape& shape() const { return shape_; }
};

}  // namespace ember::expr
