// torch.optim.RMSprop: alpha, eps, momentum, centered, weight decay, maximize
// (Note [Optimizer steps]).
#pragma once

#include <ember/eval/assign.hpp>
#include <ember/expr/operators.hpp>
#include <ember/optim/optimizer.hpp>

#include <initializer_list>

namespace ember::optim {

struct rmsprop_options {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0;
  double momentum = 0;
  bool centered = false;
  bool maximize = false;
};

template <class T>
struct rmsprop_state {
  std::int64_t step = 0;
  tensor<T> square_avg, momentum_buffer, grad_avg;
};

/// em::optim::rmsprop opt(params, {.lr = 0.01}); per step, with d = grad + weight_decay * p:
///   sq = alpha sq + (1 - alpha) d^2;  avg = sqrt(sq) + eps
///   (centered: ga = alpha ga + (1 - alpha) d;  avg = sqrt(sq - ga^2) + eps)
///   momentum: buf = momentum buf + d / avg, p -= lr buf;  else p -= lr d / avg
template <class T = float>
class rmsprop : public optimizer<rmsprop<T>, T, rmsprop_options, rmsprop_state<T>> {
  using base = optimizer<rmsprop<T>, T, rmsprop_options, rmsprop_state<T>>;

 public:
  static constexpr const char* name = "rmsprop";
  rmsprop(std::vector<tensor<T>> params, const rmsprop_options& o = {}) : base(std::move(params), o) {}
  rmsprop(std::vector<param_group<T, rmsprop_options>> groups, const rmsprop_options& o = {})
      : base(std::move(groups), o) {}

  static void check_options(const rmsprop_options& o) {
    detail::check_hyper(o.lr >= 0, name, "learning rate", o.lr);
    detail::check_hyper(o.eps >= 0, name, "epsilon value", o.eps);
    detail::check_hyper(o.momentum >= 0, name, "momentum value", o.momentum);
    detail::check_hyper(o.weight_decay >= 0, name, "weight_decay value", o.weight_decay);
    detail::check_hyper(o.alpha >= 0, name, "alpha value", o.alpha);
  }

  /// The options and state under their PyTorch names (Note [Optimizer state_dict]).
  template <class O, class F>
  static void visit_options(O& o, F&& f) {
    f("lr", o.lr);
    f("alpha", o.alpha);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("momentum", o.momentum);
    f("centered", o.centered);
    f("maximize", o.maximize);
  }
  template <class S, class F>
  static void visit_state(S& s, const rmsprop_options& o, F&& f) {
    f("step", s.step, true);
    f("square_avg", s.square_avg, true);
    f("momentum_buffer", s.momentum_buffer, o.momentum > 0);
    f("grad_avg", s.grad_avg, o.centered);
  }

  void update(tensor<T>& p, const tensor<T>& g, const rmsprop_options& o, rmsprop_state<T>& s) {
    if (s.step == 0) {
      s.square_avg = detail::zeros_like_param(p);
      if (o.momentum > 0) s.momentum_buffer = detail::zeros_like_param(p);
      if (o.centered) s.grad_avg = detail::zeros_like_param(p);
    }
    ++s.step;
    const T alpha = static_cast<T>(o.alpha), eps = static_cast<T>(o.eps), lr = static_cast<T>(o.lr);
    const T sign = o.maximize ? T(-1) : T(1);
    const auto d = g * sign + p * static_cast<T>(o.weight_decay);
    detail::assign_step(s.square_avg, s.square_avg * alpha + d * d * (T(1) - alpha));
    if (o.centered) {
      detail::assign_step(s.grad_avg, s.grad_avg * alpha + d * (T(1) - alpha));
      const auto avg = ember::sqrt(s.square_avg - s.grad_avg * s.grad_avg) + eps;
      if (o.momentum > 0) {
        detail::assign_step(s.momentum_buffer, s.momentum_buffer * static_cast<T>(o.momentum) + d / avg);
        detail::assign_step(p, p - s.momentum_buffer * lr);
      } else {
        detail::assign_step(p, p - d * lr / avg);
      }
      return;
    }
    const auto avg = ember::sqrt(s.square_avg) + eps;
    if (o.momentum > 0) {
      detail::assign_step(s.momentum_buffer, s.momentum_buffer * static_cast<T>(o.momentum) + d / avg);
      detail::assign_step(p, p - s.momentum_buffer * lr);
    } else {
      detail::assign_step(p, p - d * lr / avg);
    }
  }
};

template <class T>
rmsprop(std::vector<tensor<T>>, const rmsprop_options&) -> rmsprop<T>;
template <class T>
rmsprop(std::vector<tensor<T>>) -> rmsprop<T>;
template <class T>
rmsprop(std::vector<param_group<T, rmsprop_options>>, const rmsprop_options&) -> rmsprop<T>;
template <class T>
rmsprop(std::initializer_list<tensor<T>>, const rmsprop_options&) -> rmsprop<T>;
template <class T>
rmsprop(std::initializer_list<tensor<T>>) -> rmsprop<T>;

}  // namespace ember::optim
