// torch.optim.SGD: momentum, dampening, Nesterov, weight decay, maximize (Note [Optimizer steps]).
#pragma once

#include <ember/eval/assign.hpp>
#include <ember/optim/optimizer.hpp>

#include <initializer_list>

namespace ember::optim {

struct sgd_options {
  double lr = -1;  // required, as in PyTorch: an error when not set
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
  bool maximize = false;
};

template <class T>
struct sgd_state {
  tensor<T> momentum_buffer;  // created at the first step (a copy of the first update)
};

/// em::optim::sgd opt(params, {.lr = 0.1, .momentum = 0.9}); per step, with
/// d = grad + weight_decay * p (negated grad when maximize):
///   buf = d at the first step, then momentum * buf + (1 - dampening) * d;
///   p -= lr * (nesterov ? d + momentum * buf : buf)      (p -= lr * d without momentum)
template <class T = float>
class sgd : public optimizer<sgd<T>, T, sgd_options, sgd_state<T>> {
  using base = optimizer<sgd<T>, T, sgd_options, sgd_state<T>>;

 public:
  static constexpr const char* name = "sgd";
  sgd(std::vector<tensor<T>> params, const sgd_options& o) : base(std::move(params), o) {}
  sgd(std::vector<param_group<T, sgd_options>> groups, const sgd_options& o)
      : base(std::move(groups), o) {}

  static void check_options(const sgd_options& o) {
    ember::detail::check(o.lr >= 0, errc::value, "sgd: lr is required and must be >= 0, got ", o.lr);
    detail::check_hyper(o.momentum >= 0, name, "momentum value", o.momentum);
    detail::check_hyper(o.weight_decay >= 0, name, "weight_decay value", o.weight_decay);
    ember::detail::check(!o.nesterov || (o.momentum > 0 && o.dampening == 0), errc::value,
                         "sgd: Nesterov momentum requires a momentum and zero dampening (momentum ",
                         o.momentum, ", dampening ", o.dampening, ")");
  }

  /// The options and state under their PyTorch names (Note [Optimizer state_dict]).
  template <class O, class F>
  static void visit_options(O& o, F&& f) {
    f("lr", o.lr);
    f("momentum", o.momentum);
    f("dampening", o.dampening);
    f("weight_decay", o.weight_decay);
    f("nesterov", o.nesterov);
    f("maximize", o.maximize);
  }
  template <class S, class F>
  static void visit_state(S& s, const sgd_options& o, F&& f) {
    f("momentum_buffer", s.momentum_buffer, o.momentum != 0);
  }

  void update(tensor<T>& p, const tensor<T>& g, const sgd_options& o, sgd_state<T>& s) {
    const T lr = static_cast<T>(o.lr), wd = static_cast<T>(o.weight_decay);
    const T sign = o.maximize ? T(-1) : T(1);
    const auto d = g * sign + p * wd;  // grad + weight_decay * p
    if (o.momentum == 0) {
      detail::assign_step(p, p - d * lr);
      return;
    }
    const T mom = static_cast<T>(o.momentum);
    if (!s.momentum_buffer.defined()) {
      s.momentum_buffer = tensor<T>(d);
    } else {
      detail::assign_step(s.momentum_buffer, s.momentum_buffer * mom + d * static_cast<T>(1 - o.dampening));
    }
    const tensor<T>& buf = s.momentum_buffer;
    if (o.nesterov) detail::assign_step(p, p - (d + buf * mom) * lr);
    else detail::assign_step(p, p - buf * lr);
  }
};

template <class T>
sgd(std::vector<tensor<T>>, const sgd_options&) -> sgd<T>;
template <class T>
sgd(std::vector<param_group<T, sgd_options>>, const sgd_options&) -> sgd<T>;
template <class T>
sgd(std::initializer_list<tensor<T>>, const sgd_options&) -> sgd<T>;

}  // namespace ember::optim
