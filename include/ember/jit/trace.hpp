// jit::trace: runs a module (or any callable over tensors) once while recording every op into a
// graph (Note [Tracing]); the optimized graph comes back as a graph_module.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/error.hpp>
#include <ember/jit/graph.hpp>
#include <ember/jit/module.hpp>
#include <ember/jit/record.hpp>
#include <ember/ops/factory.hpp>
#include <ember/tensor.hpp>

#include <cstdint>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ember::jit {

// Note [Tracing]
// Like torch.jit.trace, a trace records the ops one forward executes, with its example inputs:
// control flow that depends on values (an `if` on `item()`, a loop count from a tensor) is
// baked in, and so are tensors made inside forward (zeros of a fixed shape), which become
// constants. The tracer warns when a traced value is read on the host (item(), a bool
// conversion), and after tracing runs the graph on the example inputs and checks that it gives
// the traced outputs (an ember::error otherwise: an op the tracer does not record was used).
// Dimension `batch_dim` of every input is symbolic: it may differ when the graph runs, as long
// as it flows through the model unchanged (reshapes that keep it in place are recorded with 0,
// "copy this extent", as ONNX's Reshape).

/// Options of jit::trace.
struct trace_options {
  /// The dimension of every input that is the (dynamic) batch; -1: every extent is fixed.
  std::int64_t batch_dim = 0;
  /// Run the optimization passes (DCE, CSE, constant folding, batch-norm folding, fusion).
  bool optimize = true;
  /// After tracing, run the graph on the example inputs and compare with the traced outputs.
  bool check = true;
  /// Called with each warning (default: printed to std::cerr as "[ember.jit] warning: ...").
  std::function<void(const std::string&)> on_warning{};
};

namespace detail {

class tracer final : public recorder {
 public:
  explicit tracer(const trace_options& o) : options_(o) {}

  graph g;
  std::vector<std::vector<bool>> sym;  ///< per value: which dims are the symbolic batch

  void name_constant(const impl_ptr& t, std::string name) {
    if (t) names_.emplace(t.get(), std::move(name));
  }
  int add_input(const any_tensor& t, std::int64_t i) {
    std::vector<std::int64_t> s(t.shape().begin(), t.shape().end());
    std::vector<bool> flags(s.size(), false);
    const std::int64_t bd = options_.batch_dim;
    if (bd >= 0 && bd < static_cast<std::int64_t>(s.size())) {
      flags[static_cast<std::size_t>(bd)] = true;
      s[static_cast<std::size_t>(bd)] = symbolic;
    }
    const int id = g.add_value(t.dtype(), std::move(s), "input" + std::to_string(i));
    sym.push_back(std::move(flags));
    g.inputs.push_back(id);
    bind(t.impl_ptr(), id);
    return id;
  }

  int value_of(const impl_ptr& t) override {
    ::ember::detail::check(t != nullptr, errc::value, "jit::trace: an op got an undefined tensor");
    if (auto it = values_.find(t.get()); it != values_.end()) return it->second.second;
    std::string nm;
    if (auto it = names_.find(t.get()); it != names_.end()) {
      nm = it->second;
    } else {
      nm = "captured." + std::to_string(captured_++);
      warn("a tensor of shape " + shape_text(t) + " that is not a parameter, buffer or input was "
           "captured as the constant %" + nm + " (a tensor made inside forward, or the result "
           "of an op the tracer does not record)");
    }
    const int id = g.add_constant(any_tensor(t), nm);
    sym.emplace_back(t->sizes.size(), false);
    values_[t.get()] = {t, id};
    return id;
  }

  int emit(op kind, std::vector<int> inputs, attributes attrs,
           std::vector<std::pair<dtype, shape>> outputs) override {
    node n{kind, std::move(inputs), {}, std::move(attrs), nullptr};
    int first = -1;
    for (auto& [t, s] : outputs) {
      std::vector<bool> flags = infer_symbolic(n, s);
      std::vector<std::int64_t> ext(s.begin(), s.end());
      for (std::size_t d = 0; d < ext.size(); ++d)
        if (flags[d]) ext[d] = symbolic;
      const int id = g.add_value(t, std::move(ext));
      sym.push_back(std::move(flags));
      remember_extents(id, s);
      n.outputs.push_back(id);
      if (first < 0) first = id;
    }
    g.nodes.push_back(std::move(n));
    return first;
  }

  void bind(const impl_ptr& t, int id) override { values_[t.get()] = {t, id}; }

  void host_read(const impl_ptr& t, const char* what) override {
    auto it = values_.find(t.get());
    if (it == values_.end() || g.is_constant(it->second.second)) return;
    warn(std::string(what) + " read the traced value %" + g.at(it->second.second).name +
         " on the host: control flow that depends on it is baked into the trace and will not "
         "follow other inputs");
  }

  void wrote_in_place(const impl_ptr& t, const char* op_name) override {
    auto it = values_.find(t.get());
    if (it != values_.end() && g.is_constant(it->second.second)) {
      warn(std::string(op_name) + " wrote into the constant %" + g.at(it->second.second).name +
           " during tracing; the graph uses it as a constant");
      return;
    }
    for (const auto& [p, v] : values_)
      if (p != t.get() && v.first->storage == t->storage && !g.is_constant(v.second)) {
        warn(std::string(op_name) + " wrote in place into a tensor that shares memory with another "
             "traced value; the graph records the write as a new value, so other views of that "
             "memory do not see it");
        return;
      }
  }

  const std::vector<std::string>& warnings() const { return warnings_; }
  /// The value id a tensor holds, or -1.
  int find(const impl_ptr& t) const {
    auto it = values_.find(t.get());
    return it == values_.end() ? -1 : it->second.second;
  }

 private:
  static std::string shape_text(const impl_ptr& t) {
    std::string s = "(";
    for (std::size_t i = 0; i < t->sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(t->sizes[i]);
    return s + ")";
  }
  void warn(const std::string& w) {
    warnings_.push_back(w);
    if (options_.on_warning) options_.on_warning(w);
    else std::cerr << "[ember.jit] warning: " << w << "\n";
  }

  const std::vector<bool>& flags_of(int id) const { return sym.at(static_cast<std::size_t>(id)); }

  /// Which dims of a new output are the symbolic batch (and rewrites reshape/expand/slice
  /// attributes so they follow it).
  std::vector<bool> infer_symbolic(node& n, const shape& out) {
    const std::size_t r = out.size();
    std::vector<bool> flags(r, false);
    if (n.inputs.empty()) return flags;
    const int x = n.inputs[0];
    const auto& fx = flags_of(x);
    const auto& sx = g.at(x).shape;
    auto sym_dim = [](const std::vector<bool>& f) -> std::int64_t {
      for (std::size_t d = 0; d < f.size(); ++d)
        if (f[d]) return static_cast<std::int64_t>(d);
      return -1;
    };
    const std::int64_t j = sym_dim(fx);
    switch (n.kind) {
      case op::reshape: {
        auto& target = std::get<std::vector<std::int64_t>>(n.attrs.at("shape"));
        if (j < 0 || static_cast<std::size_t>(j) >= r) return flags;
        // the batch stays in place when the dims before it are the same
        const auto ju = static_cast<std::size_t>(j);
        bool same_prefix = true;
        for (std::size_t d = 0; d < ju; ++d) same_prefix = same_prefix && target[d] == concrete(x, d);
        if (same_prefix && target[ju] == concrete(x, ju)) {
          flags[ju] = true;
          target[ju] = 0;  // copy the input's extent (Note [Tracing])
        }
        return flags;
      }
      case op::permute: {
        const auto& dims = std::get<std::vector<std::int64_t>>(n.attrs.at("dims"));
        for (std::size_t d = 0; d < r && d < dims.size(); ++d)
          flags[d] = fx.at(static_cast<std::size_t>(dims[d]));
        return flags;
      }
      case op::expand: {
        auto& target = std::get<std::vector<std::int64_t>>(n.attrs.at("shape"));
        const std::size_t lead = r - sx.size();
        if (j >= 0 && target[lead + static_cast<std::size_t>(j)] == concrete(x, static_cast<std::size_t>(j))) {
          flags[lead + static_cast<std::size_t>(j)] = true;
          target[lead + static_cast<std::size_t>(j)] = -1;
        }
        return flags;
      }
      case op::slice: {
        const auto d = std::get<std::int64_t>(n.attrs.at("dim"));
        flags = fx;
        if (d == j) {
          auto& start = std::get<std::int64_t>(n.attrs.at("start"));
          auto& end = std::get<std::int64_t>(n.attrs.at("end"));
          auto& step = std::get<std::int64_t>(n.attrs.at("step"));
          if (start == 0 && end >= concrete(x, static_cast<std::size_t>(d)) && step == 1)
            end = std::numeric_limits<std::int64_t>::max();  // the whole batch, whatever its size
          else
            flags[static_cast<std::size_t>(d)] = false;
        }
        return flags;
      }
      case op::select: {
        const auto d = std::get<std::int64_t>(n.attrs.at("dim"));
        for (std::size_t i = 0, o = 0; i < fx.size(); ++i)
          if (static_cast<std::int64_t>(i) != d && o < r) flags[o++] = fx[i];
        return flags;
      }
      case op::sum: case op::mean: case op::prod: case op::amax: case op::amin: case op::var:
      case op::std: case op::logsumexp: case op::argmax: case op::argmin: {
        std::vector<bool> reduced(fx.size(), false);
        if (auto it = n.attrs.find("dims"); it != n.attrs.end()) {
          for (auto d : std::get<std::vector<std::int64_t>>(it->second)) reduced.at(static_cast<std::size_t>(d)) = true;
        } else if (auto it2 = n.attrs.find("dim"); it2 != n.attrs.end()) {
          auto d = std::get<std::int64_t>(it2->second);
          reduced.at(static_cast<std::size_t>(d < 0 ? d + static_cast<std::int64_t>(fx.size()) : d)) = true;
        } else {
          reduced.assign(fx.size(), true);
        }
        const bool keep = std::get<std::int64_t>(n.attrs.at("keepdim")) != 0;
        for (std::size_t i = 0, o = 0; i < fx.size(); ++i) {
          if (reduced[i] && !keep) continue;
          if (o < r) flags[o] = fx[i] && !reduced[i];
          ++o;
        }
        return flags;
      }
      case op::embedding: {  // indices (N, L) -> (N, L, D)
        for (std::size_t d = 0; d < fx.size() && d < r; ++d) flags[d] = fx[d];
        return flags;
      }
      case op::stack: {
        const auto d = static_cast<std::size_t>(std::get<std::int64_t>(n.attrs.at("dim")));
        for (std::size_t i = 0, o = 0; o < r; ++o) {
          if (o == d) continue;
          flags[o] = i < fx.size() && fx[i];
          ++i;
        }
        return flags;
      }
      default: break;
    }
    // everything else: dims aligned from the right that keep a symbolic input's extent
    for (int in : n.inputs) {
      const auto& f = flags_of(in);
      if (f.size() > r) continue;
      const std::size_t lead = r - f.size();
      for (std::size_t d = 0; d < f.size(); ++d)
        if (f[d] && out[lead + d] == concrete(in, d)) flags[lead + d] = true;
    }
    return flags;
  }

  /// The traced extent of value v at dim d (the symbolic one included).
  std::int64_t concrete(int v, std::size_t d) const {
    auto it = extents_.find(v);
    if (it != extents_.end()) return it->second.at(d);
    return g.at(v).shape.at(d);
  }

 public:
  /// Remembers the concrete extents of a value (the graph stores `symbolic` instead).
  void remember_extents(int v, const shape& s) { extents_[v] = std::vector<std::int64_t>(s.begin(), s.end()); }

 private:
  trace_options options_;
  std::unordered_map<const ::ember::detail::tensor_impl*, std::pair<impl_ptr, int>> values_;
  std::unordered_map<const ::ember::detail::tensor_impl*, std::string> names_;
  std::unordered_map<int, std::vector<std::int64_t>> extents_;
  std::vector<std::string> warnings_;
  int captured_ = 0;
};

/// Sets the thread's recorder for a scope.
class tracing_scope {
 public:
  explicit tracing_scope(recorder* r) : prev_(active_recorder), prev_suspended_(recording_suspended) {
    ::ember::detail::check(active_recorder == nullptr, errc::value,
                           "jit::trace: already tracing on this thread (nested traces are not supported)");
    active_recorder = r;
    recording_suspended = 0;
  }
  ~tracing_scope() {
    active_recorder = prev_;
    recording_suspended = prev_suspended_;
  }
  tracing_scope(const tracing_scope&) = delete;
  tracing_scope& operator=(const tracing_scope&) = delete;

 private:
  recorder* prev_;
  int prev_suspended_;
};

template <class F>
struct call_traits : call_traits<decltype(&F::operator())> {};
template <class C, class R, class... A>
struct call_traits<R (C::*)(A...)> {
  using args = std::tuple<std::remove_cvref_t<A>...>;
};
template <class C, class R, class... A>
struct call_traits<R (C::*)(A...) const> {
  using args = std::tuple<std::remove_cvref_t<A>...>;
};
template <class R, class... A>
struct call_traits<R (*)(A...)> {
  using args = std::tuple<std::remove_cvref_t<A>...>;
};

/// The tensor parameter types of m's forward (modules) or operator() (callables).
template <class M>
auto forward_args() {
  if constexpr (requires { &M::forward; }) return typename call_traits<decltype(&M::forward)>::args{};
  else if constexpr (requires { &M::operator(); }) return typename call_traits<M>::args{};
  else if constexpr (std::is_pointer_v<M> || std::is_function_v<M>) return typename call_traits<std::decay_t<M>>::args{};
  else return nullptr;
}

/// Calls m with the example inputs converted to its parameter types.
template <class M>
auto call_typed(M& m, const std::vector<any_tensor>& in) {
  using Args = decltype(forward_args<M>());
  static_assert(!std::is_same_v<Args, std::nullptr_t>,
                "jit::trace: cannot see the parameter types of this callable (a generic lambda or "
                "an overloaded forward); take `const std::vector<em::any_tensor>&` or tensors "
                "of fixed element types");
  constexpr std::size_t n = std::tuple_size_v<Args>;
  ::ember::detail::check(in.size() >= n, errc::value, "jit::trace: forward takes ", n,
                         " tensors, got ", in.size(), " example inputs");
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    return m(in[I].template get<typename std::tuple_element_t<I, Args>::value_type>()...);
  }(std::make_index_sequence<n>{});
}

inline void collect_outputs(std::vector<any_tensor>& out, const any_tensor& t) { out.push_back(t); }
template <class T>
void collect_outputs(std::vector<any_tensor>& out, const tensor<T>& t) { out.emplace_back(t); }
template <class T>
void collect_outputs(std::vector<any_tensor>& out, const std::vector<T>& v) {
  for (const auto& t : v) collect_outputs(out, t);
}
template <class... T>
void collect_outputs(std::vector<any_tensor>& out, const std::tuple<T...>& t) {
  std::apply([&](const auto&... x) { (collect_outputs(out, x), ...); }, t);
}
template <class A, class B>
void collect_outputs(std::vector<any_tensor>& out, const std::pair<A, B>& p) {
  collect_outputs(out, p.first);
  collect_outputs(out, p.second);
}

}  // namespace detail

/// Traces m (an nn module, a function or lambda over tensors, or a callable taking
/// `const std::vector<em::any_tensor>&`) on example inputs: records one forward into a graph,
/// optimizes it and returns a module that runs it (Note [Tracing]).
///   n.eval();  auto traced = em::jit::trace(n, {em::randn<float>({1, 64})});
template <class M>
graph_module trace(M&& m, const std::vector<any_tensor>& inputs, const trace_options& options = {}) {
  using D = std::remove_cvref_t<M>;
  detail::tracer tr(options);
  if constexpr (requires(D& d) { d.named_parameters_any(); d.named_buffers(); }) {
    for (auto& [name, p] : m.named_parameters_any()) tr.name_constant(p.impl_ptr(), name);
    for (auto& [name, b] : m.named_buffers()) tr.name_constant(b.impl_ptr(), name);
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    ::ember::detail::check(inputs[i].defined(), errc::value, "jit::trace: example input ", i, " is undefined");
    const int id = tr.add_input(inputs[i], static_cast<std::int64_t>(i));
    tr.remember_extents(id, inputs[i].shape());
  }
  std::vector<any_tensor> outs;
  {
    no_grad_guard ng;  // a trace records the forward only
    detail::tracing_scope scope(&tr);
    if constexpr (std::is_invocable_v<D&, const std::vector<any_tensor>&>) {
      detail::collect_outputs(outs, m(inputs));
    } else {
      detail::collect_outputs(outs, detail::call_typed(m, inputs));
    }
  }
  ::ember::detail::check(!outs.empty(), errc::value, "jit::trace: forward returned no tensors");
  for (const auto& o : outs) {
    int id = tr.find(o.impl_ptr());
    if (id < 0 || tr.g.is_constant(id)) {
      // an output that does not depend on the inputs: a constant of the graph
      id = tr.value_of(o.impl_ptr());
    }
    tr.g.outputs.push_back(id);
  }
  graph g = std::move(tr.g);
  if (options.optimize) optimize_graph(g);
  graph_module gm(std::make_shared<graph>(std::move(g)));
  if (options.check) {
    no_grad_guard ng;
    const auto again = gm.run(inputs);
    for (std::size_t i = 0; i < outs.size(); ++i) {
      const bool same = again[i].dtype() == outs[i].dtype() && again[i].shape() == outs[i].shape() &&
                        detail::close(again[i], outs[i], 1e-4);
      ::ember::detail::check(same, errc::value, "jit::trace: the traced graph does not reproduce "
                             "output ", i, " of forward on the example inputs (the model uses an op "
                             "the tracer does not record; see the warnings above)");
    }
    // the same forward on other values of the same shapes: a captured tensor that depends on
    // the inputs (an op the tracer does not record) shows up here
    generator gen(0x6a69745f636865ull);
    std::vector<any_tensor> other;
    for (const auto& in : inputs)
      other.push_back(in.dtype() == dtype::f32 || in.dtype() == dtype::f64
                          ? in.visit([&](const auto& t) -> any_tensor {
                              using T = typename std::remove_cvref_t<decltype(t)>::value_type;
                              if constexpr (std::is_floating_point_v<T>)
                                return tensor<T>(t + randn<T>(t.shape(), gen) * T(0.25));
                              else
                                return t;
                            })
                          : in);
    std::vector<any_tensor> want;
    if constexpr (std::is_invocable_v<D&, const std::vector<any_tensor>&>)
      detail::collect_outputs(want, m(other));
    else
      detail::collect_outputs(want, detail::call_typed(m, other));
    const auto got = gm.run(other);
    for (std::size_t i = 0; i < want.size() && i < got.size(); ++i)
      ::ember::detail::check(detail::close(got[i], want[i], 1e-4), errc::value,
                             "jit::trace: the traced graph does not reproduce output ", i,
                             " of forward on other inputs of the same shapes: the model uses an op "
                             "the tracer does not record (its result was captured as a constant; "
                             "see the warnings)");
  }
  return gm;
}

}  // namespace ember::jit
