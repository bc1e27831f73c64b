// Elementwise programs written by hand, for the code below the expression engine (tensor's
// fill_ and copy_, autograd's gradient sums): the same kernel as lowered expressions.
#pragma once

#include <ember/core/device.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>
#include <ember/dispatch/program.hpp>
#include <ember/dispatch/registry.hpp>

#include <cstdint>
#include <initializer_list>
#include <vector>

namespace ember::dispatch {

/// An operand of a hand-written program: memory of dtype `type` viewed with sizes/strides
/// (broadcast to the output shape).
struct raw_operand {
  const void* data;
  dtype type;
  const shape& sizes;
  const shape& strides;
};

/// The compute type for values of these dtypes (as lowering chooses it).
inline compute compute_for(std::initializer_list<dtype> types) {
  bool all_int = true, all_f32 = true;
  for (dtype t : types) {
    const bool is_bool = t == dtype::boolean;
    const bool is_float = t == dtype::f32 || t == dtype::f64;
    if (!is_bool && is_float) all_int = false;
    if (!is_bool && t != dtype::f32) all_f32 = false;
  }
  return all_int ? compute::i64 : all_f32 ? compute::f32 : compute::f64;
}

/// Runs `code` over `operands` (op::leaf k reads operand k) into out, on out's device.
inline void run_raw(device dev, void* out, dtype out_type, const shape& out_sizes,
                    const shape& out_strides, std::initializer_list<raw_operand> operands,
                    std::initializer_list<instr> code, compute ctype, const char* what) {
  using ember::detail::check;
  check(out_type != dtype::f16 && out_type != dtype::bf16, errc::not_implemented, what, ": ",
        out_type, " tensors on ", dev, " support copies only (convert them on the CPU)");
  check(out_sizes.size() <= std::size_t(max_rank), errc::not_implemented, what, ": rank ",
        out_sizes.size(), " on ", dev, " (at most ", max_rank, ")");
  elementwise_program p;
  p.rank = static_cast<std::int32_t>(out_sizes.size());
  p.ctype = ctype;
  p.out = out;
  p.out_dtype = static_cast<std::uint8_t>(out_type);
  p.numel = 1;
  std::int64_t expect = 1;
  bool flat = true;
  for (std::size_t d = out_sizes.size(); d-- > 0;) {
    p.shape[d] = out_sizes[d];
    p.out_stride[d] = out_strides[d];
    p.numel *= out_sizes[d];
    if (out_sizes[d] != 1 && out_strides[d] != expect) flat = false;
    expect *= out_sizes[d];
  }
  if (p.numel == 0) return;
  for (const raw_operand& o : operands) {
    check(o.type != dtype::f16 && o.type != dtype::bf16, errc::not_implemented, what, ": ",
          o.type, " operands on ", dev, " are not supported (convert them first)");
    check(p.n_leaves < max_leaves, errc::internal, what, ": too many operands");
    leaf_ref& l = p.leaves[p.n_leaves++];
    l.data = o.data;
    l.dtype = static_cast<std::uint8_t>(o.type);
    const std::size_t lead = out_sizes.size() - o.sizes.size();
    for (std::size_t d = 0; d < o.sizes.size(); ++d) {
      const std::size_t od = lead + d;
      l.stride[od] = o.sizes[d] == 1 && out_sizes[od] != 1 ? 0 : o.strides[d];
      if (out_sizes[od] != 1 && l.stride[od] != out_strides[od]) flat = false;
    }
    for (std::size_t d = 0; d < lead; ++d)
      if (out_sizes[d] != 1) flat = false;
  }
  for (const instr& in : code) {
    check(p.n_code < max_code, errc::internal, what, ": program too long");
    p.code[p.n_code++] = in;
  }
  p.flat = flat;
  finish(p);
  kernel<op::fused>(dev, out_type, what)(p, dev);
}

/// Note [Device reductions]: reduces `in` (sizes/strides) over the dims in `mask` into out,
/// whose strides are given in out_strides for the kept dims of the input's rank (ignored on
/// reduced dims). Empty reductions are the caller's (identity values differ per op).
inline void run_reduce(device dev, reduce_kind kind, const void* in, dtype type,
                       const shape& sizes, const shape& strides, const std::vector<bool>& mask,
                       void* out, const shape& out_strides, const char* what) {
  using ember::detail::check;
  check(sizes.size() <= std::size_t(max_rank), errc::not_implemented, what, ": rank ",
        sizes.size(), " on ", dev, " (at most ", max_rank, ")");
  reduce_problem r;
  r.in = in;
  r.out = out;
  r.dtype = static_cast<std::uint8_t>(type);
  r.kind = kind;
  r.rank = static_cast<std::int32_t>(sizes.size());
  r.outputs = 1;
  r.count = 1;
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    r.shape[d] = sizes[d];
    r.in_stride[d] = strides[d];
    r.reduced[d] = mask[d];
    r.out_stride[d] = mask[d] ? 0 : out_strides[d];
    (mask[d] ? r.count : r.outputs) *= sizes[d];
  }
  if (r.outputs == 0) return;
  kernel<op::sum>(dev, type, what)(r, dev);
}

/// instr helpers
constexpr instr load(int k) { return {opc::leaf, 0, static_cast<std::uint8_t>(k), 0.0}; }
constexpr instr constant(double v) { return {opc::scalar, 0, 0, v}; }
constexpr instr apply(std::uint16_t o) { return {o, 0, 0, 0.0}; }

}  // namespace ember::dispatch
