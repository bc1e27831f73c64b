// The tracer's hook into eager ops: a thread-local recorder (set by jit::trace) and op_scope,
// which each traced op opens to record itself once (ops it calls internally are not recorded).
#pragma once

#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>
#include <ember/expr/op.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace ember::detail {
struct tensor_impl;
}  // namespace ember::detail

namespace ember::jit {

/// A typed node attribute: an integer, a real, a list of integers or a string.
using attribute = std::variant<std::int64_t, double, std::vector<std::int64_t>, std::string>;
/// A node's attributes by name (sorted, so the text form is deterministic).
using attributes = std::map<std::string, attribute>;

namespace detail {

using impl_ptr = std::shared_ptr<::ember::detail::tensor_impl>;
using ::ember::detail::check;

/// What the tracer implements (jit/trace.hpp): value ids for tensors, and new nodes.
class recorder {
 public:
  virtual ~recorder() = default;
  /// The value id of a tensor: a traced value, or a new constant (parameters and buffers by
  /// their state_dict name; anything else is captured, with a warning).
  virtual int value_of(const impl_ptr& t) = 0;
  /// Adds a node; returns the id of its first output (the others follow in order).
  virtual int emit(op kind, std::vector<int> inputs, attributes attrs,
                   std::vector<std::pair<dtype, shape>> outputs) = 0;
  /// The tensor t now holds value `id`.
  virtual void bind(const impl_ptr& t, int id) = 0;
  /// t was read on the host (item(), a bool conversion): data-dependent control flow.
  virtual void host_read(const impl_ptr& t, const char* what) = 0;
  /// t was written in place by `op`.
  virtual void wrote_in_place(const impl_ptr& t, const char* op) = 0;
};

inline thread_local recorder* active_recorder = nullptr;
inline thread_local int recording_suspended = 0;

/// Opened by every traced op: true (and recording) only for the outermost traced op, so the ops
/// a composite op calls internally are not recorded twice.
class op_scope {
 public:
  op_scope() noexcept
      : rec_(active_recorder != nullptr && recording_suspended == 0 ? active_recorder : nullptr) {
    if (rec_) ++recording_suspended;
  }
  ~op_scope() {
    if (rec_) --recording_suspended;
  }
  op_scope(const op_scope&) = delete;
  op_scope& operator=(const op_scope&) = delete;

  explicit operator bool() const noexcept { return rec_ != nullptr; }
  recorder& get() const noexcept { return *rec_; }

  /// Records kind(inputs...) -> out. Inputs and out are tensors (anything with impl_ptr(),
  /// dtype() and shape()).
  template <class Out, class... In>
  void record(op kind, const Out& out, attributes attrs, const In&... in) const {
    std::vector<int> ids{rec_->value_of(in.impl_ptr())...};
    const int id = rec_->emit(kind, std::move(ids), std::move(attrs), {{out.dtype(), out.shape()}});
    rec_->bind(out.impl_ptr(), id);
  }
  /// Records kind(inputs) -> out for a list of tensors.
  template <class Out, class In>
  void record_list(op kind, const Out& out, attributes attrs, const std::vector<In>& in) const {
    std::vector<int> ids;
    ids.reserve(in.size());
    for (const auto& t : in) ids.push_back(rec_->value_of(t.impl_ptr()));
    const int id = rec_->emit(kind, std::move(ids), std::move(attrs), {{out.dtype(), out.shape()}});
    rec_->bind(out.impl_ptr(), id);
  }

 private:
  recorder* rec_;
};

/// Is a trace being recorded on this thread (outside any traced op)?
inline bool tracing() noexcept { return active_recorder != nullptr && recording_suspended == 0; }

/// Runs compute() (the body of a traced op) and records kind(in...) -> its result.
template <class F, class... In>
auto traced_op(op kind, attributes attrs, F&& compute, const In&... in) {
  const op_scope s;
  auto out = compute();
  if (s) s.record(kind, out, std::move(attrs), in...);
  return out;
}

/// An op the tracer cannot record: an error while tracing (instead of a silently wrong graph).
inline void untraceable(const char* what) {
  ::ember::detail::check(!tracing(), errc::not_implemented, "jit::trace: ", what,
                         " cannot be traced; compute it outside the traced module or leave it "
                         "to eager code");
}

/// A shape as an attribute.
inline std::vector<std::int64_t> ints(const shape& s) { return {s.begin(), s.end()}; }

}  // namespace detail
}  // namespace ember::jit
