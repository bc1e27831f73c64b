// Activation layers: relu gelu silu tanh sigmoid leaky_relu elu softmax log_softmax, as modules
// without parameters (forward works for any floating element type).
#pragma once

#include <ember/expr/concepts.hpp>
#include <ember/expr/operators.hpp>
#include <ember/nn/module.hpp>
#include <ember/nn/repr.hpp>
#include <ember/ops/softmax.hpp>

#include <cstdint>
#include <string>

namespace ember::nn {

}  // namespace ember::nn

namespace ember::detail {
/// An elementwise activation: forward materializes F(x) (one fused pass).
template <class Derived>
class activation_module : public nn::module<Derived> {
 public:
  template <operand E>
  tensor<value_type_t<E>> forward(const E& x) const {
    return static_cast<const Derived&>(*this).apply_to(x);
  }
};
}  // namespace ember::detail

namespace ember::nn {

/// max(x, 0).   em::nn::relu r;  auto y = r(x);
class relu : public detail::activation_module<relu> {
 public:
  template <class E> auto apply_to(const E& x) const { return ember::relu(x); }
  std::string type_name() const override { return "ReLU"; }
};

/// Options of gelu: "none" (the exact erf form) or "tanh" (the tanh approximation).
struct gelu_options {
  std::string approximate = "none";
};
class gelu : public detail::activation_module<gelu> {
 public:
  gelu() = default;
  explicit gelu(gelu_options o) : options(std::move(o)) {
    ember::detail::check(options.approximate == "none" || options.approximate == "tanh", errc::value,
                         "GELU: approximate must be 'none' or 'tanh', got '", options.approximate, "'");
  }
  template <class E> tensor<value_type_t<E>> apply_to(const E& x) const {
    if (options.approximate == "tanh") return ember::gelu_tanh(x);
    return ember::gelu(x);
  }
  std::string type_name() const override { return "GELU"; }
  std::string extra_repr() const override { return "approximate='" + options.approximate + "'"; }
  gelu_options options;
};

class silu : public detail::activation_module<silu> {
 public:
  template <class E> auto apply_to(const E& x) const { return ember::silu(x); }
  std::string type_name() const override { return "SiLU"; }
};

class tanh : public detail::activation_module<tanh> {
 public:
  template <class E> auto apply_to(const E& x) const { return ember::tanh(x); }
  std::string type_name() const override { return "Tanh"; }
};

class sigmoid : public detail::activation_module<sigmoid> {
 public:
  template <class E> auto apply_to(const E& x) const { return ember::sigmoid(x); }
  std::string type_name() const override { return "Sigmoid"; }
};

/// max(x, slope x); slope defaults to 0.01.
class leaky_relu : public detail::activation_module<leaky_relu> {
 public:
  explicit leaky_relu(double negative_slope = 0.01) : negative_slope(negative_slope) {}
  template <class E> auto apply_to(const E& x) const {
    return ember::leaky_relu(x, static_cast<value_type_t<E>>(negative_slope));
  }
  std::string type_name() const override { return "LeakyReLU"; }
  std::string extra_repr() const override { return "negative_slope=" + detail::py_float(negative_slope); }
  double negative_slope;
};

/// x for x > 0, alpha (e^x - 1) otherwise.
class elu : public detail::activation_module<elu> {
 public:
  explicit elu(double alpha = 1.0) : alpha(alpha) {}
  template <class E> auto apply_to(const E& x) const {
    return ember::elu(x, static_cast<value_type_t<E>>(alpha));
  }
  std::string type_name() const override { return "ELU"; }
  std::string extra_repr() const override { return "alpha=" + detail::py_float(alpha); }
  double alpha;
};

/// softmax over `dim` (required, as PyTorch recommends).   em::nn::softmax sm(1);
class softmax : public module<softmax> {
 public:
  explicit softmax(std::int64_t dim) : dim(dim) {}
  template <operand E>
  tensor<value_type_t<E>> forward(const E& x) const {
    return functional::softmax(x, dim);
  }
  std::string type_name() const override { return "Softmax"; }
  std::string extra_repr() const override { return "dim=" + std::to_string(dim); }
  std::int64_t dim;
};

class log_softmax : public module<log_softmax> {
 public:
  explicit log_softmax(std::int64_t dim) : dim(dim) {}
  template <operand E>
  tensor<value_type_t<E>> forward(const E& x) const {
    return functional::log_softmax(x, dim);
  }
  std::string type_name() const override { return "LogSoftmax"; }
  std::string extra_repr() const override { return "dim=" + std::to_string(dim); }
  std::int64_t dim;
};

}  // namespace ember::nn
