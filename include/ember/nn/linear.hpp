// nn::linear (y = x W^T + b) and nn::identity, with PyTorch's initialization and keys.
#pragma once

#include <ember/nn/init.hpp>
#include <ember/nn/module.hpp>
#include <ember/nn/repr.hpp>
#include <ember/ops/factory.hpp>
#include <ember/ops/matmul.hpp>

#include <boost/hana/define_struct.hpp>

#include <cmath>
#include <cstdint>
#include <string>

namespace ember::nn {

/// Options of linear: features in and out, and whether there is a bias.
struct linear_options {
  std::int64_t in = 0;
  std::int64_t out = 0;
  bool bias = true;
};

/// A fully connected layer: weight (out, in), bias (out); PyTorch's default initialization
/// (kaiming_uniform(a = sqrt(5)) for the weight, U(-1/sqrt(in), 1/sqrt(in)) for the bias).
///   em::nn::linear fc(64, 32);   auto y = fc(x);   // x (..., 64) -> y (..., 32)
template <class T = float>
class basic_linear : public module<basic_linear<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_linear, (tensor<T>, weight), (tensor<T>, bias));

  basic_linear(std::int64_t in, std::int64_t out, bool with_bias = true)
      : basic_linear(linear_options{in, out, with_bias}) {}
  explicit basic_linear(const linear_options& o) : options(o) {
    ember::detail::check(o.in >= 0 && o.out >= 0, errc::value,
                         "linear: feature counts must be >= 0, got in = ", o.in, ", out = ", o.out);
    weight = empty<T>({o.out, o.in}).requires_grad_();
    if (o.bias) bias = empty<T>({o.out}).requires_grad_();
    reset_parameters();
  }

  void reset_parameters() {
    if (weight.numel() > 0) init::kaiming_uniform_(weight, {.a = std::sqrt(5.0)});
    if (bias.defined()) {
      const double bound = options.in > 0 ? 1.0 / std::sqrt(static_cast<double>(options.in)) : 0.0;
      init::uniform_(bias, -bound, bound);
    }
  }

  tensor<T> forward(const tensor<T>& x) {
    return bias.defined() ? functional::linear(x, weight, bias) : functional::linear(x, weight);
  }

  std::string type_name() const override { return "Linear"; }
  std::string extra_repr() const override {
    return "in_features=" + std::to_string(options.in) + ", out_features=" +
           std::to_string(options.out) + ", bias=" + detail::py_bool(bias.defined());
  }

  linear_options options;
};
using linear = basic_linear<float>;

/// The identity: forward returns its input (a placeholder in containers).
class identity : public module<identity> {
 public:
  template <class X>
  X forward(const X& x) const {
    return x;
  }
  std::string type_name() const override { return "Identity"; }
};

}  // namespace ember::nn
