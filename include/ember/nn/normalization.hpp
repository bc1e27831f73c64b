// Normalization layers: batch_norm1d, batch_norm2d (running statistics as buffers, with
// num_batches_tracked), layer_norm and group_norm, with PyTorch's keys, defaults and printout.
#pragma once

#include <ember/nn/module.hpp>
#include <ember/nn/repr.hpp>
#include <ember/ops/factory.hpp>
#include <ember/ops/norm.hpp>

#include <boost/hana/define_struct.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace ember::nn {

/// Options of batch_norm1d/2d. momentum = nullopt uses the cumulative average of all batches
/// seen (PyTorch's momentum=None).
struct batch_norm_options {
  std::int64_t num_features = 0;
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
};

}  // namespace ember::nn

namespace ember::detail {

/// Batch normalization over dim 1; Rank says which input ranks the layer accepts.
template <class Derived, class T>
class batch_norm_base : public nn::module<Derived, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(batch_norm_base, (tensor<T>, weight), (tensor<T>, bias),
                           (nn::buffer<T>, running_mean), (nn::buffer<T>, running_var),
                           (nn::buffer<std::int64_t>, num_batches_tracked));

  explicit batch_norm_base(const nn::batch_norm_options& o) : options(o) {
    ember::detail::check(o.num_features > 0, errc::value, type_label(),
                         ": num_features must be positive, got ", o.num_features);
    ember::detail::check(o.eps >= 0, errc::value, type_label(), ": eps must be >= 0, got ", o.eps);
    if (o.affine) {
      weight = ones<T>({o.num_features}).requires_grad_();
      bias = zeros<T>({o.num_features}).requires_grad_();
    }
    if (o.track_running_stats) {
      running_mean = zeros<T>({o.num_features});
      running_var = ones<T>({o.num_features});
      num_batches_tracked = zeros<std::int64_t>({});
    }
  }

  /// Resets the running statistics to mean 0, variance 1, no batches seen.
  void reset_running_stats() {
    if (!options.track_running_stats) return;
    running_mean.zero_();
    running_var.fill_(T(1));
    num_batches_tracked.zero_();
  }

  tensor<T> forward(const tensor<T>& x) {
    static_cast<Derived&>(*this).check_input(x);
    ember::detail::check(x.size(1) == options.num_features, errc::shape, type_label(), ": expected ",
                         options.num_features, " channels (dim 1) but the input has shape ", x.shape());
    double factor = options.momentum.value_or(0.0);
    const bool training = this->is_training();
    if (training && options.track_running_stats) {
      num_batches_tracked.fill_(num_batches_tracked.item() + 1);
      if (!options.momentum) factor = 1.0 / static_cast<double>(num_batches_tracked.item());
    }
    const bool batch_stats = training || !options.track_running_stats;
    return nn::functional::batch_norm(x, running_mean, running_var,
                                  {.weight = weight, .bias = bias, .training = batch_stats,
                                   .momentum = factor, .eps = options.eps});
  }

  std::string extra_repr() const override {
    return std::to_string(options.num_features) + ", eps=" + py_float(options.eps) + ", momentum=" +
           (options.momentum ? py_float(*options.momentum) : std::string("None")) +
           ", affine=" + py_bool(options.affine) +
           ", track_running_stats=" + py_bool(options.track_running_stats);
  }

  nn::batch_norm_options options;

 private:
  // Derived's static name, not its virtual type_name(): the constructor's checks run before
  // Derived exists (a downcast there is undefined behaviour; clang's UBSan flags it)
  static std::string type_label() { return Derived::label; }
};

}  // namespace ember::detail

namespace ember::nn {

/// Batch normalization of (N, C) or (N, C, L) inputs over the batch (and length) dims.
///   em::nn::batch_norm1d bn(32);   bn.train();  auto y = bn(x);   // updates running stats
template <class T = float>
class basic_batch_norm1d : public detail::batch_norm_base<basic_batch_norm1d<T>, T> {
 public:
  explicit basic_batch_norm1d(std::int64_t num_features)
      : basic_batch_norm1d(batch_norm_options{.num_features = num_features}) {}
  explicit basic_batch_norm1d(const batch_norm_options& o)
      : detail::batch_norm_base<basic_batch_norm1d<T>, T>(o) {}
  void check_input(const tensor<T>& x) const {
    ember::detail::check(x.dim() == 2 || x.dim() == 3, errc::shape,
                         "BatchNorm1d: expected a 2-D or 3-D input (N, C[, L]), got shape ", x.shape());
  }
  static constexpr const char* label = "BatchNorm1d";
  std::string type_name() const override { return label; }
};
using batch_norm1d = basic_batch_norm1d<float>;

/// Batch normalization of (N, C, H, W) inputs over the batch and spatial dims.
template <class T = float>
class basic_batch_norm2d : public detail::batch_norm_base<basic_batch_norm2d<T>, T> {
 public:
  explicit basic_batch_norm2d(std::int64_t num_features)
      : basic_batch_norm2d(batch_norm_options{.num_features = num_features}) {}
  explicit basic_batch_norm2d(const batch_norm_options& o)
      : detail::batch_norm_base<basic_batch_norm2d<T>, T>(o) {}
  void check_input(const tensor<T>& x) const {
    ember::detail::check(x.dim() == 4, errc::shape,
                         "BatchNorm2d: expected a 4-D input (N, C, H, W), got shape ", x.shape());
  }
  static constexpr const char* label = "BatchNorm2d";
  std::string type_name() const override { return label; }
};
using batch_norm2d = basic_batch_norm2d<float>;

/// Options of layer_norm: the trailing dims to normalize over.
struct layer_norm_options {
  shape normalized_shape{};
  double eps = 1e-5;
  bool elementwise_affine = true;
};

/// Layer normalization over the trailing `normalized_shape` dims, with an elementwise affine.
///   em::nn::layer_norm ln({64});   // or ln({.normalized_shape = {64}, .eps = 1e-6})
template <class T = float>
class basic_layer_norm : public module<basic_layer_norm<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_layer_norm, (tensor<T>, weight), (tensor<T>, bias));

  explicit basic_layer_norm(const shape& normalized_shape)
      : basic_layer_norm(layer_norm_options{.normalized_shape = normalized_shape}) {}
  explicit basic_layer_norm(const layer_norm_options& o) : options(o) {
    ember::detail::check(o.normalized_shape.size() > 0, errc::value,
                         "LayerNorm: normalized_shape must have at least one dim");
    if (o.elementwise_affine) {
      weight = ones<T>(o.normalized_shape).requires_grad_();
      bias = zeros<T>(o.normalized_shape).requires_grad_();
    }
  }

  tensor<T> forward(const tensor<T>& x) {
    return functional::layer_norm(x, {.normalized_shape = options.normalized_shape, .weight = weight,
                                      .bias = bias, .eps = options.eps});
  }

  std::string type_name() const override { return "LayerNorm"; }
  std::string extra_repr() const override {
    return detail::py_tuple(options.normalized_shape) + ", eps=" + detail::py_float(options.eps) +
           ", elementwise_affine=" + detail::py_bool(options.elementwise_affine);
  }

  layer_norm_options options;
};
using layer_norm = basic_layer_norm<float>;

/// Options of group_norm.
struct group_norm_options {
  std::int64_t num_groups = 0;
  std::int64_t num_channels = 0;
  double eps = 1e-5;
  bool affine = true;
};

/// Group normalization: channels split in num_groups groups, each normalized over its
/// channels and the spatial dims.   em::nn::group_norm gn(2, 8);
template <class T = float>
class basic_group_norm : public module<basic_group_norm<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_group_norm, (tensor<T>, weight), (tensor<T>, bias));

  basic_group_norm(std::int64_t num_groups, std::int64_t num_channels)
      : basic_group_norm(group_norm_options{.num_groups = num_groups, .num_channels = num_channels}) {}
  explicit basic_group_norm(const group_norm_options& o) : options(o) {
    ember::detail::check(o.num_groups > 0 && o.num_channels > 0 && o.num_channels % o.num_groups == 0,
                         errc::value, "GroupNorm: num_channels = ", o.num_channels,
                         " must be a positive multiple of num_groups = ", o.num_groups);
    if (o.affine) {
      weight = ones<T>({o.num_channels}).requires_grad_();
      bias = zeros<T>({o.num_channels}).requires_grad_();
    }
  }

  tensor<T> forward(const tensor<T>& x) {
    return functional::group_norm(x, options.num_groups,
                                  {.weight = weight, .bias = bias, .eps = options.eps});
  }

  std::string type_name() const override { return "GroupNorm"; }
  std::string extra_repr() const override {
    return std::to_string(options.num_groups) + ", " + std::to_string(options.num_channels) +
           ", eps=" + detail::py_float(options.eps) + ", affine=" + detail::py_bool(options.affine);
  }

  group_norm_options options;
};
using group_norm = basic_group_norm<float>;

}  // namespace ember::nn
