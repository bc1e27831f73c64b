// graph_module: a traced (or loaded) graph that behaves as a module: callable, movable between
// devices, usable inside a dynamic model; running it with grad mode on records autograd.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/error.hpp>
#include <ember/jit/graph.hpp>
#include <ember/jit/interpreter.hpp>
#include <ember/jit/onnx.hpp>
#include <ember/jit/passes.hpp>
#include <ember/jit/text.hpp>
#include <ember/state_dict.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ember::jit {

/// A graph's output: an any_tensor that converts to tensor<T> (checked):
///   em::tensor<float> y = traced({x});
class output : public any_tensor {
 public:
  output() = default;
  explicit output(any_tensor t) : any_tensor(std::move(t)) {}
  template <class T>
  operator tensor<T>() const {  // NOLINT: implicit, as the value of a typed forward
    return get<T>();
  }
};

/// Runs the optimization passes with the interpreter folding constants.
template <class = void>
void optimize_graph(graph& g) {
  optimize(g, [&g](const node& n, const std::vector<any_tensor>& in) { return run_node(g, n, in); });
}

/// A graph with its constants, run by the interpreter. (A template only so that a program that
/// never runs a graph does not compile the interpreter: use the alias graph_module.)
template <class = void>
class basic_graph_module {
 public:
  basic_graph_module() = default;
  explicit basic_graph_module(std::shared_ptr<jit::graph> g) : graph_(std::move(g)) {
    detail::check(graph_ != nullptr, errc::value, "jit::graph_module: no graph");
  }

  /// The graph (print it with std::cout << m.graph()).
  const jit::graph& graph() const { return get(); }

  /// Every output of the graph.
  std::vector<any_tensor> run(const std::vector<any_tensor>& inputs) const {
    return run_graph(get(), inputs);
  }
  /// The first output:  em::tensor<float> y = traced({x});
  output operator()(const std::vector<any_tensor>& inputs) const { return output(run(inputs).at(0)); }
  /// One tensor in, the first output out (a typed forward, for use inside other modules).
  template <class T>
  tensor<T> forward(const tensor<T>& x) const {
    return run({any_tensor(x)}).at(0).template get<T>();
  }

  /// The constants (parameters, buffers, folded weights) by name.
  std::vector<std::pair<std::string, any_tensor>> named_constants() const {
    std::vector<std::pair<std::string, any_tensor>> r;
    for (const auto& [id, t] : get().constants) r.emplace_back(get().at(id).name, t);
    return r;
  }
  /// The constants as a state_dict (what jit::save stores beside the graph).
  ember::state_dict state_dict() const {
    ember::state_dict sd;
    for (auto& [name, t] : named_constants()) sd.insert(name, t);
    return sd;
  }

  /// Moves the constants to a device (inputs must then be on it too).
  void to(device dev) {
    auto g = std::make_shared<jit::graph>(get());
    for (auto& [id, t] : g->constants)
      if (t.device() != dev) t = t.visit([&](const auto& x) -> any_tensor { return x.to(dev); });
    graph_ = std::move(g);
  }

 private:
  const jit::graph& get() const {
    detail::check(graph_ != nullptr, errc::value, "jit::graph_module: empty (default-constructed)");
    return *graph_;
  }
  std::shared_ptr<const jit::graph> graph_;
};
using graph_module = basic_graph_module<>;

/// Exports a traced or loaded module's graph to ONNX (opset 17):
///   em::jit::export_onnx(traced, "net.onnx");
template <class V>
void export_onnx(const basic_graph_module<V>& m, const std::string& path, const onnx_options& o = {}) {
  export_onnx(m.graph(), path, o);
}

namespace detail {
/// Are a and b (same dtype and shape) equal within tol relative to b's largest magnitude?
template <class = void>
bool close(const any_tensor& a, const any_tensor& b, double tol) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const tensor<double> x = a.to<double>().contiguous(), y = b.to<double>().contiguous();
  double scale = 1, diff = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double u = x.data()[i], v = y.data()[i];
    if (std::isnan(u) || std::isnan(v)) {
      if (std::isnan(u) != std::isnan(v)) return false;
      continue;
    }
    if (std::isinf(u) || std::isinf(v)) {
      if (u != v) return false;
      continue;
    }
    scale = std::max(scale, std::abs(v));
    diff = std::max(diff, std::abs(u - v));
  }
  return diff <= tol * scale;
}
}  // namespace detail

}  // namespace ember::jit
