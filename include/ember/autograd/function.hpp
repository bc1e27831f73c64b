// Custom autograd functions (libtorch's torch::autograd::Function): a struct with static
// forward(context&, args...) and backward(context&, grads) becomes a recorded op:
//   struct cube : em::autograd::function<cube> {
//     static em::tensor<float> forward(em::autograd::context& ctx, const em::tensor<float>& x) {
//       ctx.save_for_backward({x});  return x * x * x; }
//     static std::vector<em::tensor<float>> backward(em::autograd::context& ctx,
//                                                    const std::vector<em::tensor<float>>& g) {
//       auto x = ctx.saved()[0];  return {3.f * x * x * g[0]}; }
//   };
//   auto y = cube::apply(p);
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/autograd/engine.hpp>
#include <ember/jit/custom.hpp>
#include <ember/tensor.hpp>

#include <any>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::autograd {

/// What forward leaves for backward: saved tensors (version-checked), arbitrary saved data,
/// and which inputs need a gradient.
class context {
 public:
  /// Saves tensors for backward; an in-place change to one before backward is an error.
  template <class T>
  void save_for_backward(std::initializer_list<tensor<T>> ts) {
    save_for_backward(std::vector<tensor<T>>(ts));
  }
  template <class T>
  void save_for_backward(const std::vector<tensor<T>>& ts) {
    saved_.clear();
    for (const auto& t : ts) saved_.push_back({t.defined() ? t.impl_ptr() : nullptr,
                                               t.defined() ? t.version() : 0, dtype_of<T>});
  }
  /// The saved tensors, as tensor<T> (T = float unless given: ctx.saved<double>()).
  template <class T = float>
  std::vector<tensor<T>> saved() const {
    ember::detail::check(!released_, errc::autograd, "context::saved: the saved tensors were freed after ",
          "backward; pass .retain_graph = true to call backward again");
    std::vector<tensor<T>> out;
    for (std::size_t i = 0; i < saved_.size(); ++i) {
      const auto& s = saved_[i];
      if (!s.t) {
        out.emplace_back();
        continue;
      }
      ember::detail::check(s.type == dtype_of<T>, errc::dtype, "context::saved: tensor ", i, " was saved as ",
            s.type, ", requested as ", dtype_of<T>);
      tensor<T> t(s.t);
      ember::detail::check(t.version() == s.version, errc::autograd, "custom function: saved tensor ", i,
            " (shape ", t.shape(), ") was modified by an in-place operation after forward ",
            "(version ", s.version, " -> ", t.version(), ")");
      out.push_back(t);
    }
    return out;
  }
  /// Does input i (counting tensor arguments of forward) need a gradient?
  bool needs_input_grad(std::size_t i) const {
    ember::detail::check(i < needs_.size(), errc::index, "context::needs_input_grad: index ", i, " but ",
          "forward has ", needs_.size(), " tensor inputs");
    return needs_[i];
  }
  /// Non-tensor data for backward: ctx.saved_data["scale"] = 2.0;
  std::map<std::string, std::any> saved_data;

  // engine-side
  void set_needs(std::vector<bool> n) { needs_ = std::move(n); }
  void release() {
    saved_.clear();
    released_ = true;
  }

 private:
  struct entry {
    variable t;
    std::uint64_t version;
    dtype type;
  };
  std::vector<entry> saved_;
  std::vector<bool> needs_;
  bool released_ = false;
};

namespace detail {

using ember::detail::check;

template <class F, class T>
class custom_node final : public node {
 public:
  explicit custom_node(std::shared_ptr<context> ctx) : ctx_(std::move(ctx)) {}
  std::string name() const override {
    if constexpr (requires { F::name; }) return std::string(F::name) + "_backward";
    else return "custom_function_backward";
  }
  void release_saved() override { ctx_->release(); }
  variable_list apply(variable_list&& grads) override {
    std::vector<tensor<T>> g;
    for (auto& v : grads) g.push_back(v ? tensor<T>(v) : tensor<T>());
    std::vector<tensor<T>> r = F::backward(*ctx_, g);
    check(r.size() == next.size(), errc::autograd, name(), ": backward returned ", r.size(),
          " gradients for ", next.size(), " tensor inputs of forward");
    variable_list out;
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (r[i].defined() && next[i].valid()) {
        const auto& want = next[i].fn->outputs.at(next[i].input_nr).sizes;
        ember::detail::check(r[i].shape() == want, errc::shape, name(), ": gradient ", i, " has shape ",
              r[i].shape(), ", the input has shape ", want);
      }
      out.push_back(var(r[i]));
    }
    return out;
  }

 private:
  std::shared_ptr<context> ctx_;
};

template <class T, class A>
void push_input(std::vector<variable>& ins, std::vector<edge>& edges, std::vector<bool>& needs,
                const A& a) {
  if constexpr (is_tensor_v<A>) {
    if constexpr (std::is_same_v<value_type_t<A>, T>) {
      edges.push_back(gradient_edge(a));
      needs.push_back(a.defined() && a.requires_grad() && is_grad_enabled());
    } else {
      edges.push_back(edge{});
      needs.push_back(false);
    }
    ins.push_back(a.defined() ? a.impl_ptr() : nullptr);
  }
}

}  // namespace detail

/// CRTP base of custom functions: Derived::forward(context&, args...) and
/// Derived::backward(context&, const std::vector<tensor<T>>&) -> one gradient per tensor
/// argument of forward (an undefined tensor for none). Name the node with
/// `static constexpr const char* name = "cube";` (default "custom_function_backward").
template <class Derived>
struct function {
  template <class... Args>
  static auto apply(const Args&... args) {
    const jit::detail::op_scope traced;
    auto out = apply_untraced(args...);
    if (traced) {
      if constexpr (requires { Derived::name; } && (is_tensor_v<Args> && ...)) {
        jit::register_function<Derived, Args...>();
        std::vector<any_tensor> ins{any_tensor(args)...};
        traced.record_list(op::custom, out, {{"name", std::string(Derived::name)}}, ins);
      } else {
        ember::detail::check(false, errc::not_implemented, "jit::trace: a custom function needs a "
                             "`static constexpr const char* name` and only tensor arguments to be "
                             "traced");
      }
    }
    return out;
  }

  template <class... Args>
  static auto apply_untraced(const Args&... args) {
    auto ctx = std::make_shared<context>();
    using R = decltype(Derived::forward(*ctx, args...));
    static_assert(is_tensor_v<R>, "autograd::function: forward must return a tensor<T>");
    using T = value_type_t<R>;
    std::vector<variable> ins;
    std::vector<edge> edges;
    std::vector<bool> needs;
    (detail::push_input<T>(ins, edges, needs, args), ...);
    ctx->set_needs(needs);
    R out;
    {
      no_grad_guard ng;
      out = Derived::forward(*ctx, args...);
    }
    bool any = false;
    for (bool n : needs) any = any || n;
    if (!any) return out;
    // an output that is an input (or a view sharing its handle) gets a fresh handle
    for (const auto& v : ins)
      if (v && v == out.impl_ptr()) out = out.detach();
    auto fn = std::make_shared<detail::custom_node<Derived, T>>(ctx);
    fn->next = std::move(edges);
    return detail::set_history(std::move(out), fn, 0);
  }
};

}  // namespace ember::autograd
