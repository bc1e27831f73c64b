// The graph IR: SSA values (dtype + shape, a symbolic batch dimension allowed), nodes (an op
// from the closed op enum, value inputs/outputs, typed attributes, a body for fused groups),
// graph inputs/outputs and constants (parameters and captured tensors, by name).
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/expr/op.hpp>
#include <ember/jit/record.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace ember::jit {

// attribute, attributes: jit/record.hpp

/// The extent that stands for the symbolic batch dimension ("N" in the text form).
inline constexpr std::int64_t symbolic = -1;

/// One SSA value: written once by one node (or a graph input or a constant), read by any.
struct value {
  std::string name;                 ///< unique in its graph: "%name" in the text form
  ember::dtype type = dtype::f32;
  std::vector<std::int64_t> shape;  ///< extents; `symbolic` (-1) marks the batch dimension
};

struct graph;

/// One operation: op(inputs...) -> outputs..., with attributes; a fused group has a body.
struct node {
  ember::op kind = ember::op::leaf;
  std::vector<int> inputs;   ///< value ids
  std::vector<int> outputs;  ///< value ids
  attributes attrs;
  /// op::fused: the group's elementwise subgraph; its inputs/outputs match this node's.
  std::shared_ptr<graph> body;
};

/// A dataflow graph in topological order. Values are identified by their index in `values`.
struct graph {
  std::vector<value> values;
  std::vector<node> nodes;
  std::vector<int> inputs;
  std::vector<int> outputs;
  /// Constant values (parameters, buffers, captured tensors) and their tensors.
  std::map<int, any_tensor> constants;

  /// Adds a value and returns its id; an empty name becomes the next free number.
  int add_value(ember::dtype t, std::vector<std::int64_t> shape, std::string name = {}) {
    if (name.empty()) name = std::to_string(next_number_++);
    values.push_back({std::move(name), t, std::move(shape)});
    return static_cast<int>(values.size()) - 1;
  }
  /// Adds a constant value holding t.
  int add_constant(const any_tensor& t, std::string name = {}) {
    std::vector<std::int64_t> s(t.shape().begin(), t.shape().end());
    const int id = add_value(t.dtype(), std::move(s), std::move(name));
    constants[id] = t;
    return id;
  }
  bool is_constant(int id) const { return constants.count(id) != 0; }
  const value& at(int id) const {
    detail::check(id >= 0 && id < static_cast<int>(values.size()), errc::value,
                  "jit::graph: value id ", id, " out of range (", values.size(), " values)");
    return values[static_cast<std::size_t>(id)];
  }
  /// The number used for the next unnamed value.
  int next_number() const noexcept { return next_number_; }
  void set_next_number(int n) noexcept { next_number_ = n; }

 private:
  int next_number_ = 0;
};

/// The attribute `key` of n as A (an ember::error naming the op when absent or of another type).
template <class A>
const A& attr(const node& n, const std::string& key) {
  auto it = n.attrs.find(key);
  detail::check(it != n.attrs.end(), errc::value, "jit: ", name(n.kind), " node has no attribute \"",
                key, "\"");
  const A* a = std::get_if<A>(&it->second);
  detail::check(a != nullptr, errc::value, "jit: ", name(n.kind), " node: attribute \"", key,
                "\" has the wrong type");
  return *a;
}
/// The attribute `key` of n as A, or `fallback` when absent.
template <class A>
A attr_or(const node& n, const std::string& key, A fallback) {
  auto it = n.attrs.find(key);
  if (it == n.attrs.end()) return fallback;
  const A* a = std::get_if<A>(&it->second);
  detail::check(a != nullptr, errc::value, "jit: ", name(n.kind), " node: attribute \"", key,
                "\" has the wrong type");
  return *a;
}

}  // namespace ember::jit
