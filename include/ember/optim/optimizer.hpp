// The optimizer base: parameter groups with per-group options, per-parameter state created at
// the first step that sees a gradient, zero_grad, step (optionally with a closure), and
// state_dict / load_state_dict with PyTorch's keys (Note [Optimizer state_dict]).
//
// Note [Optimizer steps]: a step runs under no_grad and updates each parameter and its state
// buffers in place, each write one fused expression over the parameter, its gradient and its
// state (no temporaries: `m = b1 * m + (1 - b1) * g` reads and writes m element by element).
// The formulas are PyTorch 1.13's single-tensor ones, operation for operation, so trajectories
// match torch.optim to rounding (the oracle checks 5 steps of every option set).
//
// Note [Optimizer state_dict]: PyTorch's nested {"state": {i: {...}}, "param_groups": [{...}]}
// flattened into dotted keys: "state.<i>.<name>" (i numbers the parameters over all groups in
// order; "step" a 0-d i64, buffers tensors shaped like the parameter) and
// "param_groups.<g>.<option>" (0-d f64; bools 0-d bool; betas a (2) f64; "params" the (n) i64
// indices; "initial_lr" once a scheduler set it). state_dict() copies, so later steps leave it
// alone; load_state_dict() validates every key first, reports all problems in one ember::error
// (value), then copies in: resuming from it continues the run bit for bit.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/autograd/meta.hpp>
#include <ember/core/error.hpp>
#include <ember/eval/assign.hpp>
#include <ember/ops/factory.hpp>
#include <ember/state_dict.hpp>
#include <ember/tensor.hpp>

#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
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

namespace detail {

/// Problems found while loading a state_dict, reported together in one ember::error (value).
class load_problems {
 public:
  template <class... Parts>
  void add(const Parts&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    list_.push_back(os.str());
  }
  bool empty() const noexcept { return list_.empty(); }
  /// Throws "<who>: cannot load the state_dict (n problems): a; b; c" when there are any.
  void raise_if_any(std::string_view who) const {
    if (list_.empty()) return;
    std::ostringstream os;
    os << who << ": cannot load the state_dict (" << list_.size()
       << (list_.size() == 1 ? " problem): " : " problems): ");
    for (std::size_t i = 0; i < list_.size(); ++i) os << (i ? "; " : "") << list_[i];
    ember::detail::raise(errc::value, os.str());
  }

 private:
  std::vector<std::string> list_;
};

/// A non-negative decimal index ("12"), or nullopt.
inline std::optional<std::int64_t> parse_index(std::string_view s) {
  std::int64_t v = 0;
  if (s.empty() || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

/// "<head>.<index>.<rest>" split in three, or nullopt.
struct dotted_key {
  std::string_view head;
  std::int64_t index;
  std::string_view rest;
};
inline std::optional<dotted_key> split_key(std::string_view key) {
  const std::size_t a = key.find('.');
  if (a == std::string_view::npos) return std::nullopt;
  const std::size_t b = key.find('.', a + 1);
  if (b == std::string_view::npos || b + 1 == key.size()) return std::nullopt;
  const auto i = parse_index(key.substr(a + 1, b - a - 1));
  if (!i) return std::nullopt;
  return dotted_key{key.substr(0, a), *i, key.substr(b + 1)};
}

/// The elements of a tensor of any dtype as V, in row-major order, read one by one on the host.
/// Optimizers' and schedulers' load_state_dict read their options with it: they are reached from
/// virtual functions, so they are instantiated in every program (Note [Deferred
/// instantiation]), and `t.to<double>()` there compiled the conversion kernels of all twelve
/// dtypes into each (1.7 s of clang's time on a file holding only #include <ember/ember.hpp>).
template <class V>
std::vector<V> element_values(const any_tensor& t) {
  std::vector<V> out;
  out.reserve(static_cast<std::size_t>(t.numel()));
  t.visit([&](const auto& x) {
    using T = typename std::remove_cvref_t<decltype(x)>::value_type;
    const std::int64_t rank = x.dim(), n = x.numel();
    if (n == 0) return;
    const T* p = x.data();
    std::unique_ptr<T[]> staged;  // a device tensor's elements, copied as bytes (no kernels)
    if (!x.device().is_cpu()) {
      std::int64_t extent = 1;  // elements from data() to the last one (strides are >= 0)
      for (std::int64_t d = 0; d < rank; ++d)
        extent += (x.shape()[static_cast<std::size_t>(d)] - 1) * x.strides()[static_cast<std::size_t>(d)];
      staged = std::make_unique<T[]>(static_cast<std::size_t>(extent));
      ::ember::detail::copy_bytes(staged.get(), ember::cpu, p, x.device(),
                                  static_cast<std::size_t>(extent) * sizeof(T));
      p = staged.get();
    }
    std::vector<std::int64_t> index(static_cast<std::size_t>(rank), 0);
    std::int64_t at = 0;  // offset of index
    for (std::int64_t k = 0; k < n; ++k) {
      out.push_back(static_cast<V>(p[at]));
      for (std::int64_t d = rank - 1; d >= 0; --d) {  // odometer over the strides
        const auto u = static_cast<std::size_t>(d);
        at += x.strides()[u];
        if (++index[u] < x.shape()[u]) break;
        at -= x.strides()[u] * x.shape()[u];
        index[u] = 0;
      }
    }
  });
  return out;
}

/// The value of a 0-d real tensor (any dtype but bool), or nullopt.
template <int = 0>  // Note [Deferred instantiation]
std::optional<double> scalar_real(const any_tensor& t) {
  if (t.dim() != 0 || t.dtype() == dtype::boolean) return std::nullopt;
  return element_values<double>(t).front();
}

/// Describes a stored tensor for messages: "a (2, 3) f32 tensor".
inline std::string describe(const any_tensor& t) {
  std::ostringstream os;
  os << "a " << t.shape() << " " << t.dtype() << " tensor";
  return os.str();
}

/// Writes one option into a state_dict: double -> 0-d f64, bool -> 0-d bool, array -> (N) f64.
template <class V>
void save_option(state_dict& sd, const std::string& key, const V& v) {
  if constexpr (std::is_same_v<V, bool>) {
    sd.insert(key, ember::full<bool>({}, v));
  } else if constexpr (std::is_same_v<V, double>) {
    sd.insert(key, ember::full<double>({}, v));
  } else {
    sd.insert(key, ember::from_vector<double>(std::vector<double>(v.begin(), v.end()),
                                             {static_cast<std::int64_t>(v.size())}));
  }
}

/// Reads one option back (checked: kind and shape); problems name the key and what was found.
template <class V>
void load_option(const any_tensor& t, const std::string& key, V& out, load_problems& pr) {
  if constexpr (std::is_same_v<V, bool>) {
    if (t.dtype() == dtype::boolean && t.dim() == 0) out = t.get<bool>().item();
    else pr.add("'", key, "' must be a 0-d bool tensor, got ", describe(t));
  } else if constexpr (std::is_same_v<V, double>) {
    if (const auto v = scalar_real(t)) out = *v;
    else pr.add("'", key, "' must be a 0-d real tensor, got ", describe(t));
  } else {
    const auto n = static_cast<std::int64_t>(std::tuple_size_v<V>);
    if (t.dim() != 1 || t.numel() != n || t.dtype() == dtype::boolean) {
      pr.add("'", key, "' must be a (", n, ") real tensor, got ", describe(t));
      return;
    }
    const std::vector<double> d = element_values<double>(t);
    for (std::int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = d[static_cast<std::size_t>(i)];
  }
}

}  // namespace detail

/// CRTP base of the optimizers. Derived provides
///   static constexpr const char* name;
///   static void check_options(const Options&);
///   void update(tensor<T>& p, const tensor<T>& grad, const Options&, State&);
///   static void visit_options(O& o, F f);          // f("lr", o.lr), ... (O: [const] Options)
///   static void visit_state(S& s, const Options&, F f);  // f("exp_avg", s.exp_avg, required)
template <class Derived, class T, class Options, class State>
class optimizer {
 public:
  static_assert(std::is_floating_point_v<T>, "ember: optimizers update float or double parameters");
  using value_type = T;
  using options_type = Options;
  using state_type = State;

  /// One group: its parameters, options, each parameter's state (empty until its first step
  /// with a gradient), and the lr a scheduler started from (PyTorch's 'initial_lr').
  struct group {
    std::vector<tensor<T>> params;
    Options options;
    std::vector<std::optional<State>> state;
    std::optional<double> initial_lr = std::nullopt;
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
        ember::detail::check(grad.shape() == p.shape(), errc::shape, Derived::name,
                             ": gradient of shape ", grad.shape(), " for a parameter of shape ",
                             p.shape());
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
    ember::detail::check(!pg.params.empty(), errc::value, Derived::name,
                         ": a parameter group needs at least one parameter");
    for (std::size_t k = 0; k < pg.params.size(); ++k) {
      const tensor<T>& p = pg.params[k];
      ember::detail::check(p.defined(), errc::value, Derived::name, ": parameter ", k,
                           " of group ", groups_.size(), " is an undefined tensor");
      ember::detail::check(p.is_leaf(), errc::autograd, Derived::name,
                           ": can't optimize a non-leaf tensor (parameter ", k, " of group ",
                           groups_.size(), ", shape ", p.shape(), ", grad_fn ", p.grad_fn_name(),
                           "); optimize the leaf it was computed from");
      for (const auto& g : groups_)
        for (const auto& q : g.params)
          ember::detail::check(q.impl_ptr() != p.impl_ptr(), errc::value, Derived::name,
                               ": a parameter of shape ", p.shape(),
                               " appears in more than one group");
      for (std::size_t j = 0; j < k; ++j)
        ember::detail::check(pg.params[j].impl_ptr() != p.impl_ptr(), errc::value, Derived::name,
                             ": parameter ", k, " of group ", groups_.size(),
                             " is listed twice (as parameter ", j, ")");
    }
    group g{std::move(pg.params), o, {}, std::nullopt};
    g.state.resize(g.params.size());
    groups_.push_back(std::move(g));
  }

  std::vector<group>& param_groups() noexcept { return groups_; }
  const std::vector<group>& param_groups() const noexcept { return groups_; }
  const Options& defaults() const noexcept { return defaults_; }

  /// A copy of the state and the group options, keyed as PyTorch's (Note [Optimizer
  /// state_dict]):  auto sd = opt.state_dict();  sd.get<double>("param_groups.0.lr");
  ember::state_dict state_dict() const {
    ember::state_dict sd;
    sd.metadata()["ember.optimizer"] = Derived::name;
    std::int64_t index = 0;
    for (const auto& g : groups_)
      for (std::size_t i = 0; i < g.params.size(); ++i, ++index) {
        if (!g.state[i]) continue;
        const std::string prefix = "state." + std::to_string(index) + ".";
        Derived::visit_state(*g.state[i], g.options, [&](const char* key, const auto& v, bool) {
          if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::int64_t>) {
            sd.insert(prefix + key, ember::full<std::int64_t>({}, v));
          } else if (v.defined()) {
            sd.insert(prefix + key, v.clone());
          }
        });
      }
    index = 0;
    for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
      const group& g = groups_[gi];
      const std::string prefix = "param_groups." + std::to_string(gi) + ".";
      Derived::visit_options(g.options, [&](const char* key, const auto& v) {
        detail::save_option(sd, prefix + key, v);
      });
      if (g.initial_lr) sd.insert(prefix + "initial_lr", ember::full<double>({}, *g.initial_lr));
      std::vector<std::int64_t> ids(g.params.size());
      for (auto& id : ids) id = index++;
      sd.insert(prefix + "params",
                ember::from_vector<std::int64_t>(ids, {static_cast<std::int64_t>(ids.size())}));
    }
    return sd;
  }

  /// Replaces the group options and the state with copies of a state_dict's (strict: every
  /// problem, from group sizes to buffer shapes, is reported in one ember::error (value) and
  /// nothing changes):  opt.load_state_dict(other.state_dict());
  void load_state_dict(const ember::state_dict& sd) {
    detail::load_problems pr;
    if (auto it = sd.metadata().find("ember.optimizer");
        it != sd.metadata().end() && it->second != Derived::name)
      pr.add("it was saved by a ", it->second, " optimizer");
    // sort the keys: param_groups.<g>.<option> and state.<i>.<name>
    std::map<std::int64_t, std::map<std::string, const any_tensor*, std::less<>>> saved_groups;
    std::map<std::int64_t, std::map<std::string, const any_tensor*, std::less<>>> saved_state;
    for (const auto& [key, t] : sd) {
      const auto k = detail::split_key(key);
      if (k && k->head == "param_groups") saved_groups[k->index][std::string(k->rest)] = &t;
      else if (k && k->head == "state") saved_state[k->index][std::string(k->rest)] = &t;
      else pr.add("unexpected key '", key, "'");
    }
    // groups: count, params, options
    std::vector<Options> options;
    std::vector<std::optional<double>> initial_lrs(groups_.size());
    std::map<std::int64_t, std::pair<std::size_t, std::size_t>> id_map;  // saved id -> (g, i)
    for (std::size_t gi = 0; gi < groups_.size(); ++gi) options.push_back(groups_[gi].options);
    if (!saved_groups.empty() && saved_groups.rbegin()->first >= static_cast<std::int64_t>(groups_.size()))
      pr.add("it has ", saved_groups.rbegin()->first + 1, " parameter groups, the optimizer ",
             groups_.size());
    for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
      const std::string prefix = "param_groups." + std::to_string(gi) + ".";
      auto found = saved_groups.find(static_cast<std::int64_t>(gi));
      if (found == saved_groups.end()) {
        pr.add("group ", gi, " is missing (the optimizer has ", groups_.size(), " groups)");
        continue;
      }
      auto& entries = found->second;
      auto take = [&](std::string_view name) -> const any_tensor* {
        auto it = entries.find(name);
        if (it == entries.end()) return nullptr;
        const any_tensor* t = it->second;
        entries.erase(it);
        return t;
      };
      if (const any_tensor* ids = take("params"); !ids) {
        pr.add("missing key '", prefix, "params'");
      } else if (ids->dim() != 1 || !(ids->dtype() == dtype::i64 || ids->dtype() == dtype::i32)) {
        pr.add("'", prefix, "params' must be a 1-d integer tensor, got ", detail::describe(*ids));
      } else if (ids->numel() != static_cast<std::int64_t>(groups_[gi].params.size())) {
        pr.add("group ", gi, " has ", ids->numel(), " parameters in the state_dict, ",
               groups_[gi].params.size(), " in the optimizer");
      } else {
        const tensor<std::int64_t> v = ids->to<std::int64_t>().contiguous();
        for (std::int64_t i = 0; i < v.numel(); ++i)
          if (!id_map.emplace(v.data()[i], std::pair{gi, static_cast<std::size_t>(i)}).second)
            pr.add("parameter id ", v.data()[i], " appears twice in the param_groups");
      }
      Derived::visit_options(options[gi], [&](const char* key, auto& v) {
        if (const any_tensor* t = take(key)) detail::load_option(*t, prefix + key, v, pr);
        else pr.add("missing key '", prefix, key, "'");
      });
      if (const any_tensor* t = take("initial_lr")) {
        if (const auto v = detail::scalar_real(*t)) initial_lrs[gi] = *v;
        else pr.add("'", prefix, "initial_lr' must be a 0-d real tensor, got ", detail::describe(*t));
      }
      for (const auto& [name, t] : entries) pr.add("unexpected key '", prefix, name, "'");
      try {
        Derived::check_options(options[gi]);
      } catch (const error& e) {
        pr.add("group ", gi, ": ", e.what());
      }
    }
    // state: one entry per parameter id, shapes as the parameter
    std::vector<std::vector<std::optional<State>>> states(groups_.size());
    for (std::size_t gi = 0; gi < groups_.size(); ++gi) states[gi].resize(groups_[gi].params.size());
    for (auto& saved_entry : saved_state) {
      // named, not a structured binding: clang 14 rejects lambdas capturing bindings
      const auto id = saved_entry.first;
      auto& entries = saved_entry.second;
      const std::string prefix = "state." + std::to_string(id) + ".";
      auto where = id_map.find(id);
      if (where == id_map.end()) {
        pr.add("state for parameter ", id, " (", prefix, entries.begin()->first,
               ", ...) but no group lists that parameter");
        continue;
      }
      const auto [gi, i] = where->second;
      const tensor<T>& p = groups_[gi].params[i];
      State s{};
      Derived::visit_state(s, options[gi], [&](const char* key, auto& v, bool required) {
        auto it = entries.find(std::string_view(key));
        if (it == entries.end()) {
          if (required) pr.add("missing key '", prefix, key, "'");
          return;
        }
        const any_tensor& t = *it->second;
        entries.erase(it);
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::int64_t>) {
          const auto x = t.numel() == 1 && t.dtype() != dtype::boolean
                             ? std::optional<double>(detail::element_values<double>(t).front())
                             : std::nullopt;
          if (!x || *x < 0 || *x != std::floor(*x) || *x > 9.0e15)
            pr.add("'", prefix, key, "' must hold one non-negative integer, got ", detail::describe(t));
          else
            v = static_cast<std::int64_t>(*x);
        } else {
          if (!is_floating_point(t.dtype()))
            pr.add("'", prefix, key, "' must be a floating-point tensor, got ", detail::describe(t));
          else if (!(t.shape() == p.shape()))
            pr.add("'", prefix, key, "' has shape ", t.shape(), ", its parameter ", p.shape());
          else
            v = t.to<T>().to(p.device()).clone();
        }
      });
      for (const auto& [name, t] : entries) pr.add("unexpected key '", prefix, name, "'");
      states[gi][i] = std::move(s);
    }
    pr.raise_if_any(std::string(Derived::name) + ".load_state_dict");
    for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
      groups_[gi].options = options[gi];
      groups_[gi].initial_lr = initial_lrs[gi];
      groups_[gi].state = std::move(states[gi]);
    }
  }

 protected:
  optimizer(std::vector<tensor<T>> params, const Options& defaults) : defaults_(defaults) {
    Derived::check_options(defaults_);
    add_param_group({std::move(params), std::nullopt});
  }
  optimizer(std::vector<param_group<T, Options>> groups, const Options& defaults)
      : defaults_(defaults) {
    Derived::check_options(defaults_);
    ember::detail::check(!groups.empty(), errc::value, Derived::name, ": got no parameter groups");
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

/// Writes one fused update expression into a parameter or a state tensor. Steps run under
/// no_grad, so the write is never recorded: assign_raw instantiates no backward for the
/// expression (compile time; Note [Optimizer steps]).
template <class T, class E>
void assign_step(const tensor<T>& dst, const E& e) {
  ember::detail::assign_raw(dst, e, "optimizer step");
}

inline void check_hyper(bool ok, const char* opt, const char* what, double v) {
  ember::detail::check(ok, errc::value, opt, ": invalid ", what, " ", v);
}

}  // namespace detail
}  // namespace ember::optim
