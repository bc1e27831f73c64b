// The optimizer base: parameter groups with per-group options, per-parameter state created at
// the first step that sees a gradient, zero_grad, step (optionally with a closure).
//
// Note [Optimizer steps]: a step runs under no_grad and updates each parameter and its state
// buffers in place, each write one fused expression over the parameter, its gradient and its
// state (no temporaries: `m = b1 * m + (1 - b1) * g` reads and writes m element by element).
// The formulas are PyTorch 1.13's single-tensor ones, operation for operation, so trajectories
// match torch.optim to rounding (the oracle checks 5 steps of every option set).
#pragma once

#include <ember/autograd/meta.hpp>
#include <ember/core/error.hpp>
#include <ember/tensor.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::optim {

/// Parameters with their own options (unset: the optimizer's defaults), as PyTorch's
/// param_groups: `em::optim::sgd opt({{.params = head}, {.params = body, .options = o}}, defaults)`.
template <class T, class Options>
struct param_group {
  std::vector<tensor<T>> params;
  std::optional<Options> options = std::nullopt;
};

/// CRTP base of the optimizers. Derived provides
///   static constexpr const char* name;
///   static void check_options(const Options&);
///   void update(tensor<T>& p, const tensor<T>& grad, const Options&, State&);
template <class Derived, class T, class Options, class State>
class optimizer {
 public:
  static_assert(std::is_floating_point_v<T>, "ember: optimizers update float or double parameters");
  using value_type = T;
  using options_type = Options;
  using state_type = State;

  /// One group: its parameters, options, and each parameter's state (empty until its first
  /// step with a gradient).
  struct group {
    std::vector<tensor<T>> params;
    Options options;
    std::vector<std::optional<State>> state;
  };

  /// Sets every gradient to none (set_to_none, PyTorch 2's default) or to zeros in place.
  void zero_grad(bool set_to_none = true) {
    for (auto& g : groups_)
      for (auto& p : g.params) {
        if (set_to_none) {
          p.set_grad({});
        } else if (tensor<T> gr = p.grad(); gr.defined()) {
          no_grad_guard ng;
          gr.zero_();
        }
      }
  }

  /// One update of every parameter that has a gradient (the others are skipped, as PyTorch).
  void step() {
    no_grad_guard ng;
    for (auto& g : groups_)
      for (std::size_t i = 0; i < g.params.size(); ++i) {
        tensor<T>& p = g.params[i];
        const tensor<T> grad = p.grad();
        if (!grad.defined()) continue;
        detail::check(grad.shape() == p.shape(), errc::shape, Derived::name, ": gradient of shape ",
                      grad.shape(), " for a parameter of shape ", p.shape());
        if (!g.state[i]) g.state[i].emplace();
        static_cast<Derived&>(*this).update(p, grad, g.options, *g.state[i]);
      }
  }

  /// Re-evaluates the loss with `closure` (grad mode on), then steps; returns the loss.
  template <class F>
    requires std::is_invocable_v<F&>
  auto step(F&& closure) {
    auto loss = [&] {
      enable_grad_guard eg;
      return closure();
    }();
    step();
    return loss;
  }

  /// Adds a group (options unset: the defaults). A parameter may belong to one group only.
  void add_param_group(param_group<T, Options> pg) {
    const Options o = pg.options ? *pg.options : defaults_;
    Derived::check_options(o);
    detail::check(!pg.params.empty(), errc::value, Derived::name,
                  ": a parameter group needs at least one parameter");
    for (std::size_t k = 0; k < pg.params.size(); ++k) {
      const tensor<T>& p = pg.params[k];
      detail::check(p.defined(), errc::value, Derived::name, ": parameter ", k, " of group ",
                    groups_.size(), " is an undefined tensor");
      detail::check(p.is_leaf(), errc::autograd, Derived::name,
                    ": can't optimize a non-leaf tensor (parameter ", k, " of group ",
                    groups_.size(), ", shape ", p.shape(), ", grad_fn ", p.grad_fn_name(),
                    "); optimize the leaf it was computed from");
      for (const auto& g : groups_)
        for (const auto& q : g.params)
          detail::check(q.impl_ptr() != p.impl_ptr(), errc::value, Derived::name,
                        ": a parameter of shape ", p.shape(), " appears in more than one group");
      for (std::size_t j = 0; j < k; ++j)
        detail::check(pg.params[j].impl_ptr() != p.impl_ptr(), errc::value, Derived::name,
                      ": parameter ", k, " of group ", groups_.size(),
                      " is listed twice (as parameter ", j, ")");
    }
    group g{std::move(pg.params), o, {}};
    g.state.resize(g.params.size());
    groups_.push_back(std::move(g));
  }

  std::vector<group>& param_groups() noexcept { return groups_; }
  const std::vector<group>& param_groups() const noexcept { return groups_; }
  const Options& defaults() const noexcept { return defaults_; }

 protected:
  optimizer(std::vector<tensor<T>> params, const Options& defaults) : defaults_(defaults) {
    Derived::check_options(defaults_);
    add_param_group({std::move(params), std::nullopt});
  }
  optimizer(std::vector<param_group<T, Options>> groups, const Options& defaults)
      : defaults_(defaults) {
    Derived::check_options(defaults_);
    detail::check(!groups.empty(), errc::value, Derived::name, ": got no parameter groups");
    for (auto& g : groups) add_param_group(std::move(g));
  }

 private:
  Options defaults_;
  std::vector<group> groups_;
};

namespace detail {

/// A new zero tensor shaped like p (optimizer state).
template <class T>
tensor<T> zeros_like_param(const tensor<T>& p) {
  tensor<T> z = ember::detail::make_tensor<T>(p.shape(), p.device());
  z.zero_();
  return z;
}

inline void check_hyper(bool ok, const char* opt, const char* what, double v) {
  ember::detail::check(ok, errc::value, opt, ": invalid ", what, " ", v);
}

}  // namespace detail
}  // namespace ember::optim
