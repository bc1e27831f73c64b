// Indexing ops: index_select, gather, scatter / scatter_add, index_add, embedding, one_hot,
// masked_fill and masked_select, with their kernels in ember::detail (shared with backward:
// scatter_add is gather's adjoint, index_add index_select's and embedding's) and their
// recorded backward passes (Note [Index backward]).
#pragma once

#include <ember/autograd/engine.hpp>
#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/eval/assign.hpp>
#include <ember/eval/strided.hpp>
#include <ember/ops/factory.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <array>
#include <concepts>
#include <cstdint>
#include <numeric>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember {

/// Element types an index tensor may hold: std::int64_t (as PyTorch) or std::int32_t.
template <class I>
concept index_element = std::same_as<I, std::int64_t> || std::same_as<I, std::int32_t>;

namespace detail {

/// An operand as a defined CPU tensor (a tensor as is, an expression evaluated once).
template <class E>
tensor<value_type_t<E>> cpu_operand(const E& e, const char* op) {
  tensor<value_type_t<E>> t = materialize(e);
  check(t.defined(), errc::value, op, ": got an undefined tensor");
  check(t.device().is_cpu(), errc::not_implemented, op, ": not available for tensors on ",
        t.device(), " without a device backend");
  return t;
}

/// An operand of the index ops as a defined tensor: on the CPU, or on a device whose backend
/// provides the index kernels (Note [Device indexing], dispatch/program.hpp).
template <class E>
tensor<value_type_t<E>> index_operand(const E& e, const char* what) {
  tensor<value_type_t<E>> t = materialize(e);
  check(t.defined(), errc::value, what, ": got an undefined tensor");
  check(t.device().is_cpu() ||
            dispatch::find_kernel<ember::op::embedding>(t.device().type, dtype_of<value_type_t<E>>) != nullptr,
        errc::not_implemented, what, ": not available for ", dtype_of<value_type_t<E>>,
        " tensors on ", t.device(), " (no device kernel)");
  return t;
}

/// Every operand of an index op on one device: an error naming both otherwise.
template <class T, class... U>
void same_device(const char* what, const tensor<T>& a, const tensor<U>&... rest) {
  ((check(!rest.defined() || rest.device() == a.device(), errc::device, what,
          ": operands on ", a.device(), " and ", rest.device())), ...);
}

/// Runs one index problem on t's device (Note [Device indexing]): over `sizes`, with dst,
/// idx and src at their offsets and strides, and the indexed dim's stride `dim_stride`.
template <class T, class I>
void device_index(dispatch::index_kind kind, device dev, const shape& sizes, T* dst,
                  const shape& dst_st, const I* idx, const shape& idx_st, const T* src,
                  const shape& src_st, std::int64_t dim_stride, const char* what,
                  double alpha = 1, std::optional<std::int64_t> skip = {}) {
  const std::int64_t n = sizes.numel();
  if (n == 0) return;
  check(sizes.size() <= static_cast<std::size_t>(dispatch::max_rank), errc::not_implemented, what,
        " on ", dev, ": rank ", sizes.size(), " exceeds the device kernels' ", dispatch::max_rank);
  check(kind != dispatch::index_kind::scatter_add || std::is_same_v<T, float> ||
            std::is_same_v<T, double> || std::is_same_v<T, std::int32_t> ||
            std::is_same_v<T, std::int64_t>,
        errc::not_implemented, what, " on ", dev, ": no accumulating kernel for ", dtype_of<T>);
  dispatch::index_problem p;
  p.kind = kind;
  p.dtype = static_cast<std::uint8_t>(dtype_of<T>);
  p.index_dtype = static_cast<std::uint8_t>(dtype_of<I>);
  p.rank = static_cast<std::int32_t>(sizes.size());
  p.numel = n;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    p.shape[k] = sizes[k];
    p.dst_stride[k] = dst_st[k];
    p.idx_stride[k] = idx_st[k];
    p.src_stride[k] = src_st[k];
  }
  p.dst = dst;
  p.idx = idx;
  p.src = src;
  p.dim_stride = dim_stride;
  p.alpha = alpha;
  p.has_skip = skip.has_value();
  p.skip = skip.value_or(0);
  dispatch::kernel<ember::op::embedding>(dev, dtype_of<T>, what)(p, dev);
}

/// Strides `st` with dimension d set to 0 (the indexed dim: its position comes from the index).
inline shape without_dim(shape st, std::int64_t d) {
  st[static_cast<std::size_t>(d)] = 0;
  return st;
}

/// The strides of a contiguous index vector seen along dimension d of a rank-r iteration.
inline shape along_dim(std::size_t r, std::int64_t d) {
  shape st(r, 0);
  st[static_cast<std::size_t>(d)] = 1;
  return st;
}

/// A new tensor with the operand's values that the caller may overwrite (an expression's
/// result is already one; a tensor is cloned).
template <class E>
tensor<value_type_t<E>> fresh_copy(const E& e, const char* op) {
  if constexpr (is_tensor_v<E>) return index_operand(e, op).clone();
  else return index_operand(e, op);
}

template <class I>
constexpr void require_index_type() {
  static_assert(index_element<I>,
                "ember: index tensors must hold std::int64_t (or std::int32_t); convert them "
                "with .to<std::int64_t>()");
}

template <class T, class S>
constexpr void require_same_source_type() {
  static_assert(std::is_same_v<T, S>, "ember: src must have the input's element type; convert "
                "it with .to<T>() or em::cast<T>(expr)");
}

/// a + b for any element type: logical or for bool, through float for half/bfloat16,
/// modular for integers.
template <class T>
T add_elems(T a, T b) {
  if constexpr (std::is_same_v<T, bool>) return a || b;
  else if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>)
    return T(static_cast<float>(a) + static_cast<float>(b));
  else if constexpr (std::is_integral_v<T>)
    return static_cast<T>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b));
  else return a + b;
}
template <class T>
T mul_elems(T a, T b) {
  if constexpr (std::is_same_v<T, bool>) return a && b;
  else if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>)
    return T(static_cast<float>(a) * static_cast<float>(b));
  else if constexpr (std::is_integral_v<T>)
    return static_cast<T>(static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b));
  else return a * b;
}

/// Throws errc::index unless every index in `idx` lies in [0, n): the message names the
/// index, the dimension, its size and the input's shape. Indices are validated before any
/// kernel writes, so an error never leaves a half-updated tensor behind.
template <class I>
void check_index_range(const tensor<I>& idx, std::int64_t n, std::int64_t dim,
                       const shape& self_shape, const char* op) {
  if (!idx.device().is_cpu()) {
    // Note [Device index checks]: a device's indices are checked by its own reductions (the
    // extremes, two scalars read back) before any kernel writes, so a bad index is an error
    // here too, never a read or write out of bounds
    if (idx.numel() == 0) return;
    const auto lo = static_cast<std::int64_t>(amin(idx).item());
    const auto hi = static_cast<std::int64_t>(amax(idx).item());
    if (lo < 0 || hi >= n)
      fail(errc::index, op, ": index ", lo < 0 ? lo : hi, " is out of range for dimension ", dim,
           " of size ", n, " (input shape ", self_shape, ", on ", idx.device(), ")");
    return;
  }
  bool bad = false;
  I first{};
  for_each_element(idx.shape(), {&idx.strides()}, [&](const I& v) {
    if (!bad && (v < 0 || v >= n)) {
      bad = true;
      first = v;
    }
  }, idx.data());
  if (bad)
    fail(errc::index, op, ": index ", first, " is out of range for dimension ", dim, " of size ",
         n, " (input shape ", self_shape, ")");
}

/// Note [Parallel rows]: for_each_row over `sizes`, with dimension `cut` split into chunks run
/// by the pool (cut < 0: serial). Callers cut a dimension along which chunks never write the
/// same element; `row` must be safe to call from several threads.
template <class Row, class... Ptrs>
void parallel_rows(const shape& sizes, const std::array<const shape*, sizeof...(Ptrs)>& strides,
                   std::int64_t cut, Row&& row, Ptrs... base) {
  const std::int64_t total = sizes.numel();
  if (total == 0) return;
  const auto c = static_cast<std::size_t>(cut);
  if (cut < 0 || sizes[c] < 2 || total < 2 * elementwise_grain) {
    for_each_row(sizes, strides, row, base...);
    return;
  }
  const std::int64_t per = total / sizes[c];
  parallel_for(0, sizes[c], std::max<std::int64_t>(1, elementwise_grain / per),
               [&](std::int64_t b, std::int64_t e) {
                 shape s = sizes;
                 s[c] = e - b;
                 [&]<std::size_t... K>(std::index_sequence<K...>) {
                   for_each_row(s, strides, row, (base + b * (*strides[K])[c])...);
                 }(std::index_sequence_for<Ptrs...>{});
               });
}

/// The largest dimension other than `skip` (-1 when there is none), to cut work along.
inline std::int64_t widest_dim(const shape& s, std::int64_t skip = -1) {
  std::int64_t best = -1;
  for (std::int64_t d = 0; d < s.rank(); ++d)
    if (d != skip && (best < 0 || s[d] > s[best])) best = d;
  return best;
}

/// Note [Around a dim]: N operands seen as (outer, dim, inner): the dims before `dim` and the
/// dims after it are coalesced separately (Note [Coalescing]), so a contiguous tensor has one
/// outer and one unit-stride inner dim and its inner rows copy like memcpy.
template <std::size_t N>
struct around_dim {
  strided_plan<N> outer, inner;
  std::array<std::int64_t, N> stride{};  ///< each operand's stride along dim

  around_dim(const shape& sizes, const std::array<const shape*, N>& strides, std::int64_t dim) {
    const auto d = static_cast<std::size_t>(dim);
    shape pre(sizes.begin(), sizes.begin() + dim), post(sizes.begin() + dim + 1, sizes.end());
    std::array<shape, N> pre_st, post_st;
    std::array<const shape*, N> pre_p{}, post_p{};
    for (std::size_t k = 0; k < N; ++k) {
      const shape& st = *strides[k];
      pre_st[k] = shape(st.begin(), st.begin() + dim);
      post_st[k] = shape(st.begin() + dim + 1, st.end());
      pre_p[k] = &pre_st[k];
      post_p[k] = &post_st[k];
      stride[k] = st[d];
    }
    outer = coalesce<N>(pre, pre_p);
    inner = coalesce<N>(post, post_p);
  }
  std::int64_t outer_numel() const { return outer.sizes.numel(); }
  std::int64_t inner_numel() const { return inner.sizes.numel(); }
  /// Operand k's element offset of outer position o (row-major over the outer dims).
  std::int64_t outer_offset(std::size_t k, std::int64_t o) const {
    std::int64_t off = 0;
    for (std::size_t d = outer.sizes.size(); d-- > 0;) {
      off += (o % outer.sizes[d]) * outer.strides[k][d];
      o /= outer.sizes[d];
    }
    return off;
  }
  /// f(dst[i], src[i]) over one inner block of operands 0 (dst) and 1 (src).
  template <class D, class S, class F>
  void inner_apply(D* dst, const S* src, F&& f) const {
    if (inner.sizes.size() == 1 && inner.strides[0][0] == 1 && inner.strides[1][0] == 1) {
      const std::int64_t n = inner.sizes[0];
      for (std::int64_t i = 0; i < n; ++i) f(dst[i], src[i]);
    } else {
      for_each_element(inner.sizes, {&inner.strides[0], &inner.strides[1]}, f, dst, src);
    }
  }
};

/// index_select core: out (contiguous, size m along d) = x rows idx[0..m) along d.
/// Indices must already be validated (check_index_range).
template <class T, class I>
void index_select_kernel(const tensor<T>& out, const tensor<T>& x, std::int64_t d, const I* idx,
                         std::int64_t m) {
  if (out.numel() == 0) return;
  if (!out.device().is_cpu())
    return device_index(dispatch::index_kind::gather, out.device(), out.shape(), out.data(),
                        out.strides(), idx, along_dim(out.shape().size(), d), x.data(),
                        without_dim(x.strides(), d), x.stride(d), "index_select");
  const around_dim<2> g(out.shape(), {&out.strides(), &x.strides()}, d);
  const std::int64_t inner = g.inner_numel(), total = g.outer_numel() * m;
  T* const op = out.data();
  const T* const xp = x.data();
  parallel_for(0, total, std::max<std::int64_t>(1, elementwise_grain / inner),
               [&](std::int64_t b, std::int64_t e) {
                 std::int64_t o = b / m, j = b % m;
                 std::int64_t oo = g.outer_offset(0, o), xo = g.outer_offset(1, o);
                 for (std::int64_t t = b; t < e; ++t) {
                   g.inner_apply(op + oo + j * g.stride[0],
                                 xp + xo + static_cast<std::int64_t>(idx[j]) * g.stride[1],
                                 [](T& a, const T& v) { a = v; });
                   if (++j == m && t + 1 < e) {
                     j = 0;
                     ++o;
                     oo = g.outer_offset(0, o);
                     xo = g.outer_offset(1, o);
                   }
                 }
               });
}

/// index_add core: dst.select(d, idx[j]) += alpha * src.select(d, j) for j in [0, m), skipping
/// j where idx[j] == skip (embedding's padding_idx). dst may be any writable strided tensor;
/// duplicates accumulate. Indices must already be validated.
template <class T, class I>
void index_add_kernel(const tensor<T>& dst, std::int64_t d, const I* idx, std::int64_t m,
                      const tensor<T>& src, T alpha, std::optional<std::int64_t> skip = {}) {
  if (src.numel() == 0) return;
  if (!dst.device().is_cpu())
    return device_index(dispatch::index_kind::scatter_add, dst.device(), src.shape(), dst.data(),
                        without_dim(dst.strides(), d), idx, along_dim(src.shape().size(), d),
                        src.data(), src.strides(), dst.stride(d), "index_add",
                        static_cast<double>(alpha), skip);
  const around_dim<2> g(src.shape(), {&dst.strides(), &src.strides()}, d);
  const std::int64_t outer = g.outer_numel(), inner = g.inner_numel();
  T* const dp = dst.data();
  const T* const sp = src.data();
  const bool scaled = !(alpha == T(1));
  auto acc = [&](T& a, const T& v) { a = add_elems(a, scaled ? mul_elems(v, alpha) : v); };
  auto rows = [&](std::int64_t o, std::int64_t c0, std::int64_t c1) {
    const std::int64_t doff = g.outer_offset(0, o), soff = g.outer_offset(1, o);
    for (std::int64_t j = 0; j < m; ++j) {
      const auto r = static_cast<std::int64_t>(idx[j]);
      if (skip && r == *skip) continue;
      T* drow = dp + doff + r * g.stride[0];
      const T* srow = sp + soff + j * g.stride[1];
      if (c0 < 0) {
        g.inner_apply(drow, srow, acc);
      } else {  // a column range of a 1-D inner block
        const std::int64_t ds = g.inner.strides[0][0], ss = g.inner.strides[1][0];
        for (std::int64_t c = c0; c < c1; ++c) acc(drow[c * ds], srow[c * ss]);
      }
    }
  };
  // distinct outer positions (or distinct inner columns) never write the same element
  if (outer > 1 || g.inner.sizes.size() != 1) {
    parallel_for(0, outer, std::max<std::int64_t>(1, elementwise_grain / std::max<std::int64_t>(1, m * inner)),
                 [&](std::int64_t b, std::int64_t e) {
                   for (std::int64_t o = b; o < e; ++o) rows(o, -1, -1);
                 });
  } else {
    parallel_for(0, inner, std::max<std::int64_t>(64, elementwise_grain / std::max<std::int64_t>(1, m)),
                 [&](std::int64_t b, std::int64_t e) { rows(0, b, e); });
  }
}

/// gather core: out (idx's shape) = x[..., idx[...], ...] along d. Indices validated.
template <class T, class I>
void gather_kernel(const tensor<T>& out, const tensor<T>& x, std::int64_t d, const tensor<I>& idx) {
  if (!out.device().is_cpu())
    return device_index(dispatch::index_kind::gather, out.device(), idx.shape(), out.data(),
                        out.strides(), idx.data(), idx.strides(), x.data(),
                        without_dim(x.strides(), d), x.stride(d), "gather");
  shape xst = x.strides();
  const std::int64_t xd = xst[static_cast<std::size_t>(d)];
  xst[static_cast<std::size_t>(d)] = 0;  // position d comes from the index
  parallel_rows(idx.shape(), {&out.strides(), &idx.strides(), &xst}, widest_dim(idx.shape()),
                [xd](std::int64_t n, auto p, const auto& st) {
                  auto [o, ix, xp] = p;
                  for (std::int64_t i = 0; i < n; ++i)
                    o[i * st[0]] = xp[i * st[2] + static_cast<std::int64_t>(ix[i * st[1]]) * xd];
                },
                out.data(), static_cast<const I*>(idx.data()), static_cast<const T*>(x.data()));
}

/// scatter / scatter_add core: self[..., idx[...], ...] = (or +=) src[...] along d, over idx's
/// shape. Work is cut along a dim other than d, so threads never write the same element and
/// duplicates resolve in index order (scatter: the last one wins). Indices validated.
template <bool Add, class T, class I>
void scatter_kernel(const tensor<T>& self, std::int64_t d, const tensor<I>& idx,
                    const tensor<T>& src) {
  if (!self.device().is_cpu())
    return device_index(Add ? dispatch::index_kind::scatter_add : dispatch::index_kind::scatter,
                        self.device(), idx.shape(), self.data(), without_dim(self.strides(), d),
                        idx.data(), idx.strides(), src.data(), src.strides(), self.stride(d),
                        Add ? "scatter_add" : "scatter");
  shape sst = self.strides();
  const std::int64_t sd = sst[static_cast<std::size_t>(d)];
  sst[static_cast<std::size_t>(d)] = 0;
  parallel_rows(idx.shape(), {&sst, &idx.strides(), &src.strides()}, widest_dim(idx.shape(), d),
                [sd](std::int64_t n, auto p, const auto& st) {
                  auto [s, ix, sr] = p;
                  for (std::int64_t i = 0; i < n; ++i) {
                    T& dst = s[i * st[0] + static_cast<std::int64_t>(ix[i * st[1]]) * sd];
                    if constexpr (Add) dst = add_elems(dst, sr[i * st[2]]);
                    else dst = sr[i * st[2]];
                  }
                },
                self.data(), static_cast<const I*>(idx.data()), static_cast<const T*>(src.data()));
}

/// 0-d tensors take part in gather/scatter as 1-D tensors of one element (as PyTorch).
template <class T>
tensor<T> at_least_1d(const tensor<T>& t) {
  return t.dim() == 0 ? t.reshape({1}) : t;
}

/// Shape rules of gather (src undefined) and scatter: equal ranks; idx no larger than src in
/// any dim, and no larger than self in any dim but d.
template <class T, class I>
void check_scatter_shapes(const tensor<T>& self, std::int64_t d, const tensor<I>& idx,
                          const tensor<T>* src, const char* op) {
  check(idx.dim() == self.dim() && (!src || src->dim() == self.dim()), errc::shape, op,
        ": index ", idx.shape(), src ? ", src " : "", src ? src->shape() : shape{},
        " and input ", self.shape(), " must have the same number of dimensions");
  for (std::int64_t k = 0; k < idx.dim(); ++k) {
    check(k == d || idx.size(k) <= self.size(k), errc::shape, op, ": index shape ", idx.shape(),
          " is larger than the input shape ", self.shape(), " in dimension ", k,
          " (only dimension ", d, " may be larger)");
    check(!src || idx.size(k) <= src->size(k), errc::shape, op, ": index shape ", idx.shape(),
          " is larger than the src shape ", src ? src->shape() : shape{}, " in dimension ", k);
  }
}

/// A contiguous 1-D copy of an index operand (rank <= 1 required).
template <class I>
tensor<I> index_vector(const tensor<I>& idx, const char* op) {
  check(idx.dim() <= 1, errc::shape, op, ": the index must be a vector (rank <= 1), got shape ",
        idx.shape());
  return idx.reshape({idx.numel()}).contiguous();
}

template <class T, class I>
tensor<T> index_select_impl(const tensor<T>& x_in, std::int64_t dim, const tensor<I>& idx_in,
                            const char* op) {
  const tensor<I> idx = index_vector(idx_in, op);
  const std::int64_t d = wrap_dim(dim, x_in.dim(), op);
  const tensor<T> x = at_least_1d(x_in);
  const std::int64_t m = idx.numel();
  check(x_in.dim() > 0 || m == 1, errc::shape, op, ": a 0-d input takes exactly one index, got ",
        m);
  check_index_range(idx, x.size(d), d, x_in.shape(), op);
  shape s = x.shape();
  s[static_cast<std::size_t>(d)] = m;
  tensor<T> out = make_tensor<T>(s, x.device());
  index_select_kernel(out, x, d, idx.data(), m);
  return x_in.dim() == 0 ? out.reshape({}) : out;
}

/// index_select's backward: a zero tensor of `self_shape` with grad's slices added at idx.
template <class T, class I>
tensor<T> index_select_backward(const tensor<T>& grad, std::int64_t d, const tensor<I>& idx,
                                const shape& self_shape) {
  tensor<T> out = autograd::detail::zeros_shaped<T>(self_shape, grad.device());
  const tensor<I> iv = index_vector(idx, "index_select_backward");
  index_add_kernel(at_least_1d(out), d, iv.data(), iv.numel(), at_least_1d(grad), T(1));
  return out;
}

/// gather's backward: scatter_add of grad into zeros of `self_shape`.
template <class T, class I>
tensor<T> gather_backward(const tensor<T>& grad, std::int64_t d, const tensor<I>& idx,
                          const shape& self_shape) {
  tensor<T> out = autograd::detail::zeros_shaped<T>(self_shape, grad.device());
  scatter_kernel<true>(at_least_1d(out), d, at_least_1d(idx), at_least_1d(grad));
  return out;
}

/// embedding's backward: grad (indices.shape + (D)) summed into rows of a (num_weights, D)
/// zero tensor; rows at padding_idx get no gradient.
template <class T, class I>
tensor<T> embedding_backward(const tensor<T>& grad, const tensor<I>& indices,
                             std::int64_t num_weights, std::optional<std::int64_t> padding_idx) {
  const std::int64_t dim = grad.size(-1);
  tensor<T> out = autograd::detail::zeros_shaped<T>({num_weights, dim}, grad.device());
  const tensor<I> iv = indices.reshape({indices.numel()}).contiguous();
  index_add_kernel(out, 0, iv.data(), iv.numel(), grad.reshape({iv.numel(), dim}), T(1),
                   padding_idx);
  return out;
}

template <bool Add, class T, class I>
void scatter_into(const tensor<T>& self, std::int64_t dim, const tensor<I>& idx_in,
                  const tensor<T>& src_in, const char* op) {
  const std::int64_t d = wrap_dim(dim, self.dim(), op);
  const tensor<T> s = at_least_1d(self);
  tensor<I> idx = at_least_1d(idx_in);
  tensor<T> src = at_least_1d(src_in);
  check_scatter_shapes(s, d, idx, &src, op);
  s.check_writable(op);
  check_index_range(idx, s.size(d), d, self.shape(), op);
  if (src.storage() == s.storage()) src = src.clone();  // Note [Aliasing]
  if constexpr (std::is_same_v<T, I>)
    if (idx.storage() == s.storage()) idx = idx.clone();
  scatter_kernel<Add>(s, d, idx, src);
  self.impl().storage->bump_version();
}

template <class T, class I>
void index_add_into(const tensor<T>& self, std::int64_t dim, const tensor<I>& idx_in,
                    const tensor<T>& src_in, T alpha, const char* op) {
  const std::int64_t d = wrap_dim(dim, self.dim(), op);
  const tensor<T> s = at_least_1d(self);
  tensor<I> idx = index_vector(idx_in, op);
  tensor<T> src = at_least_1d(src_in);
  shape want = s.shape();
  want[static_cast<std::size_t>(d)] = idx.numel();
  check(src.shape() == want, errc::shape, op, ": source shape ", src_in.shape(),
        " does not match the input shape ", self.shape(), " with dimension ", d, " set to the ",
        idx.numel(), " indices, i.e. ", want);
  s.check_writable(op);
  check_index_range(idx, s.size(d), d, self.shape(), op);
  if (src.storage() == s.storage()) src = src.clone();
  if constexpr (std::is_same_v<T, I>)
    if (idx.storage() == s.storage()) idx = idx.clone();
  index_add_kernel(s, d, idx.data(), idx.numel(), src, alpha);
  self.impl().storage->bump_version();
}

}  // namespace detail

// declared ahead: the backward formulas below are built from these recorded ops
template <operand E, operand Ix>
tensor<value_type_t<E>> index_select(const E& x, std::int64_t dim, const Ix& idx);
template <operand E, operand Ix>
tensor<value_type_t<E>> gather(const E& x, std::int64_t dim, const Ix& idx);
template <operand E, operand Ix, operand S>
tensor<value_type_t<E>> scatter(const E& x, std::int64_t dim, const Ix& idx, const S& src);
template <operand E, operand M, class S>
  requires std::is_arithmetic_v<S> || is_element_v<S>
tensor<value_type_t<E>> masked_fill(const E& x, const M& mask, S value);
template <operand Ix, operand W>
tensor<value_type_t<W>> embedding(const Ix& indices, const W& weight);

namespace detail {

// Note [Index backward]: each op records one "<op>_backward" node; the in-place ops
// (scatter_, scatter_add_, index_add_, masked_fill_) rebase self's history onto theirs, and
// the out-of-place ones are those on a fresh copy. Index tensors and masks are saved
// version-checked and get no gradient. The gradients are built from recorded ops (gather and
// scatter_add are each other's adjoints, so are index_select and index_add), so gradients of
// gradients work (create_graph). scatter_'s src gradient skips elements a later duplicate
// index overwrote: only the element that lands gets one.

/// Element types the engine differentiates.
template <class T>
inline constexpr bool index_grad_v = std::is_same_v<T, float> || std::is_same_v<T, double>;

/// index_select's adjoint: zeros of self_shape with g's slices added at rows idx along d
/// (duplicates accumulate). Recorded: its gradient is index_select again.
template <class T, class I>
tensor<T> index_select_adjoint(const tensor<T>& g, std::int64_t d, const tensor<I>& idx,
                               const shape& self_shape) {
  tensor<T> out;
  {
    no_grad_guard ng;
    out = index_select_backward(g, d, idx, self_shape);
  }
  if (!autograd::detail::any_requires_grad(g)) return out;
  return autograd::detail::record<T>("index_add_backward", std::move(out), {g},
                                     [d, idx](const tensor<T>& gg) {
                                       return std::vector<tensor<T>>{index_select(gg, d, idx)};
                                     });
}

/// gather's adjoint: g scatter-added into zeros of self_shape. Recorded: its gradient is
/// gather again.
template <class T, class I>
tensor<T> gather_adjoint(const tensor<T>& g, std::int64_t d, const tensor<I>& idx,
                         const shape& self_shape) {
  tensor<T> out;
  {
    no_grad_guard ng;
    out = gather_backward(g, d, idx, self_shape);
  }
  if (!autograd::detail::any_requires_grad(g)) return out;
  return autograd::detail::record<T>("scatter_add_backward", std::move(out), {g},
                                     [d, idx](const tensor<T>& gg) {
                                       return std::vector<tensor<T>>{gather(gg, d, idx)};
                                     });
}

/// embedding's adjoint: g's rows summed into a (num_weights, D) zero table, nothing at
/// padding_idx. Recorded: its gradient is the embedding of the upstream gradient.
template <class T, class I>
tensor<T> embedding_adjoint(const tensor<T>& g, const tensor<I>& idx, std::int64_t num_weights,
                            std::optional<std::int64_t> padding_idx) {
  tensor<T> out;
  {
    no_grad_guard ng;
    out = embedding_backward(g, idx, num_weights, padding_idx);
  }
  if (!autograd::detail::any_requires_grad(g)) return out;
  return autograd::detail::record<T>(
      "embedding_dense_backward", std::move(out), {g}, [idx, padding_idx](const tensor<T>& gg) {
        tensor<T> rows = embedding(idx, gg);
        if (padding_idx) {
          shape ms = idx.shape();
          ms.push_back(1);
          const tensor<bool> at_pad =
              tensor<bool>(idx == static_cast<I>(*padding_idx)).reshape(ms);
          rows = masked_fill(rows, at_pad, 0);
        }
        return std::vector<tensor<T>>{rows};
      });
}

/// alpha * t, recorded (its gradient is alpha * the upstream gradient).
template <class T>
tensor<T> alpha_scaled(const tensor<T>& t, T alpha) {
  if (alpha == T(1)) return t;
  tensor<T> out;
  if (t.device().is_cpu()) {
    out = make_tensor<T>(t.shape());
    for_each_element(t.shape(), {&out.strides(), &t.strides()},
                     [alpha](T& o, const T& v) { o = v * alpha; }, out.data(),
                     static_cast<const T*>(t.data()));
  } else {
    no_grad_guard ng;
    out = tensor<T>(t.detach() * alpha);  // one fused kernel on the device
  }
  if (!autograd::detail::any_requires_grad(t)) return out;
  return autograd::detail::record<T>("mul_backward", std::move(out), {t},
                                     [alpha](const tensor<T>& g) {
                                       return std::vector<tensor<T>>{alpha_scaled(g, alpha)};
                                     });
}

/// t at the start of zeros of `target` (t no larger in any dim; same rank), recorded: its
/// gradient is the matching corner of the upstream gradient.
template <class T>
tensor<T> zero_extend(const tensor<T>& t, const shape& target) {
  if (t.shape() == target) return t;
  tensor<T> out = autograd::detail::zeros_shaped<T>(target, t.device());
  auto corner = [](tensor<T> r, const shape& s) {
    for (std::int64_t k = 0; k < r.dim(); ++k) r = r.narrow(k, 0, s[static_cast<std::size_t>(k)]);
    return r;
  };
  {
    no_grad_guard ng;
    corner(out, t.shape()).copy_(t);
  }
  if (!autograd::detail::any_requires_grad(t)) return out;
  const shape ts = t.shape();
  return autograd::detail::record<T>("pad_backward", std::move(out), {t},
                                     [ts, corner](const tensor<T>& g) {
                                       return std::vector<tensor<T>>{corner(g, ts)};
                                     });
}

/// scatter_ with duplicate indices: true at the elements of idx (at least 1-d) whose value a
/// later duplicate overwrites. Replays the forward kernel's order (Note [Parallel rows]:
/// colliding elements differ only along d, so one thread writes them in row-major order).
template <class I>
tensor<bool> scatter_overwritten(const shape& self_shape, std::int64_t d, const tensor<I>& idx) {
  if (!idx.device().is_cpu())  // the CPU's order; a GPU's racing duplicates have none
    return scatter_overwritten(self_shape, d, idx.to(cpu)).to(idx.device());
  // every slot the gather reads was written by the scatter: no need to initialize
  tensor<std::int64_t> slot = make_tensor<std::int64_t>(self_shape);
  tensor<std::int64_t> pos = make_tensor<std::int64_t>(idx.shape());
  std::iota(pos.data(), pos.data() + pos.numel(), std::int64_t{0});
  scatter_kernel<false>(slot, d, idx, pos);
  tensor<std::int64_t> back = make_tensor<std::int64_t>(idx.shape());
  gather_kernel(back, slot, d, idx);
  tensor<bool> lost = make_tensor<bool>(idx.shape());
  for (std::int64_t i = 0; i < lost.numel(); ++i) lost.data()[i] = back.data()[i] != i;
  return lost;
}

/// Records an in-place op already applied to self: self's history becomes `name`, with edges
/// to self's previous history and the other inputs (check_inplace must run before writing).
template <class T, class Fn>
void record_inplace(const tensor<T>& self, std::string name,
                    std::initializer_list<tensor<T>> inputs, Fn&& backward) {
  tensor<T> alias = autograd::detail::record<T>(std::move(name), self.detach(), inputs,
                                                std::forward<Fn>(backward));
  if (alias.requires_grad()) autograd::detail::rebase_history(self, alias);
}

/// scatter_ / scatter_add_ with recording (self written in place).
template <bool Add, class T, class I>
void scatter_into_recorded(const tensor<T>& self, std::int64_t dim, const tensor<I>& idx,
                           const tensor<T>& src, const char* op) {
  bool rec = false;
  if constexpr (index_grad_v<T>) rec = autograd::detail::any_requires_grad(self, src);
  if (rec) autograd::detail::check_inplace(self, op);
  {
    no_grad_guard ng;
    scatter_into<Add>(self, dim, idx, src, op);
  }
  if constexpr (index_grad_v<T>) {
    if (!rec) return;
    const char* name = Add ? "scatter_add_backward" : "scatter_backward";
    const std::int64_t d = wrap_dim(dim, self.dim(), op);
    const autograd::detail::saved<I> si(idx);
    const shape ss = self.dim() == 0 ? shape{1} : self.shape(), srcs = src.shape();
    const bool need_self = self.requires_grad(), need_src = src.requires_grad();
    record_inplace(self, name, {self, src}, [=](const tensor<T>& g) {
      const tensor<I> ix = at_least_1d(si.unpack(name));
      tensor<T> gs, gsrc;
      if (need_self) {
        if constexpr (Add) gs = g;
        else gs = scatter(g, d, ix, autograd::detail::zeros_shaped<T>(ix.shape(), g.device()));
      }
      if (need_src) {
        gsrc = gather(at_least_1d(g), d, ix);
        if constexpr (!Add) {
          tensor<bool> lost;
          {
            no_grad_guard ng;
            lost = scatter_overwritten(ss, d, ix);
          }
          const bool* lp = lost.data();
          if (std::any_of(lp, lp + lost.numel(), [](bool b) { return b; }))
            gsrc = masked_fill(gsrc, lost, 0);
        }
        gsrc = zero_extend(gsrc, srcs.empty() ? shape{1} : srcs);  // src may be larger than idx
        if (srcs.empty()) gsrc = gsrc.reshape(srcs);
      }
      return std::vector<tensor<T>>{gs, gsrc};
    });
  }
}

/// index_add_ with recording (self written in place).
template <class T, class I>
void index_add_recorded(const tensor<T>& self, std::int64_t dim, const tensor<I>& idx,
                        const tensor<T>& src, T alpha, const char* op) {
  bool rec = false;
  if constexpr (index_grad_v<T>) rec = autograd::detail::any_requires_grad(self, src);
  if (rec) autograd::detail::check_inplace(self, op);
  {
    no_grad_guard ng;
    index_add_into(self, dim, idx, src, alpha, op);
  }
  if constexpr (index_grad_v<T>) {
    if (!rec) return;
    const std::int64_t d = wrap_dim(dim, self.dim(), op);
    const autograd::detail::saved<I> si(idx);
    const shape srcs = src.shape();
    const bool need_src = src.requires_grad();
    record_inplace(self, "index_add_backward", {self, src}, [=](const tensor<T>& g) {
      tensor<T> gsrc;
      if (need_src) {
        gsrc = alpha_scaled(index_select(g, d, si.unpack("index_add_backward")), alpha);
        if (gsrc.shape() != srcs) gsrc = gsrc.reshape(srcs);  // 0-d self or src
      }
      return std::vector<tensor<T>>{g, gsrc};
    });
  }
}

/// embedding (padding_idx already in [0, num_embeddings)) with recording.
template <class T, class I>
tensor<T> embedding_recorded(const tensor<I>& idx, const tensor<T>& w,
                             std::optional<std::int64_t> padding_idx) {
  check(w.dim() == 2, errc::shape, "embedding: the weight must be 2-D "
        "(num_embeddings, embedding_dim), got shape ", w.shape());
  shape s = idx.shape();
  s.push_back(w.size(1));
  const jit::detail::op_scope traced;
  tensor<T> out;
  {
    no_grad_guard ng;
    out = index_select_impl(w, 0, idx.reshape({idx.numel()}), "embedding").view(s);
  }
  if (traced) {
    check((std::is_same_v<I, std::int64_t>), errc::not_implemented,
          "jit::trace: embedding with ", dtype_of<I>, " indices cannot be traced (use int64)");
    traced.record(op::embedding, out, {{"padding_idx", std::int64_t{padding_idx.value_or(-1)}}},
                  idx, w);
  }
  if constexpr (index_grad_v<T>) {
    if (autograd::detail::any_requires_grad(w)) {
      const autograd::detail::saved<I> si(idx);
      const std::int64_t n = w.size(0);
      out = autograd::detail::record<T>(
          "embedding_backward", std::move(out), {w}, [si, n, padding_idx](const tensor<T>& g) {
            return std::vector<tensor<T>>{
                embedding_adjoint(g, si.unpack("embedding_backward"), n, padding_idx)};
          });
    }
  }
  return out;
}

}  // namespace detail

/// The slices idx[0], idx[1], ... of x along dim (a new tensor; idx is a 1-D index tensor).
///   em::index_select(a, 0, em::from_vector<std::int64_t>({0, 2}, {2}));  // rows 0 and 2
/// Negative or too large indices are an errc::index error.
template <operand E, operand Ix>
tensor<value_type_t<E>> index_select(const E& x_in, std::int64_t dim, const Ix& idx_in) {
  using T = value_type_t<E>;
  using I = value_type_t<Ix>;
  detail::require_index_type<I>();
  const tensor<T> x = detail::index_operand(x_in, "index_select");
  const tensor<I> idx = detail::index_operand(idx_in, "index_select");
  detail::same_device("index_select", x, idx);
  tensor<T> out;
  {
    no_grad_guard ng;
    out = detail::index_select_impl(x, dim, idx, "index_select");
  }
  if constexpr (detail::index_grad_v<T>) {
    if (autograd::detail::any_requires_grad(x)) {
      const std::int64_t d = wrap_dim(dim, x.dim(), "index_select");
      const autograd::detail::saved<I> si(idx);
      const shape xs = x.shape();
      out = autograd::detail::record<T>(
          "index_select_backward", std::move(out), {x}, [si, d, xs](const tensor<T>& g) {
            return std::vector<tensor<T>>{
                detail::index_select_adjoint(g, d, si.unpack("index_select_backward"), xs)};
          });
    }
  }
  return out;
}

/// out[i][j] = x[idx[i][j]][j] (dim 0), x[i][idx[i][j]] (dim 1), ...: the output has idx's
/// shape; idx has x's rank and is no larger than x except along dim.
///   em::gather(a, 1, idx);
template <operand E, operand Ix>
tensor<value_type_t<E>> gather(const E& x_in, std::int64_t dim, const Ix& idx_in) {
  using T = value_type_t<E>;
  using I = value_type_t<Ix>;
  detail::require_index_type<I>();
  const tensor<T> x0 = detail::index_operand(x_in, "gather");
  const tensor<I> idx0 = detail::index_operand(idx_in, "gather");
  detail::same_device("gather", x0, idx0);
  const std::int64_t d = wrap_dim(dim, x0.dim(), "gather");
  tensor<T> out;
  {
    no_grad_guard ng;
    const tensor<T> x = detail::at_least_1d(x0);
    const tensor<I> idx = detail::at_least_1d(idx0);
    detail::check_scatter_shapes<T, I>(x, d, idx, nullptr, "gather");
    detail::check_index_range(idx, x.size(d), d, x0.shape(), "gather");
    out = detail::make_tensor<T>(idx.shape(), x.device());
    detail::gather_kernel(out, x, d, idx);
    if (idx0.dim() == 0) out = out.reshape({});
  }
  if constexpr (detail::index_grad_v<T>) {
    if (autograd::detail::any_requires_grad(x0)) {
      const autograd::detail::saved<I> si(idx0);
      const shape xs = x0.shape();
      out = autograd::detail::record<T>(
          "gather_backward", std::move(out), {x0}, [si, d, xs](const tensor<T>& g) {
            return std::vector<tensor<T>>{
                detail::gather_adjoint(g, d, si.unpack("gather_backward"), xs)};
          });
    }
  }
  return out;
}

/// In place: self[..., idx[...], ...] += src[...] along dim (duplicates accumulate); returns
/// self. The adjoint of gather.
template <class T, operand Ix, operand S>
tensor<T> scatter_add_(const tensor<T>& self, std::int64_t dim, const Ix& idx, const S& src) {
  detail::require_index_type<value_type_t<Ix>>();
  detail::require_same_source_type<T, value_type_t<S>>();
  const auto s = detail::index_operand(self, "scatter_add_");
  const auto ix = detail::index_operand(idx, "scatter_add_");
  const auto sr = detail::index_operand(src, "scatter_add_");
  detail::same_device("scatter_add_", s, ix, sr);
  detail::scatter_into_recorded<true>(s, dim, ix, sr, "scatter_add_");
  return self;
}

/// A copy of x with src added at the positions idx names along dim:
///   em::scatter_add(em::zeros<float>({3}), 0, idx, src);   // a histogram-like sum
template <operand E, operand Ix, operand S>
tensor<value_type_t<E>> scatter_add(const E& x, std::int64_t dim, const Ix& idx, const S& src) {
  tensor<value_type_t<E>> out = detail::fresh_copy(x, "scatter_add");
  return scatter_add_(out, dim, idx, src);
}

/// In place: self[..., idx[...], ...] = src[...] along dim; returns self. With duplicate
/// indices the last one (in idx's row-major order) wins.
template <class T, operand Ix, operand S>
tensor<T> scatter_(const tensor<T>& self, std::int64_t dim, const Ix& idx, const S& src) {
  detail::require_index_type<value_type_t<Ix>>();
  detail::require_same_source_type<T, value_type_t<S>>();
  const auto s = detail::index_operand(self, "scatter_");
  const auto ix = detail::index_operand(idx, "scatter_");
  const auto sr = detail::index_operand(src, "scatter_");
  detail::same_device("scatter_", s, ix, sr);
  detail::scatter_into_recorded<false>(s, dim, ix, sr, "scatter_");
  return self;
}

/// A copy of x with src written at the positions idx names along dim.
template <operand E, operand Ix, operand S>
tensor<value_type_t<E>> scatter(const E& x, std::int64_t dim, const Ix& idx, const S& src) {
  tensor<value_type_t<E>> out = detail::fresh_copy(x, "scatter");
  return scatter_(out, dim, idx, src);
}

/// In place: self.select(dim, idx[j]) += alpha * src.select(dim, j) (duplicates accumulate);
/// src has self's shape with dim resized to idx.numel(). Returns self.
template <class T, operand Ix, operand S, class A = int>
tensor<T> index_add_(const tensor<T>& self, std::int64_t dim, const Ix& idx, const S& src,
                     A alpha = 1) {
  detail::require_index_type<value_type_t<Ix>>();
  detail::require_same_source_type<T, value_type_t<S>>();
  const auto s = detail::index_operand(self, "index_add_");
  const auto ix = detail::index_operand(idx, "index_add_");
  const auto sr = detail::index_operand(src, "index_add_");
  detail::same_device("index_add_", s, ix, sr);
  detail::index_add_recorded(s, dim, ix, sr, convert<T>(alpha), "index_add_");
  return self;
}

/// A copy of x with alpha * src's slices added at rows idx along dim:
///   em::index_add(em::zeros<float>({3, 2}), 0, em::from_vector<std::int64_t>({2, 2}, {2}), src);
template <operand E, operand Ix, operand S, class A = int>
tensor<value_type_t<E>> index_add(const E& x, std::int64_t dim, const Ix& idx, const S& src,
                                  A alpha = 1) {
  tensor<value_type_t<E>> out = detail::fresh_copy(x, "index_add");
  return index_add_(out, dim, idx, src, alpha);
}

/// Rows of a (num_embeddings, embedding_dim) table: the output has shape
/// indices.shape + (embedding_dim). Indices outside [0, num_embeddings) are an error.
///   auto vecs = em::embedding(ids /* tensor<int64_t> (B, L) */, table);   // (B, L, D)
template <operand Ix, operand W>
tensor<value_type_t<W>> embedding(const Ix& indices, const W& weight) {
  detail::require_index_type<value_type_t<Ix>>();
  const auto ix = detail::index_operand(indices, "embedding");
  const auto w = detail::index_operand(weight, "embedding");
  detail::same_device("embedding", w, ix);
  return detail::embedding_recorded(ix, w, std::nullopt);
}

namespace nn::functional {

/// Options of F::embedding. padding_idx (negative counts from the end) only changes the
/// backward pass (that row gets no gradient), as in PyTorch.
struct embedding_func_options {
  std::optional<std::int64_t> padding_idx = std::nullopt;
};

/// F::embedding(indices, weight, {.padding_idx = 0}): see ember::embedding.
template <operand Ix, operand W>
tensor<value_type_t<W>> embedding(const Ix& indices, const W& weight,
                                  const embedding_func_options& options = {}) {
  detail::require_index_type<value_type_t<Ix>>();
  const auto w = detail::index_operand(weight, "embedding");
  std::optional<std::int64_t> pad;
  if (options.padding_idx) {
    const std::int64_t n = w.dim() > 0 ? w.size(0) : 0, p = *options.padding_idx;
    detail::check(p >= -n && p < n, errc::index, "embedding: padding_idx ", p,
                  " is out of range for a weight with ", n, " rows (shape ", w.shape(), ")");
    pad = p < 0 ? p + n : p;
  }
  const auto ix = detail::index_operand(indices, "embedding");
  detail::same_device("embedding", w, ix);
  return detail::embedding_recorded(ix, w, pad);
}

}  // namespace nn::functional

/// (labels.shape..., num_classes) with a 1 at each label (PyTorch's one_hot; int64 by default,
/// another element type with one_hot<U>). num_classes = -1 infers max(labels) + 1.
///   em::one_hot(em::from_vector<std::int64_t>({1, 3}, {2}), 4);   // [[0,1,0,0],[0,0,0,1]]
template <class U = std::int64_t, operand L>
tensor<U> one_hot(const L& labels_in, std::int64_t num_classes = -1) {
  using I = value_type_t<L>;
  detail::require_index_type<I>();
  const tensor<I> on = detail::index_operand(labels_in, "one_hot");
  if (!on.device().is_cpu())  // the class count is read on the host (as PyTorch syncs for it)
    return one_hot<U>(on.to(cpu), num_classes).to(on.device());
  const tensor<I> labels = on.contiguous();
  const I* lp = labels.data();
  const std::int64_t n = labels.numel();
  std::int64_t lo = 0, hi = -1;
  for (std::int64_t i = 0; i < n; ++i) {
    lo = std::min<std::int64_t>(lo, lp[i]);
    hi = std::max<std::int64_t>(hi, lp[i]);
  }
  detail::check(lo >= 0, errc::index, "one_hot: class values must be non-negative, got ", lo);
  if (num_classes == -1) {
    detail::check(n > 0, errc::value, "one_hot: cannot infer the number of classes from an ",
                  "empty tensor (shape ", labels.shape(), "); pass num_classes");
    num_classes = hi + 1;
  }
  detail::check(num_classes >= 0, errc::value, "one_hot: num_classes must be -1 or >= 0, got ",
                num_classes);
  detail::check(hi < num_classes, errc::index, "one_hot: class value ", hi,
                " is out of range for num_classes = ", num_classes);
  shape s = labels.shape();
  s.push_back(num_classes);
  tensor<U> out = zeros<U>(s);
  U* op = out.data();
  for (std::int64_t i = 0; i < n; ++i) op[i * num_classes + lp[i]] = convert<U>(1);
  return out;
}

/// In place: x[i] = value where mask[i] (mask broadcasts to x's shape); returns x.
template <class T, operand M, class S>
  requires std::is_arithmetic_v<S> || is_element_v<S>
tensor<T> masked_fill_(const tensor<T>& x, const M& mask_in, S value) {
  static_assert(std::is_same_v<value_type_t<M>, bool>, "ember::masked_fill_: the mask must be "
                "a tensor<bool> or a bool expression (e.g. a > 0.f)");
  tensor<bool> mask = detail::materialize(mask_in);
  detail::check(mask.defined() && x.defined(), errc::value, "masked_fill_: got an undefined tensor");
  detail::same_device("masked_fill_", x, mask);
  detail::check(broadcastable_to(mask.shape(), x.shape()), errc::shape, "masked_fill_: mask ",
                "of shape ", mask.shape(), " does not broadcast to the input shape ", x.shape());
  x.check_writable("masked_fill_");
  bool rec = false;
  if constexpr (detail::index_grad_v<T>) rec = autograd::detail::any_requires_grad(x);
  if (rec) autograd::detail::check_inplace(x, "masked_fill_");
  if constexpr (std::is_same_v<T, bool>)
    if (mask.storage() == x.storage()) mask = mask.clone();
  {
    no_grad_guard ng;
    const tensor<bool> mb = mask.expand(x.shape());
    const T v = convert<T>(value);
    if (x.device().is_cpu())
      detail::for_each_element(x.shape(), {&x.strides(), &mb.strides()},
                               [v](T& a, const bool& m) { if (m) a = v; }, x.data(), mb.data());
    else if constexpr (std::is_arithmetic_v<T>)
      tensor<T>(x).copy_(where(mb, v, x));  // one fused kernel, each element read before written
    else
      detail::fail(errc::not_implemented, "masked_fill_: ", dtype_of<T>, " tensors on ", x.device());
    x.impl().storage->bump_version();
  }
  if constexpr (detail::index_grad_v<T>) {
    if (rec) {
      const autograd::detail::saved<bool> sm(mask);
      detail::record_inplace(x, "masked_fill_backward", {x}, [sm](const tensor<T>& g) {
        return std::vector<tensor<T>>{masked_fill(g, sm.unpack("masked_fill_backward"), 0)};
      });
    }
  }
  return x;
}

/// where(mask, value, x) as a new tensor (x and mask broadcast together, as PyTorch):
///   em::masked_fill(scores, causal_mask, -INFINITY);
template <operand E, operand M, class S>
  requires std::is_arithmetic_v<S> || is_element_v<S>
tensor<value_type_t<E>> masked_fill(const E& x_in, const M& mask_in, S value) {
  using T = value_type_t<E>;
  static_assert(std::is_same_v<value_type_t<M>, bool>, "ember::masked_fill: the mask must be "
                "a tensor<bool> or a bool expression (e.g. a > 0.f)");
  const tensor<T> x = detail::materialize(x_in);
  const tensor<bool> mask = detail::materialize(mask_in);
  detail::check(mask.defined() && x.defined(), errc::value, "masked_fill: got an undefined tensor");
  detail::same_device("masked_fill", x, mask);
  tensor<T> out = detail::make_tensor<T>(broadcast_shapes(x.shape(), mask.shape(), "masked_fill"),
                                         x.device());
  out.copy_(x);
  return masked_fill_(out, mask, value);
}

/// The elements of x where mask is true, as a 1-D tensor in row-major order (x and mask
/// broadcast together).   em::masked_select(a, a > 0.f);
template <operand E, operand M>
tensor<value_type_t<E>> masked_select(const E& x_in, const M& mask_in) {
  using T = value_type_t<E>;
  static_assert(std::is_same_v<value_type_t<M>, bool>, "ember::masked_select: the mask must be "
                "a tensor<bool> or a bool expression (e.g. a > 0.f)");
  const tensor<T> xd = detail::materialize(x_in);
  const tensor<bool> md = detail::materialize(mask_in);
  detail::check(xd.defined() && md.defined(), errc::value, "masked_select: got an undefined tensor");
  detail::same_device("masked_select", xd, md);
  if (!xd.device().is_cpu()) {
    // the output's size depends on the mask's values: selected on the host (as PyTorch syncs
    // for the count), then moved back; the copies are recorded, so gradients flow to xd
    return masked_select(xd.to(cpu), md.to(cpu)).to(xd.device());
  }
  const tensor<T>& x0 = xd;
  const tensor<bool>& m0 = md;
  const shape s = broadcast_shapes(x0.shape(), m0.shape(), "masked_select");
  bool rec = false;
  if constexpr (detail::index_grad_v<T>) rec = autograd::detail::any_requires_grad(x0);
  tensor<T> out;
  tensor<std::int64_t> pos;  // flat positions (in s) of the selected elements, for backward
  {
    no_grad_guard ng;
    const tensor<T> x = x0.expand(s);
    const tensor<bool> m = m0.expand(s);
    std::int64_t count = 0;
    detail::for_each_element(s, {&m.strides()}, [&](const bool& b) { count += b; }, m.data());
    out = detail::make_tensor<T>({count});
    T* op = out.data();
    detail::for_each_element(s, {&x.strides(), &m.strides()},
                             [&](const T& v, const bool& b) { if (b) *op++ = v; }, x.data(),
                             m.data());
    if (rec) {
      pos = detail::make_tensor<std::int64_t>({count});
      std::int64_t* pp = pos.data();
      std::int64_t k = 0;
      detail::for_each_element(s, {&m.strides()}, [&](const bool& b) {
        if (b) *pp++ = k;
        ++k;
      }, m.data());
    }
  }
  if constexpr (detail::index_grad_v<T>) {
    if (rec) {
      const shape xs = x0.shape();
      out = autograd::detail::record<T>(
          "masked_select_backward", std::move(out), {x0}, [pos, s, xs](const tensor<T>& g) {
            const tensor<T> full = detail::index_select_adjoint(g, 0, pos, shape{s.numel()});
            return std::vector<tensor<T>>{autograd::detail::sum_to(full.view(s), xs)};
          });
    }
  }
  return out;
}

}  // namespace ember
