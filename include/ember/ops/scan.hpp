// Scans and order statistics along a dim: cumsum, cumprod, tril/triu (and in-place tril_/triu_),
// topk, sort and argsort, with the backward of cumsum, cumprod, tril/triu and topk/sort values.
#pragma once

#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/eval/assign.hpp>
#include <ember/expr/operators.hpp>
#include <ember/ops/index.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember {

/// What topk and sort return: `auto [values, indices] = em::topk(a, 2, 1);`
template <class T>
struct values_indices {
  tensor<T> values;
  tensor<std::int64_t> indices;
};

namespace detail {

/// cumsum/cumprod element type: std::int64_t for integer and bool inputs (as PyTorch), else
/// the input's type.
template <class T>
using scan_result_t = std::conditional_t<std::is_integral_v<T>, std::int64_t, T>;

/// Scan accumulator: double for float and double (PyTorch's CPU scans accumulate float in
/// double too), float for half/bfloat16, int64 (wrapping) for integers.
template <class T>
using scan_acc_t = std::conditional_t<
    std::is_integral_v<T>, std::int64_t,
    std::conditional_t<std::is_same_v<T, half> || std::is_same_v<T, bfloat16>, float, double>>;

/// Running sum (Prod = false) or product along d: out[..., i, ...] = x[..., 0, ...] op ... op
/// x[..., i, ...], accumulated sequentially in scan_acc_t; Reverse runs from the end (x[..., i,
/// ...] op ... op x[..., n-1, ...]: cumsum's adjoint). Columns of the inner block are scanned
/// side by side (tiles of `tile` columns), so every access is unit-stride.
template <bool Prod, class T, bool Reverse = false>
tensor<scan_result_t<T>> scan_impl(const tensor<T>& x_in, std::int64_t dim, const char* op) {
  using R = scan_result_t<T>;
  using A = scan_acc_t<T>;
  const std::int64_t d = wrap_dim(dim, x_in.dim(), op);
  const tensor<T> x = at_least_1d(x_in).contiguous();
  tensor<R> out = make_tensor<R>(x_in.shape());
  if (x.numel() == 0) return out;
  const std::int64_t n = x.size(d);
  std::int64_t outer = 1, inner = 1;
  for (std::int64_t k = 0; k < x.dim(); ++k)
    (k < d ? outer : inner) *= k == d ? 1 : x.size(k);
  constexpr std::int64_t tile = 256;
  const std::int64_t ntiles = (inner + tile - 1) / tile;
  const T* const xp = x.data();
  R* const rp = out.data();
  auto combine = [](A a, A b) -> A {
    if constexpr (std::is_integral_v<A>) {  // wraps like PyTorch's int64, without UB
      const auto ua = static_cast<std::uint64_t>(a), ub = static_cast<std::uint64_t>(b);
      return static_cast<A>(Prod ? ua * ub : ua + ub);
    } else {
      return Prod ? a * b : a + b;
    }
  };
  parallel_for(0, outer * ntiles,
               std::max<std::int64_t>(1, elementwise_grain / (n * std::min(inner, tile))),
               [&](std::int64_t b, std::int64_t e) {
                 A acc[tile];
                 for (std::int64_t t = b; t < e; ++t) {
                   const std::int64_t o = t / ntiles, c0 = (t % ntiles) * tile;
                   const std::int64_t w = std::min(inner, c0 + tile) - c0;
                   std::fill_n(acc, w, A(Prod ? 1 : 0));
                   // position of the i-th element scanned (from the end when Reverse)
                   const std::int64_t first = Reverse ? (n - 1) * inner : 0;
                   const std::int64_t step = Reverse ? -inner : inner;
                   const T* src = xp + o * n * inner + c0;
                   R* dst = rp + o * n * inner + c0;
                   if (inner == 1) {  // scanning along the last dim: one running value
                     A a = acc[0];
                     for (std::int64_t i = 0, at = first; i < n; ++i, at += step)
                       dst[at] = convert<R>(a = combine(a, convert<A>(src[at])));
                     continue;
                   }
                   for (std::int64_t i = 0, at = first; i < n; ++i, at += step)
                     for (std::int64_t c = 0; c < w; ++c) {
                       acc[c] = combine(acc[c], convert<A>(src[at + c]));
                       dst[at + c] = convert<R>(acc[c]);
                     }
                 }
               });
  return out;
}

/// tril (Lower) / triu core over the last two dims: dst[i][j] = src[i][j] where j - i <= k
/// (tril) or j - i >= k (triu), else 0. dst may be src itself (each element is read before
/// it is written).
template <bool Lower, class T>
void tri_kernel(const tensor<T>& dst, const tensor<T>& src, std::int64_t k) {
  if (dst.numel() == 0) return;
  const std::int64_t rows = dst.size(-2), cols = dst.size(-1);
  const around_dim<2> g(dst.shape(), {&dst.strides(), &src.strides()}, dst.dim() - 2);
  const std::int64_t dcs = g.inner.strides[0][0], scs = g.inner.strides[1][0];
  T* const dp = dst.data();
  const T* const sp = src.data();
  parallel_for(0, g.outer_numel() * rows, std::max<std::int64_t>(1, elementwise_grain / cols),
               [&](std::int64_t b, std::int64_t e) {
                 for (std::int64_t t = b; t < e; ++t) {
                   const std::int64_t o = t / rows, i = t % rows;
                   T* drow = dp + g.outer_offset(0, o) + i * g.stride[0];
                   const T* srow = sp + g.outer_offset(1, o) + i * g.stride[1];
                   // kept columns: [0, lim) for tril, [lim, cols) for triu
                   const std::int64_t lim = std::clamp<std::int64_t>(Lower ? i + k + 1 : i + k, 0, cols);
                   for (std::int64_t j = 0; j < cols; ++j)
                     drow[j * dcs] = (j < lim) == Lower ? srow[j * scs] : T{};
                 }
               });
}

template <bool Lower, class T>
tensor<T> tri_impl(const tensor<T>& x, std::int64_t k, bool in_place, const char* op) {
  check(x.dim() >= 2, errc::shape, op, ": expects a tensor of rank >= 2, got shape ", x.shape());
  if (in_place) {
    x.check_writable(op);
    tri_kernel<Lower>(x, x, k);
    x.impl().storage->bump_version();
    return x;
  }
  tensor<T> out = make_tensor<T>(x.shape());
  tri_kernel<Lower>(out, x, k);
  return out;
}

/// Note [Topk order]: each element gets an unsigned key whose order is the value order, with
/// NaN above +inf and -0.0 equal to 0.0 (as PyTorch compares); largest-first negates the key.
/// Rows sort (key, index) pairs, a strict total order: equal values (and NaNs) keep index
/// order, so results are stable and do not depend on the sorting algorithm.
template <class T>
std::uint64_t sort_key(T v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v ? 1 : 0;
  } else if constexpr (std::is_integral_v<T>) {
    return static_cast<std::uint64_t>(static_cast<std::int64_t>(v)) ^ (std::uint64_t{1} << 63);
  } else {
    using F = std::conditional_t<std::is_same_v<T, double>, double, float>;
    using U = std::conditional_t<std::is_same_v<T, double>, std::uint64_t, std::uint32_t>;
    F f = static_cast<F>(v);
    if (f == F(0)) f = F(0);                                       // -0.0 -> 0.0
    if (f != f) f = std::numeric_limits<F>::quiet_NaN();           // one NaN, above +inf
    const U u = std::bit_cast<U>(f);
    constexpr U sign = U(1) << (sizeof(U) * 8 - 1);
    return static_cast<std::uint64_t>(u & sign ? U(~u) : U(u | sign));
  }
}

/// The same order as sort_key, as a comparator on positions of one row (cheaper than building
/// keys when k is small: most elements lose one comparison against the heap's top).
template <bool Largest, class T>
struct ranks_before {
  const T* row;
  bool operator()(std::int64_t a, std::int64_t b) const {
    using F = std::conditional_t<std::is_same_v<T, half> || std::is_same_v<T, bfloat16>, float,
                                 std::conditional_t<std::is_same_v<T, bool>, int, T>>;
    const F va = static_cast<F>(row[a]), vb = static_cast<F>(row[b]);
    if constexpr (std::is_floating_point_v<F>) {
      const bool na = va != va, nb = vb != vb;
      if (na || nb) return na && nb ? a < b : Largest ? na : nb;
    }
    if (va != vb) return Largest ? vb < va : va < vb;
    return a < b;
  }
};

template <class T>
values_indices<T> topk_impl(const tensor<T>& x_in, std::int64_t k, std::int64_t dim,
                            bool largest, const char* op) {
  const std::int64_t d = wrap_dim(dim, x_in.dim(), op);
  const tensor<T> x = at_least_1d(x_in);
  const std::int64_t n = x.size(d);
  check(k >= 0 && k <= n, errc::value, op, ": k = ", k, " is out of range for dimension ", d,
        " of size ", n, " (shape ", x_in.shape(), ")");
  const tensor<T> rows = x.movedim(d, -1).contiguous();
  shape s = rows.shape();
  s.back() = k;
  tensor<T> vals = make_tensor<T>(s);
  tensor<std::int64_t> idx = make_tensor<std::int64_t>(s);
  const std::int64_t count = n > 0 ? rows.numel() / n : 0;
  const T* const xp = rows.data();
  T* const vp = vals.data();
  std::int64_t* const ip = idx.data();
  if (k > 0)
    parallel_for(0, count, std::max<std::int64_t>(1, elementwise_grain / (4 * n)),
                 [&](std::int64_t b, std::int64_t e) {
                   using entry = std::pair<std::uint64_t, std::int64_t>;
                   std::vector<entry> keys;
                   std::vector<std::int64_t> perm;
                   const auto kk = static_cast<std::ptrdiff_t>(k);
                   const bool few = 16 * k <= n;
                   for (std::int64_t r = b; r < e; ++r) {
                     const T* row = xp + r * n;
                     if (few) {  // a heap of k positions
                       perm.resize(static_cast<std::size_t>(n));
                       for (std::int64_t j = 0; j < n; ++j) perm[static_cast<std::size_t>(j)] = j;
                       if (largest) std::partial_sort(perm.begin(), perm.begin() + kk, perm.end(), ranks_before<true, T>{row});
                       else std::partial_sort(perm.begin(), perm.begin() + kk, perm.end(), ranks_before<false, T>{row});
                     } else {  // select then sort (key, position) pairs
                       keys.resize(static_cast<std::size_t>(n));
                       perm.resize(static_cast<std::size_t>(k));
                       for (std::int64_t j = 0; j < n; ++j) {
                         const std::uint64_t key = sort_key(row[j]);
                         keys[static_cast<std::size_t>(j)] = {largest ? ~key : key, j};
                       }
                       if (k < n) std::nth_element(keys.begin(), keys.begin() + kk - 1, keys.end());
                       std::sort(keys.begin(), keys.begin() + kk);
                       for (std::int64_t j = 0; j < k; ++j) perm[static_cast<std::size_t>(j)] = keys[static_cast<std::size_t>(j)].second;
                     }
                     for (std::int64_t j = 0; j < k; ++j) {
                       const std::int64_t at = perm[static_cast<std::size_t>(j)];
                       ip[r * k + j] = at;
                       vp[r * k + j] = row[at];
                     }
                   }
                 });
  values_indices<T> res{vals.movedim(-1, d).contiguous(), idx.movedim(-1, d).contiguous()};
  if (x_in.dim() == 0 && k == 1) {
    res.values = res.values.reshape({});
    res.indices = res.indices.reshape({});
  }
  return res;
}

// ---- backward ----------------------------------------------------------------------------------
// Note [Scan backward]: every backward here is written with ops that record themselves, so
// gradients can be differentiated again (create_graph): cumsum's adjoint is the reverse cumsum
// and the reverse cumsum's is cumsum; topk/sort scatter the gradient to the chosen positions,
// whose adjoint gathers from them (and the other way round); tril/triu mask the gradient the
// same way. cumprod's is below (Note [Cumprod backward]).

/// cumsum (Reverse = false) or the reverse cumsum of floating x along the wrapped dim d,
/// recorded as each other's gradient.
template <bool Reverse, class T>
tensor<T> cumsum_recorded(const tensor<T>& x, std::int64_t d) {
  const char* name = Reverse ? "reverse_cumsum_backward" : "cumsum_backward";
  tensor<T> out;
  {
    no_grad_guard ng;
    out = scan_impl<false, T, Reverse>(x, d, name);
  }
  if (!autograd::detail::any_requires_grad(x)) return out;
  return autograd::detail::record<T>(name, std::move(out), {x}, [d](const tensor<T>& g) {
    return std::vector<tensor<T>>{cumsum_recorded<!Reverse>(g, d)};
  });
}

/// Note [Cumprod backward]: for y = cumprod(x) along a row, grad_i = sum_{j >= i} g_j *
/// prod_{k <= j, k != i} x_k = P_i * S_i with P_i = x_0 ... x_{i-1} (an exclusive running
/// product) and S_i = g_i + x_{i+1} * S_{i+1} (S_{n-1} = g_{n-1}). No division, so any number
/// of zeros in x is exact (PyTorch's masks give the same values), accumulated in scan_acc_t.
/// With grad mode on (create_graph) and no zero in x, PyTorch's differentiable form is used
/// instead: reverse_cumsum(g * y) / x.
template <class T>
tensor<T> cumprod_grad_kernel(const tensor<T>& x_in, const tensor<T>& g_in, std::int64_t d) {
  using A = scan_acc_t<T>;
  no_grad_guard ng;
  const tensor<T> x = at_least_1d(x_in).contiguous();
  const tensor<T> g = at_least_1d(g_in).contiguous();
  tensor<T> out = make_tensor<T>(x_in.shape());
  if (x.numel() == 0) return out;
  const std::int64_t n = x.size(d);
  std::int64_t outer = 1, inner = 1;
  for (std::int64_t k = 0; k < x.dim(); ++k)
    (k < d ? outer : inner) *= k == d ? 1 : x.size(k);
  const T* const xp = x.data();
  const T* const gp = g.data();
  T* const op = out.data();
  parallel_for(0, outer * inner, std::max<std::int64_t>(1, elementwise_grain / (4 * n)),
               [&](std::int64_t b, std::int64_t e) {
                 std::vector<A> s(static_cast<std::size_t>(n));
                 for (std::int64_t t = b; t < e; ++t) {
                   const std::int64_t base = (t / inner) * n * inner + t % inner;
                   auto at = [&](std::int64_t i) { return base + i * inner; };
                   A acc = 0;
                   for (std::int64_t i = n; i-- > 0;) {
                     const A next = i + 1 < n ? convert<A>(xp[at(i + 1)]) * acc : A(0);
                     acc = convert<A>(gp[at(i)]) + next;
                     s[static_cast<std::size_t>(i)] = acc;
                   }
                   A p = 1;
                   for (std::int64_t i = 0; i < n; ++i) {
                     op[at(i)] = convert<T>(p * s[static_cast<std::size_t>(i)]);
                     p *= convert<A>(xp[at(i)]);
                   }
                 }
               });
  return out;
}

template <class T>
tensor<T> cumprod_recorded(const tensor<T>& x, std::int64_t d);

/// cumprod's gradient g -> x (Note [Cumprod backward]).
template <class T>
tensor<T> cumprod_backward(const tensor<T>& x, const tensor<T>& g, std::int64_t d) {
  if (!autograd::detail::any_requires_grad(x, g)) return cumprod_grad_kernel(x, g, d);
  bool zero = false;
  {
    const tensor<T> xc = x.detach().contiguous();
    zero = std::find(xc.data(), xc.data() + xc.numel(), T(0)) != xc.data() + xc.numel();
  }
  if (!zero) {
    const tensor<T> y = cumprod_recorded(x, d);
    return tensor<T>(cumsum_recorded<true>(tensor<T>(g * y), d) / x);
  }
  return autograd::detail::record<T>(
      "cumprod_backward_backward", cumprod_grad_kernel(x, g, d), {x, g},
      [](const tensor<T>&) -> std::vector<tensor<T>> {
        fail(errc::not_implemented, "cumprod: the second derivative (create_graph) at an input ",
             "that contains zeros is not implemented");
      });
}

template <class T>
tensor<T> cumprod_recorded(const tensor<T>& x, std::int64_t d) {
  tensor<T> out;
  {
    no_grad_guard ng;
    out = scan_impl<true>(x, d, "cumprod");
  }
  if (!autograd::detail::any_requires_grad(x)) return out;
  autograd::detail::saved<T> sx(x);
  return autograd::detail::record<T>("cumprod_backward", std::move(out), {x},
                                     [sx, d](const tensor<T>& g) {
                                       return std::vector<tensor<T>>{cumprod_backward(
                                           sx.unpack("cumprod_backward"), g, d)};
                                     });
}

template <bool Lower, class T>
tensor<T> tri_recorded(const tensor<T>& x, std::int64_t k, bool in_place, const char* op) {
  const char* name = Lower ? "tril_backward" : "triu_backward";
  auto backward = [k](const tensor<T>& g) {
    return std::vector<tensor<T>>{tri_recorded<Lower>(g, k, false, Lower ? "tril" : "triu")};
  };
  if (!in_place) {
    tensor<T> out;
    {
      no_grad_guard ng;
      out = tri_impl<Lower>(x, k, false, op);
    }
    if (!autograd::detail::any_requires_grad(x)) return out;
    return autograd::detail::record<T>(name, std::move(out), {x}, backward);
  }
  const bool recording = autograd::detail::any_requires_grad(x);
  if (recording) autograd::detail::check_inplace(x, op);
  {
    no_grad_guard ng;
    tri_impl<Lower>(x, k, true, op);
  }
  if (recording) {  // x now holds tril(x): its history continues through this node
    const tensor<T> result = autograd::detail::record<T>(name, x.detach(), {x}, backward);
    autograd::detail::rebase_history(x, result);
  }
  return x;
}

/// tril/triu entry: recorded for float and double, the plain kernel otherwise.
template <bool Lower, class T>
tensor<T> tri_dispatch(const tensor<T>& x, std::int64_t k, bool in_place, const char* op) {
  if constexpr (std::is_floating_point_v<T>) return tri_recorded<Lower>(x, k, in_place, op);
  else return tri_impl<Lower>(x, k, in_place, op);
}

template <class T>
tensor<T> gather_recorded(const tensor<T>& g, std::int64_t d, const tensor<std::int64_t>& idx);

/// zeros of `s` with g written at idx along d (idx distinct within each row: topk and sort).
template <class T>
tensor<T> scatter_recorded(const tensor<T>& g, std::int64_t d, const tensor<std::int64_t>& idx,
                           const shape& s) {
  tensor<T> out;
  {
    no_grad_guard ng;
    out = autograd::detail::zeros_shaped<T>(s, g.device());
    ember::scatter_(at_least_1d(out), d, at_least_1d(idx), at_least_1d(g));
  }
  if (!autograd::detail::any_requires_grad(g)) return out;
  return autograd::detail::record<T>("scatter_backward", std::move(out), {g},
                                     [d, idx](const tensor<T>& gg) {
                                       return std::vector<tensor<T>>{gather_recorded(gg, d, idx)};
                                     });
}

/// The elements of g at idx along d (idx's shape).
template <class T>
tensor<T> gather_recorded(const tensor<T>& g, std::int64_t d, const tensor<std::int64_t>& idx) {
  tensor<T> out;
  {
    no_grad_guard ng;
    out = ember::gather(g, d, idx);
  }
  if (!autograd::detail::any_requires_grad(g)) return out;
  return autograd::detail::record<T>(
      "gather_backward", std::move(out), {g}, [d, idx, s = g.shape()](const tensor<T>& gg) {
        return std::vector<tensor<T>>{scatter_recorded(gg, d, idx, s)};
      });
}

/// topk / sort with the values' gradient scattered back to the chosen positions.
template <class T>
values_indices<T> topk_recorded(const tensor<T>& x, std::int64_t k, std::int64_t dim,
                                bool largest, const char* op, const char* name) {
  values_indices<T> r;
  {
    no_grad_guard ng;
    r = topk_impl(x, k, dim, largest, op);
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!autograd::detail::any_requires_grad(x)) return r;
    const std::int64_t d = wrap_dim(dim, x.dim(), op);
    autograd::detail::saved<std::int64_t> si(r.indices);
    r.values = autograd::detail::record<T>(
        name, std::move(r.values), {x}, [si, d, name, s = x.shape()](const tensor<T>& g) {
          return std::vector<tensor<T>>{scatter_recorded(g, d, si.unpack(name), s)};
        });
  }
  return r;
}

}  // namespace detail

/// Running sum along dim (the first element, the first two summed, ...); integer and bool
/// inputs give int64, as PyTorch.   em::cumsum(a, 1);
/// grad_fn "cumsum_backward" (floating inputs).
template <operand E>
tensor<detail::scan_result_t<value_type_t<E>>> cumsum(const E& e, std::int64_t dim) {
  const auto x = detail::cpu_operand(e, "cumsum");
  if constexpr (std::is_floating_point_v<value_type_t<E>>)
    return detail::cumsum_recorded<false>(x, wrap_dim(dim, x.dim(), "cumsum"));
  else
    return detail::scan_impl<false>(x, dim, "cumsum");
}

/// Running product along dim; integer and bool inputs give int64.   em::cumprod(a, 0);
/// grad_fn "cumprod_backward" (floating inputs; zeros in x are handled exactly).
template <operand E>
tensor<detail::scan_result_t<value_type_t<E>>> cumprod(const E& e, std::int64_t dim) {
  const auto x = detail::cpu_operand(e, "cumprod");
  if constexpr (std::is_floating_point_v<value_type_t<E>>)
    return detail::cumprod_recorded(x, wrap_dim(dim, x.dim(), "cumprod"));
  else
    return detail::scan_impl<true>(x, dim, "cumprod");
}

/// The lower triangle of the last two dims: elements with j - i <= diagonal, others zero.
///   em::tril(em::ones<float>({3, 3}));      // ones on and below the diagonal
///   em::tril(a, -1);                        // strictly below
template <operand E>
tensor<value_type_t<E>> tril(const E& x, std::int64_t diagonal = 0) {
  return detail::tri_dispatch<true>(detail::cpu_operand(x, "tril"), diagonal, false, "tril");
}

/// The upper triangle of the last two dims: elements with j - i >= diagonal, others zero.
template <operand E>
tensor<value_type_t<E>> triu(const E& x, std::int64_t diagonal = 0) {
  return detail::tri_dispatch<false>(detail::cpu_operand(x, "triu"), diagonal, false, "triu");
}

/// In-place tril: zeroes the elements above the diagonal; returns x.
template <class T>
tensor<T> tril_(const tensor<T>& x, std::int64_t diagonal = 0) {
  return detail::tri_dispatch<true>(detail::cpu_operand(x, "tril_"), diagonal, true, "tril_");
}

/// In-place triu: zeroes the elements below the diagonal; returns x.
template <class T>
tensor<T> triu_(const tensor<T>& x, std::int64_t diagonal = 0) {
  return detail::tri_dispatch<false>(detail::cpu_operand(x, "triu_"), diagonal, true, "triu_");
}

/// The k largest (or smallest) elements along dim and their positions, best first:
///   auto [values, indices] = em::topk(a, 2, 1);
/// NaN counts as larger than every number (as PyTorch). Equal values come lowest index first
/// (PyTorch leaves the order of ties unspecified). The result is always sorted; `sorted =
/// false` only permits any order, as in PyTorch. 0 <= k <= size is required.
template <operand E>
values_indices<value_type_t<E>> topk(const E& x, std::int64_t k, std::int64_t dim = -1,
                                     bool largest = true, bool sorted = true) {
  (void)sorted;
  return detail::topk_recorded(detail::cpu_operand(x, "topk"), k, dim, largest, "topk",
                               "topk_backward");
}

/// Sorts along dim (ascending unless descending), with each element's original position.
/// Stable: equal elements keep their order; NaN sorts as the largest value.
///   auto [sorted, order] = em::sort(a, 1);
template <operand E>
values_indices<value_type_t<E>> sort(const E& e, std::int64_t dim = -1, bool descending = false) {
  const auto x = detail::cpu_operand(e, "sort");
  const std::int64_t n = x.dim() == 0 ? 1 : x.size(dim);
  return detail::topk_recorded(x, n, dim, descending, "sort", "sort_backward");
}

/// The positions that sort x along dim: sort(x, dim, descending).indices.
template <operand E>
tensor<std::int64_t> argsort(const E& e, std::int64_t dim = -1, bool descending = false) {
  const auto x = detail::cpu_operand(e, "sort");
  const std::int64_t n = x.dim() == 0 ? 1 : x.size(dim);
  no_grad_guard ng;  // indices only: nothing to record
  return detail::topk_impl(x, n, dim, descending, "sort").indices;
}

}  // namespace ember
