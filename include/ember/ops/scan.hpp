// Scans and order statistics along a dim: cumsum, cumprod, tril/triu (and in-place tril_/triu_),
// topk, sort and argsort.
#pragma once

#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/eval/assign.hpp>
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
/// x[..., i, ...], accumulated sequentially in scan_acc_t. Columns of the inner block are
/// scanned side by side (tiles of `tile` columns), so every access is unit-stride.
template <bool Prod, class T>
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
                   const T* src = xp + o * n * inner + c0;
                   R* dst = rp + o * n * inner + c0;
                   if (inner == 1) {  // scanning along the last dim: one running value
                     A a = acc[0];
                     for (std::int64_t i = 0; i < n; ++i) dst[i] = convert<R>(a = combine(a, convert<A>(src[i])));
                     continue;
                   }
                   for (std::int64_t i = 0; i < n; ++i, src += inner, dst += inner)
                     for (std::int64_t c = 0; c < w; ++c) {
                       acc[c] = combine(acc[c], convert<A>(src[c]));
                       dst[c] = convert<R>(acc[c]);
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

}  // namespace detail

/// Running sum along dim (the first element, the first two summed, ...); integer and bool
/// inputs give int64, as PyTorch.   em::cumsum(a, 1);
template <operand E>
tensor<detail::scan_result_t<value_type_t<E>>> cumsum(const E& x, std::int64_t dim) {
  return detail::scan_impl<false>(detail::cpu_operand(x, "cumsum"), dim, "cumsum");
}

/// Running product along dim; integer and bool inputs give int64.   em::cumprod(a, 0);
template <operand E>
tensor<detail::scan_result_t<value_type_t<E>>> cumprod(const E& x, std::int64_t dim) {
  return detail::scan_impl<true>(detail::cpu_operand(x, "cumprod"), dim, "cumprod");
}

/// The lower triangle of the last two dims: elements with j - i <= diagonal, others zero.
///   em::tril(em::ones<float>({3, 3}));      // ones on and below the diagonal
///   em::tril(a, -1);                        // strictly below
template <operand E>
tensor<value_type_t<E>> tril(const E& x, std::int64_t diagonal = 0) {
  return detail::tri_impl<true>(detail::cpu_operand(x, "tril"), diagonal, false, "tril");
}

/// The upper triangle of the last two dims: elements with j - i >= diagonal, others zero.
template <operand E>
tensor<value_type_t<E>> triu(const E& x, std::int64_t diagonal = 0) {
  return detail::tri_impl<false>(detail::cpu_operand(x, "triu"), diagonal, false, "triu");
}

/// In-place tril: zeroes the elements above the diagonal; returns x.
template <class T>
tensor<T> tril_(const tensor<T>& x, std::int64_t diagonal = 0) {
  return detail::tri_impl<true>(detail::cpu_operand(x, "tril_"), diagonal, true, "tril_");
}

/// In-place triu: zeroes the elements below the diagonal; returns x.
template <class T>
tensor<T> triu_(const tensor<T>& x, std::int64_t diagonal = 0) {
  return detail::tri_impl<false>(detail::cpu_operand(x, "triu_"), diagonal, true, "triu_");
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
  return detail::topk_impl(detail::cpu_operand(x, "topk"), k, dim, largest, "topk");
}

/// Sorts along dim (ascending unless descending), with each element's original position.
/// Stable: equal elements keep their order; NaN sorts as the largest value.
///   auto [sorted, order] = em::sort(a, 1);
template <operand E>
values_indices<value_type_t<E>> sort(const E& e, std::int64_t dim = -1, bool descending = false) {
  const auto x = detail::cpu_operand(e, "sort");
  const std::int64_t n = x.dim() == 0 ? 1 : x.size(dim);
  return detail::topk_impl(x, n, dim, descending, "sort");
}

/// The positions that sort x along dim: sort(x, dim, descending).indices.
template <operand E>
tensor<std::int64_t> argsort(const E& x, std::int64_t dim = -1, bool descending = false) {
  return sort(x, dim, descending).indices;
}

}  // namespace ember
