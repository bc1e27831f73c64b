// softmax and log_softmax over any dim: one fused, numerically stable pass per row
// (max, then exp(x - max) with its sum, then the scaling), SIMD along contiguous rows; and
// their backward, from the saved output.
#pragma once

#include <ember/core/parallel.hpp>
#include <ember/eval/assign.hpp>
#include <ember/eval/reduce.hpp>
#include <ember/expr/operators.hpp>
#include <ember/simd/math.hpp>
#include <ember/tensor.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

namespace ember {
namespace detail {

/// One row of n elements: out = softmax(x) (Log = false) or log_softmax(x) (Log = true).
template <bool Log, class T>
void softmax_row(const T* x, T* out, std::int64_t n) {
  std::int64_t i = 0;
  T m = -std::numeric_limits<T>::infinity();
  T s = 0;
#if EMBER_HAS_XSIMD
  using B = simd::batch<T>;
  constexpr std::int64_t W = static_cast<std::int64_t>(simd::width<T>);
  if (n >= W) {
    B bm(m);
    for (; i + W <= n; i += W) bm = fn::maximum{}(simd::load(x + i), bm);
    m = simd::hmax(bm);
    for (; i < n; ++i) m = fn::maximum{}(x[i], m);
    const B vm(m == -std::numeric_limits<T>::infinity() ? T(0) : m);
    B bs(T(0));
    for (i = 0; i + W <= n; i += W) {
      const B e = simd::exp(simd::load(x + i) - vm);
      if constexpr (!Log) simd::store(out + i, e);
      bs += e;
    }
    s = simd::hsum(bs);
  } else
#endif
  {
    for (; i < n; ++i) m = fn::maximum{}(x[i], m);
    i = 0;
  }
  // Note [Softmax specials]: an all -inf row shifts by 0 (not -inf - -inf) and still ends as
  // NaN (0 * 1/0; log: -inf - log 0); a +inf or NaN max makes the whole row NaN. As PyTorch.
  const T shift = m == -std::numeric_limits<T>::infinity() ? T(0) : m;
  for (; i < n; ++i) {
    const T e = std::exp(x[i] - shift);
    if constexpr (!Log) out[i] = e;
    s += e;
  }
  if constexpr (Log) {
    // (x - shift) - log(s), not x - (shift + log(s)): the latter rounds the sum at the
    // magnitude of the logits and loses every digit below it (1e-4 relative at x ~ 1e4 in float)
    const T ls = std::log(s);
    std::int64_t j = 0;
#if EMBER_HAS_XSIMD
    const B vs(shift), vl(ls);
    for (; j + W <= n; j += W) simd::store(out + j, (simd::load(x + j) - vs) - vl);
#endif
    for (; j < n; ++j) out[j] = (x[j] - shift) - ls;
  } else {
    const T inv = T(1) / s;
    std::int64_t j = 0;
#if EMBER_HAS_XSIMD
    const B vi(inv);
    for (; j + W <= n; j += W) simd::store(out + j, simd::load(out + j) * vi);
#endif
    for (; j < n; ++j) out[j] *= inv;
  }
}

template <bool Log, class E>
tensor<value_type_t<E>> softmax_impl(const E& e, std::int64_t dim, const char* op) {
  using T = value_type_t<E>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "ember::softmax/log_softmax: needs a float or double expression");
  tensor<T> x = [&] {
    if constexpr (is_tensor_v<E>) return e; else return e.eval();
  }();
  if (x.dim() == 0) x = x.reshape({1});
  const std::int64_t d = wrap_dim(dim, x.dim(), op);
  if (!x.device().is_cpu()) {
    // Note [Device softmax]: on a device, from the device's reductions and fused elementwise
    // kernels, stably (the row max subtracted first): four passes instead of the CPU's two.
    std::vector<bool> mask(x.shape().size(), false);
    mask[static_cast<std::size_t>(d)] = true;
    tensor<T> res;
    if (x.numel() == 0) {
      res = x.clone();
    } else {
      const tensor<T> m = reduce_raw<max_op>(expr::leaf<T>(x), mask, true);
      if constexpr (Log) {
        const tensor<T> z = evaluate_raw(x - m);
        const tensor<T> s = reduce_raw<sum_op>(ember::exp(z), mask, true);
        res = evaluate_raw(z - ember::log(s));
      } else {
        const tensor<T> ex = evaluate_raw(ember::exp(x - m));
        const tensor<T> s = reduce_raw<sum_op>(expr::leaf<T>(ex), mask, true);
        res = evaluate_raw(ex / s);
      }
    }
    return is_tensor_v<E> && e.dim() == 0 ? res.reshape({}) : res;
  }
  const bool last = d == x.dim() - 1;
  const tensor<T> rows = (last ? x : x.movedim(d, -1)).contiguous();
  tensor<T> out = make_tensor<T>(rows.shape());
  const std::int64_t n = rows.dim() ? rows.size(-1) : 1;
  const std::int64_t count = n ? rows.numel() / n : 0;
  const T* src = rows.data();
  T* dst = out.data();
  parallel_for(0, count, std::max<std::int64_t>(1, elementwise_grain / std::max<std::int64_t>(n, 1)),
               [&](std::int64_t r0, std::int64_t r1) {
                 for (std::int64_t r = r0; r < r1; ++r) softmax_row<Log>(src + r * n, dst + r * n, n);
               });
  tensor<T> res = last ? out : out.movedim(-1, d).contiguous();
  return is_tensor_v<E> && e.dim() == 0 ? res.reshape({}) : res;
}

/// Note [Softmax backward]: from the output y (saved, as PyTorch; x is not kept), with s the
/// sum over dim:  softmax: grad = y * (g - s(g * y));  log_softmax: grad = g - exp(y) * s(g).
/// Both are written with differentiable ops. For double backward the saved y must carry its
/// own history: it is saved detached (a saved output holding its own grad_fn would be a
/// reference cycle) and, when the backward runs with grad mode on (create_graph), is given
/// back the node, found through a weak pointer, as grad_fn.
template <bool Log, class T>
tensor<T> softmax_untraced(const tensor<T>& x, std::int64_t dim, const char* op);

template <bool Log, class T>
tensor<T> softmax_recorded(const tensor<T>& x, std::int64_t dim, const char* op) {
  return jit::detail::traced_op(Log ? ember::op::log_softmax : ember::op::softmax,
                                {{"dim", wrap_dim(dim, std::max<std::int64_t>(x.dim(), 1), op)}},
                                [&] { return softmax_untraced<Log>(x, dim, op); }, x);
}

template <bool Log, class T>
tensor<T> softmax_untraced(const tensor<T>& x, std::int64_t dim, const char* op) {
  tensor<T> out;
  {
    no_grad_guard ng;
    out = softmax_impl<Log>(x, dim, op);
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!autograd::detail::any_requires_grad(x)) return out;
    const std::int64_t d = x.dim() == 0 ? 0 : wrap_dim(dim, x.dim(), op);
    const char* name = Log ? "log_softmax_backward" : "softmax_backward";
    autograd::detail::saved<T> sy(out.detach());
    auto self = std::make_shared<std::weak_ptr<autograd::node>>();
    out = autograd::detail::record<T>(
        name, std::move(out), {x}, [sy, self, d, name](const tensor<T>& g) {
          tensor<T> y = sy.unpack(name);
          if (y.dim() == 0)  // one element: the output is constant (1, or 0 for log_softmax)
            return std::vector<tensor<T>>{autograd::detail::zeros_shaped<T>({}, g.device())};
          if (is_grad_enabled())
            if (auto fn = self->lock()) y = autograd::detail::set_history(y.detach(), fn, 0);
          if constexpr (Log)
            return std::vector<tensor<T>>{tensor<T>(g - ember::exp(y) * ember::sum(g, d, true))};
          else
            return std::vector<tensor<T>>{tensor<T>(y * (g - ember::sum(g * y, d, true)))};
        });
    *self = out.grad_fn();
  }
  return out;
}

}  // namespace detail

/// exp(x) / sum(exp(x)) along dim, computed stably. grad_fn "softmax_backward".
template <operand E>
tensor<value_type_t<E>> softmax(const E& e, std::int64_t dim) {
  return detail::softmax_recorded<false>(detail::materialize(e), dim, "softmax");
}

/// x - logsumexp(x) along dim, computed stably. grad_fn "log_softmax_backward".
template <operand E>
tensor<value_type_t<E>> log_softmax(const E& e, std::int64_t dim) {
  return detail::softmax_recorded<true>(detail::materialize(e), dim, "log_softmax");
}

namespace nn::functional {

/// F::softmax(x, dim): ember::softmax, under torch.nn.functional's name.
template <operand E>
tensor<value_type_t<E>> softmax(const E& e, std::int64_t dim) {
  return ember::softmax(e, dim);
}

/// F::log_softmax(x, dim): ember::log_softmax, under torch.nn.functional's name.
template <operand E>
tensor<value_type_t<E>> log_softmax(const E& e, std::int64_t dim) {
  return ember::log_softmax(e, dim);
}

}  // namespace nn::functional
}  // namespace ember
