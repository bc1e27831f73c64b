// nn::conv1d and nn::conv2d layers: weight (out, in/groups, k...), optional bias, PyTorch's
// initialization, keys and printout.
#pragma once

#include <ember/nn/init.hpp>
#include <ember/nn/module.hpp>
#include <ember/nn/repr.hpp>
#include <ember/ops/conv.hpp>
#include <ember/ops/factory.hpp>

#include <boost/hana/define_struct.hpp>

#include <cmath>
#include <cstdint>
#include <string>

namespace ember::nn {

/// Options of conv2d; 2-D sizes take one integer or {h, w}:
///   em::nn::conv2d c({.in = 1, .out = 8, .kernel = 3, .stride = 1, .padding = 1});
struct conv2d_options {
  std::int64_t in = 0;
  std::int64_t out = 0;
  size2 kernel = 0;
  size2 stride = 1;
  size2 padding = 0;
  size2 dilation = 1;
  std::int64_t groups = 1;
  bool bias = true;
};

/// Options of conv1d (sizes are integers).
struct conv1d_options {
  std::int64_t in = 0;
  std::int64_t out = 0;
  std::int64_t kernel = 0;
  std::int64_t stride = 1;
  std::int64_t padding = 0;
  std::int64_t dilation = 1;
  std::int64_t groups = 1;
  bool bias = true;
};

}  // namespace ember::nn

namespace ember::detail {
inline void check_conv_options(const char* op, std::int64_t in, std::int64_t out, std::int64_t groups,
                               bool kernel_ok, bool stride_ok, bool padding_ok, bool dilation_ok) {
  ember::detail::check(in > 0 && out > 0, errc::value, op, ": in and out must be positive, got in = ",
                       in, ", out = ", out);
  ember::detail::check(groups > 0 && in % groups == 0 && out % groups == 0, errc::value, op,
                       ": groups = ", groups, " must divide in = ", in, " and out = ", out);
  ember::detail::check(kernel_ok, errc::value, op, ": the kernel size must be positive");
  ember::detail::check(stride_ok, errc::value, op, ": the stride must be positive");
  ember::detail::check(padding_ok, errc::value, op, ": the padding must be >= 0");
  ember::detail::check(dilation_ok, errc::value, op, ": the dilation must be positive");
}

/// PyTorch's _ConvNd.reset_parameters: kaiming_uniform(a = sqrt(5)) and a bias bound of
/// 1/sqrt(fan_in).
template <class T>
void reset_conv(tensor<T>& weight, tensor<T>& bias) {
  nn::init::kaiming_uniform_(weight, {.a = std::sqrt(5.0)});
  if (bias.defined()) {
    const auto fan_in = nn::init::calculate_fan_in_and_fan_out(weight).first;
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    nn::init::uniform_(bias, -bound, bound);
  }
}
}  // namespace ember::detail

namespace ember::nn {

/// 2-D convolution over (N, C, H, W) or (C, H, W) inputs.
template <class T = float>
class basic_conv2d : public module<basic_conv2d<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_conv2d, (tensor<T>, weight), (tensor<T>, bias));

  explicit basic_conv2d(const conv2d_options& o) : options(o) {
    detail::check_conv_options("conv2d", o.in, o.out, o.groups, o.kernel.h > 0 && o.kernel.w > 0,
                               o.stride.h > 0 && o.stride.w > 0, o.padding.h >= 0 && o.padding.w >= 0,
                               o.dilation.h > 0 && o.dilation.w > 0);
    weight = empty<T>({o.out, o.in / o.groups, o.kernel.h, o.kernel.w}).requires_grad_();
    if (o.bias) bias = empty<T>({o.out}).requires_grad_();
    reset_parameters();
  }
  void reset_parameters() { detail::reset_conv(weight, bias); }

  tensor<T> forward(const tensor<T>& x) {
    return functional::conv2d(x, weight, {.bias = bias, .stride = options.stride, .padding = options.padding,
                                          .dilation = options.dilation, .groups = options.groups});
  }

  std::string type_name() const override { return "Conv2d"; }
  std::string extra_repr() const override {
    std::string s = std::to_string(options.in) + ", " + std::to_string(options.out) +
                    ", kernel_size=" + detail::py_tuple(options.kernel) +
                    ", stride=" + detail::py_tuple(options.stride);
    if (options.padding != size2(0)) s += ", padding=" + detail::py_tuple(options.padding);
    if (options.dilation != size2(1)) s += ", dilation=" + detail::py_tuple(options.dilation);
    if (options.groups != 1) s += ", groups=" + std::to_string(options.groups);
    if (!bias.defined()) s += ", bias=False";
    return s;
  }

  conv2d_options options;
};
using conv2d = basic_conv2d<float>;

/// 1-D convolution over (N, C, L) or (C, L) inputs.
template <class T = float>
class basic_conv1d : public module<basic_conv1d<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_conv1d, (tensor<T>, weight), (tensor<T>, bias));

  explicit basic_conv1d(const conv1d_options& o) : options(o) {
    detail::check_conv_options("conv1d", o.in, o.out, o.groups, o.kernel > 0, o.stride > 0,
                               o.padding >= 0, o.dilation > 0);
    weight = empty<T>({o.out, o.in / o.groups, o.kernel}).requires_grad_();
    if (o.bias) bias = empty<T>({o.out}).requires_grad_();
    reset_parameters();
  }
  void reset_parameters() { detail::reset_conv(weight, bias); }

  tensor<T> forward(const tensor<T>& x) {
    return functional::conv1d(x, weight, {.bias = bias, .stride = options.stride, .padding = options.padding,
                                          .dilation = options.dilation, .groups = options.groups});
  }

  std::string type_name() const override { return "Conv1d"; }
  std::string extra_repr() const override {
    std::string s = std::to_string(options.in) + ", " + std::to_string(options.out) +
                    ", kernel_size=" + detail::py_tuple(options.kernel) +
                    ", stride=" + detail::py_tuple(options.stride);
    if (options.padding != 0) s += ", padding=" + detail::py_tuple(options.padding);
    if (options.dilation != 1) s += ", dilation=" + detail::py_tuple(options.dilation);
    if (options.groups != 1) s += ", groups=" + std::to_string(options.groups);
    if (!bias.defined()) s += ", bias=False";
    return s;
  }

  conv1d_options options;
};
using conv1d = basic_conv1d<float>;

}  // namespace ember::nn
