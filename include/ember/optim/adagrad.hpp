// torch.optim.Adagrad: lr decay, weight decay, initial accumulator value, maximize
// (Note [Optimizer steps]).
#pragma once

#include <ember/eval/assign.hpp>
#include <ember/expr/operators.hpp>
#include <ember/optim/optimizer.hpp>

#include <initializer_list>

#include <cstdint>

namespace ember::optim {

struct adagrad_options {
  double lr = 1e-2;
  double lr_decay = 0;
  double weight_decay = 0;
  double initial_accumulator_value = 0;
  double eps = 1e-10;
  bool maximize = false;
};

template <class T>
struct adagrad_state {
  std::int64_t step = 0;
  tensor<T> sum;
};

/// em::optim::adagrad opt(params, {.lr = 0.01}); per step t, with d = grad + weight_decay * p:
///   sum += d^2;  p -= lr / (1 + (t - 1) lr_decay) * d / (sqrt(sum) + eps)
template <class T = float>
class adagrad : public optimizer<adagrad<T>, T, adagrad_options, adagrad_state<T>> {
  using base = optimizer<adagrad<T>, T, adagrad_options, adagrad_state<T>>;

 public:
  static constexpr const char* name = "adagrad";
  adagrad(std::vector<tensor<T>> params, const adagrad_options& o = {}) : base(std::move(params), o) {}
  adagrad(std::vector<param_group<T, adagrad_options>> groups, const adagrad_options& o = {})
      : base(std::move(groups), o) {}

  static void check_options(const adagrad_options& o) {
    detail::check_hyper(o.lr >= 0, name, "learning rate", o.lr);
    detail::check_hyper(o.lr_decay >= 0, name, "lr_decay value", o.lr_decay);
    detail::check_hyper(o.weight_decay >= 0, name, "weight_decay value", o.weight_decay);
    detail::check_hyper(o.initial_accumulator_value >= 0, name, "initial_accumulator_value",
                        o.initial_accumulator_value);
    detail::check_hyper(o.eps >= 0, name, "epsilon value", o.eps);
  }

  /// The options and state under their PyTorch names (Note [Optimizer state_dict]).
  template <class O, class F>
  static void visit_options(O& o, F&& f) {
    f("lr", o.lr);
    f("lr_decay", o.lr_decay);
    f("weight_decay", o.weight_decay);
    f("initial_accumulator_value", o.initial_accumulator_value);
    f("eps", o.eps);
    f("maximize", o.maximize);
  }
  template <class S, class F>
  static void visit_state(S& s, const adagrad_options&, F&& f) {
    f("step", s.step, true);
    f("sum", s.sum, true);
  }

  void update(tensor<T>& p, const tensor<T>& g, const adagrad_options& o, adagrad_state<T>& s) {
    if (s.step == 0) {
      s.sum = detail::zeros_like_param(p);
      if (o.initial_accumulator_value != 0) s.sum.fill_(static_cast<T>(o.initial_accumulator_value));
    }
    ++s.step;
    const T sign = o.maximize ? T(-1) : T(1);
    const auto d = g * sign + p * static_cast<T>(o.weight_decay);
    const T clr = static_cast<T>(o.lr / (1 + static_cast<double>(s.step - 1) * o.lr_decay));
    detail::assign_step(s.sum, s.sum + d * d);
    detail::assign_step(p, p - d * clr / (ember::sqrt(s.sum) + static_cast<T>(o.eps)));
  }
};

template <class T>
adagrad(std::vector<tensor<T>>, const adagrad_options&) -> adagrad<T>;
template <class T>
adagrad(std::vector<tensor<T>>) -> adagrad<T>;
template <class T>
adagrad(std::vector<param_group<T, adagrad_options>>, const adagrad_options&) -> adagrad<T>;
template <class T>
adagrad(std::initializer_list<tensor<T>>, const adagrad_options&) -> adagrad<T>;
template <class T>
adagrad(std::initializer_list<tensor<T>>) -> adagrad<T>;

}  // namespace ember::optim
