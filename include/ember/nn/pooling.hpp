// Pooling and reshaping layers: max_pool2d, avg_pool2d, adaptive_avg_pool2d, flatten.
#pragma once

#include <ember/expr/concepts.hpp>
#include <ember/nn/module.hpp>
#include <ember/nn/repr.hpp>
#include <ember/ops/pool.hpp>

#include <cstdint>
#include <string>

namespace ember::nn {

/// Max pooling over (N, C, H, W); stride defaults to the kernel.
///   em::nn::max_pool2d mp({.kernel = 2, .stride = 2});
class max_pool2d : public module<max_pool2d> {
 public:
  explicit max_pool2d(const functional::max_pool2d_options& o) : options(o) {}
  template <operand E>
  tensor<value_type_t<E>> forward(const E& x) const {
    return functional::max_pool2d(x, options);
  }
  std::string type_name() const override { return "MaxPool2d"; }
  std::string extra_repr() const override {
    const size2 stride = options.stride == size2(0) ? options.kernel : options.stride;
    return "kernel_size=" + detail::py_size(options.kernel) + ", stride=" + detail::py_size(stride) +
           ", padding=" + detail::py_size(options.padding) + ", dilation=" +
           detail::py_size(options.dilation) + ", ceil_mode=" + detail::py_bool(options.ceil_mode);
  }
  functional::max_pool2d_options options;
};

/// Average pooling over (N, C, H, W); stride defaults to the kernel.
class avg_pool2d : public module<avg_pool2d> {
 public:
  explicit avg_pool2d(const functional::avg_pool2d_options& o) : options(o) {}
  template <operand E>
  tensor<value_type_t<E>> forward(const E& x) const {
    return functional::avg_pool2d(x, options);
  }
  std::string type_name() const override { return "AvgPool2d"; }
  std::string extra_repr() const override {
    const size2 stride = options.stride == size2(0) ? options.kernel : options.stride;
    return "kernel_size=" + detail::py_size(options.kernel) + ", stride=" + detail::py_size(stride) +
           ", padding=" + detail::py_size(options.padding);
  }
  functional::avg_pool2d_options options;
};

/// Average pooling to a fixed output size.   em::nn::adaptive_avg_pool2d ap({.output_size = 1});
class adaptive_avg_pool2d : public module<adaptive_avg_pool2d> {
 public:
  explicit adaptive_avg_pool2d(const functional::adaptive_avg_pool2d_options& o) : options(o) {}
  template <operand E>
  tensor<value_type_t<E>> forward(const E& x) const {
    return functional::adaptive_avg_pool2d(x, options);
  }
  std::string type_name() const override { return "AdaptiveAvgPool2d"; }
  std::string extra_repr() const override { return "output_size=" + detail::py_size(options.output_size); }
  functional::adaptive_avg_pool2d_options options;
};

/// Options of flatten: the (inclusive) range of dims merged into one.
struct flatten_options {
  std::int64_t start_dim = 1;
  std::int64_t end_dim = -1;
};

/// Merges dims start_dim..end_dim (by default all but the batch dim).   em::nn::flatten fl;
class flatten : public module<flatten> {
 public:
  flatten() = default;
  explicit flatten(const flatten_options& o) : options(o) {}
  template <operand E>
  tensor<value_type_t<E>> forward(const E& x) const {
    const tensor<value_type_t<E>> t = x;
    return t.flatten(options.start_dim, options.end_dim);
  }
  std::string type_name() const override { return "Flatten"; }
  std::string extra_repr() const override {
    return "start_dim=" + std::to_string(options.start_dim) + ", end_dim=" + std::to_string(options.end_dim);
  }
  flatten_options options;
};

}  // namespace ember::nn
