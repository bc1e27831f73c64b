// Joining and splitting: cat, stack (new tensors), split, split_with_sizes, chunk, unbind
// (views of the input), and pad (constant, reflect, replicate and circular modes), with their
// recorded backward passes (Note [Join backward]).
#pragma once

#include <ember/autograd/engine.hpp>
#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/eval/assign.hpp>
#include <ember/ops/factory.hpp>
#include <ember/ops/index.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember {

namespace detail {

/// dst = src (same shape) for a fresh or writable dst: one block copy when both are
/// contiguous, strided rows otherwise; split over the pool when large.
template <class T>
void copy_into(const tensor<T>& dst, const tensor<T>& src) {
  const std::int64_t n = dst.numel();
  if (n == 0) return;
  if (dst.is_contiguous() && src.is_contiguous()) {
    T* d = dst.data();
    const T* s = src.data();
    parallel_for(0, n, 4 * elementwise_grain,
                 [&](std::int64_t b, std::int64_t e) { std::copy(s + b, s + e, d + b); });
    return;
  }
  parallel_rows(dst.shape(), {&dst.strides(), &src.strides()}, widest_dim(dst.shape()),
                [](std::int64_t m, auto p, const auto& st) {
                  auto [d, s] = p;
                  for (std::int64_t i = 0; i < m; ++i) d[i * st[0]] = s[i * st[1]];
                },
                dst.data(), static_cast<const T*>(src.data()));
}

/// cat's core. Note [Legacy empty]: as PyTorch, 1-D tensors of size 0 are skipped (they may
/// sit in a list of any rank); when every input is skipped the result is such a tensor.
template <class T>
tensor<T> cat_impl(const std::vector<tensor<T>>& ts, std::int64_t dim, const char* op) {
  check(!ts.empty(), errc::value, op, ": expected a non-empty list of tensors");
  const tensor<T>* ref = nullptr;
  std::size_t ref_pos = 0;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    check(ts[i].defined(), errc::value, op, ": tensor at position ", i, " is undefined");
    check(ts[i].device() == ts[0].device(), errc::device, op, ": expected all tensors on one ",
          "device, got ", ts[0].device(), " (position 0) and ", ts[i].device(), " (position ", i,
          ")");
    check(ts[i].dim() > 0, errc::shape, op, ": zero-dimensional tensor (at position ", i,
          ") cannot be concatenated; unsqueeze it or use stack");
    if (!ref && !(ts[i].dim() == 1 && ts[i].size(0) == 0)) {
      ref = &ts[i];
      ref_pos = i;
    }
  }
  if (!ref) return make_tensor<T>({0}, ts[0].device());
  const std::int64_t d = wrap_dim(dim, ref->dim(), op);
  const auto du = static_cast<std::size_t>(d);
  shape s = ref->shape();
  std::int64_t total = 0;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const tensor<T>& t = ts[i];
    if (t.dim() == 1 && t.size(0) == 0) continue;
    check(t.dim() == ref->dim(), errc::shape, op, ": tensors must have the same rank; tensor ",
          ref_pos, " has shape ", ref->shape(), " but tensor ", i, " has shape ", t.shape());
    for (std::int64_t k = 0; k < t.dim(); ++k)
      check(k == d || t.size(k) == ref->size(k), errc::shape, op,
            ": sizes must match except in dimension ", d, "; tensor ", ref_pos, " has shape ",
            ref->shape(), " but tensor ", i, " has shape ", t.shape(), " (dimension ", k, ")");
    total += t.size(d);
  }
  s[du] = total;
  tensor<T> out = make_tensor<T>(s, ref->device());
  if (out.numel() == 0) return out;
  if (!out.device().is_cpu()) {  // one device copy per input into its slice (callers: no_grad)
    std::int64_t off = 0;
    for (const tensor<T>& t : ts) {
      if (t.dim() == 1 && t.size(0) == 0) continue;
      const std::int64_t k = t.size(d);
      if (k > 0) out.narrow(d, off, k).copy_(t);
      off += k;
    }
    return out;
  }
  std::int64_t outer = 1, inner = 1;
  for (std::int64_t k = 0; k < d; ++k) outer *= s[static_cast<std::size_t>(k)];
  for (std::int64_t k = d + 1; k < out.dim(); ++k) inner *= s[static_cast<std::size_t>(k)];
  const bool all_contiguous = std::all_of(ts.begin(), ts.end(), [](const tensor<T>& t) {
    return t.is_contiguous();
  });
  if (outer == 1 || !all_contiguous) {  // one (strided) block per input
    std::int64_t off = 0;
    for (const tensor<T>& t : ts) {
      if (t.dim() == 1 && t.size(0) == 0) continue;
      const std::int64_t k = t.size(d);
      if (k > 0) copy_into(out.narrow(d, off, k), t);
      off += k;
    }
    return out;
  }
  // all contiguous: each outer row of the output is the inputs' rows one after another
  T* const op_ = out.data();
  const std::int64_t row = total * inner;
  parallel_for(0, outer, std::max<std::int64_t>(1, elementwise_grain / row),
               [&](std::int64_t b, std::int64_t e) {
                 for (std::int64_t o = b; o < e; ++o) {
                   T* dst = op_ + o * row;
                   for (const tensor<T>& t : ts) {
                     if (t.dim() == 1 && t.size(0) == 0) continue;
                     const std::int64_t len = t.size(d) * inner;
                     dst = std::copy(t.data() + o * len, t.data() + (o + 1) * len, dst);
                   }
                 }
               });
  return out;
}

template <class T>
tensor<T> stack_impl(const std::vector<tensor<T>>& ts, std::int64_t dim) {
  check(!ts.empty(), errc::value, "stack: expected a non-empty list of tensors");
  for (std::size_t i = 0; i < ts.size(); ++i) {
    check(ts[i].defined(), errc::value, "stack: tensor at position ", i, " is undefined");
    check(ts[i].shape() == ts[0].shape(), errc::shape, "stack: expects each tensor to be ",
          "equal size, but got ", ts[0].shape(), " at entry 0 and ", ts[i].shape(), " at entry ", i);
  }
  const std::int64_t d = wrap_dim(dim, ts[0].dim() + 1, "stack");
  std::vector<tensor<T>> us;
  us.reserve(ts.size());
  for (const tensor<T>& t : ts) us.push_back(t.unsqueeze(d));
  return cat_impl(us, d, "stack");
}

// Note [Join backward]: cat, stack and pad record one "<op>_backward" node; split,
// split_with_sizes, chunk and unbind record one node for all their pieces (views of the
// input, marked as views), which gets zeros for the pieces without a gradient and joins them
// with cat / stack. Every backward is built from recorded ops (narrow, select, cat, stack,
// pad, index_select's adjoint), so gradients of gradients work.

/// record() for an op over a runtime list of inputs (one edge per input; undefined gradients
/// for inputs that get none).
template <class T, class Fn>
tensor<T> record_list(std::string name, tensor<T> out, const std::vector<tensor<T>>& inputs,
                      Fn&& backward) {
  bool any = false;
  for (const auto& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any || !is_grad_enabled()) return out;
  auto fn = std::make_shared<autograd::detail::function_node<T, std::decay_t<Fn>, false>>(
      std::move(name), std::forward<Fn>(backward));
  for (const auto& t : inputs) fn->next.push_back(autograd::detail::gradient_edge(t));
  return autograd::detail::set_history(std::move(out), fn, 0);
}

template <class T>
tensor<T> cat_untraced(const std::vector<tensor<T>>& ts, std::int64_t dim);

template <class T>
tensor<T> cat_recorded(const std::vector<tensor<T>>& ts, std::int64_t dim) {
  const jit::detail::op_scope traced;
  tensor<T> out = cat_untraced(ts, dim);
  if (traced) {
    for (const tensor<T>& t : ts)
      check(t.dim() == out.dim(), errc::not_implemented, "jit::trace: cat of tensors of ",
            "different ranks (legacy empty inputs) cannot be traced");
    traced.record_list(op::cat, out, {{"dim", wrap_dim(dim, out.dim(), "cat")}}, ts);
  }
  return out;
}

template <class T>
tensor<T> cat_untraced(const std::vector<tensor<T>>& ts, std::int64_t dim) {
  tensor<T> out;
  {
    no_grad_guard ng;
    out = cat_impl(ts, dim, "cat");
  }
  if constexpr (index_grad_v<T>) {
    bool skipped_all = true;
    for (const tensor<T>& t : ts) skipped_all = skipped_all && t.dim() == 1 && t.size(0) == 0;
    const std::int64_t d = skipped_all ? 0 : wrap_dim(dim, out.dim(), "cat");
    std::vector<std::int64_t> sizes;  // each input's extent along d; -1: skipped (Note [Legacy empty])
    for (const tensor<T>& t : ts)
      sizes.push_back(t.dim() == 1 && t.size(0) == 0 ? -1 : t.size(d));
    out = record_list<T>("cat_backward", std::move(out), ts, [d, sizes](const tensor<T>& g) {
      std::vector<tensor<T>> r;
      std::int64_t off = 0;
      for (const std::int64_t k : sizes) {
        r.push_back(k < 0 ? tensor<T>() : g.narrow(d, off, k));
        off += std::max<std::int64_t>(k, 0);
      }
      return r;
    });
  }
  return out;
}

template <class T>
tensor<T> stack_recorded(const std::vector<tensor<T>>& ts, std::int64_t dim) {
  const jit::detail::op_scope traced;
  tensor<T> out;
  {
    no_grad_guard ng;
    out = stack_impl(ts, dim);
  }
  if (traced) traced.record_list(op::stack, out, {{"dim", wrap_dim(dim, out.dim(), "stack")}}, ts);
  if constexpr (index_grad_v<T>) {
    const std::int64_t d = wrap_dim(dim, out.dim(), "stack"), n = out.size(d);
    out = record_list<T>("stack_backward", std::move(out), ts, [d, n](const tensor<T>& g) {
      std::vector<tensor<T>> r;
      for (std::int64_t i = 0; i < n; ++i) r.push_back(g.select(d, i));
      return r;
    });
  }
  return out;
}

/// Pieces of x (views) made by `cut` under no_grad, recorded as one node whose backward joins
/// the pieces' gradients with `join`.
template <class T, class Cut, class Join>
std::vector<tensor<T>> pieces_recorded(const tensor<T>& x, const char* name, Cut&& cut,
                                       Join&& join) {
  std::vector<tensor<T>> out;
  {
    no_grad_guard ng;
    out = cut();
  }
  if constexpr (index_grad_v<T>) {
    if (!autograd::detail::any_requires_grad(x)) return out;
    out = autograd::detail::record_multi<T>(name, std::move(out), {x},
        [join](const std::vector<tensor<T>>& gs) { return std::vector<tensor<T>>{join(gs)}; });
    for (const tensor<T>& t : out)
      if (t.requires_grad()) t.impl().autograd->is_view = true;
  }
  return out;
}

/// Views of x along dim with the given sizes, recorded under `name` (split and its kin).
template <class T>
std::vector<tensor<T>> split_views(const tensor<T>& x, const std::vector<std::int64_t>& sizes,
                                   std::int64_t dim, const char* name) {
  check(x.dim() > 0, errc::shape, "split: expects a tensor of rank >= 1, got shape ()");
  const std::int64_t d = wrap_dim(dim, x.dim(), "split");
  std::int64_t sum = 0;
  for (auto s : sizes) {
    check(s >= 0, errc::value, "split: sizes must be non-negative, got ", shape(sizes));
    sum += s;
  }
  check(sum == x.size(d), errc::shape, "split: sizes ", shape(sizes), " must sum to ",
        x.size(d), ", the size of dimension ", d, " of shape ", x.shape());
  return pieces_recorded(
      x, name,
      [&] {
        std::vector<tensor<T>> out;
        std::int64_t off = 0;
        for (auto s : sizes) {
          out.push_back(x.narrow(d, off, s));
          off += s;
        }
        return out;
      },
      [d](const std::vector<tensor<T>>& gs) { return cat_recorded(gs, d); });
}

/// Source positions of one padded dimension of (cropped) size n: output i reads p(i - left).
inline std::vector<std::int64_t> pad_positions(std::int64_t n, std::int64_t left,
                                               std::int64_t right, int mode, std::int64_t dim) {
  // mode: 1 reflect, 2 replicate, 3 circular (pad_mode's values)
  const char* name = mode == 1 ? "reflect" : mode == 2 ? "replicate" : "circular";
  check(n > 0, errc::shape, "pad: ", name, " padding of dimension ", dim, " needs a non-empty ",
        "dimension, got size 0");
  check(mode != 1 || (left < n && right < n), errc::value, "pad: reflect padding (", left, ", ",
        right, ") of dimension ", dim, " must be smaller than its size ", n);
  check(mode != 3 || (left <= n && right <= n), errc::value, "pad: circular padding (", left,
        ", ", right, ") of dimension ", dim, " wraps around more than once (size ", n, ")");
  std::vector<std::int64_t> pos(static_cast<std::size_t>(n + left + right));
  for (std::int64_t i = 0; i < n + left + right; ++i) {
    std::int64_t p = i - left;
    if (mode == 1) p = p < 0 ? -p : p >= n ? 2 * (n - 1) - p : p;
    else if (mode == 2) p = std::clamp<std::int64_t>(p, 0, n - 1);
    else p = p < 0 ? p + n : p >= n ? p - n : p;
    pos[static_cast<std::size_t>(i)] = p;
  }
  return pos;
}

}  // namespace detail

/// Concatenates tensors of equal shape except along dim (a new tensor). As PyTorch, 1-D
/// tensors with no elements are skipped, whatever the other inputs' rank. The list holds
/// tensors: evaluate expressions first, em::cat({a, (b * 2.f).eval()}, 1).
///   em::cat({a, b}, 0);   // a (2,3), b (4,3) -> (6,3)
template <class T>
tensor<T> cat(const std::vector<tensor<T>>& tensors, std::int64_t dim = 0) {
  return detail::cat_recorded(tensors, dim);
}
template <class T>
tensor<T> cat(std::initializer_list<tensor<T>> tensors, std::int64_t dim = 0) {
  return detail::cat_recorded(std::vector<tensor<T>>(tensors), dim);
}

/// Stacks tensors of one shape along a new dimension dim (0 <= dim <= rank, or negative).
///   em::stack({a, a}, 1);   // a (4,3) -> (4,2,3)
template <class T>
tensor<T> stack(const std::vector<tensor<T>>& tensors, std::int64_t dim = 0) {
  return detail::stack_recorded(tensors, dim);
}
template <class T>
tensor<T> stack(std::initializer_list<tensor<T>> tensors, std::int64_t dim = 0) {
  return detail::stack_recorded(std::vector<tensor<T>>(tensors), dim);
}

/// Views of x along dim with the given sizes (they must sum to x.size(dim)).
///   em::split_with_sizes(a, {1, 3}, 0);   // a (4,3) -> (1,3), (3,3)
template <operand E>
std::vector<tensor<value_type_t<E>>> split_with_sizes(const E& e,
                                                      const std::vector<std::int64_t>& sizes,
                                                      std::int64_t dim = 0) {
  return detail::split_views(detail::cpu_operand(e, "split"), sizes, dim,
                             "split_with_sizes_backward");
}
/// Same as split_with_sizes. Note: split(x, {3}) with one size picks the split_size overload.
template <operand E>
std::vector<tensor<value_type_t<E>>> split(const E& e, const std::vector<std::int64_t>& sizes,
                                           std::int64_t dim = 0) {
  return split_with_sizes(e, sizes, dim);
}

/// Views of x along dim of split_size each (the last may be smaller).
///   em::split(a, 2, 0);   // a (5,3) -> (2,3), (2,3), (1,3)
template <operand E>
std::vector<tensor<value_type_t<E>>> split(const E& e, std::int64_t split_size,
                                           std::int64_t dim = 0) {
  const auto x = detail::cpu_operand(e, "split");
  detail::check(x.dim() > 0, errc::shape, "split: expects a tensor of rank >= 1, got shape ()");
  const std::int64_t d = wrap_dim(dim, x.dim(), "split");
  const std::int64_t n = x.size(d);
  detail::check(split_size >= 0, errc::value, "split: split_size must be non-negative, got ",
                split_size);
  detail::check(split_size > 0 || n == 0, errc::value, "split: split_size can only be 0 if ",
                "dimension ", d, " is empty, but its size is ", n, " (shape ", x.shape(), ")");
  std::vector<std::int64_t> sizes;
  if (n == 0) sizes.push_back(0);
  for (std::int64_t off = 0; off < n; off += split_size)
    sizes.push_back(std::min(split_size, n - off));
  return detail::split_views(x, sizes, d, "split_backward");
}

/// At most `chunks` views of x along dim, each ceil(size / chunks) long but the last
/// (PyTorch's sizing: chunk of 6 into 4 gives 3 chunks of 2).
///   em::chunk(a, 2, 0);
template <operand E>
std::vector<tensor<value_type_t<E>>> chunk(const E& e, std::int64_t chunks, std::int64_t dim = 0) {
  const auto x = detail::cpu_operand(e, "chunk");
  detail::check(chunks > 0, errc::value, "chunk: expects chunks > 0, got ", chunks);
  detail::check(x.dim() > 0, errc::shape, "chunk: expects a tensor of rank >= 1, got shape ()");
  const std::int64_t d = wrap_dim(dim, x.dim(), "chunk");
  const std::int64_t n = x.size(d);
  const std::int64_t size = (n + chunks - 1) / chunks;
  std::vector<std::int64_t> sizes;
  if (n == 0) sizes.assign(static_cast<std::size_t>(chunks), 0);
  for (std::int64_t off = 0; off < n; off += size) sizes.push_back(std::min(size, n - off));
  return detail::split_views(x, sizes, d, "chunk_backward");
}

/// The slices of x along dim as views (rank - 1 each).   auto rows = em::unbind(a, 0);
template <operand E>
std::vector<tensor<value_type_t<E>>> unbind(const E& e, std::int64_t dim = 0) {
  const auto x = detail::cpu_operand(e, "unbind");
  detail::check(x.dim() > 0, errc::shape, "unbind: expects a tensor of rank >= 1, got shape ()");
  using T = value_type_t<E>;
  const std::int64_t d = wrap_dim(dim, x.dim(), "unbind");
  return detail::pieces_recorded(
      x, "unbind_backward",
      [&] {
        std::vector<tensor<T>> out;
        for (std::int64_t i = 0; i < x.size(d); ++i) out.push_back(x.select(d, i));
        return out;
      },
      [d](const std::vector<tensor<T>>& gs) { return detail::stack_recorded(gs, d); });
}

/// How pad fills the border: a constant, the mirror image without the edge (reflect), the
/// edge value (replicate), or the other end (circular).
enum class pad_mode { constant = 0, reflect = 1, replicate = 2, circular = 3 };

/// Pads the last dims: pads = {left, right} for the last dim, then {top, bottom} for the one
/// before, ... (as F.pad). Negative amounts crop. Constant mode fills with `value`:
///   em::pad(a, {1, 1}, 0.f);        // (4,3) -> (4,5)
///   em::pad(img, {1, 1, 2, 2}, pad_mode::reflect);  // crops first, then pads
/// Unlike PyTorch, reflect/replicate/circular accept any rank (PyTorch wants 2-D to 5-D
/// inputs); reflect needs pads < size, circular pads <= size, replicate a non-empty dim.
template <operand E, class S>
  requires std::is_arithmetic_v<S> || is_element_v<S>
tensor<value_type_t<E>> pad(const E& e, const std::vector<std::int64_t>& pads, S value,
                            pad_mode mode = pad_mode::constant) {
  using T = value_type_t<E>;
  const tensor<T> x = detail::cpu_operand(e, "pad");
  const auto pairs = static_cast<std::int64_t>(pads.size() / 2);
  detail::check(pads.size() % 2 == 0, errc::value, "pad: the padding list must have an even ",
                "length, got ", pads.size());
  detail::check(pairs <= x.dim(), errc::value, "pad: ", pads.size(), " padding values pad ",
                pairs, " dimensions but the input has shape ", x.shape());
  // crop first (negative amounts), then pad
  std::vector<std::int64_t> crop(pads.size(), 0);  // the cropped amounts (backward pads them)
  struct step {  // a reflect/replicate/circular dim: its source positions and extent before
    std::int64_t d, before;
    tensor<std::int64_t> pos;
  };
  std::vector<step> steps;
  tensor<T> out;
  {
    no_grad_guard ng;
    tensor<T> src = x;
    for (std::int64_t i = 0; i < pairs; ++i) {
      const auto i0 = static_cast<std::size_t>(2 * i), i1 = i0 + 1;
      const std::int64_t d = x.dim() - 1 - i, n = x.size(d);
      const std::int64_t cl = std::max<std::int64_t>(0, -pads[i0]);
      const std::int64_t cr = std::max<std::int64_t>(0, -pads[i1]);
      detail::check(cl + cr <= n, errc::shape, "pad: padding (", pads[i0], ", ", pads[i1],
                    ") crops more than the size ", n, " of dimension ", d, " (shape ", x.shape(),
                    ")");
      src = src.narrow(d, cl, n - cl - cr);
      crop[i0] = cl;
      crop[i1] = cr;
    }
    if (mode == pad_mode::constant) {
      shape s = src.shape();
      for (std::int64_t i = 0; i < pairs; ++i)
        s[static_cast<std::size_t>(x.dim() - 1 - i)] +=
            std::max<std::int64_t>(0, pads[static_cast<std::size_t>(2 * i)]) +
            std::max<std::int64_t>(0, pads[static_cast<std::size_t>(2 * i + 1)]);
      out = full<T>(s, value);
      tensor<T> dst = out;
      for (std::int64_t i = 0; i < pairs; ++i) {
        const std::int64_t d = x.dim() - 1 - i;
        dst = dst.narrow(d, std::max<std::int64_t>(0, pads[static_cast<std::size_t>(2 * i)]),
                         src.size(d));
      }
      detail::copy_into(dst, src);
    } else {
      tensor<T> cur = src;
      for (std::int64_t i = 0; i < pairs; ++i) {
        const std::int64_t d = x.dim() - 1 - i;
        const std::int64_t l = std::max<std::int64_t>(0, pads[static_cast<std::size_t>(2 * i)]);
        const std::int64_t r = std::max<std::int64_t>(0, pads[static_cast<std::size_t>(2 * i + 1)]);
        if (l == 0 && r == 0) continue;
        const auto pos = from_vector<std::int64_t>(
            detail::pad_positions(cur.size(d), l, r, static_cast<int>(mode), d));
        steps.push_back({d, cur.size(d), pos});
        cur = detail::index_select_impl(cur, d, pos, "pad");
      }
      out = steps.empty() ? cur.clone() : cur;
    }
  }
  if constexpr (detail::index_grad_v<T>) {
    if (autograd::detail::any_requires_grad(x)) {
      const bool constant = mode == pad_mode::constant;
      const bool cropped = std::any_of(crop.begin(), crop.end(), [](auto c) { return c > 0; });
      std::vector<std::int64_t> neg;  // constant mode: the inverse padding
      for (auto p : pads) neg.push_back(-p);
      out = autograd::detail::record<T>(
          "pad_backward", std::move(out), {x},
          [constant, cropped, neg, crop, steps](const tensor<T>& g) {
            if (constant) return std::vector<tensor<T>>{pad(g, neg, 0)};
            tensor<T> r = g;
            for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
              shape s = r.shape();
              s[static_cast<std::size_t>(it->d)] = it->before;
              r = detail::index_select_adjoint(r, it->d, it->pos, s);
            }
            return std::vector<tensor<T>>{cropped ? pad(r, crop, 0) : r};
          });
    }
  }
  return out;
}
template <operand E>
tensor<value_type_t<E>> pad(const E& e, const std::vector<std::int64_t>& pads,
                            pad_mode mode = pad_mode::constant) {
  return pad(e, pads, 0, mode);
}

}  // namespace ember
