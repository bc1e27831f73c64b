// Leaf nodes: leaf<T> holds a tensor handle BY VALUE (so `auto e = a + b;` can never dangle);
// scalar<T> is a 0-d leaf holding its value inline (broadcast like any 0-d tensor).
#pragma once

#include <ember/expr/concepts.hpp>
#include <ember/tensor.hpp>

#include <utility>

namespace ember::expr {

template <class T>
struct leaf : expression_base<leaf<T>> {
  using value_type = T;
  static constexpr std::size_t leaf_count = 1;
  tensor<T> t;

  explicit leaf(tensor<T> x) : t(std::move(x)) {
    detail::check(t.defined(), errc::value, "expression: an operand tensor is undefined");
  }
  const ember::shape& shape() const { return t.shape(); }
  ember::device device() const { return t.device(); }
};

template <class T>
struct scalar : expression_base<scalar<T>> {
  using value_type = T;
  static constexpr std::size_t leaf_count = 0;
  T value;

  explicit scalar(T v) : value(v) {}
  const ember::shape& shape() const {
    static const ember::shape none{};
    return none;
  }
};

}  // namespace ember::expr
