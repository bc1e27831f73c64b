// Loss functions as modules (PyTorch's MSELoss L1Loss SmoothL1Loss HuberLoss BCEWithLogitsLoss
// NLLLoss CrossEntropyLoss): each is built from its functional form's options and forwards to it;
// class weights and pos_weight are buffers, so state_dict() has them exactly when PyTorch's does.
#pragma once

#include <ember/core/error.hpp>
#include <ember/nn/loss.hpp>
#include <ember/nn/module.hpp>
#include <ember/tensor.hpp>

#include <boost/hana/define_struct.hpp>

#include <string>
#include <utility>

namespace ember::detail {

/// Note [Loss weights are buffers]: a weighted loss keeps its weights in buffer members (the
/// state that state_dict, load_state_dict and to(device) see, as PyTorch's register_buffer) and
/// clears them from its stored options, so forward reads the one copy those act on. The buffer
/// is a detached handle on the caller's storage: no gradient, in-place changes are seen, and
/// one tensor passed as both weight and pos_weight still gives two state_dict keys (PyTorch's).
template <class T>
tensor<T> loss_weight_buffer(const tensor<T>& w) {
  return w.defined() ? w.detach() : w;
}

/// Class weights hold one value per class: a 1-D tensor (its length is checked in forward).
template <class T>
void check_class_weight_rank(const tensor<T>& w, const char* module) {
  check(!w.defined() || w.dim() == 1, errc::shape, module,
        ": weight must hold one value per class (a 1-D tensor), got shape ",
        w.defined() ? w.shape() : shape{});
}

}  // namespace ember::detail

namespace ember::nn {

/// Mean squared error, F::mse_loss.   em::nn::mse_loss crit;  auto l = crit(pred, target);
template <class T = float>
class basic_mse_loss : public module<basic_mse_loss<T>, T> {
 public:
  basic_mse_loss() = default;
  explicit basic_mse_loss(const functional::mse_loss_options& o) : options(o) {}

  tensor<T> forward(const tensor<T>& input, const tensor<T>& target) const {
    return functional::mse_loss(input, target, options);
  }
  std::string type_name() const override { return "MSELoss"; }

  functional::mse_loss_options options;
};
using mse_loss = basic_mse_loss<float>;

/// Mean absolute error, F::l1_loss.   em::nn::l1_loss crit({.reduction = em::nn::reduction::sum});
template <class T = float>
class basic_l1_loss : public module<basic_l1_loss<T>, T> {
 public:
  basic_l1_loss() = default;
  explicit basic_l1_loss(const functional::l1_loss_options& o) : options(o) {}

  tensor<T> forward(const tensor<T>& input, const tensor<T>& target) const {
    return functional::l1_loss(input, target, options);
  }
  std::string type_name() const override { return "L1Loss"; }

  functional::l1_loss_options options;
};
using l1_loss = basic_l1_loss<float>;

/// F::smooth_l1_loss: quadratic below beta, linear above.   em::nn::smooth_l1_loss crit({.beta = 0.5});
template <class T = float>
class basic_smooth_l1_loss : public module<basic_smooth_l1_loss<T>, T> {
 public:
  basic_smooth_l1_loss() = default;
  explicit basic_smooth_l1_loss(const functional::smooth_l1_loss_options& o) : options(o) {
    ember::detail::check(o.beta >= 0, errc::value, "SmoothL1Loss: beta must be >= 0, got ", o.beta);
  }

  tensor<T> forward(const tensor<T>& input, const tensor<T>& target) const {
    return functional::smooth_l1_loss(input, target, options);
  }
  std::string type_name() const override { return "SmoothL1Loss"; }

  functional::smooth_l1_loss_options options;
};
using smooth_l1_loss = basic_smooth_l1_loss<float>;

/// F::huber_loss: quadratic below delta, delta-scaled linear above.   em::nn::huber_loss crit({.delta = 2.0});
template <class T = float>
class basic_huber_loss : public module<basic_huber_loss<T>, T> {
 public:
  basic_huber_loss() = default;
  explicit basic_huber_loss(const functional::huber_loss_options& o) : options(o) {
    ember::detail::check(o.delta > 0, errc::value, "HuberLoss: delta must be > 0, got ", o.delta);
  }

  tensor<T> forward(const tensor<T>& input, const tensor<T>& target) const {
    return functional::huber_loss(input, target, options);
  }
  std::string type_name() const override { return "HuberLoss"; }

  functional::huber_loss_options options;
};
using huber_loss = basic_huber_loss<float>;

/// F::binary_cross_entropy_with_logits; weight and pos_weight are buffers (Note [Loss weights
/// are buffers]).   em::nn::bce_with_logits_loss crit({.pos_weight = pw});  auto l = crit(logits, probs);
template <class T = float>
class basic_bce_with_logits_loss : public module<basic_bce_with_logits_loss<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_bce_with_logits_loss, (buffer<T>, weight), (buffer<T>, pos_weight));

  basic_bce_with_logits_loss() = default;
  explicit basic_bce_with_logits_loss(functional::bce_with_logits_options<T> o) : options(std::move(o)) {
    weight = ember::detail::loss_weight_buffer(options.weight);
    pos_weight = ember::detail::loss_weight_buffer(options.pos_weight);
    options.weight = {};
    options.pos_weight = {};
  }

  tensor<T> forward(const tensor<T>& input, const tensor<T>& target) const {
    functional::bce_with_logits_options<T> o = options;
    o.weight = weight;
    o.pos_weight = pos_weight;
    return functional::binary_cross_entropy_with_logits(input, target, o);
  }
  std::string type_name() const override { return "BCEWithLogitsLoss"; }

  functional::bce_with_logits_options<T> options;  ///< its weight and pos_weight are the buffers
};
using bce_with_logits_loss = basic_bce_with_logits_loss<float>;

/// F::nll_loss of log-probabilities and int64 class targets; the class weights are the buffer
/// `weight`.   em::nn::nll_loss crit({.ignore_index = 0});  auto l = crit(logp, target);
template <class T = float>
class basic_nll_loss : public module<basic_nll_loss<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_nll_loss, (buffer<T>, weight));

  basic_nll_loss() = default;
  explicit basic_nll_loss(functional::nll_loss_options<T> o) : options(std::move(o)) {
    ember::detail::check_class_weight_rank(options.weight, "NLLLoss");
    weight = ember::detail::loss_weight_buffer(options.weight);
    options.weight = {};
  }

  template <class I>
  tensor<T> forward(const tensor<T>& input, const tensor<I>& target) const {
    functional::nll_loss_options<T> o = options;
    o.weight = weight;
    return functional::nll_loss(input, target, o);
  }
  std::string type_name() const override { return "NLLLoss"; }

  functional::nll_loss_options<T> options;  ///< its weight is the buffer
};
using nll_loss = basic_nll_loss<float>;

/// F::cross_entropy of logits and class targets (int64 indices, or probabilities of the
/// logits' shape); the class weights are the buffer `weight`.
///   em::nn::cross_entropy_loss crit({.weight = w, .label_smoothing = 0.1});  auto l = crit(logits, target);
template <class T = float>
class basic_cross_entropy_loss : public module<basic_cross_entropy_loss<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_cross_entropy_loss, (buffer<T>, weight));

  basic_cross_entropy_loss() = default;
  explicit basic_cross_entropy_loss(functional::cross_entropy_options<T> o) : options(std::move(o)) {
    ember::detail::check_class_weight_rank(options.weight, "CrossEntropyLoss");
    ember::detail::check_label_smoothing(options.label_smoothing, "CrossEntropyLoss");
    weight = ember::detail::loss_weight_buffer(options.weight);
    options.weight = {};
  }

  /// target: tensor<int64_t> of class indices, or tensor<T> of class probabilities.
  template <class U>
  tensor<T> forward(const tensor<T>& input, const tensor<U>& target) const {
    functional::cross_entropy_options<T> o = options;
    o.weight = weight;
    return functional::cross_entropy(input, target, o);
  }
  std::string type_name() const override { return "CrossEntropyLoss"; }

  functional::cross_entropy_options<T> options;  ///< its weight is the buffer
};
using cross_entropy_loss = basic_cross_entropy_loss<float>;

}  // namespace ember::nn
