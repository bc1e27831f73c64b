// cast<U, A>: converts the operand's elements to U (the only node that changes element type).
#pragma once

#include <ember/expr/concepts.hpp>

#include <utility>

namespace ember::expr {

template <class U, class A>
struct cast : expression_base<cast<U, A>> {
  using value_type = U;
  static constexpr std::size_t leaf_count = A::leaf_count;
  A a;

  explicit cast(A x) : a(std::move(x)) {}
  const ember::shape& shape() const { return a.shape(); }
};

}  // namespace ember::expr
