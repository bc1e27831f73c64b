// The autograd engine (DESIGN.md, "Autograd"): gradient edges of tensors, the nodes every op
// can record through (record / record_multi with a backward lambda), views, saved tensors
// with version checks, and backward()/grad(), which walk the graph in dependency order.
// Depends only on tensor.hpp (which includes it at its end), not on the expression layer.
#pragma once

#include <ember/autograd/meta.hpp>
#include <ember/eval/strided.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace ember::autograd {

namespace detail {

using ember::detail::check;
using ember::detail::fail;
using ember::detail::tensor_impl;

inline std::string node_name(const std::shared_ptr<node>& fn) {
  if (!fn) return "";
  return fn->label.empty() ? fn->name() : fn->label;
}

/// Renames t's grad_fn as users know the op ("mean_backward"), when t has one.
template <class T>
tensor<T> label_grad_fn(tensor<T> t, const char* label) {
  if (auto fn = t.grad_fn()) fn->label = label;
  return t;
}

/// Calls f(T{}) for the floating element type of d (autograd differentiates float and double).
template <class F>
decltype(auto) visit_floating(dtype d, const char* op, F&& f) {
  switch (d) {
    case dtype::f32: return f(float{});
    case dtype::f64: return f(double{});
    default: break;
  }
  fail(errc::dtype, op, ": gradients of dtype ", d, " are not supported (float32 and float64 are)");
}

template <class T>
variable var(const tensor<T>& t) {
  return t.defined() ? t.impl_ptr() : nullptr;
}

/// The edge a gradient for t flows along: its grad_fn output, or its leaf accumulator.
template <class T>
edge gradient_edge(const tensor<T>& t);

/// Is recording needed: grad mode on and some input requires grad?
template <class... Ts>
bool any_requires_grad(const tensor<Ts>&... ts) {
  return is_grad_enabled() && (... || (ts.defined() && ts.requires_grad()));
}

/// Makes `out` the output_nr-th result of fn: a fresh handle if out's impl is already taken
/// by another history (an op that returned its input).
template <class T>
tensor<T> set_history(tensor<T> out, const std::shared_ptr<node>& fn, std::uint32_t output_nr) {
  if (out.impl().autograd && (out.impl().autograd->requires_grad || out.impl().autograd->grad))
    out = out.detach();
  auto m = std::make_shared<ember::detail::autograd_meta>();
  m->requires_grad = true;
  m->grad_fn = fn;
  m->output_nr = output_nr;
  out.impl().autograd = std::move(m);
  if (fn->outputs.size() <= output_nr) fn->outputs.resize(output_nr + 1);
  fn->outputs[output_nr] = {out.shape(), out.dtype(), out.device()};
  return out;
}

/// Accumulates gradients into a leaf's .grad() (the sink of every path to that leaf).
template <class T>
struct accumulate_grad final : node {
  std::weak_ptr<tensor_impl> leaf;
  explicit accumulate_grad(const std::shared_ptr<tensor_impl>& l) : leaf(l) {}
  std::string name() const override { return "accumulate_grad"; }
  bool is_accumulator() const override { return true; }
  variable_list apply(variable_list&& grads) override;
};

template <class T>
edge gradient_edge(const tensor<T>& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  auto& m = *t.impl().autograd;
  if (m.grad_fn) return {m.grad_fn, m.output_nr};
  auto acc = m.accumulator.lock();
  if (!acc) {
    acc = std::make_shared<accumulate_grad<T>>(t.impl_ptr());
    acc->outputs.push_back({t.shape(), t.dtype(), t.device()});
    m.accumulator = acc;
  }
  return {std::move(acc), 0};
}

/// A saved tensor: the handle plus the storage version at saving; unpack() refuses a tensor
/// modified in place since (PyTorch's "modified by an inplace operation" error).
template <class T>
class saved {
 public:
  saved() = default;
  explicit saved(const tensor<T>& t) : t_(t), version_(t.defined() ? t.version() : 0) {}
  const tensor<T>& unpack(std::string_view op) const {
    check(!t_.defined() || t_.version() == version_, errc::autograd, op,
          ": a tensor of shape ", t_.defined() ? t_.shape() : shape{},
          " saved for backward was modified by an in-place operation (version ", version_,
          " -> ", t_.defined() ? t_.version() : 0, "); clone() it before modifying it");
    return t_;
  }
  bool defined() const noexcept { return t_.defined(); }
  /// The handle without the version check (for shapes and identity).
  const tensor<T>& peek() const noexcept { return t_; }
  void reset() { t_ = tensor<T>(); }
  void replace(tensor<T> t) {
    t_ = std::move(t);
    version_ = t_.version();
  }

 private:
  tensor<T> t_;
  std::uint64_t version_ = 0;
};

/// Zeros shaped like a node output (for outputs that got no gradient).
template <class = void>
variable zeros_for(const output_info& info) {
  return visit_floating(info.type, "backward", [&](auto tag) -> variable {
    using T = decltype(tag);
    tensor<T> z = ember::detail::make_tensor<T>(info.sizes, info.dev);
    no_grad_guard ng;
    z.zero_();
    return z.impl_ptr();
  });
}

/// A node running a backward lambda over typed gradients: fn(grads) -> input grads, where
/// grads is `const tensor<T>&` for a one-output op or `const std::vector<tensor<T>>&`.
template <class T, class Fn, bool Multi>
class function_node final : public node {
 public:
  function_node(std::string name, Fn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  std::string name() const override { return name_; }
  void release_saved() override { fn_.reset(); }
  variable_list apply(variable_list&& grads) override {
    check(fn_.has_value(), errc::autograd, name_, ": saved tensors were already freed");
    std::vector<tensor<T>> result;
    if constexpr (Multi) {
      std::vector<tensor<T>> g;
      g.reserve(grads.size());
      for (auto& v : grads) g.push_back(v ? tensor<T>(v) : tensor<T>());
      result = (*fn_)(g);
    } else {
      result = (*fn_)(tensor<T>(grads.at(0)));
    }
    check(result.size() == next.size(), errc::internal, name_, ": backward returned ",
          result.size(), " gradients for ", next.size(), " inputs");
    variable_list out(result.size());
    for (std::size_t i = 0; i < result.size(); ++i) out[i] = var(result[i]);
    return out;
  }

 private:
  std::string name_;
  std::optional<Fn> fn_;
};

/// Records `backward` as the gradient function of `out` = op(inputs): backward(g) returns
/// one tensor per input (undefined: no gradient). Inputs that do not require grad get no
/// edge. Returns out with its history set (unchanged when nothing requires grad).
template <class T, class Fn>
tensor<T> record(std::string name, tensor<T> out, std::initializer_list<tensor<T>> inputs,
                 Fn&& backward) {
  bool any = false;
  for (const auto& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any || !is_grad_enabled()) return out;
  auto fn = std::make_shared<function_node<T, std::decay_t<Fn>, false>>(std::move(name),
                                                                        std::forward<Fn>(backward));
  for (const auto& t : inputs) fn->next.push_back(gradient_edge(t));
  return set_history(std::move(out), fn, 0);
}

/// record() for an op with several outputs: backward(grads) gets one tensor per output
/// (zeros where an output got no gradient).
template <class T, class Fn>
std::vector<tensor<T>> record_multi(std::string name, std::vector<tensor<T>> outs,
                                    const std::vector<tensor<T>>& inputs, Fn&& backward) {
  bool any = false;
  for (const auto& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any || !is_grad_enabled()) return outs;
  auto fn = std::make_shared<function_node<T, std::decay_t<Fn>, true>>(std::move(name),
                                                                       std::forward<Fn>(backward));
  for (const auto& t : inputs) fn->next.push_back(gradient_edge(t));
  for (std::size_t i = 0; i < outs.size(); ++i)
    outs[i] = set_history(std::move(outs[i]), fn, static_cast<std::uint32_t>(i));
  return outs;
}

/// sum of g over the dims where `target` is broadcast (PyTorch's sum_to): the gradient of
/// expand. Differentiable (its backward is expand).
template <class T>
tensor<T> sum_to(const tensor<T>& g, const shape& target) {
  if (g.shape() == target) return g;
  check(g.dim() >= target.rank(), errc::shape, "sum_to: cannot reduce shape ", g.shape(),
        " to ", target);
  const std::int64_t lead = g.dim() - target.rank();
  // the result in g's rank (size 1 where reduced), then viewed as target
  shape kept(g.shape().size(), 1);
  for (std::int64_t d = 0; d < target.rank(); ++d) {
    const std::int64_t want = target[d], have = g.shape()[lead + d];
    check(want == have || want == 1, errc::shape, "sum_to: cannot reduce shape ", g.shape(),
          " to ", target);
    kept[lead + d] = want;
  }
  tensor<T> acc = ember::detail::make_tensor<T>(kept, g.device());
  if (!g.device().is_cpu()) {  // Note [Device reductions]
    std::vector<bool> mask(kept.size());
    for (std::size_t d = 0; d < kept.size(); ++d) mask[d] = kept[d] == 1 && g.shape()[d] != 1;
    if (g.numel() == 0) {
      no_grad_guard ng;
      acc.zero_();
    } else {
      dispatch::run_reduce(g.device(), dispatch::reduce_kind::sum, g.data(), dtype_of<T>,
                           g.shape(), g.strides(), mask, acc.data(), contiguous_strides(kept),
                           "sum_to");
    }
  } else {
    T* a = acc.data();
    std::fill_n(a, acc.numel(), T(0));
    // accumulate in the element type, walking g with acc broadcast (stride 0 where reduced)
    shape ast(kept.size(), 0);
    const shape cst = contiguous_strides(kept);
    for (std::size_t d = 0; d < kept.size(); ++d) ast[d] = kept[d] == 1 ? 0 : cst[d];
    ember::detail::for_each_element(
        g.shape(), {&ast, &g.strides()}, [](T& x, const T& v) { x += v; }, a,
        static_cast<const T*>(g.data()));
  }
  tensor<T> out;
  {
    no_grad_guard ng;
    out = acc.view(target);
  }
  out = out.detach();
  if (!any_requires_grad(g)) return out;
  const shape gs = g.shape();
  return record<T>("sum_to_backward", std::move(out), {g},
                   [gs](const tensor<T>& gg) { return std::vector<tensor<T>>{gg.expand(gs)}; });
}

template <class T>
tensor<T> zeros_shaped(const shape& s, device dev) {
  tensor<T> z = ember::detail::make_tensor<T>(s, dev);
  no_grad_guard ng;
  z.zero_();
  return z;
}

/// Adds two gradients (a + b; differentiable when either carries a graph).
template <class T>
tensor<T> add_grads(const tensor<T>& a, const tensor<T>& b) {
  check(a.shape() == b.shape(), errc::shape, "backward: gradients of shapes ", a.shape(),
        " and ", b.shape(), " reach the same tensor");
  check(a.device() == b.device(), errc::device, "backward: gradients on ", a.device(), " and ",
        b.device(), " reach the same tensor");
  tensor<T> out = ember::detail::make_tensor<T>(a.shape(), a.device());
  const shape& os = out.strides();
  if (!a.device().is_cpu()) {
    dispatch::run_raw(a.device(), out.data(), dtype_of<T>, out.shape(), os,
                      {{a.data(), dtype_of<T>, a.shape(), a.strides()},
                       {b.data(), dtype_of<T>, b.shape(), b.strides()}},
                      {dispatch::load(0), dispatch::load(1), dispatch::apply(dispatch::opc::add)},
                      dispatch::compute_for({dtype_of<T>}), "backward");
  } else {
    ember::detail::for_each_element(
        a.shape(), {&os, &a.strides(), &b.strides()},
        [](T& o, const T& x, const T& y) { o = x + y; }, out.data(),
        static_cast<const T*>(a.data()), static_cast<const T*>(b.data()));
  }
  return record<T>("add_backward", std::move(out), {a, b}, [](const tensor<T>& g) {
    return std::vector<tensor<T>>{g, g};
  });
}

template <class = void>
variable add_variables(const variable& a, const variable& b) {
  if (!a) return b;
  if (!b) return a;
  return visit_floating(a->type, "backward", [&](auto tag) -> variable {
    using T = decltype(tag);
    return add_grads(tensor<T>(a), tensor<T>(b)).impl_ptr();
  });
}

template <class T>
variable_list accumulate_grad<T>::apply(variable_list&& grads) {
  auto l = leaf.lock();
  if (!l || !grads.at(0)) return {};
  auto& g = grads[0];
  const bool sole = g.use_count() == 1 && g->storage.use_count() == 1;
  [&] {
    const tensor<T> leaf_t(l);
    const tensor<T> in(g);
    check(in.shape() == leaf_t.shape(), errc::shape, "backward: gradient of shape ", in.shape(),
          " for a leaf of shape ", leaf_t.shape());
    auto& m = *l->autograd;
    if (is_grad_enabled()) {  // create_graph: the accumulated gradient keeps its graph
      m.grad = m.grad ? add_grads(tensor<T>(m.grad), in).impl_ptr() : in.impl_ptr();
      return;
    }
    if (!m.grad) {
      // take the buffer when nobody else holds it, else copy (a grad must not alias others)
      const bool unique = sole && in.is_contiguous() && !in.requires_grad();
      m.grad = unique ? in.detach().impl_ptr() : in.detach().clone().impl_ptr();
    } else {
      tensor<T> acc(m.grad);
      if (acc.requires_grad()) {  // a grad left from create_graph: replace, don't write into it
        m.grad = add_grads(acc.detach(), in.detach()).impl_ptr();
        return;
      }
      const shape& as = acc.strides();
      if (!acc.device().is_cpu()) {  // acc += in on the device (element i reads only element i)
        check(in.device() == acc.device(), errc::device, "backward: gradient on ", in.device(),
              " for a leaf whose grad is on ", acc.device());
        dispatch::run_raw(acc.device(), acc.data(), dtype_of<T>, acc.shape(), as,
                          {{acc.data(), dtype_of<T>, acc.shape(), as},
                           {in.data(), dtype_of<T>, in.shape(), in.strides()}},
                          {dispatch::load(0), dispatch::load(1), dispatch::apply(dispatch::opc::add)},
                          dispatch::compute_for({dtype_of<T>}), "backward");
      } else {
        ember::detail::for_each_element(
            acc.shape(), {&as, &in.strides()}, [](T& x, const T& y) { x += y; }, acc.data(),
            static_cast<const T*>(in.data()));
      }
      acc.storage()->bump_version();
    }
  }();
  return {};
}

// ---- views ----------------------------------------------------------------------------------
template <class T>
tensor<T> scatter_view(const tensor<T>& g, const shape& base_shape,
                       const std::function<tensor<T>(const tensor<T>&)>& reapply) {
  tensor<T> z = zeros_shaped<T>(base_shape, g.device());
  {
    no_grad_guard ng;
    reapply(z).copy_(g.detach());
  }
  return record<T>("view_scatter_backward", std::move(z), {g}, [reapply](const tensor<T>& gg) {
    return std::vector<tensor<T>>{reapply(gg)};
  });
}

template <class T>
tensor<T> record_view(const tensor<T>& base, tensor<T> out,
                      std::function<tensor<T>(const tensor<T>&)> reapply,
                      std::function<tensor<T>(const tensor<T>&)> inverse, const char* name) {
  const shape bs = base.shape();
  std::string n = std::string(name) + "_backward";
  if (inverse) {
    out = record<T>(std::move(n), std::move(out), {base}, [inverse](const tensor<T>& g) {
      return std::vector<tensor<T>>{inverse(g)};
    });
  } else {
    out = record<T>(std::move(n), std::move(out), {base}, [bs, reapply](const tensor<T>& g) {
      return std::vector<tensor<T>>{scatter_view(g, bs, reapply)};
    });
  }
  out.impl().autograd->is_view = true;
  return out;
}

template <class T>
tensor<T> record_expand(const tensor<T>& base, tensor<T> out) {
  const shape bs = base.shape();
  out = record<T>("expand_backward", std::move(out), {base}, [bs](const tensor<T>& g) {
    return std::vector<tensor<T>>{sum_to(g, bs)};
  });
  out.impl().autograd->is_view = true;
  return out;
}

template <class T>
tensor<T> record_identity(const tensor<T>& base, tensor<T> out, const char* name) {
  const device d = base.device();
  return record<T>(name, std::move(out), {base}, [d](const tensor<T>& g) {
    return std::vector<tensor<T>>{g.to(d)};
  });
}

/// to<U>() between floating types: the gradient converts back.
template <class U, class T>
struct convert_node final : node {
  std::string name() const override { return "to_backward"; }
  variable_list apply(variable_list&& grads) override {
    if constexpr (is_floating_v<U> && is_floating_v<T>) {
      return {tensor<U>(grads.at(0)).template to<T>().impl_ptr()};
    } else {
      return {nullptr};
    }
  }
};
template <class U, class T>
tensor<U> record_convert(const tensor<T>& src, tensor<U> out) {
  if constexpr (!is_floating_v<U>) {
    return out;  // integer/bool results carry no gradient
  } else {
    auto fn = std::make_shared<convert_node<U, T>>();
    fn->next.push_back(gradient_edge(src));
    return set_history(std::move(out), fn, 0);
  }
}

/// In-place writes with recording: refused on leaves that require grad and on views of
/// tensors that require grad (ember does not rebase a view's base).
template <class T>
void check_inplace(const tensor<T>& dst, const char* op) {
  if (!dst.requires_grad()) return;
  check(!dst.is_leaf(), errc::autograd, op, ": a leaf tensor of shape ", dst.shape(),
        " that requires grad cannot be modified in place (wrap the update in no_grad_guard, ",
        "as optimizers do)");
  check(!dst.impl().autograd->is_view, errc::autograd, op, ": in-place write into a view (",
        dst.grad_fn_name(), ") of a tensor that requires grad is not supported; clone() the ",
        "view or write the whole tensor");
}

/// Makes `dst`'s history that of `result` (same data, written in place into dst).
template <class T>
void rebase_history(const tensor<T>& dst, const tensor<T>& result) {
  auto& m = *result.impl().autograd;
  auto dm = std::make_shared<ember::detail::autograd_meta>();
  dm->requires_grad = true;
  dm->grad_fn = m.grad_fn;
  dm->output_nr = m.output_nr;
  dst.impl().autograd = std::move(dm);
}

template <class T>
void record_copy(const tensor<T>& dst, const tensor<T>& src) {
  const shape ss = src.shape();
  if (!src.requires_grad()) {
    record_fill(dst);
    return;
  }
  tensor<T> alias = dst.detach();
  alias = record<T>("copy_backward", std::move(alias), {src}, [ss](const tensor<T>& g) {
    return std::vector<tensor<T>>{sum_to(g, ss)};
  });
  rebase_history(dst, alias);
}

/// dst was overwritten by constants: its gradient stops here.
template <class T>
void record_fill(const tensor<T>& dst) {
  if (!dst.requires_grad()) return;
  struct constant_node final : node {
    std::string name() const override { return "fill_backward"; }
    variable_list apply(variable_list&&) override { return {}; }
  };
  auto fn = std::make_shared<constant_node>();
  fn->outputs.push_back({dst.shape(), dst.dtype(), dst.device()});
  auto dm = std::make_shared<ember::detail::autograd_meta>();
  dm->requires_grad = true;
  dm->grad_fn = fn;
  dst.impl().autograd = std::move(dm);
}

// ---- the engine ---------------------------------------------------------------------------------
struct graph_task {
  std::unordered_map<node*, int> deps;
  std::unordered_map<node*, variable_list> buffers;
  std::unordered_set<node*> needed;  ///< grad(): nodes on a path to an input
  bool capture_mode = false;
};

/// Runs backward from roots (edges) with their gradients. In capture mode (grad()), the
/// gradients arriving at `captures` are returned and leaves are left alone.
template <class = void>
variable_list execute(const std::vector<edge>& roots, const variable_list& root_grads,
                             bool keep_graph, bool create_graph, const std::vector<edge>& captures) {
  graph_task task;
  task.capture_mode = !captures.empty();
  // discover the graph and count dependencies
  {
    std::vector<node*> stack;
    std::unordered_set<node*> seen;
    for (const auto& r : roots)
      if (r.fn && seen.insert(r.fn.get()).second) stack.push_back(r.fn.get());
    std::vector<node*> order;
    while (!stack.empty()) {
      node* n = stack.back();
      stack.pop_back();
      order.push_back(n);
      for (const auto& e : n->next) {
        if (!e.fn) continue;
        ++task.deps[e.fn.get()];
        if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
      }
    }
    if (task.capture_mode) {
      // a node is needed when an input edge is reachable from it: iterate to a fixed point
      std::unordered_set<node*> targets;
      for (const auto& c : captures)
        if (c.fn) targets.insert(c.fn.get());
      bool changed = true;
      for (node* n : order)
        if (targets.count(n)) task.needed.insert(n);
      while (changed) {
        changed = false;
        for (node* n : order) {
          if (task.needed.count(n)) continue;
          for (const auto& e : n->next)
            if (e.fn && task.needed.count(e.fn.get())) {
              task.needed.insert(n);
              changed = true;
              break;
            }
        }
      }
    }
  }
  variable_list captured(captures.size());
  auto cmp = [](node* a, node* b) { return a->sequence_nr < b->sequence_nr; };
  std::priority_queue<node*, std::vector<node*>, decltype(cmp)> ready(cmp);
  std::vector<std::shared_ptr<node>> keep_alive;
  auto deliver = [&](const edge& e, variable g) {
    auto& buf = task.buffers[e.fn.get()];
    if (buf.size() < std::max<std::size_t>(e.fn->outputs.size(), e.input_nr + 1))
      buf.resize(std::max<std::size_t>(e.fn->outputs.size(), e.input_nr + 1));
    buf[e.input_nr] = add_variables(buf[e.input_nr], std::move(g));
  };
  for (std::size_t i = 0; i < roots.size(); ++i) {
    if (!roots[i].fn) continue;
    keep_alive.push_back(roots[i].fn);
    deliver(roots[i], root_grads[i]);
  }
  {
    std::unordered_set<node*> pushed;
    for (const auto& r : roots)
      if (r.fn && task.deps[r.fn.get()] == 0 && pushed.insert(r.fn.get()).second)
        ready.push(r.fn.get());
  }
  const bool prev_mode = is_grad_enabled();
  struct mode_restore {
    bool m;
    ~mode_restore() { set_grad_enabled(m); }
  } restore{prev_mode};
  while (!ready.empty()) {
    node* n = ready.top();
    ready.pop();
    variable_list in = std::move(task.buffers[n]);
    task.buffers.erase(n);
    in.resize(std::max(in.size(), n->outputs.size()));
    // captures (grad()): gradients arriving at an input's edge
    bool is_capture_target = false;
    for (std::size_t c = 0; c < captures.size(); ++c)
      if (captures[c].fn.get() == n) {
        is_capture_target = true;
        if (captures[c].input_nr < in.size())
          captured[c] = add_variables(captured[c], in[captures[c].input_nr]);
      }
    bool run = true;
    if (task.capture_mode) {
      if (n->is_accumulator()) run = false;
      // run only when something further down still needs gradients
      if (run) {
        run = false;
        for (const auto& e : n->next)
          if (e.fn && task.needed.count(e.fn.get())) run = true;
      }
      (void)is_capture_target;
    }
    // retain_grad() on outputs of this node
    for (std::size_t k = 0; k < n->retained.size() && k < in.size(); ++k) {
      auto t = n->retained[k].lock();
      if (!t || !in[k] || !t->autograd) continue;
      visit_floating(t->type, "retain_grad", [&](auto tag) {
        using T = decltype(tag);
        const tensor<T> g(in[k]);
        auto& m = *t->autograd;
        if (create_graph) {
          m.grad = m.grad ? add_grads(tensor<T>(m.grad), g).impl_ptr() : g.impl_ptr();
        } else {
          no_grad_guard ng;
          m.grad = m.grad ? add_grads(tensor<T>(m.grad), g).impl_ptr()
                          : g.detach().clone().impl_ptr();
        }
      });
    }
    variable_list out;
    bool any_in = false;
    for (const auto& v : in) any_in = any_in || v != nullptr;
    if (run && any_in) {
      check(!n->released, errc::autograd, "backward: trying to backward through the graph a ",
            "second time (", n->name(), "'s saved tensors were freed after the first backward); ",
            "pass .retain_graph = true to the first backward");
      if (n->materialize_grads())
        for (std::size_t k = 0; k < in.size(); ++k)
          if (!in[k] && k < n->outputs.size()) in[k] = zeros_for(n->outputs[k]);
      set_grad_enabled(create_graph);
      out = n->apply(std::move(in));
      set_grad_enabled(prev_mode);
      if (!keep_graph && !n->is_accumulator()) {
        n->release_saved();
        n->released = true;
      }
    }
    for (std::size_t i = 0; i < n->next.size(); ++i) {
      const edge& e = n->next[i];
      if (!e.fn) continue;
      if (task.capture_mode && !task.needed.count(e.fn.get())) continue;
      if (i < out.size() && out[i]) deliver(e, std::move(out[i]));
      if (--task.deps[e.fn.get()] == 0) ready.push(e.fn.get());
    }
  }
  return captured;
}

template <class T>
variable default_grad(const tensor<T>& t) {
  check(t.numel() == 1, errc::autograd, "backward: grad can be implicitly created only for ",
        "one-element outputs, got shape ", t.shape(), "; pass a gradient tensor");
  tensor<T> g = ember::detail::make_tensor<T>(t.shape(), t.device());
  no_grad_guard ng;
  g.fill_(1);
  return g.impl_ptr();
}

template <class = void>
void collect_roots(const variable_list& outputs, const variable_list& grads,
                          std::vector<edge>& roots, variable_list& root_grads, const char* op) {
  check(grads.empty() || grads.size() == outputs.size(), errc::value, op, ": got ",
        grads.size(), " gradients for ", outputs.size(), " outputs");
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const variable& o = outputs[i];
    check(o != nullptr, errc::value, op, ": output ", i, " is an undefined tensor");
    visit_floating(o->type, op, [&](auto tag) {
      using T = decltype(tag);
      const tensor<T> t(o);
      check(t.requires_grad(), errc::autograd, op, ": output ", i, " (shape ", t.shape(),
            ") does not require grad and has no grad_fn; did you call requires_grad_() on ",
            "the inputs, or compute it under no_grad_guard?");
      variable g = grads.empty() ? nullptr : grads[i];
      if (g) {
        check(g->type == o->type, errc::dtype, op, ": gradient of dtype ", g->type,
              " for an output of dtype ", o->type);
        const tensor<T> gt(g);
        check(gt.shape() == t.shape(), errc::shape, op, ": gradient of shape ", gt.shape(),
              " for an output of shape ", t.shape());
      } else {
        g = default_grad(t);
      }
      roots.push_back(gradient_edge(t));
      root_grads.push_back(std::move(g));
    });
  }
}

template <class>
void run_backward(const variable_list& outputs, const variable_list& grads,
                         const backward_options& opts) {
  std::vector<edge> roots;
  variable_list root_grads;
  variable_list gs;
  for (const auto& g : grads)
    if (g) gs.push_back(g); else gs.push_back(nullptr);
  collect_roots(outputs, gs, roots, root_grads, "backward");
  execute(roots, root_grads, opts.retain_graph.value_or(opts.create_graph), opts.create_graph, {});
}

}  // namespace detail

namespace detail {
template <class T>
std::vector<tensor<T>> grad_impl(const std::vector<tensor<T>>& outputs,
                                 const std::vector<tensor<T>>& inputs,
                                 const std::vector<tensor<T>>& grad_outputs,
                                 const backward_options& opts) {
  variable_list outs, gouts;
  for (const auto& o : outputs) outs.push_back(o.impl_ptr());
  for (const auto& g : grad_outputs) gouts.push_back(detail::var(g));
  std::vector<edge> roots, captures;
  variable_list root_grads;
  detail::collect_roots(outs, gouts, roots, root_grads, "autograd::grad");
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    detail::check(inputs[i].defined() && inputs[i].requires_grad(), errc::autograd,
                  "autograd::grad: input ", i, " does not require grad");
    captures.push_back(detail::gradient_edge(inputs[i]));
  }
  const variable_list got = detail::execute(
      roots, root_grads, opts.retain_graph.value_or(opts.create_graph), opts.create_graph, captures);
  std::vector<tensor<T>> result;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    detail::check(got[i] != nullptr || opts.allow_unused, errc::autograd, "autograd::grad: input ",
                  i, " (shape ", inputs[i].shape(), ") was not used to compute the outputs; ",
                  "pass .allow_unused = true to get an undefined gradient instead");
    if (!got[i]) {
      result.emplace_back();
      continue;
    }
    tensor<T> g(got[i]);
    result.push_back(opts.create_graph ? g : g.detach());
  }
  return result;
}

}  // namespace detail

/// Gradients of outputs with respect to inputs (not accumulated into .grad()):
///   auto g = em::autograd::grad({loss}, {p}, {}, {.create_graph = true});
/// (overloads for float and double, so braced lists of tensors work as arguments)
template <class = void>
std::vector<tensor<float>> grad(const std::vector<tensor<float>>& outputs,
                                const std::vector<tensor<float>>& inputs,
                                const std::vector<tensor<float>>& grad_outputs = {},
                                const backward_options& opts = {}) {
  return detail::grad_impl<float>(outputs, inputs, grad_outputs, opts);
}
template <class = void>
std::vector<tensor<double>> grad(const std::vector<tensor<double>>& outputs,
                                 const std::vector<tensor<double>>& inputs,
                                 const std::vector<tensor<double>>& grad_outputs = {},
                                 const backward_options& opts = {}) {
  return detail::grad_impl<double>(outputs, inputs, grad_outputs, opts);
}

}  // namespace ember::autograd
