// Fused reductions: sum prod amax amin (one pass over the expression, no materialized input),
// and the reductions built on them: mean var std norm logsumexp; argmax/argmin.
// Note [Reduction order]: work is cut into fixed blocks that do not depend on the thread count
// and partial results are merged in block order, so a reduction gives the same bits for any
// number of threads.
#pragma once

#include <ember/core/parallel.hpp>
#include <ember/eval/assign.hpp>
#include <ember/eval/evaluator.hpp>
#include <ember/expr/operators.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <concepts>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <vector>

namespace ember {
namespace detail {

/// Accumulation ops: identity, combine (scalars and packets), partials merged in P.
struct sum_op {
  static constexpr const char* name = "sum";
  static constexpr dispatch::reduce_kind kind = dispatch::reduce_kind::sum;
  template <class T> using partial = std::conditional_t<std::is_floating_point_v<T>, double, T>;
  template <class T> static constexpr T identity() { return T(0); }
  template <class V> static V combine(const V& a, const V& b) { return a + b; }
};
struct prod_op {
  static constexpr const char* name = "prod";
  static constexpr dispatch::reduce_kind kind = dispatch::reduce_kind::prod;
  template <class T> using partial = std::conditional_t<std::is_floating_point_v<T>, double, T>;
  template <class T> static constexpr T identity() { return T(1); }
  template <class V> static V combine(const V& a, const V& b) { return a * b; }
};
struct max_op {  // NaN propagates
  static constexpr const char* name = "amax";
  static constexpr dispatch::reduce_kind kind = dispatch::reduce_kind::max;
  template <class T> using partial = T;
  template <class T> static constexpr T identity() {
    if constexpr (std::numeric_limits<T>::has_infinity) return -std::numeric_limits<T>::infinity();
    else return std::numeric_limits<T>::lowest();
  }
  template <class V> static V combine(const V& a, const V& b) {
    return simd::select(simd::lor(a > b, simd::isnan(a)), a, b);
  }
};
struct min_op {
  static constexpr const char* name = "amin";
  static constexpr dispatch::reduce_kind kind = dispatch::reduce_kind::min;
  template <class T> using partial = T;
  template <class T> static constexpr T identity() {
    if constexpr (std::numeric_limits<T>::has_infinity) return std::numeric_limits<T>::infinity();
    else return std::numeric_limits<T>::max();
  }
  template <class V> static V combine(const V& a, const V& b) {
    return simd::select(simd::lor(a < b, simd::isnan(a)), a, b);
  }
};

/// Resolves reduction dims: wraps, rejects repeats; an empty list means every dim.
inline std::vector<bool> reduction_mask(const shape& s, const shape& dims, const char* op) {
  std::vector<bool> mask(s.size(), dims.empty());
  for (auto d : dims) {
    const auto w = static_cast<std::size_t>(wrap_dim(d, s.rank(), op));
    if (s.rank() == 0) continue;
    check(!mask[w], errc::value, op, ": dimension ", d, " appears more than once in ", dims);
    mask[w] = true;
  }
  return mask;
}

inline shape reduced_shape(const shape& s, const std::vector<bool>& mask, bool keepdim) {
  shape out;
  for (std::size_t d = 0; d < s.size(); ++d) {
    if (!mask[d]) out.push_back(s[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

/// Merges dims i, i+1 of a group when every operand's strides allow (Note [Coalescing]).
inline void coalesce_group(shape& sizes, std::vector<shape>& st) {
  shape ns;
  std::vector<shape> nst(st.size());
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    bool merge = !ns.empty();
    for (std::size_t k = 0; k < st.size() && merge; ++k)
      merge = nst[k].back() == st[k][d] * sizes[d];
    if (merge) {
      ns.back() *= sizes[d];
      for (std::size_t k = 0; k < st.size(); ++k) nst[k].back() = st[k][d];
    } else {
      ns.push_back(sizes[d]);
      for (std::size_t k = 0; k < st.size(); ++k) nst[k].push_back(st[k][d]);
    }
  }
  if (ns.empty()) {
    ns.push_back(1);
    for (auto& v : nst) v.push_back(0);
  }
  sizes = ns;
  st = nst;
}

/// Offset of flattened index `flat` in a group (sizes, strides), outermost first.
inline std::int64_t group_offset(std::int64_t flat, const shape& sizes, const shape& strides) {
  std::int64_t off = 0;
  for (std::size_t d = sizes.size(); d-- > 0;) {
    off += (flat % sizes[d]) * strides[d];
    flat /= sizes[d];
  }
  return off;
}

/// Op over the segment [i0, i1) of the evaluator's current row, with SIMD packets: four
/// independent accumulators, a padded last packet (unused lanes hold the identity).
/// With Shared (Note [Shared leaves]) every leaf reads src's row: one load per packet.
template <class Op, load_mode M, class T, class Ev, bool Shared = false>
T reduce_segment(const Ev& ev, std::int64_t i0, std::int64_t i1, const T* src = nullptr) {
#if EMBER_HAS_XSIMD
  if constexpr (simd::has_batch_v<T>) {
    using B = simd::batch<T>;
    constexpr std::int64_t W = static_cast<std::int64_t>(simd::width<T>);
    const B id(Op::template identity<T>());
    B a0 = id, a1 = id, a2 = id, a3 = id;
    std::int64_t i = i0;
    if constexpr (Shared) {
      for (; i + 4 * W <= i1; i += 4 * W) {
        a0 = Op::combine(a0, B(ev.packet_shared(simd::load(src + i))));
        a1 = Op::combine(a1, B(ev.packet_shared(simd::load(src + i + W))));
        a2 = Op::combine(a2, B(ev.packet_shared(simd::load(src + i + 2 * W))));
        a3 = Op::combine(a3, B(ev.packet_shared(simd::load(src + i + 3 * W))));
      }
    }
    for (; i + 4 * W <= i1; i += 4 * W) {
      a0 = Op::combine(a0, B(ev.template packet<M>(i)));
      a1 = Op::combine(a1, B(ev.template packet<M>(i + W)));
      a2 = Op::combine(a2, B(ev.template packet<M>(i + 2 * W)));
      a3 = Op::combine(a3, B(ev.template packet<M>(i + 3 * W)));
    }
    for (; i + W <= i1; i += W) a0 = Op::combine(a0, B(ev.template packet<M>(i)));
    alignas(64) T buf[W];
    if (i < i1) {
      simd::store(buf, B(ev.packet_partial(i, i1 - i)));
      for (std::int64_t k = i1 - i; k < W; ++k) buf[k] = Op::template identity<T>();
      a1 = Op::combine(a1, simd::load(buf));
    }
    simd::store(buf, Op::combine(Op::combine(a0, a1), Op::combine(a2, a3)));
    T r = buf[0];
    for (std::int64_t k = 1; k < W; ++k) r = Op::combine(r, buf[k]);
    return r;
  }
#endif
  (void)src;
  T r = Op::template identity<T>();
  for (std::int64_t i = i0; i < i1; ++i) r = Op::combine(r, T(ev.value(i)));
  return r;
}

/// The reduction plan of an expression over a dim mask: kept dims (one output each) and
/// reduced dims, each group coalesced, every leaf's strides split between the groups.
template <class E>
struct reduce_plan {
  evaluator<E> ev;
  shape kept, red_outer;  // red_outer: reduced dims but the innermost
  std::int64_t n = 1;     // innermost reduced extent (the row length)
  std::vector<shape> kept_st, red_outer_st;
  std::vector<std::int64_t> inner;  // per leaf: stride along the row
  std::int64_t outputs = 1, count = 1;

  reduce_plan(const E& e, const std::vector<bool>& mask) : ev(e, e.shape()) {
    const shape& s = e.shape();
    std::vector<shape> all;
    ev.for_each_leaf([&](auto& l) { all.push_back(l.strides); });
    shape ks, rs;
    std::vector<shape> kst(all.size()), rst(all.size());
    for (std::size_t d = 0; d < s.size(); ++d) {
      (mask[d] ? rs : ks).push_back(s[d]);
      for (std::size_t k = 0; k < all.size(); ++k) (mask[d] ? rst : kst)[k].push_back(all[k][d]);
    }
    outputs = ks.numel();
    count = rs.numel();
    coalesce_group(ks, kst);
    coalesce_group(rs, rst);
    kept = ks;
    kept_st = kst;
    n = rs.back();
    red_outer = shape(rs.begin(), rs.end() - 1);
    for (auto& st : rst) {
      inner.push_back(st.back());
      red_outer_st.emplace_back(st.begin(), st.end() - 1);
    }
  }
};

/// Partial of output o over the flattened reduced range [b0, b1) (one block).
template <class Op, class E>
auto reduce_block(const reduce_plan<E>& plan, std::int64_t o, std::int64_t b0, std::int64_t b1) {
  using T = typename E::value_type;
  using P = typename Op::template partial<T>;
  evaluator<E> ev = plan.ev;
  bool unit = true, bcast = true;
  std::vector<std::int64_t> base;
  {
    std::size_t k = 0;
    ev.for_each_leaf([&](auto& l) {
      l.inner = plan.inner[k];
      unit = unit && l.inner == 1;
      bcast = bcast && (l.inner == 0 || l.inner == 1);
      base.push_back(group_offset(o, plan.kept, plan.kept_st[k]));
      ++k;
    });
  }
  // leaves with the same buffer and the same (full) strides read the same elements
  bool shared = false;
  if constexpr (shared_leaf_candidate_v<E>) shared = unit && leaves_identical(ev);
  P acc = P(Op::template identity<T>());
  for (std::int64_t begin = b0; begin < b1;) {
    const std::int64_t row = begin / plan.n, col = begin % plan.n;
    const std::int64_t cnt = std::min(plan.n - col, b1 - begin);
    std::size_t k = 0;
    ev.for_each_leaf([&](auto& l) {
      l.pos = base[k] + group_offset(row, plan.red_outer, plan.red_outer_st[k]);
      l.start_row();
      ++k;
    });
    T seg;
    if constexpr (shared_leaf_candidate_v<E>) {
      if (shared) {
        const T* src = nullptr;
        ev.for_each_leaf([&](auto& l) {
          if (!src) src = l.row;
        });
        seg = reduce_segment<Op, load_mode::unit, T, evaluator<E>, true>(ev, col, col + cnt, src);
        acc = Op::combine(acc, P(seg));
        begin += cnt;
        continue;
      }
    }
    if constexpr (vectorizable_v<E>) {
      if (unit)
        seg = reduce_segment<Op, load_mode::unit, T>(ev, col, col + cnt);
      else if (bcast)
        seg = reduce_segment<Op, load_mode::bcast, T>(ev, col, col + cnt);
      else
        seg = reduce_segment<Op, load_mode::gather, T>(ev, col, col + cnt);
    } else {
      seg = reduce_segment<Op, load_mode::gather, T>(ev, col, col + cnt);
    }
    acc = Op::combine(acc, P(seg));
    begin += cnt;
  }
  return acc;
}

/// Elements per reduction block (Note [Reduction order]).
inline constexpr std::int64_t reduce_block_size = 16384;

/// Rows per float block of an outer reduction before its packets are added into P.
inline constexpr std::int64_t outer_block_rows = 256;

/// Note [Outer reduction]: when the innermost dim is kept (sum(X, 0) of a row-major X), every
/// output is a column. Walking each column with a stride would touch one element per cache
/// line; instead each reduced row is combined, packet by packet, into a row of accumulators
/// (the input streams in memory order). Accumulators are T over blocks of outer_block_rows
/// rows, then added into P (double for float sums): blocked summation, the same precision as
/// the row path (Note [Reduction order]). Columns are split into panels for the threads; a
/// column's order of additions does not depend on the split, so results do not depend on the
/// thread count. Returns false (nothing written) when the layout does not fit.
template <class Op, class E>
bool reduce_outer(const reduce_plan<E>& plan, typename E::value_type* out) {
#if EMBER_HAS_XSIMD
  using T = typename E::value_type;
  using P = typename Op::template partial<T>;
  if constexpr (vectorizable_v<E> && simd::has_batch_v<T>) {
    constexpr std::int64_t W = static_cast<std::int64_t>(simd::width<T>);
    if (plan.kept.empty()) return false;
    const std::int64_t m = plan.kept.back();
    if (m < W) return false;
    bool unit = true;
    for (const shape& st : plan.kept_st) {
      if (st.back() != 0 && st.back() != 1) return false;
      unit = unit && st.back() == 1;
    }
    // the reduced group in full (outer dims, then the innermost reduced dim)
    shape rs = plan.red_outer;
    rs.push_back(plan.n);
    std::vector<shape> rst = plan.red_outer_st;
    for (std::size_t k = 0; k < rst.size(); ++k) rst[k].push_back(plan.inner[k]);
    const std::int64_t outer = plan.outputs / m;
    std::int64_t pw = std::min<std::int64_t>(m, 1024);
    const std::int64_t threads = get_num_threads();
    if (outer * ((m + pw - 1) / pw) < threads && m >= 2 * W)
      pw = std::max(W, ((m + threads - 1) / threads + W - 1) / W * W);
    const std::int64_t panels = (m + pw - 1) / pw;
    auto task = [&](auto mode_tag, std::int64_t t) {
      constexpr load_mode M = decltype(mode_tag)::value;
      using B = simd::batch<T>;
      const std::int64_t ko = t / panels, j0 = (t % panels) * pw, j1 = std::min(m, j0 + pw);
      const std::int64_t width = j1 - j0, padded = (width + W - 1) / W * W;
      std::vector<T> acc(static_cast<std::size_t>(padded));
      std::vector<P> total;
      constexpr bool two_level = !std::is_same_v<P, T>;
      if constexpr (two_level) total.assign(static_cast<std::size_t>(width), P(Op::template identity<T>()));
      std::fill(acc.begin(), acc.end(), Op::template identity<T>());
      evaluator<E> ev = plan.ev;
      std::vector<std::int64_t> base, off(rst.size(), 0);
      {
        std::size_t k = 0;
        ev.for_each_leaf([&](auto& l) {
          l.inner = plan.kept_st[k].back();
          base.push_back(group_offset(ko * m, plan.kept, plan.kept_st[k]));
          ++k;
        });
      }
      shape idx(rs.size(), 0);
      auto flush = [&] {
        for (std::int64_t j = 0; j < width; ++j)
          total[static_cast<std::size_t>(j)] = Op::combine(total[static_cast<std::size_t>(j)], P(acc[static_cast<std::size_t>(j)]));
        std::fill(acc.begin(), acc.end(), Op::template identity<T>());
      };
      for (std::int64_t r = 0; r < plan.count; ++r) {
        {
          std::size_t k = 0;
          ev.for_each_leaf([&](auto& l) {
            l.pos = base[k] + off[k];
            l.start_row();
            ++k;
          });
        }
        T* a = acc.data();
        std::int64_t j = j0;
        for (; j + W <= j1; j += W, a += W)
          simd::store(a, Op::combine(simd::load(a), B(ev.template packet<M>(j))));
        if (j < j1) simd::store(a, Op::combine(simd::load(a), B(ev.packet_partial(j, j1 - j))));
        if constexpr (two_level) {
          if ((r + 1) % outer_block_rows == 0) flush();
        }
        // next reduced row: odometer over rs, innermost first
        for (std::size_t d = rs.size(); d-- > 0;) {
          for (std::size_t k = 0; k < off.size(); ++k) off[k] += rst[k][d];
          if (++idx[d] < rs[d]) break;
          for (std::size_t k = 0; k < off.size(); ++k) off[k] -= rst[k][d] * rs[d];
          idx[d] = 0;
        }
      }
      T* o = out + ko * m + j0;
      if constexpr (two_level) {
        flush();
        for (std::int64_t j = 0; j < width; ++j) o[j] = static_cast<T>(total[static_cast<std::size_t>(j)]);
      } else {
        std::copy_n(acc.data(), width, o);
      }
    };
    const std::int64_t tasks = outer * panels;
    const std::int64_t grain = std::max<std::int64_t>(1, elementwise_grain / std::max<std::int64_t>(1, plan.count * pw));
    parallel_for(0, tasks, grain, [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t) {
        if (unit) task(std::integral_constant<load_mode, load_mode::unit>{}, t);
        else task(std::integral_constant<load_mode, load_mode::bcast>{}, t);
      }
    });
    return true;
  }
#endif
  (void)plan;
  (void)out;
  return false;
}

/// Op over the dims in `mask` of expression e; output shape per keepdim (no recording).
template <class Op, class E>
tensor<typename E::value_type> reduce_raw(const E& e, const std::vector<bool>& mask, bool keepdim) {
  using T = typename E::value_type;
  using P = typename Op::template partial<T>;
  static_assert(!std::is_same_v<T, bool> && !std::is_same_v<T, half> && !std::is_same_v<T, bfloat16>,
                "ember: reductions need a numeric element type; convert bool/half tensors with "
                ".to<float>() (or em::cast<float>) first");
  const device dev = expression_device(e);
  check_devices(e, dev, Op::name);
  if (!dev.is_cpu()) {  // Note [Device reductions]: the expression first, then the kernel
    const tensor<T> x = [&] {
      if constexpr (is_tensor_v<E>) return e; else return evaluate_raw(e);
    }();
    tensor<T> out = make_tensor<T>(reduced_shape(x.shape(), mask, keepdim), dev);
    if (out.numel() == 0) return out;
    std::int64_t count = 1;
    for (std::size_t d = 0; d < mask.size(); ++d)
      if (mask[d]) count *= x.shape()[d];
    if (count == 0) {
      out.fill_(Op::template identity<T>());
      return out;
    }
    dispatch::run_reduce(dev, Op::kind, x.data(), dtype_of<T>, x.shape(), x.strides(), mask,
                         out.data(), contiguous_strides(reduced_shape(x.shape(), mask, true)),
                         Op::name);
    return out;
  }
  tensor<T> out = make_tensor<T>(reduced_shape(e.shape(), mask, keepdim), dev);
  T* o = out.data();
  if (out.numel() == 0) return out;
  const reduce_plan<E> plan(e, mask);
  if (plan.count == 0) {
    std::fill_n(o, out.numel(), Op::template identity<T>());
    return out;
  }
  if (!plan.kept.empty() && plan.kept_st.size() && reduce_outer<Op>(plan, o)) return out;
  const std::int64_t blocks = (plan.count + reduce_block_size - 1) / reduce_block_size;
  const std::int64_t tasks = plan.outputs * blocks;
  std::vector<P> partial(static_cast<std::size_t>(tasks));
  const std::int64_t per_task = std::min(plan.count, reduce_block_size);
  parallel_for(0, tasks, std::max<std::int64_t>(1, elementwise_grain / per_task),
               [&](std::int64_t t0, std::int64_t t1) {
                 for (std::int64_t t = t0; t < t1; ++t) {
                   const std::int64_t out_i = t / blocks, b = t % blocks;
                   partial[static_cast<std::size_t>(t)] = reduce_block<Op>(
                       plan, out_i, b * reduce_block_size,
                       std::min(plan.count, (b + 1) * reduce_block_size));
                 }
               });
  for (std::int64_t oi = 0; oi < plan.outputs; ++oi) {
    P acc = partial[static_cast<std::size_t>(oi * blocks)];
    for (std::int64_t b = 1; b < blocks; ++b)
      acc = Op::combine(acc, partial[static_cast<std::size_t>(oi * blocks + b)]);
    o[oi] = static_cast<T>(acc);
  }
  return out;
}

inline std::int64_t reduced_count(const shape& s, const std::vector<bool>& mask) {
  std::int64_t n = 1;
  for (std::size_t d = 0; d < s.size(); ++d)
    if (mask[d]) n *= s[d];
  return n;
}

/// g (the gradient of a reduction's output) with the reduced dims put back as size 1.
template <class T>
tensor<T> keep_reduced_dims(const tensor<T>& g, const shape& in, const std::vector<bool>& mask,
                            bool keepdim) {
  if (keepdim) return g;
  shape k;
  for (std::size_t d = 0; d < in.size(); ++d) k.push_back(mask[d] ? 1 : in[d]);
  return g.reshape(k);
}

/// Gradient of prod over mask: g * prod / x, with inputs holding zeros handled exactly (the
/// product of the other elements of the slice), as PyTorch.
template <class T>
tensor<T> prod_backward(const tensor<T>& x, const tensor<T>& out_k, const tensor<T>& g_k,
                        const std::vector<bool>& mask) {
  bool zeros = false;
  {
    const tensor<T> xc = x.contiguous();
    const T* p = xc.data();
    for (std::int64_t i = 0; i < xc.numel() && !zeros; ++i) zeros = p[i] == T(0);
  }
  if (!zeros) return g_k * out_k / x;
  // slice by slice: move the reduced dims last, then prefix/suffix products per slice
  no_grad_guard ng;
  shape order, inv(x.shape().size());
  for (std::size_t d = 0; d < mask.size(); ++d)
    if (!mask[d]) order.push_back(static_cast<std::int64_t>(d));
  for (std::size_t d = 0; d < mask.size(); ++d)
    if (mask[d]) order.push_back(static_cast<std::int64_t>(d));
  const tensor<T> xp = x.permute(order).contiguous();
  const tensor<T> gp = g_k.expand(x.shape()).permute(order).contiguous();
  const std::int64_t n = reduced_count(x.shape(), mask);
  tensor<T> r = make_tensor<T>(xp.shape());
  const T* xs = xp.data();
  const T* gs = gp.data();
  T* rs = r.data();
  std::vector<T> pre(static_cast<std::size_t>(n) + 1);
  for (std::int64_t s0 = 0; n > 0 && s0 < xp.numel(); s0 += n) {
    pre[0] = T(1);
    for (std::int64_t i = 0; i < n; ++i) pre[static_cast<std::size_t>(i + 1)] = pre[static_cast<std::size_t>(i)] * xs[s0 + i];
    T suf = T(1);
    for (std::int64_t i = n; i-- > 0;) {
      rs[s0 + i] = gs[s0 + i] * pre[static_cast<std::size_t>(i)] * suf;
      suf *= xs[s0 + i];
    }
  }
  for (std::size_t d = 0; d < order.size(); ++d) inv[static_cast<std::size_t>(order[d])] = static_cast<std::int64_t>(d);
  return r.permute(inv).contiguous();
}

/// The reduced dims of a mask, as a trace attribute.
inline std::vector<std::int64_t> mask_dims(const std::vector<bool>& mask) {
  std::vector<std::int64_t> dims;
  for (std::size_t d = 0; d < mask.size(); ++d)
    if (mask[d]) dims.push_back(static_cast<std::int64_t>(d));
  return dims;
}

/// Records out = kind(e) over mask in the trace (e's own nodes first).
template <class E, class Out>
void record_reduction(const jit::detail::op_scope& traced, op kind, const E& e, const Out& out,
                      const std::vector<bool>& mask, bool keepdim, jit::attributes attrs = {}) {
  const int in = jit::detail::emit_expr(traced.get(), e);
  attrs["dims"] = mask_dims(mask);
  attrs["keepdim"] = std::int64_t{keepdim};
  const int id = traced.get().emit(kind, {in}, std::move(attrs), {{out.dtype(), out.shape()}});
  traced.get().bind(out.impl_ptr(), id);
}

template <class Op, class E>
tensor<typename E::value_type> reduce_recorded(const E& e, const std::vector<bool>& mask, bool keepdim);

/// Op over mask with autograd: sum records one node over the whole expression (Note [Fused
/// backward]); prod/amax/amin materialize their input and record a hand-written node.
template <class Op, class E>
tensor<typename E::value_type> reduce(const E& e, const std::vector<bool>& mask, bool keepdim) {
  const jit::detail::op_scope traced;
  auto out = reduce_recorded<Op>(e, mask, keepdim);
  if (traced) {
    constexpr op kind = std::is_same_v<Op, sum_op>    ? op::sum
                        : std::is_same_v<Op, prod_op> ? op::prod
                        : std::is_same_v<Op, max_op>  ? op::amax
                                                      : op::amin;
    record_reduction(traced, kind, e, out, mask, keepdim);
  }
  return out;
}

template <class Op, class E>
tensor<typename E::value_type> reduce_recorded(const E& e, const std::vector<bool>& mask, bool keepdim) {
  using T = typename E::value_type;
  if constexpr (!EMBER_AUTOGRAD || !is_floating_v<T> || std::is_same_v<T, half> ||
                std::is_same_v<T, bfloat16>) {
    return reduce_raw<Op>(e, mask, keepdim);
  } else {
    if (!autograd::detail::expression_requires_grad(e)) return reduce_raw<Op>(e, mask, keepdim);
    if constexpr (std::is_same_v<Op, sum_op>) {
      tensor<T> out;
      {
        no_grad_guard ng;
        out = reduce_raw<Op>(e, mask, keepdim);
      }
      return record_fused_sum(std::move(out), e, mask, keepdim);
    } else {
      const tensor<T> x = evaluate(e);  // recorded: the expression's own node
      tensor<T> out;
      {
        no_grad_guard ng;
        out = reduce_raw<Op>(expr::leaf<T>(x), mask, keepdim);
      }
      // the output is saved detached (holding its own grad_fn would be a reference cycle);
      // prod's double backward gives it back the node, found through a weak pointer, as
      // Note [Softmax backward]
      autograd::detail::saved<T> sx(x), so(out.detach());
      const shape in = x.shape();
      constexpr const char* nm = std::is_same_v<Op, prod_op> ? "prod_backward"
                                 : std::is_same_v<Op, max_op> ? "amax_backward"
                                                              : "amin_backward";
      auto self = std::make_shared<std::weak_ptr<autograd::node>>();
      out = autograd::detail::record<T>(nm, std::move(out), {x}, [sx, so, self, mask, keepdim, in](const tensor<T>& g) {
        const tensor<T>& x = sx.unpack(nm);
        tensor<T> saved_out = so.unpack(nm);
        if constexpr (std::is_same_v<Op, prod_op>)
          if (is_grad_enabled())
            if (auto fn = self->lock()) saved_out = autograd::detail::set_history(saved_out.detach(), fn, 0);
        const tensor<T> o = keep_reduced_dims(saved_out, in, mask, keepdim);
        const tensor<T> gk = keep_reduced_dims(g, in, mask, keepdim);
        if constexpr (std::is_same_v<Op, prod_op>) {
          return std::vector<tensor<T>>{prod_backward(x, o, gk, mask)};
        } else {
          // ties share the gradient evenly, as PyTorch's amax/amin
          tensor<T> hits;
          {
            no_grad_guard ng;
            hits = cast<T>(x == o);
          }
          const tensor<T> count = reduce_raw<sum_op>(expr::leaf<T>(hits), mask, true);
          return std::vector<tensor<T>>{tensor<T>(hits * (gk / count))};
        }
      });
      *self = out.grad_fn();
      return out;
    }
  }
}

/// argmax/argmin: index of the first extreme element along one dim (NaN counts as the
/// maximum and the minimum, as in PyTorch), or over the flattened tensor.
template <bool Max, class E>
tensor<std::int64_t> arg_reduce(const E& e, std::optional<std::int64_t> dim, bool keepdim,
                                const char* op) {
  using T = typename E::value_type;
  const tensor<T> x = [&] {
    if constexpr (is_tensor_v<E>) return e; else return evaluate(e);
  }();
  const jit::detail::op_scope traced;
  // as PyTorch: an empty tensor is fine along a dim of non-zero size (an empty result)
  check(x.numel() > 0 || (dim && x.dim() > 0 && x.shape()[wrap_dim(*dim, x.dim(), op)] > 0),
        errc::index, op, ": cannot take the ", Max ? "argmax" : "argmin",
        " of an empty tensor (shape ", x.shape(),
        dim ? ") along a dimension of size 0" : ") without a dim");
  tensor<T> v = dim ? x : x.reshape({x.numel()});
  const std::int64_t d = dim ? wrap_dim(*dim, v.dim(), op) : 0;
  if (v.dim() == 0) v = v.reshape({1});
  shape out_shape;
  if (dim) {
    for (std::int64_t i = 0; i < x.dim(); ++i)
      if (i != d) out_shape.push_back(x.shape()[i]);
      else if (keepdim) out_shape.push_back(1);
  } else if (keepdim) {
    out_shape = shape(static_cast<std::size_t>(x.dim()), 1);
  }
  tensor<std::int64_t> out = make_tensor<std::int64_t>(out_shape, x.device());
  if (!x.device().is_cpu()) {  // Note [Device reductions]: over dim d of v, in place
    std::vector<bool> mask(v.shape().size(), false);
    mask[static_cast<std::size_t>(d)] = true;
    shape kept = v.shape();
    kept[static_cast<std::size_t>(d)] = 1;
    dispatch::run_reduce(x.device(),
                         Max ? dispatch::reduce_kind::argmax : dispatch::reduce_kind::argmin,
                         v.data(), dtype_of<T>, v.shape(), v.strides(), mask, out.data(),
                         contiguous_strides(kept), op);
  } else {
    tensor<T> moved = v.movedim(d, -1).contiguous();
    const std::int64_t n = moved.size(-1);
    const std::int64_t outer = moved.numel() / n;
    const T* p = moved.data();
    std::int64_t* q = out.data();
    for (std::int64_t r = 0; r < outer; ++r) {
      const T* row = p + r * n;
      std::int64_t best = 0;
      for (std::int64_t i = 1; i < n; ++i) {
        const T a = row[i], b = row[best];
        if (b != b) break;  // NaN found: it wins
        if (a != a || (Max ? a > b : a < b)) best = i;
      }
      q[r] = best;
    }
  }
  if (traced) {
    jit::attributes attrs{{"keepdim", std::int64_t{keepdim}}};
    if (dim) attrs["dim"] = d;
    traced.record(Max ? ember::op::argmax : ember::op::argmin, out, std::move(attrs), x);
  }
  return out;
}

template <class T>
tensor<T> sum_all(const tensor<T>& t) {
  return reduce<sum_op>(expr::leaf<T>(t), std::vector<bool>(t.shape().size(), true), false);
}
template <class T>
tensor<T> mean_all(const tensor<T>& t) {
  const jit::detail::op_scope traced;
  const std::vector<bool> mask(t.shape().size(), true);
  tensor<T> s;
  if constexpr (is_floating_v<T>) {
    if (t.requires_grad() && is_grad_enabled()) s = sum_all(t) / static_cast<T>(t.numel());
  }
  if (!s.defined()) {
    s = sum_all(t);
    if (t.device().is_cpu())
      *s.data() = static_cast<T>(*s.data() / static_cast<T>(t.numel()));
    else
      s = evaluate_raw(s / static_cast<T>(t.numel()));
  }
  if (traced) record_reduction(traced, op::mean, expr::leaf<T>(t), s, mask, false);
  return s;
}

template <class E>
using reduced_t = tensor<value_type_t<E>>;

/// amax/amin over a dim of size 0 have no value: an error, as in PyTorch ("Expected reduction
/// dim 0 to have non-zero size"); sum/prod give their identity.
template <class Op>
std::vector<bool> checked_mask(const shape& s, std::vector<bool> mask) {
  if constexpr (std::is_same_v<Op, max_op> || std::is_same_v<Op, min_op>)
    for (std::size_t d = 0; d < s.size(); ++d)
      check(!mask[d] || s[d] != 0, errc::index, Op::name, ": cannot reduce over dimension ", d,
            " of size 0 (shape ", s, "): the ", Op::name, " of no elements is undefined");
  return mask;
}

}  // namespace detail

// ---- public reductions ------------------------------------------------------------------------
#define EMBER_REDUCTION(name_, Op)                                                               \
  /** name_ over all elements (0-d result), one dim, or a list of dims ({} = all). */           \
  template <operand E>                                                                           \
  detail::reduced_t<E> name_(const E& e) {                                                       \
    return detail::reduce<Op>(                                                                   \
        detail::as_expr(e),                                                                      \
        detail::checked_mask<Op>(e.shape(), std::vector<bool>(e.shape().size(), true)), false);  \
  }                                                                                              \
  template <operand E>                                                                           \
  detail::reduced_t<E> name_(const E& e, std::int64_t dim, bool keepdim = false) {               \
    return detail::reduce<Op>(                                                                   \
        detail::as_expr(e),                                                                      \
        detail::checked_mask<Op>(e.shape(), detail::reduction_mask(e.shape(), {dim}, #name_)),   \
        keepdim);                                                                                \
  }                                                                                              \
  template <operand E>                                                                           \
  detail::reduced_t<E> name_(const E& e, const shape& dims, bool keepdim = false) {              \
    return detail::reduce<Op>(                                                                   \
        detail::as_expr(e),                                                                      \
        detail::checked_mask<Op>(e.shape(), detail::reduction_mask(e.shape(), dims, #name_)),    \
        keepdim);                                                                                \
  }
EMBER_REDUCTION(sum, detail::sum_op)
EMBER_REDUCTION(prod, detail::prod_op)
EMBER_REDUCTION(amax, detail::max_op)
EMBER_REDUCTION(amin, detail::min_op)
#undef EMBER_REDUCTION

namespace detail {
template <class E>
reduced_t<E> mean_impl(const E& e, const std::vector<bool>& mask, bool keepdim) {
  using T = value_type_t<E>;
  static_assert(is_floating_v<T>, "ember::mean: needs a floating-point expression");
  const jit::detail::op_scope traced;
  auto s = reduce<sum_op>(as_expr(e), mask, keepdim);
  const auto n = static_cast<T>(reduced_count(e.shape(), mask));
  auto out = autograd::detail::label_grad_fn(tensor<T>(s / n), "mean_backward");  // NaN if empty
  if (traced) record_reduction(traced, op::mean, as_expr(e), out, mask, keepdim);
  return out;
}
template <class E>
reduced_t<E> var_impl(const E& e, const std::vector<bool>& mask, bool unbiased, bool keepdim) {
  using T = value_type_t<E>;
  static_assert(is_floating_v<T>, "ember::var: needs a floating-point expression");
  // two passes: the mean, then the mean squared deviation (no cancellation of E[x^2]-E[x]^2)
  const jit::detail::op_scope traced;
  const tensor<T> m = mean_impl(e, mask, true);
  auto ss = reduce<sum_op>(as_expr(square(as_expr(e) - m)), mask, keepdim);
  const std::int64_t n = reduced_count(e.shape(), mask);
  const T denom = static_cast<T>(std::max<std::int64_t>(n - (unbiased ? 1 : 0), 0));
  auto out = autograd::detail::label_grad_fn(tensor<T>(ss / denom), "var_backward");
  if (traced)
    record_reduction(traced, op::var, as_expr(e), out, mask, keepdim,
                     {{"correction", std::int64_t{unbiased ? 1 : 0}}});
  return out;
}
}  // namespace detail

/// Mean over all elements, one dim or a list of dims.
template <operand E>
detail::reduced_t<E> mean(const E& e) {
  return detail::mean_impl(e, std::vector<bool>(e.shape().size(), true), false);
}
template <operand E>
detail::reduced_t<E> mean(const E& e, std::int64_t dim, bool keepdim = false) {
  return detail::mean_impl(e, detail::reduction_mask(e.shape(), {dim}, "mean"), keepdim);
}
template <operand E>
detail::reduced_t<E> mean(const E& e, const shape& dims, bool keepdim = false) {
  return detail::mean_impl(e, detail::reduction_mask(e.shape(), dims, "mean"), keepdim);
}

/// Variance (unbiased by default, as torch.var): over all, one dim, or a list of dims.
template <operand E>
detail::reduced_t<E> var(const E& e) {
  return detail::var_impl(e, std::vector<bool>(e.shape().size(), true), true, false);
}
template <operand E, std::same_as<bool> B>
detail::reduced_t<E> var(const E& e, B unbiased) {
  return detail::var_impl(e, std::vector<bool>(e.shape().size(), true), unbiased, false);
}
template <operand E>
detail::reduced_t<E> var(const E& e, std::int64_t dim, bool unbiased = true, bool keepdim = false) {
  return detail::var_impl(e, detail::reduction_mask(e.shape(), {dim}, "var"), unbiased, keepdim);
}
template <operand E>
detail::reduced_t<E> var(const E& e, const shape& dims, bool unbiased = true, bool keepdim = false) {
  return detail::var_impl(e, detail::reduction_mask(e.shape(), dims, "var"), unbiased, keepdim);
}

/// Standard deviation: sqrt(var(...)) with the same arguments.
template <operand E, class... Args>
detail::reduced_t<E> std(const E& e, Args&&... args) {
  return ember::sqrt(ember::var(e, std::forward<Args>(args)...));
}

/// Euclidean norm (p = 2) over all elements, one dim, or a list of dims.
template <operand E>
detail::reduced_t<E> norm(const E& e) {
  return ember::sqrt(ember::sum(ember::square(e)));
}
template <operand E>
detail::reduced_t<E> norm(const E& e, std::int64_t dim, bool keepdim = false) {
  return ember::sqrt(ember::sum(ember::square(e), dim, keepdim));
}
template <operand E>
detail::reduced_t<E> norm(const E& e, const shape& dims, bool keepdim = false) {
  return ember::sqrt(ember::sum(ember::square(e), dims, keepdim));
}

/// log(sum(exp(x))) over dims, stable: the max is subtracted first (rows of -inf give -inf).
template <operand E>
detail::reduced_t<E> logsumexp(const E& e, const shape& dims, bool keepdim = false) {
  using T = value_type_t<E>;
  static_assert(is_floating_v<T>, "ember::logsumexp: needs a floating-point expression");
  const auto mask = detail::reduction_mask(e.shape(), dims, "logsumexp");
  const tensor<T> x = detail::as_expr(e).eval();
  const jit::detail::op_scope traced;
  tensor<T> safe;
  {  // the shift is a constant for autograd: d/dx log(sum(exp(x - m))) + m does not need dm/dx
    no_grad_guard ng;
    const tensor<T> m = detail::reduce_raw<detail::max_op>(expr::leaf<T>(x), mask, true);
    safe = where(abs(m) == std::numeric_limits<T>::infinity(), T(0), m);
  }
  tensor<T> s = detail::reduce<detail::sum_op>(exp(x - safe), mask, keepdim);
  const tensor<T> ms = keepdim ? safe : safe.reshape(s.shape());
  tensor<T> out = log(s) + ms;
  if (traced) detail::record_reduction(traced, op::logsumexp, expr::leaf<T>(x), out, mask, keepdim);
  return out;
}
template <operand E>
detail::reduced_t<E> logsumexp(const E& e, std::int64_t dim, bool keepdim = false) {
  return logsumexp(e, shape{dim}, keepdim);
}

/// Index of the maximum over the flattened input, or along dim (first occurrence).
template <operand E>
tensor<std::int64_t> argmax(const E& e) {
  return detail::arg_reduce<true>(e, std::nullopt, false, "argmax");
}
template <operand E>
tensor<std::int64_t> argmax(const E& e, std::int64_t dim, bool keepdim = false) {
  return detail::arg_reduce<true>(e, dim, keepdim, "argmax");
}
template <operand E>
tensor<std::int64_t> argmin(const E& e) {
  return detail::arg_reduce<false>(e, std::nullopt, false, "argmin");
}
template <operand E>
tensor<std::int64_t> argmin(const E& e, std::int64_t dim, bool keepdim = false) {
  return detail::arg_reduce<false>(e, dim, keepdim, "argmin");
}

}  // namespace ember
