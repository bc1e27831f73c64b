// Materialization of elementwise expressions: traversal chosen once per assignment (Note
// [Traversal]), threading over the pool, aliasing checks, and evaluate()/assign().
#pragma once

#include <ember/core/parallel.hpp>
#include <ember/dispatch/lower.hpp>
#include <ember/eval/evaluator.hpp>
#include <ember/eval/strided.hpp>
#include <ember/jit/record_expr.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <type_traits>

namespace ember::autograd::detail {
template <class E>
bool expression_requires_grad(const E& e);  // autograd/fused.hpp
}  // namespace ember::autograd::detail

namespace ember::detail {

// autograd/fused.hpp (included at the end of this header)
template <class T, class E>
tensor<T> record_fused(tensor<T> out, const E& e);
template <class T, class E>
void assign_recorded(const tensor<T>& dst, const E& e, const char* op);

/// Elements per parallel task below which an assignment stays on one thread.
inline constexpr std::int64_t elementwise_grain = 32768;

/// Calls f(t) for every tensor leaf t of an expression (a tensor operand is its own leaf), in
/// order, left to right.
template <class E, class F>
void for_each_tensor_leaf(const E& e, F&& f) {
  auto visit = [&](const auto& self, const auto& node) -> void {
    if constexpr (is_tensor_v<decltype(node)>) {
      f(node);
    } else if constexpr (requires { node.t; }) {
      f(node.t);
    } else if constexpr (requires { node.c; }) {
      self(self, node.a); self(self, node.b); self(self, node.c);
    } else if constexpr (requires { node.b; }) {
      self(self, node.a); self(self, node.b);
    } else if constexpr (requires { node.a; }) {
      self(self, node.a);
    }
  };
  visit(visit, e);
}

#if EMBER_HAS_XSIMD
/// Note [Streaming stores]: an assignment whose output is larger than the last-level cache
/// cannot leave its result in the cache for the next op, and a plain store first reads every
/// output line it writes (a read for ownership): 3 bytes of traffic for every 2 of a unary op.
/// There the dense path (Note [Dense operands]) stores with non-temporal stores (MOVNTPS,
/// straight to memory, no read), when the output is aligned to 64 bytes (so is every task's
/// start, a multiple of 64 elements). Measured with bench/expr.cpp (16M floats, one thread,
/// min of 15, AMD EPYC VM): E1 11.9 -> 10.0 ms, A1 12.8 -> 10.6 ms, E2 (compute-bound there)
/// 14.7 -> 14.1 ms. The values are the same bits: only the store instruction differs. Below
/// the threshold the result stays in the cache, where the next op finds it.
/// The threshold, in bytes of output: 32 MiB, a server's last-level cache or more than its
/// share of it (the system's own figure is not trusted: sysconf(_SC_LEVEL3_CACHE_SIZE) says
/// 256 MiB on the development VM, whose EPYC has 32 MiB). Settable: benchmarks compare both
/// ways; 0 streams every aligned dense output, a huge value none.
inline std::atomic<std::int64_t>& stream_store_min_bytes() {
  static std::atomic<std::int64_t> bytes{std::int64_t{32} << 20};
  return bytes;
}

/// Whether a dense assignment of n elements into o streams its stores.
template <class T>
bool streams(const T* o, std::int64_t n) {
  if constexpr (!simd::has_stream_store) return false;
  return reinterpret_cast<std::uintptr_t>(o) % 64 == 0 &&
         n * static_cast<std::int64_t>(sizeof(T)) >= stream_store_min_bytes().load(std::memory_order_relaxed);
}

/// The unit loop over [i, stop) of one row: out[i..] = ev's packets (leaves read row + i), the
/// last partial packet padded. Shared by the row traversal and the dense path (one
/// instantiation of the expression's packet code for both). stream: o + i is aligned, and the
/// packets go out with streaming stores (Note [Streaming stores]).
template <class T, class Ev>
void unit_span(const Ev& ev, T* o, std::int64_t i, std::int64_t stop, bool stream = false) {
  constexpr std::int64_t W = static_cast<std::int64_t>(simd::width<T>);
  if (stream) {
    for (; i + W <= stop; i += W) simd::store_stream(o + i, ev.template packet<load_mode::unit>(i));
    simd::stream_fence();
  } else {
    for (; i + W <= stop; i += W) simd::store(o + i, ev.template packet<load_mode::unit>(i));
  }
  if (i < stop) {
    alignas(64) T buf[W];
    simd::store(buf, ev.packet_partial(i, stop - i));
    for (std::int64_t k = 0; k < stop - i; ++k) o[i + k] = buf[k];
  }
}

/// unit_span when every leaf reads the elements of src (Note [Shared leaves]).
template <class T, class Ev>
void shared_span(const Ev& ev, const T* src, T* o, std::int64_t i, std::int64_t stop,
                 bool stream = false) {
  constexpr std::int64_t W = static_cast<std::int64_t>(simd::width<T>);
  if (stream) {
    for (; i + W <= stop; i += W) simd::store_stream(o + i, ev.packet_shared(simd::load(src + i)));
    simd::stream_fence();
  } else {
    for (; i + W <= stop; i += W) simd::store(o + i, ev.packet_shared(simd::load(src + i)));
  }
  if (i < stop) {
    alignas(64) T buf[W];
    simd::store(buf, ev.packet_partial(i, stop - i));
    for (std::int64_t k = 0; k < stop - i; ++k) o[i + k] = buf[k];
  }
}
#endif

// Note [Dense operands]: the common eager case, `c = a + b` on tensors of one shape, all
// contiguous. Then the whole assignment is one row of numel elements: the evaluator is built
// with flat leaves (no broadcast strides), and coalescing, the row odometer and the per-task
// evaluator copies are skipped: that setup was most of an eager op's time on small tensors
// (bench O1). The packets and the task cuts are those of the row traversal, so the values are
// the same bits.

/// Is the assignment dense: out contiguous, every tensor leaf of exactly out's shape and strides?
/// shared_src: the leaves' buffer when they all read the same one (Note [Shared leaves]).
template <class E>
bool dense_operands(const shape& out_strides, const shape& sizes, const E& e,
                    const void*& shared_src) {
  std::int64_t acc = 1;
  for (std::size_t d = sizes.size(); d-- > 0;) {
    if (out_strides[d] != acc) return false;
    acc *= sizes[d];
  }
  bool dense = true, same = true;
  const void* first = nullptr;
  for_each_tensor_leaf(e, [&](const auto& t) {
    dense = dense && t.strides() == out_strides && t.shape() == sizes;
    if (!first) first = t.data();
    same = same && first == static_cast<const void*>(t.data());
  });
  shared_src = same ? first : nullptr;
  return dense;
}

/// Note [Traversal]: after broadcasting every leaf to the output shape and coalescing dims
/// (Note [Coalescing]), one innermost row is walked at a time:
///  - unit:   every operand steps by 1 along the row: plain SIMD loads, the fastest loop;
///  - bcast:  steps are 0 or 1 (a row vector or scalar broadcast over rows, e.g. X - m with
///            m of shape (1024)): a stride-0 leaf's value is loaded once per row (hoisted);
///  - gather: any other layout (transposed, sliced with a step): elements are gathered into a
///            packet and scattered back, so the math is still the SIMD math;
///  - shared: unit, and every leaf reads the same elements (Note [Shared leaves]);
///  - scalar: expressions that have no packet form (bool/integer results, casts between
///            types, half types) evaluate element by element.
/// Before any of these, operands of the output's shape that are all contiguous take one flat
/// row without coalescing (Note [Dense operands]).
/// The last partial packet of a row is padded, never computed by a scalar formula, so a
/// value never depends on its position or on the thread count (bitwise reproducibility).
/// Lean (gradient formulas, Note [Fused backward]): only the bcast and gather loops are
/// instantiated (compile time), with the same values.
template <class T, class E, bool Lean = false>
void run_elementwise(T* out, const shape& out_strides, const shape& sizes, const E& e) {
  if (sizes.numel() == 0) return;
#if EMBER_HAS_XSIMD
  if constexpr (!Lean && vectorizable_v<E> && std::is_same_v<T, typename E::value_type>) {
    const void* shared_src = nullptr;
    if (dense_operands(out_strides, sizes, e, shared_src)) {  // Note [Dense operands]
      const evaluator<E> dev(e, dense);
      const T* src = nullptr;
      if constexpr (shared_leaf_candidate_v<E>) src = static_cast<const T*>(shared_src);
      const std::int64_t total = sizes.numel();
      const bool stream = streams(out, total);  // Note [Streaming stores]
      auto run = [&](std::int64_t b, std::int64_t end) {
        if constexpr (shared_leaf_candidate_v<E>)
          if (src) return shared_span(dev, src, out, b, end, stream);
        unit_span(dev, out, b, end, stream);
      };
      if (total <= elementwise_grain) return run(0, total);
      constexpr std::int64_t align = 64;  // task boundaries as dispatch() cuts them
      parallel_for(0, (total + align - 1) / align, elementwise_grain / align,
                   [&](std::int64_t b, std::int64_t e2) { run(b * align, std::min(total, e2 * align)); });
      return;
    }
  }
#endif
  evaluator<E> ev(e, sizes);
  constexpr std::size_t N = 1 + E::leaf_count;
  std::array<const shape*, N> st{};
  st[0] = &out_strides;
  {
    std::size_t k = 1;
    ev.for_each_leaf([&](auto& l) { st[k++] = &l.strides; });
  }
  const strided_plan<N> plan = coalesce<N>(sizes, st);
  {
    std::size_t k = 1;
    ev.for_each_leaf([&](auto& l) { l.strides = plan.strides[k++]; });
  }
  const shape& dims = plan.sizes;
  const shape& ost = plan.strides[0];
  const std::size_t rank = dims.size();
  const std::int64_t n = dims[rank - 1];
  const std::int64_t rows = dims.numel() / n;
  const std::int64_t out_inner = ost[rank - 1];

  bool unit = out_inner == 1, bcast = out_inner == 1;
  ev.for_each_leaf([&](auto& l) {
    l.inner = l.strides[rank - 1];
    unit = unit && l.inner == 1;
    bcast = bcast && (l.inner == 0 || l.inner == 1);
  });

  // processes the flattened element range [begin, end) with its own copy of the evaluator
  auto process = [&](auto mode_tag, std::int64_t begin, std::int64_t end) {
    constexpr int mode = decltype(mode_tag)::value;
    // the local evaluator's type depends on the mode, so its packet calls are dependent and
    // the discarded packet branch of the scalar mode is never instantiated (clang resolves
    // non-dependent calls in a generic lambda eagerly, deducing their return types)
    using local_evaluator = std::conditional_t<mode >= 0, evaluator<E>, void>;
    local_evaluator local = ev;
    std::int64_t row = begin / n, col = begin % n;
    shape idx(rank > 1 ? rank - 1 : 0, 0);
    std::int64_t opos = 0;
    {
      std::int64_t r = row;
      for (std::size_t d = rank - 1; d-- > 0;) {
        idx[d] = r % dims[d];
        r /= dims[d];
        opos += idx[d] * ost[d];
      }
      local.for_each_leaf([&](auto& l) {
        l.pos = 0;
        for (std::size_t d = 0; d + 1 < rank; ++d) l.pos += idx[d] * l.strides[d];
      });
    }
    while (begin < end) {
      const std::int64_t cnt = std::min(n - col, end - begin);
      local.for_each_leaf([](auto& l) { l.start_row(); });
      T* o = out + opos;
      if constexpr (mode == 3) {
        for (std::int64_t i = col; i < col + cnt; ++i) o[i * out_inner] = local.value(i);
      } else {
#if EMBER_HAS_XSIMD
        constexpr auto M = mode == 0 || mode == 4 ? load_mode::unit
                           : mode == 1             ? load_mode::bcast
                                                   : load_mode::gather;
        constexpr std::int64_t W = static_cast<std::int64_t>(simd::width<T>);
        std::int64_t i = col;
        const std::int64_t stop = col + cnt;
        if constexpr (mode == 4) {  // Note [Shared leaves]
          const T* src = nullptr;
          local.for_each_leaf([&](auto& l) {
            if (!src) src = l.row;
          });
          shared_span(local, src, o, i, stop);
          i = stop;
        } else if constexpr (mode == 0) {
          unit_span(local, o, i, stop);
          i = stop;
        }
        for (; i + W <= stop; i += W) {
          if constexpr (M == load_mode::gather) {
            alignas(64) T buf[W];
            simd::store(buf, local.template packet<M>(i));
            for (std::int64_t k = 0; k < W; ++k) o[(i + k) * out_inner] = buf[k];
          } else {
            simd::store(o + i, local.template packet<M>(i));
          }
        }
        if (i < stop) {
          alignas(64) T buf[W];
          simd::store(buf, local.packet_partial(i, stop - i));
          for (std::int64_t k = 0; k < stop - i; ++k) o[(i + k) * out_inner] = buf[k];
        }
#endif
      }
      begin += cnt;
      col = 0;
      // next row: odometer over the outer dims
      for (std::size_t d = rank - 1; d-- > 0;) {
        opos += ost[d];
        local.for_each_leaf([&](auto& l) { l.pos += l.strides[d]; });
        if (++idx[d] < dims[d]) break;
        opos -= ost[d] * dims[d];
        local.for_each_leaf([&](auto& l) { l.pos -= l.strides[d] * dims[d]; });
        idx[d] = 0;
      }
    }
  };

  auto dispatch = [&](auto mode_tag) {
    const std::int64_t total = rows * n;
    if (total <= elementwise_grain) return process(mode_tag, 0, total);  // one task: no split
    constexpr std::int64_t align = 64;  // task boundaries on whole packets
    parallel_for(0, (total + align - 1) / align, elementwise_grain / align,
                 [&](std::int64_t b, std::int64_t e) {
                   process(mode_tag, b * align, std::min(total, e * align));
                 });
  };
  if constexpr (Lean && vectorizable_v<E> && std::is_same_v<T, typename E::value_type>) {
    // two loops, not three: the broadcast loop also serves contiguous operands (one predictable
    // branch per leaf and packet), which saves a third of the gradient loops' compile time
    (void)unit;
    if (bcast)  // the upstream gradient of a sum is broadcast (stride 0)
      dispatch(std::integral_constant<int, 1>{});
    else
      dispatch(std::integral_constant<int, 2>{});
  } else if constexpr (vectorizable_v<E> && std::is_same_v<T, typename E::value_type>) {
    bool shared = false;
    if constexpr (shared_leaf_candidate_v<E>) shared = unit && leaves_identical(ev);
    if (shared)
      dispatch(std::integral_constant<int, 4>{});
    else if (unit)
      dispatch(std::integral_constant<int, 0>{});
    else if (bcast)
      dispatch(std::integral_constant<int, 1>{});
    else
      dispatch(std::integral_constant<int, 2>{});
  } else {
    dispatch(std::integral_constant<int, 3>{});
  }
}

/// Every leaf of an expression must live on `dev`; mixing devices is an error naming both.
template <class E>
void check_devices(const E& e, device dev, const char* op) {
  for_each_tensor_leaf(e, [&](const auto& t) {
    check(t.device() == dev, errc::device, op, ": expression mixes tensors on ", t.device(),
          " and ", dev);
  });
}

/// The device of an expression's first tensor leaf (cpu for all-scalar expressions).
template <class E>
device expression_device(const E& e) {
  device d = cpu;
  bool found = false;
  for_each_tensor_leaf(e, [&](const auto& t) {
    if (!found) d = t.device();
    found = true;
  });
  return d;
}

/// Does any tensor leaf of e share memory with dst other than element-for-element (the same
/// offset and strides once broadcast)? Then the expression is evaluated into a temporary first.
template <class T, class E>
bool aliases(const tensor<T>& dst, const E& e) {
  bool hit = false;
  // not a structured binding: lambdas cannot capture those before C++20 (clang < 16)
  const std::pair<std::int64_t, std::int64_t> drange = extent_range(dst.shape(), dst.strides());
  const std::int64_t dlo = drange.first, dhi = drange.second;
  const auto base = reinterpret_cast<std::uintptr_t>(dst.storage()->data());
  for_each_tensor_leaf(e, [&](const auto& t) {
    if (t.storage() != dst.storage() || t.numel() == 0) return;
    using U = typename std::remove_cvref_t<decltype(t)>::value_type;
    if constexpr (std::is_same_v<U, T>) {
      if (t.storage_offset() == dst.storage_offset() &&
          broadcast_strides(t.shape(), t.strides(), dst.shape()) == dst.strides() &&
          t.shape().rank() == dst.shape().rank() && t.shape() == dst.shape())
        return;  // reads element i before writing element i: safe
    }
    const auto [lo, hi] = extent_range(t.shape(), t.strides());
    const auto a0 = base + static_cast<std::uintptr_t>((dst.storage_offset() + dlo) * std::int64_t(sizeof(T)));
    const auto a1 = base + static_cast<std::uintptr_t>((dst.storage_offset() + dhi + 1) * std::int64_t(sizeof(T)));
    const auto b0 = base + static_cast<std::uintptr_t>((t.storage_offset() + lo) * std::int64_t(sizeof(U)));
    const auto b1 = base + static_cast<std::uintptr_t>((t.storage_offset() + hi + 1) * std::int64_t(sizeof(U)));
    hit = hit || (a0 < b1 && b0 < a1);
  });
  return hit;
}

/// evaluate() without autograd recording (gradient formulas use it: recording there would
/// instantiate the backward of the backward of ... without end).
template <class E, bool Lean = false>
tensor<typename E::value_type> evaluate_raw(const E& e) {
  using T = typename E::value_type;
  static_assert(!std::is_same_v<T, half> && !std::is_same_v<T, bfloat16>,
                "ember: elementwise math on half/bfloat16 tensors is not supported; convert "
                "them with .to<float>() first");
  const device dev = expression_device(e);
  check_devices(e, dev, "evaluate");
  tensor<T> out = make_tensor<T>(e.shape(), dev);
  if (!dev.is_cpu()) {  // Note [Elementwise program]
    dispatch::run_elementwise(dev, out.data(), out.strides(), out.shape(), e, "evaluate");
    return out;
  }
  run_elementwise<T, E, Lean>(out.data(), out.strides(), out.shape(), e);
  return out;
}

template <class E>
tensor<typename E::value_type> evaluate(const E& e) {
  using T = typename E::value_type;
  jit::detail::op_scope traced;
  tensor<T> out = evaluate_raw(e);
  if (traced) jit::detail::record_expression(traced, e, out);
  if constexpr (EMBER_AUTOGRAD && is_floating_v<T>)
    if (autograd::detail::expression_requires_grad(e)) return record_fused(std::move(out), e);
  return out;
}

template <class T, class E>
void check_assign(const tensor<T>& dst, const E& e, const char* op) {
  static_assert(std::is_same_v<T, typename E::value_type>,
                "ember: the expression's element type differs from the destination tensor's; "
                "convert it with em::cast<U>(expr)");
  check(broadcastable_to(e.shape(), dst.shape()), errc::shape, op, ": cannot write an ",
        "expression of shape ", e.shape(), " into a tensor of shape ", dst.shape());
  dst.check_writable(op);
  check_devices(e, dst.device(), op);
}

/// Writes e into dst's memory: the SIMD evaluator on the CPU, the device's fused kernel
/// elsewhere (Note [Elementwise program]).
template <class T, class E>
void write_elementwise(const tensor<T>& dst, const E& e) {
  if (dst.device().is_cpu())
    run_elementwise(dst.data(), dst.strides(), dst.shape(), e);
  else
    dispatch::run_elementwise(dst.device(), dst.data(), dst.strides(), dst.shape(), e, "assign");
}

/// The write itself, never recorded (a source overlapping dst is evaluated first).
template <class T, class E>
void assign_unrecorded(const tensor<T>& dst, const E& e) {
  if (aliases(dst, e)) {
    const tensor<T> tmp = evaluate_raw(e);
    dst.impl().storage->bump_version();
    write_elementwise(dst, expr::leaf<T>(tmp));
    return;
  }
  write_elementwise(dst, e);
  dst.impl().storage->bump_version();
}

template <class T, class E>
void assign(const tensor<T>& dst, const E& e, const char* op) {
  check_assign(dst, e, op);
  const jit::detail::op_scope traced;
  if (traced) {  // traced as out-of-place: dst then holds the new value
    const int v = jit::detail::emit_expr(traced.get(), e);
    const int id = e.shape() == dst.shape()
                       ? v
                       : traced.get().emit(ember::op::expand, {v},
                                           {{"shape", jit::detail::ints(dst.shape())}},
                                           {{dtype_of<T>, dst.shape()}});
    traced.get().wrote_in_place(dst.impl_ptr(), op);
    traced.get().bind(dst.impl_ptr(), id);
  }
  if constexpr (EMBER_AUTOGRAD) {
    if (is_grad_enabled() &&
        (dst.requires_grad() || autograd::detail::expression_requires_grad(e))) {
      assign_recorded(dst, e, op);  // Note [Fused backward]: in place, with history
      return;
    }
  }
  assign_unrecorded(dst, e);
}

/// assign() for writes that are never recorded: optimizer steps and other updates that run
/// under no_grad. It instantiates no backward for E (each assign() of a float expression does:
/// the recording branch is chosen at run time), which makes an optimizer's update expressions
/// several times cheaper to compile. Recording would be needed, and is an error, when grad
/// mode is on and dst requires grad.
template <class T, class E>
void assign_raw(const tensor<T>& dst, const E& e, const char* op) {
  check_assign(dst, e, op);
  if constexpr (EMBER_AUTOGRAD)
    check(!is_grad_enabled() || !dst.requires_grad(), errc::internal, op,
          ": an unrecorded write into a tensor that requires grad, with grad mode on");
  assign_unrecorded(dst, e);
}

/// A tensor for an operand: a tensor as is (a handle, no copy), an expression evaluated in one
/// fused pass. Non-elementwise ops call this first: they are fusion boundaries.
template <class E>
tensor<typename std::remove_cvref_t<E>::value_type> materialize(const E& e) {
  if constexpr (is_tensor_v<E>) {
    return e;
  } else {
    return evaluate(e);
  }
}

}  // namespace ember::detail

#include <ember/autograd/fused.hpp>
