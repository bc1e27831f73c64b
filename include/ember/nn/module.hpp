// nn::module<Derived>: the base of every layer and model. Children, parameters and buffers are
// found by Boost.Hana reflection of BOOST_HANA_DEFINE_STRUCT members (no register calls), plus
// explicit registration for dynamic containers; named_*, train/eval, zero_grad, to(device),
// apply, state_dict/load_state_dict with PyTorch's dotted names, and PyTorch-like printing.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/autograd/meta.hpp>
#include <ember/core/device.hpp>
#include <ember/core/error.hpp>
#include <ember/nn/init.hpp>
#include <ember/state_dict.hpp>
#include <ember/tensor.hpp>

#include <boost/hana/accessors.hpp>
#include <boost/hana/concept/struct.hpp>
#include <boost/hana/first.hpp>
#include <boost/hana/for_each.hpp>
#include <boost/hana/second.hpp>
#include <boost/hana/string.hpp>

#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

namespace ember::nn {

class module_base;

/// A tensor member that is state but not a parameter (running statistics, counters): it is in
/// named_buffers() and state_dict(), moves with to(device), and gets no gradient.
///   BOOST_HANA_DEFINE_STRUCT(my_norm, (em::nn::buffer<float>, running_mean));
template <class T>
class buffer : public tensor<T> {
 public:
  buffer() = default;
  buffer(tensor<T> t) : tensor<T>(std::move(t)) {}  // NOLINT: implicit, a buffer is a tensor
  buffer& operator=(const tensor<T>& t) {
    tensor<T>::operator=(t);
    return *this;
  }
};

/// Options of load_state_dict.
struct load_state_dict_options {
  bool strict = true;  ///< missing and unexpected keys are errors (shape mismatches always are)
};

/// What load_state_dict did not match (empty after a strict load, which throws instead).
struct load_state_dict_result {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

}  // namespace ember::nn

namespace ember::detail {

/// One direct member of a module, as reflection or registration reports it.
struct module_member {
  enum class kind { child, parameter, buffer };
  std::string name;
  kind what = kind::child;
  nn::module_base* child = nullptr;  ///< kind::child
  any_tensor tensor;             ///< kind::parameter / kind::buffer (shares the member's tensor)
};

/// A registered (not reflected) member: containers own their children through shared_ptr.
struct registered_member {
  std::string name;
  module_member::kind what = module_member::kind::child;
  std::shared_ptr<nn::module_base> child;
  any_tensor tensor;
};

/// The unqualified name of a type, from the compiler's signature of this function (no RTTI):
/// "ns::net" -> "net", "ember::nn::basic_linear<float>" -> "basic_linear".
template <class T>
std::string type_name_of() {
  std::string_view s = __PRETTY_FUNCTION__;
  const auto eq = s.find("T = ");
  if (eq == std::string_view::npos) return "module";
  s = s.substr(eq + 4);
  s = s.substr(0, s.find_first_of(";]"));
  if (auto lt = s.find('<'); lt != std::string_view::npos) s = s.substr(0, lt);
  if (auto colon = s.rfind("::"); colon != std::string_view::npos) s = s.substr(colon + 2);
  return std::string(s);
}

inline std::string join_name(const std::string& prefix, std::string_view name) {
  return prefix.empty() ? std::string(name) : prefix + "." + std::string(name);
}

/// Moves a tensor to `dev` in place: every handle (the module member, an optimizer's copy)
/// sees the moved data; requires_grad and the gradient (moved too) are kept.
template <int = 0>  // Note [Deferred instantiation]
void move_impl_to(const any_tensor& t, device dev) {
  if (!t.defined() || t.device() == dev) return;
  t.visit([&](auto typed) {
    auto moved = typed.detach().to(dev);
    auto& impl = *t.impl_ptr();
    impl.storage = moved.impl_ptr()->storage;
    impl.offset = moved.impl_ptr()->offset;
    impl.strides = moved.impl_ptr()->strides;
    if (auto g = typed.grad(); g.defined()) typed.set_grad(g.to(dev));
  });
}

}  // namespace ember::detail

namespace ember::nn {

/// The runtime interface of every module: what containers hold, what the tree walks visit.
/// User code derives from module<Derived> (below), not from this class.
class module_base {
 public:
  module_base() = default;
  module_base(const module_base&) = default;
  module_base(module_base&&) noexcept = default;
  module_base& operator=(const module_base&) = default;
  module_base& operator=(module_base&&) noexcept = default;
  virtual ~module_base() = default;

  /// The direct members (children, parameters, buffers) in declaration order.
  virtual void members(std::vector<detail::module_member>& out) = 0;
  /// "Linear", "Sequential", or the C++ class name of a user module.
  virtual std::string type_name() const = 0;
  /// The text inside the parentheses of this module's printout ("in_features=64, ...").
  virtual std::string extra_repr() const { return {}; }

  // ---- walking the tree ------------------------------------------------------------------
  /// Direct children with their member names.
  std::vector<std::pair<std::string, module_base*>> named_children() {
    std::vector<std::pair<std::string, module_base*>> out;
    for (auto& m : direct())
      if (m.what == detail::module_member::kind::child) out.emplace_back(m.name, m.child);
    return out;
  }
  /// This module ("") and every descendant, pre-order, with dotted names; each module once.
  std::vector<std::pair<std::string, module_base*>> named_modules() {
    std::vector<std::pair<std::string, module_base*>> out;
    std::unordered_set<const module_base*> seen;
    collect_modules("", out, seen);
    return out;
  }
  /// Parameters of any element type, with dotted names ("fc1.weight"), each tensor once.
  std::vector<std::pair<std::string, any_tensor>> named_parameters_any(bool recurse = true) {
    return collect(detail::module_member::kind::parameter, recurse);
  }
  /// Buffers with dotted names ("bn.running_mean", "bn.num_batches_tracked").
  std::vector<std::pair<std::string, any_tensor>> named_buffers(bool recurse = true) {
    return collect(detail::module_member::kind::buffer, recurse);
  }

  // ---- modes and gradients -----------------------------------------------------------------
  /// Training mode (dropout active, batch norm uses batch statistics) for this module and all
  /// descendants; train(false) is eval().
  /// Virtual, and recursing through children's train(), so a module can override it (e.g. keep a
  /// frozen batch norm in eval mode) as in PyTorch.
  virtual void train(bool on = true) {
    training_ = on;
    for (auto& [name, child] : named_children()) child->train(on);
  }
  void eval() { train(false); }
  bool is_training() const noexcept { return training_; }

  /// Clears the gradients of every parameter (set_to_none, PyTorch 2's default) or zeroes them.
  template <int = 0>  // Note [Deferred instantiation]
  void zero_grad(bool set_to_none = true) {
    for (auto& [name, p] : named_parameters_any())
      p.visit([&](auto t) {
        if constexpr (decltype(t)::differentiable) {
          if (set_to_none) {
            t.set_grad({});
          } else if (auto g = t.grad(); g.defined()) {
            no_grad_guard ng;
            g.zero_();
          }
        }
      });
  }

  /// Moves every parameter and buffer to `dev` in place (handles held elsewhere, e.g. by an
  /// optimizer, see the moved tensors).
  template <int = 0>  // Note [Deferred instantiation]
  void to(device dev) {
    for (auto& [name, p] : named_parameters_any()) detail::move_impl_to(p, dev);
    for (auto& [name, b] : named_buffers()) detail::move_impl_to(b, dev);
  }

  /// Calls fn on every descendant, then on this module (PyTorch's order).
  void apply(const std::function<void(module_base&)>& fn) {
    for (auto& [name, child] : named_children()) child->apply(fn);
    fn(*this);
  }

  // ---- state -------------------------------------------------------------------------------
  /// Parameters and buffers by dotted name, PyTorch's order (a module's own parameters, its own
  /// buffers, then each child's). The tensors are the module's own (not copies): detach/clone
  /// before changing them if that matters.
  ember::state_dict state_dict() {
    ember::state_dict sd;
    add_state("", sd);
    return sd;
  }

  /// Copies the values of `sd` into the parameters and buffers (converting element types, as
  /// PyTorch's copy_). Strict (the default): missing or unexpected keys are errors; a shape
  /// mismatch is always an error. All problems are reported together in one ember::error, and
  /// nothing is copied then.
  template <int = 0>  // Note [Deferred instantiation]
  load_state_dict_result load_state_dict(const ember::state_dict& sd,
                                         const load_state_dict_options& options = {}) {
    const ember::state_dict own = state_dict();
    load_state_dict_result result;
    std::vector<std::string> mismatched;
    for (const auto& [name, t] : own) {
      const any_tensor* src = sd.find(name);
      if (!src) {
        // PyTorch fills a missing batch-norm counter with 0 (checkpoints from before it existed)
        if (name == "num_batches_tracked" || name.ends_with(".num_batches_tracked")) continue;
        result.missing_keys.push_back(name);
      } else if (src->shape() != t.shape()) {
        std::ostringstream os;
        os << name << ": checkpoint " << src->shape() << " vs module " << t.shape();
        mismatched.push_back(os.str());
      }
    }
    for (const auto& [name, t] : sd)
      if (!own.contains(name)) result.unexpected_keys.push_back(name);
    const bool key_errors =
        options.strict && (!result.missing_keys.empty() || !result.unexpected_keys.empty());
    if (key_errors || !mismatched.empty()) {
      std::ostringstream os;
      os << "load_state_dict: cannot load into " << type_name() << ":";
      auto list = [&](const char* what, const std::vector<std::string>& keys) {
        if (keys.empty()) return;
        os << " " << what << " (" << keys.size() << "):";
        for (std::size_t i = 0; i < keys.size(); ++i) os << (i ? ", " : " ") << keys[i];
        os << ";";
      };
      if (options.strict) {
        list("missing keys", result.missing_keys);
        list("unexpected keys", result.unexpected_keys);
      }
      list("shape mismatches", mismatched);
      ember::detail::raise(errc::value, os.str());
    }
    no_grad_guard ng;
    for (const auto& [name, t] : own) {
      const any_tensor* src = sd.find(name);
      t.visit([&](auto dst) {
        using U = typename decltype(dst)::value_type;
        if (src) dst.copy_(src->to<U>().to(dst.device()));
        else dst.zero_();  // a missing num_batches_tracked (see above)
      });
    }
    return result;
  }

  /// The PyTorch-style printout: `net(\n  (fc1): Linear(in_features=64, ...)\n)`.
  std::string repr() const {
    auto& self = const_cast<module_base&>(*this);
    const std::string extra = extra_repr();
    auto children = self.named_children();
    if (children.empty()) return type_name() + "(" + extra + ")";
    auto indent = [](const std::string& text) {
      std::string out;
      for (char c : text) {
        out += c;
        if (c == '\n') out += "  ";
      }
      return out;
    };
    std::string out = type_name() + "(\n";
    if (!extra.empty()) out += "  " + indent(extra) + "\n";
    for (auto& [name, child] : children) out += "  (" + name + "): " + indent(child->repr()) + "\n";
    return out + ")";
  }

 protected:
  /// Adds a child the reflection cannot see (containers): it is shared, not copied.
  void register_module(std::string name, std::shared_ptr<module_base> child) {
    check_new_name(name, "register_module");
    ember::detail::check(child != nullptr, errc::value, "register_module: '", name,
                         "' is null");
    registered_.push_back({std::move(name), detail::module_member::kind::child, std::move(child), {}});
  }
  void register_parameter(std::string name, any_tensor t) {
    check_new_name(name, "register_parameter");
    registered_.push_back({std::move(name), detail::module_member::kind::parameter, nullptr, std::move(t)});
  }
  void register_buffer(std::string name, any_tensor t) {
    check_new_name(name, "register_buffer");
    registered_.push_back({std::move(name), detail::module_member::kind::buffer, nullptr, std::move(t)});
  }
  void registered_members(std::vector<detail::module_member>& out) {
    for (auto& r : registered_) out.push_back({r.name, r.what, r.child.get(), r.tensor});
  }
  std::vector<detail::registered_member>& registered() noexcept { return registered_; }

 private:
  void check_new_name(const std::string& name, const char* op) {
    ember::detail::check(!name.empty() && name.find('.') == std::string::npos, errc::value, op,
                         ": name '", name, "' must be non-empty and contain no '.'");
    for (auto& m : direct())
      ember::detail::check(m.name != name, errc::value, op, ": ", type_name(), " already has a member '",
                           name, "'");
  }
  std::vector<detail::module_member> direct() {
    std::vector<detail::module_member> out;
    members(out);
    return out;
  }
  void collect_modules(const std::string& prefix, std::vector<std::pair<std::string, module_base*>>& out,
                       std::unordered_set<const module_base*>& seen) {
    if (!seen.insert(this).second) return;
    out.emplace_back(prefix, this);
    for (auto& [name, child] : named_children())
      child->collect_modules(detail::join_name(prefix, name), out, seen);
  }
  std::vector<std::pair<std::string, any_tensor>> collect(detail::module_member::kind what, bool recurse) {
    std::vector<std::pair<std::string, any_tensor>> out;
    std::unordered_set<const ember::detail::tensor_impl*> seen;
    auto visit_one = [&](const std::string& prefix, module_base& m) {
      for (auto& mem : m.direct())
        if (mem.what == what && mem.tensor.defined() && seen.insert(mem.tensor.impl_ptr().get()).second)
          out.emplace_back(detail::join_name(prefix, mem.name), mem.tensor);
    };
    if (!recurse) {
      visit_one("", *this);
      return out;
    }
    for (auto& [prefix, m] : named_modules()) visit_one(prefix, *m);
    return out;
  }
  /// Note [Shared tensors in state_dict]: as PyTorch, every name is written, so a tensor
  /// shared by two members (tied weights) appears under both names (named_parameters lists it
  /// once); loading writes it twice, harmlessly.
  void add_state(const std::string& prefix, ember::state_dict& sd) {
    auto mems = direct();
    for (auto kind : {detail::module_member::kind::parameter, detail::module_member::kind::buffer})
      for (auto& m : mems)
        if (m.what == kind && m.tensor.defined()) sd.insert(detail::join_name(prefix, m.name), m.tensor);
    for (auto& m : mems)
      if (m.what == detail::module_member::kind::child) m.child->add_state(detail::join_name(prefix, m.name), sd);
  }


  bool training_ = true;
  std::vector<detail::registered_member> registered_;
};

inline std::ostream& operator<<(std::ostream& os, const module_base& m) { return os << m.repr(); }

}  // namespace ember::nn

namespace ember::detail {

template <class M>
concept buffer_member = requires { typename M::value_type; } &&
                        std::is_base_of_v<nn::buffer<typename M::value_type>, M>;
template <class M>
concept parameter_member = requires { typename M::value_type; } &&
                           std::is_same_v<M, tensor<typename M::value_type>>;
template <class M>
concept optional_child = requires(M& m) {
  typename M::value_type;
  m.has_value();
  *m;
} && std::is_base_of_v<nn::module_base, typename M::value_type>;

/// Module type M (element type T) with element type U: Tmpl<T, Rest...> -> Tmpl<U, Rest...>.
/// void when M is not a class template whose first argument is its element type.
template <class M, class T, class U>
struct rebind_module {
  using type = void;
};
template <template <class...> class Tmpl, class T, class... Rest, class U>
struct rebind_module<Tmpl<T, Rest...>, T, U> {
  using type = Tmpl<U, Rest...>;
};

/// After `to` was built as a converted twin of `from` (same structure, other element type):
/// copies the values (converted), each module's training mode, each parameter's requires_grad
/// and gradient (converted), as PyTorch's module.to(dtype) keeps them.
template <int = 0>  // Note [Deferred instantiation]
void copy_converted(nn::module_base& from, nn::module_base& to);

template <class M>
void add_member(std::vector<module_member>& out, const char* name, M& m) {
  if constexpr (std::is_base_of_v<nn::module_base, M>) {
    out.push_back({name, module_member::kind::child, &m, {}});
  } else if constexpr (buffer_member<M>) {
    if (m.defined()) out.push_back({name, module_member::kind::buffer, nullptr, any_tensor(m)});
  } else if constexpr (parameter_member<M>) {
    if (m.defined()) out.push_back({name, module_member::kind::parameter, nullptr, any_tensor(m)});
  } else if constexpr (optional_child<M>) {
    if (m.has_value()) out.push_back({name, module_member::kind::child, &*m, {}});
  }
  // anything else (sizes, options, flags) is not module state
}

}  // namespace ember::detail

namespace ember::nn {

/// The base of a module: derive, list members with BOOST_HANA_DEFINE_STRUCT, write forward():
///   struct net : em::nn::module<net> {
///     BOOST_HANA_DEFINE_STRUCT(net, (em::nn::linear, fc1), (em::nn::linear, fc2));
///     net() : fc1(64, 32), fc2(32, 10) {}
///     em::tensor<float> forward(const em::tensor<float>& x) { return fc2(em::relu(fc1(x))); }
///   };
/// Reflected members: modules are children, tensor<T> members parameters, buffer<T> members
/// buffers; anything else is ignored. T is the parameters' element type.
template <class Derived, class T = float>
class module : public module_base {
 public:
  using value_type = T;

  void members(std::vector<detail::module_member>& out) override {
    auto& self = static_cast<Derived&>(*this);
    if constexpr (boost::hana::Struct<Derived>::value) {
      boost::hana::for_each(boost::hana::accessors<Derived>(), [&](auto pair) {
        detail::add_member(out, boost::hana::to<const char*>(boost::hana::first(pair)),
                           boost::hana::second(pair)(self));
      });
    }
    registered_members(out);
  }
  std::string type_name() const override { return detail::type_name_of<Derived>(); }

  /// Parameters with dotted names: {"fc1.weight", "fc1.bias", ...}.
  std::vector<std::pair<std::string, tensor<T>>> named_parameters(bool recurse = true) {
    std::vector<std::pair<std::string, tensor<T>>> out;
    for (auto& [name, p] : named_parameters_any(recurse)) {
      ember::detail::check(p.template holds<T>(), errc::dtype, type_name(), ".named_parameters: '",
                           name, "' holds ", p.dtype(), " elements, the module's are ", dtype_of<T>);
      out.emplace_back(name, p.template get<T>());
    }
    return out;
  }
  /// The parameters, for an optimizer: em::optim::adam opt(n.parameters(), {.lr = 1e-3});
  std::vector<tensor<T>> parameters(bool recurse = true) {
    std::vector<tensor<T>> out;
    for (auto& [name, p] : named_parameters(recurse)) out.push_back(p);
    return out;
  }
  using module_base::to;

  /// This module with element type U (PyTorch's model.double(), model.half(), model.to(dtype)),
  /// as a new module: the element type is part of the static type, so a net<float> converts
  /// to a net<double>. Values, gradients, requires_grad and train/eval modes are converted or
  /// kept; the result shares nothing with this module (to<T>() is a shallow copy that shares the
  /// tensors, as tensor::to<T>()). The converted type is built, without drawing random numbers
  /// (nn::skip_init), from the first of:
  ///   a converting constructor  net<double>(const net<float>&),
  ///   the options               net<double>(n.options)        (every built-in layer),
  ///   the default constructor   net<double>().
  /// Derived must be a class template whose first argument is its element type
  /// (template <class T> struct net : em::nn::module<net<T>, T>); other modules convert only
  /// when they hold no tensors (activations, pooling, flatten: they are returned as a copy).
  ///   auto n64 = n.to<double>();   em::autograd::gradcheck(...n64...);
  template <class U>
  auto to() const {
    using R = typename detail::rebind_module<Derived, T, U>::type;
    auto& self = const_cast<Derived&>(static_cast<const Derived&>(*this));
    if constexpr (std::is_same_v<U, T>) {
      return Derived(self);
    } else if constexpr (requires { Derived::type_erased_entries; }) {
      // Note [Converting containers]: sequential, module_list and module_dict hold their entries
      // type-erased, so they cannot rebuild them with another element type. A model that builds
      // its containers in its constructor converts (its to<U>() rebuilds them with U).
      static_assert(std::is_same_v<U, T>,
                    "ember::nn: a container (sequential, module_list, module_dict) cannot convert "
                    "its type-erased entries; convert the model that builds it, or build a "
                    "basic_sequential<U> with the same layers and load_state_dict into it");
      return Derived(self);
    } else if constexpr (std::is_void_v<R>) {
      ember::detail::check(self.named_parameters_any().empty() && self.named_buffers().empty(),
                           errc::dtype, type_name(), ".to<", dtype_of<U>, ">(): ", type_name(),
                           " holds ", dtype_of<T>, " tensors and is not a class template over its "
                           "element type; declare it as template <class T> struct ", type_name(),
                           " : em::nn::module<", type_name(), "<T>, T> to convert it");
      return Derived(self);
    } else {
      auto make = [&]() -> R {
        init::skip_guard no_init;
        if constexpr (std::is_constructible_v<R, const Derived&>) {
          return R(static_cast<const Derived&>(self));
        } else if constexpr (requires { R(self.options); }) {
          return R(self.options);
        } else if constexpr (std::is_default_constructible_v<R>) {
          return R();
        } else {
          static_assert(std::is_constructible_v<R, const Derived&>,
                        "ember::nn::module::to<U>(): the converted module cannot be built: give it a "
                        "converting constructor net(const net<V>&), an `options` member it is "
                        "constructible from, or a default constructor");
        }
      };
      R out = make();
      detail::copy_converted(self, out);
      return out;
    }
  }

  /// Calls forward: auto y = n(x);
  template <class... Args, class D = Derived>
  auto operator()(Args&&... args) -> decltype(std::declval<D&>().forward(std::forward<Args>(args)...)) {
    return static_cast<Derived&>(*this).forward(std::forward<Args>(args)...);
  }
};

}  // namespace ember::nn

namespace ember::detail {

template <int>
void copy_converted(nn::module_base& from, nn::module_base& to) {
  auto from_modules = from.named_modules();
  auto to_modules = to.named_modules();
  std::ostringstream structure;
  structure << "to<U>(): the converted " << to.type_name() << " does not have the structure of the "
            << from.type_name() << " it was built from (" << from_modules.size() << " vs "
            << to_modules.size() << " modules";
  ember::detail::check(from_modules.size() == to_modules.size(), errc::value, structure.str(), ")");
  to.load_state_dict(from.state_dict());  // strict: names and shapes must match; converts values
  // train/eval per module, parents first (train() recurses; each child then sets its own)
  for (std::size_t i = 0; i < from_modules.size(); ++i)
    to_modules[i].second->train(from_modules[i].second->is_training());
  auto from_params = from.named_parameters_any();
  auto to_params = to.named_parameters_any();
  ember::detail::check(from_params.size() == to_params.size(), errc::value, structure.str(), ")");
  for (std::size_t i = 0; i < from_params.size(); ++i) {
    from_params[i].second.visit([&](auto src) {
      to_params[i].second.visit([&](auto dst) {
        using S = decltype(src);
        using D = decltype(dst);
        if constexpr (S::differentiable && D::differentiable) {
          using U = typename D::value_type;
          dst.requires_grad_(src.requires_grad());
          if (auto g = src.grad(); g.defined()) dst.set_grad(g.template to<U>());
        }
      });
    });
  }
}

}  // namespace ember::detail

