// torch.optim.Adam and AdamW: bias correction, amsgrad, weight decay (L2 for Adam, decoupled
// for AdamW), maximize (Note [Optimizer steps]).
#pragma once

#include <ember/eval/assign.hpp>
#include <ember/expr/operators.hpp>
#include <ember/optim/optimizer.hpp>

#include <initializer_list>

#include <array>
#include <cmath>
#include <cstdint>

namespace ember::optim {

struct adam_options {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0;
  bool amsgrad = false;
  bool maximize = false;
};

struct adamw_options {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
  bool maximize = false;
};

template <class T>
struct adam_state {
  std::int64_t step = 0;
  tensor<T> exp_avg, exp_avg_sq, max_exp_avg_sq;
};

namespace detail {

template <class O>
void check_adam_options(const O& o, const char* name) {
  check_hyper(o.lr >= 0, name, "learning rate", o.lr);
  check_hyper(o.eps >= 0, name, "epsilon value", o.eps);
  check_hyper(o.betas[0] >= 0 && o.betas[0] < 1, name, "beta parameter at index 0", o.betas[0]);
  check_hyper(o.betas[1] >= 0 && o.betas[1] < 1, name, "beta parameter at index 1", o.betas[1]);
  check_hyper(o.weight_decay >= 0, name, "weight_decay value", o.weight_decay);
}

/// The options and state of Adam and AdamW under their PyTorch names.
template <class O, class F>
void visit_adam_options(O& o, F&& f) {
  f("lr", o.lr);
  f("betas", o.betas);
  f("eps", o.eps);
  f("weight_decay", o.weight_decay);
  f("amsgrad", o.amsgrad);
  f("maximize", o.maximize);
}
template <class S, class F>
void visit_adam_state(S& s, bool amsgrad, F&& f) {
  f("step", s.step, true);
  f("exp_avg", s.exp_avg, true);
  f("exp_avg_sq", s.exp_avg_sq, true);
  f("max_exp_avg_sq", s.max_exp_avg_sq, amsgrad);
}

/// One Adam step; decoupled: AdamW's p * (1 - lr * weight_decay) instead of L2 in the gradient.
template <bool Decoupled, class T, class O>
void adam_update(tensor<T>& p, const tensor<T>& g, const O& o, adam_state<T>& s) {
  if (s.step == 0) {
    s.exp_avg = zeros_like_param(p);
    s.exp_avg_sq = zeros_like_param(p);
    if (o.amsgrad) s.max_exp_avg_sq = zeros_like_param(p);
  }
  ++s.step;
  const T b1 = static_cast<T>(o.betas[0]), b2 = static_cast<T>(o.betas[1]);
  const T sign = o.maximize ? T(-1) : T(1);
  const T wd = Decoupled ? T(0) : static_cast<T>(o.weight_decay);
  const auto d = g * sign + p * wd;
  detail::assign_step(s.exp_avg, s.exp_avg * b1 + d * (T(1) - b1));
  detail::assign_step(s.exp_avg_sq, s.exp_avg_sq * b2 + d * d * (T(1) - b2));
  const double k = static_cast<double>(s.step);
  const T step_size = static_cast<T>(o.lr / (1 - std::pow(o.betas[0], k)));
  const T bc2_sqrt = static_cast<T>(std::sqrt(1 - std::pow(o.betas[1], k)));
  const T eps = static_cast<T>(o.eps);
  const T decay = Decoupled ? static_cast<T>(1 - o.lr * o.weight_decay) : T(1);
  const tensor<T>& v = o.amsgrad ? s.max_exp_avg_sq : s.exp_avg_sq;
  if (o.amsgrad) detail::assign_step(s.max_exp_avg_sq, ember::maximum(s.max_exp_avg_sq, s.exp_avg_sq));
  detail::assign_step(p, p * decay - s.exp_avg * step_size / (ember::sqrt(v) / bc2_sqrt + eps));
}

}  // namespace detail

/// em::optim::adam opt(params, {.lr = 1e-3}); per step t, with d = grad + weight_decay * p:
///   m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2;  (amsgrad: vmax = max(vmax, v), used as v)
///   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
template <class T = float>
class adam : public optimizer<adam<T>, T, adam_options, adam_state<T>> {
  using base = optimizer<adam<T>, T, adam_options, adam_state<T>>;

 public:
  static constexpr const char* name = "adam";
  adam(std::vector<tensor<T>> params, const adam_options& o = {}) : base(std::move(params), o) {}
  adam(std::vector<param_group<T, adam_options>> groups, const adam_options& o = {})
      : base(std::move(groups), o) {}
  static void check_options(const adam_options& o) { detail::check_adam_options(o, name); }
  template <class O, class F>
  static void visit_options(O& o, F&& f) { detail::visit_adam_options(o, f); }
  template <class S, class F>
  static void visit_state(S& s, const adam_options& o, F&& f) { detail::visit_adam_state(s, o.amsgrad, f); }
  void update(tensor<T>& p, const tensor<T>& g, const adam_options& o, adam_state<T>& s) {
    detail::adam_update<false>(p, g, o, s);
  }
};

/// em::optim::adamw: Adam with decoupled weight decay, p *= 1 - lr * weight_decay before the
/// Adam update on the plain gradient (weight_decay defaults to 0.01, as PyTorch).
template <class T = float>
class adamw : public optimizer<adamw<T>, T, adamw_options, adam_state<T>> {
  using base = optimizer<adamw<T>, T, adamw_options, adam_state<T>>;

 public:
  static constexpr const char* name = "adamw";
  adamw(std::vector<tensor<T>> params, const adamw_options& o = {}) : base(std::move(params), o) {}
  adamw(std::vector<param_group<T, adamw_options>> groups, const adamw_options& o = {})
      : base(std::move(groups), o) {}
  static void check_options(const adamw_options& o) { detail::check_adam_options(o, name); }
  template <class O, class F>
  static void visit_options(O& o, F&& f) { detail::visit_adam_options(o, f); }
  template <class S, class F>
  static void visit_state(S& s, const adamw_options& o, F&& f) { detail::visit_adam_state(s, o.amsgrad, f); }
  void update(tensor<T>& p, const tensor<T>& g, const adamw_options& o, adam_state<T>& s) {
    detail::adam_update<true>(p, g, o, s);
  }
};

template <class T>
adam(std::vector<tensor<T>>, const adam_options&) -> adam<T>;
template <class T>
adam(std::vector<tensor<T>>) -> adam<T>;
template <class T>
adam(std::vector<param_group<T, adam_options>>, const adam_options&) -> adam<T>;
template <class T>
adam(std::initializer_list<tensor<T>>, const adam_options&) -> adam<T>;
template <class T>
adam(std::initializer_list<tensor<T>>) -> adam<T>;
template <class T>
adamw(std::vector<tensor<T>>, const adamw_options&) -> adamw<T>;
template <class T>
adamw(std::vector<tensor<T>>) -> adamw<T>;
template <class T>
adamw(std::vector<param_group<T, adamw_options>>, const adamw_options&) -> adamw<T>;
template <class T>
adamw(std::initializer_list<tensor<T>>, const adamw_options&) -> adamw<T>;
template <class T>
adamw(std::initializer_list<tensor<T>>) -> adamw<T>;

}  // namespace ember::optim
