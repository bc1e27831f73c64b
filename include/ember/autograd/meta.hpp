// The autograd vocabulary every tensor carries (DESIGN.md, "Autograd"): the thread-local grad
// mode and its guards, `node` (a backward function with `next` edges), `edge`, and the
// per-tensor autograd_meta (requires_grad, grad, grad_fn). The engine is autograd/engine.hpp.
#pragma once

#include <ember/core/device.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ember {

namespace detail {
struct tensor_impl;
inline bool& grad_mode_slot() noexcept {
  thread_local bool enabled = true;
  return enabled;
}
}  // namespace detail

/// Is recording of the autograd graph on in this thread (the default)?
inline bool is_grad_enabled() noexcept { return detail::grad_mode_slot(); }
inline void set_grad_enabled(bool on) noexcept { detail::grad_mode_slot() = on; }

/// Turns recording off for a scope (this thread):  { em::no_grad_guard ng; auto y = a * 2.f; }
class no_grad_guard {
 public:
  no_grad_guard() noexcept : prev_(std::exchange(detail::grad_mode_slot(), false)) {}
  ~no_grad_guard() { detail::grad_mode_slot() = prev_; }
  no_grad_guard(const no_grad_guard&) = delete;
  no_grad_guard& operator=(const no_grad_guard&) = delete;

 private:
  bool prev_;
};

/// Turns recording back on for a scope inside a no_grad region.
class enable_grad_guard {
 public:
  enable_grad_guard() noexcept : prev_(std::exchange(detail::grad_mode_slot(), true)) {}
  ~enable_grad_guard() { detail::grad_mode_slot() = prev_; }
  enable_grad_guard(const enable_grad_guard&) = delete;
  enable_grad_guard& operator=(const enable_grad_guard&) = delete;

 private:
  bool prev_;
};

namespace autograd {

using ember::enable_grad_guard;
using ember::no_grad_guard;

struct node;

/// A type-erased tensor as it flows through the engine (null = no gradient, i.e. zeros).
using variable = std::shared_ptr<ember::detail::tensor_impl>;
using variable_list = std::vector<variable>;

/// Input `input_nr` of backward function `fn` (the forward op's input that gets this gradient).
struct edge {
  std::shared_ptr<node> fn;
  std::uint32_t input_nr = 0;
  bool valid() const noexcept { return fn != nullptr; }
};

/// Options of backward() and autograd::grad(). retain_graph defaults to create_graph, as in
/// PyTorch: { .retain_graph = true } keeps saved tensors for a second backward.
struct backward_options {
  std::optional<bool> retain_graph = std::nullopt;
  bool create_graph = false;
  /// grad() only: an input the outputs do not depend on gets an undefined gradient instead
  /// of an error.
  bool allow_unused = false;
};

/// Shape, dtype and device of one output of a forward op (to make zeros for a missing grad).
struct output_info {
  shape sizes;
  dtype type = dtype::f32;
  device dev = cpu;
};

/// A backward function: gradients of the forward op's outputs in, gradients of its inputs
/// out (one per `next` edge; null where an input gets none).
struct node {
  node() : sequence_nr(next_sequence_nr()) {}
  virtual ~node() = default;
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  /// "mul_backward", "mean_backward", ... (what grad_fn_name() shows).
  virtual std::string name() const = 0;
  /// grads.size() == outputs.size(); returns next.size() gradients.
  virtual variable_list apply(variable_list&& grads) = 0;
  /// Frees saved tensors (after a backward without retain_graph).
  virtual void release_saved() {}
  /// Whether apply wants zeros (true) or nulls (false) for outputs that got no gradient.
  virtual bool materialize_grads() const { return true; }
  /// True for the nodes that accumulate into a leaf's .grad().
  virtual bool is_accumulator() const { return false; }

  /// A user-facing name that replaces name() in grad_fn_name() (e.g. "mean_backward" for
  /// the fused division a mean records).
  std::string label;
  std::vector<edge> next;
  std::vector<output_info> outputs;
  /// Outputs whose tensor called retain_grad(): they get .grad() set as backward passes.
  std::vector<std::weak_ptr<ember::detail::tensor_impl>> retained;
  std::uint64_t sequence_nr;
  bool released = false;

 private:
  static std::uint64_t next_sequence_nr() noexcept {
    static std::atomic<std::uint64_t> n{0};
    return n.fetch_add(1, std::memory_order_relaxed);
  }
};

}  // namespace autograd

namespace detail {

/// Autograd state of one tensor handle's impl (absent until requires_grad_ or an op records).
struct autograd_meta {
  bool requires_grad = false;
  bool retains_grad = false;
  bool is_view = false;  ///< a differentiable view: in-place writes through it are refused
  std::shared_ptr<autograd::node> grad_fn;  ///< null for leaves
  std::uint32_t output_nr = 0;
  std::shared_ptr<tensor_impl> grad;  ///< accumulated gradient (.grad())
  std::weak_ptr<autograd::node> accumulator;  ///< leaves: the node that accumulates into grad
};

}  // namespace detail
}  // namespace ember
