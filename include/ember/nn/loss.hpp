// Loss functions (F::mse_loss, l1_loss, smooth_l1_loss, huber_loss,
// binary_cross_entropy_with_logits, nll_loss, cross_entropy), with PyTorch 1.13's formulas,
// options and reductions.
//
// Note [Losses are compositions]: every loss is written with differentiable ember ops, so its
// backward and double backward come from theirs. The elementwise losses are one expression
// whose reduction records a single fused node (Note [Fused backward]): mse_loss(x, y) with the
// default mean stores nothing but x and y, as PyTorch's dedicated kernels do. The class losses
// pick the target's entry with gather() (whose backward scatters), with class weights and
// ignore_index folded into one constant per-element weight computed while the targets are
// checked; cross_entropy is nll_loss of log_softmax, plus PyTorch's label-smoothing term.
#pragma once

#include <ember/eval/reduce.hpp>
#include <ember/ops/index.hpp>
#include <ember/ops/softmax.hpp>
#include <ember/tensor.hpp>

#include <cstdint>
#include <type_traits>
#include <utility>

namespace ember::nn {

/// How a loss reduces its per-element values: none (same shape as the target), mean, sum.
enum class reduction { none, mean, sum };

}  // namespace ember::nn

namespace ember::nn::functional {

struct mse_loss_options {
  ember::nn::reduction reduction = ember::nn::reduction::mean;
};
struct l1_loss_options {
  ember::nn::reduction reduction = ember::nn::reduction::mean;
};
struct smooth_l1_loss_options {
  ember::nn::reduction reduction = ember::nn::reduction::mean;
  double beta = 1.0;
};
struct huber_loss_options {
  ember::nn::reduction reduction = ember::nn::reduction::mean;
  double delta = 1.0;
};
template <class T>
struct bce_with_logits_options {
  tensor<T> weight = {};      // broadcast against the input
  tensor<T> pos_weight = {};  // broadcast against the input (one per class, last dim)
  ember::nn::reduction reduction = ember::nn::reduction::mean;
};
template <class T>
struct nll_loss_options {
  tensor<T> weight = {};  // one per class
  ember::nn::reduction reduction = ember::nn::reduction::mean;
  std::int64_t ignore_index = -100;
};
template <class T>
struct cross_entropy_options {
  tensor<T> weight = {};  // one per class
  ember::nn::reduction reduction = ember::nn::reduction::mean;
  std::int64_t ignore_index = -100;
  double label_smoothing = 0.0;
};

}  // namespace ember::nn::functional

namespace ember::detail {

/// The reduction of a loss expression: none materializes it, sum/mean record one fused node.
template <class E>
tensor<value_type_t<E>> reduce_loss(const E& e, nn::reduction r) {
  switch (r) {
    case nn::reduction::sum: return ember::sum(e);
    case nn::reduction::mean: return ember::mean(e);
    case nn::reduction::none: break;
  }
  return tensor<value_type_t<E>>(e);
}

/// Elementwise losses compare input and target of the same shape (PyTorch broadcasts with a
/// warning; ember asks for what is almost always a bug to be made explicit).
template <class T>
void check_same_shape(const tensor<T>& x, const tensor<T>& y, const char* op) {
  check(x.shape() == y.shape(), errc::shape, op, ": target shape ", y.shape(),
        " differs from input shape ", x.shape(), " (expand the target explicitly to broadcast)");
}

/// The checked targets of a class loss: the class dim of the input, the per-element weight
/// (class weight, 0 where ignored) and the targets with ignored entries replaced by class 0.
template <class T>
struct class_targets {
  std::int64_t cdim = 0, classes = 0;
  tensor<std::int64_t> safe;  // target shape, every entry a valid class
  tensor<T> weight;           // target shape, constant
  double total_weight = 0;    // sum of weight: the divisor of the mean
  // Note [Device class targets]: on a device the targets are checked on the CPU (one copy),
  // and the picked entries are sum(logp * picked_weight) over the class dim, where
  // picked_weight (the input's shape, on its device) holds each element's weight at its target
  // class and 0 elsewhere: the gather and its scattering backward become elementwise products
  // and a reduction, which the device has. Undefined on the CPU.
  tensor<T> picked_weight;
};

/// Class weights: one value per class, constant (detached).
template <class T>
tensor<T> checked_class_weight(const tensor<T>& w, std::int64_t classes, const char* op) {
  if (!w.defined()) return w;
  check(w.dim() == 1 && w.shape()[0] == classes, errc::shape, op,
        ": weight must hold one value per class (shape [", classes, "]), got shape ", w.shape());
  return w.detach();
}

/// The class weights shaped to broadcast along the class dim of a rank-`rank` input.
template <class T>
tensor<T> class_weight_along(const tensor<T>& w, std::int64_t rank, std::int64_t cdim) {
  shape ws(static_cast<std::size_t>(rank), 1);
  ws[static_cast<std::size_t>(cdim)] = w.shape()[0];
  return w.reshape(ws);
}

inline void check_label_smoothing(double e, const char* op) {
  check(e >= 0 && e <= 1, errc::value, op, ": label_smoothing must be in [0, 1], got ", e);
}

template <class T, class I>
class_targets<T> check_class_targets(const tensor<T>& x, const tensor<I>& target,
                                     const tensor<T>& class_weight, std::int64_t ignore_index,
                                     const char* op) {
  require_index_type<I>();
  check(x.defined() && target.defined(), errc::value, op, ": got an undefined tensor");
  check(x.device() == target.device(), errc::device, op, ": input on ", x.device(),
        ", target on ", target.device(), " (move both to one device)");
  if (class_weight.defined())
    check(class_weight.device() == x.device(), errc::device, op, ": input on ", x.device(),
          ", weight on ", class_weight.device());
  check(x.dim() >= 1, errc::shape, op, ": input must have a class dim, got shape ", x.shape());
  class_targets<T> r;
  r.cdim = x.dim() == 1 ? 0 : 1;
  r.classes = x.shape()[static_cast<std::size_t>(r.cdim)];
  shape want;  // the input shape without the class dim
  for (std::int64_t d = 0; d < x.dim(); ++d)
    if (d != r.cdim) want.push_back(x.shape()[static_cast<std::size_t>(d)]);
  check(target.shape() == want, errc::shape, op, ": input of shape ", x.shape(),
        " (classes along dim ", r.cdim, ") needs a target of shape ", want, ", got ",
        target.shape());
  tensor<T> cw = checked_class_weight(class_weight, r.classes, op);
  if (cw.defined()) cw = cw.to(cpu).contiguous();
  const tensor<I> t = target.to(cpu).contiguous();
  r.safe = make_tensor<std::int64_t>(want);
  r.weight = make_tensor<T>(want);
  const I* tp = t.data();
  std::int64_t* sp = r.safe.data();
  T* wp = r.weight.data();
  double total = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    const auto c = static_cast<std::int64_t>(tp[i]);
    if (c == ignore_index) {
      sp[i] = 0;
      wp[i] = T(0);
      continue;
    }
    check(c >= 0 && c < r.classes, errc::index, op, ": target ", c, " is out of bounds for ",
          r.classes, " classes (input shape ", x.shape(), ")");
    sp[i] = c;
    wp[i] = cw.defined() ? cw.data()[c] : T(1);
    total += static_cast<double>(wp[i]);
  }
  r.total_weight = total;
  if (!x.device().is_cpu()) {  // Note [Device class targets]
    tensor<T> pw = make_tensor<T>(x.shape());
    pw.zero_();
    // element i of the target is (outer n, inner j) around the class dim of x
    const std::int64_t inner = r.cdim == 0 ? 1 : t.numel() / std::max<std::int64_t>(x.shape()[0], 1);
    T* pp = pw.data();
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      const std::int64_t n = i / inner, j = i % inner;
      pp[(n * r.classes + sp[i]) * inner + j] = wp[i];
    }
    r.picked_weight = pw.to(x.device());
    r.weight = r.weight.to(x.device());
  }
  return r;
}

/// nll_loss over checked targets: -w[t] * logp[t] per element, then the reduction (mean divides
/// by the total weight of the non-ignored elements; 0/0 = NaN when all are ignored, as PyTorch).
template <class T>
tensor<T> nll_from_targets(const tensor<T>& logp, const class_targets<T>& ct, nn::reduction red) {
  if (ct.picked_weight.defined()) {  // Note [Device class targets]
    const tensor<T> picked_w = ember::sum(logp * ct.picked_weight, ct.cdim);
    switch (red) {
      case nn::reduction::none: return tensor<T>(-picked_w);
      case nn::reduction::sum: return ember::sum(-picked_w);
      case nn::reduction::mean: break;
    }
    return tensor<T>(ember::sum(-picked_w) / static_cast<T>(ct.total_weight));
  }
  const tensor<T> picked = gather(logp, ct.cdim, ct.safe.unsqueeze(ct.cdim)).squeeze(ct.cdim);
  switch (red) {
    case nn::reduction::none: return tensor<T>(-(picked * ct.weight));
    case nn::reduction::sum: return ember::sum(-(picked * ct.weight));
    case nn::reduction::mean: break;
  }
  return tensor<T>(ember::sum(-(picked * ct.weight)) / static_cast<T>(ct.total_weight));
}

}  // namespace ember::detail

namespace ember::nn::functional {

/// F::mse_loss(x, y, {.reduction}): (x - y)^2, reduced. Differentiable in both arguments.
template <class T>
tensor<T> mse_loss(const tensor<T>& x, const tensor<T>& y, const mse_loss_options& o = {}) {
  detail::check_same_shape(x, y, "mse_loss");
  return detail::reduce_loss(ember::square(x - y), o.reduction);
}

/// F::l1_loss(x, y, {.reduction}): |x - y|, reduced (the gradient at x == y is 0, as PyTorch).
template <class T>
tensor<T> l1_loss(const tensor<T>& x, const tensor<T>& y, const l1_loss_options& o = {}) {
  detail::check_same_shape(x, y, "l1_loss");
  return detail::reduce_loss(ember::abs(x - y), o.reduction);
}

/// F::smooth_l1_loss(x, y, {.reduction, .beta}): 0.5 d^2 / beta where |d| < beta, else
/// |d| - 0.5 beta (d = x - y); beta = 0 is l1_loss.
template <class T>
tensor<T> smooth_l1_loss(const tensor<T>& x, const tensor<T>& y,
                         const smooth_l1_loss_options& o = {}) {
  detail::check_same_shape(x, y, "smooth_l1_loss");
  detail::check(o.beta >= 0, errc::value, "smooth_l1_loss: beta must be >= 0, got ", o.beta);
  if (o.beta == 0) return detail::reduce_loss(ember::abs(x - y), o.reduction);
  const T beta = static_cast<T>(o.beta);
  const auto d = x - y;
  return detail::reduce_loss(
      ember::where(ember::abs(d) < beta, d * d * (T(0.5) / beta), ember::abs(d) - T(0.5) * beta),
      o.reduction);
}

/// F::huber_loss(x, y, {.reduction, .delta}): 0.5 d^2 where |d| < delta, else
/// delta (|d| - 0.5 delta).
template <class T>
tensor<T> huber_loss(const tensor<T>& x, const tensor<T>& y, const huber_loss_options& o = {}) {
  detail::check_same_shape(x, y, "huber_loss");
  detail::check(o.delta > 0, errc::value, "huber_loss: delta must be > 0, got ", o.delta);
  const T delta = static_cast<T>(o.delta);
  const auto d = x - y;
  return detail::reduce_loss(
      ember::where(ember::abs(d) < delta, d * d * T(0.5), (ember::abs(d) - T(0.5) * delta) * delta),
      o.reduction);
}

/// F::binary_cross_entropy_with_logits(x, t, {.weight, .pos_weight, .reduction}):
///   w * ((1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)),
/// PyTorch's formula (softplus(-x) = log(1 + e^-x), stable for large |x|); t holds
/// probabilities in [0, 1], of the input's shape; weight and pos_weight broadcast.
template <class T>
tensor<T> binary_cross_entropy_with_logits(
    const tensor<T>& x, const tensor<T>& t,
    const std::type_identity_t<bce_with_logits_options<T>>& o = {}) {
  constexpr const char* op = "binary_cross_entropy_with_logits";
  detail::check(x.defined() && t.defined(), errc::value, op, ": got an undefined tensor");
  detail::check(t.shape() == x.shape(), errc::shape, op, ": target size ", t.shape(),
        " must be the same as input size ", x.shape());
  for (const tensor<T>* w : {&o.weight, &o.pos_weight})
    if (w->defined())
      detail::check(broadcast_shapes(w->shape(), x.shape(), op) == x.shape(), errc::shape, op, ": ",
            w == &o.weight ? "weight" : "pos_weight", " of shape ", w->shape(),
            " does not broadcast to the input shape ", x.shape());
  const auto sp = ember::softplus(-x);
  if (o.pos_weight.defined()) {
    const auto lw = (o.pos_weight - T(1)) * t + T(1);
    if (o.weight.defined())
      return detail::reduce_loss(((T(1) - t) * x + lw * sp) * o.weight, o.reduction);
    return detail::reduce_loss((T(1) - t) * x + lw * sp, o.reduction);
  }
  if (o.weight.defined())
    return detail::reduce_loss(((T(1) - t) * x + sp) * o.weight, o.reduction);
  return detail::reduce_loss((T(1) - t) * x + sp, o.reduction);
}

/// F::nll_loss(logp, target, {.weight, .reduction, .ignore_index}): logp of shape (C), (N, C)
/// or (N, C, d1, ...) holds log-probabilities; target (int64) has logp's shape without the
/// class dim. Per element -weight[t] * logp[t]; mean divides by the summed weights of the
/// elements not ignored. Out-of-range targets are an error (category index).
template <operand E, class I>
tensor<value_type_t<E>> nll_loss(const E& logp, const tensor<I>& target,
                                 const std::type_identity_t<nll_loss_options<value_type_t<E>>>& o = {}) {
  using T = value_type_t<E>;
  static_assert(std::is_floating_point_v<T>, "ember: nll_loss needs float or double log-probabilities");
  const tensor<T> lp = detail::materialize(logp);
  const auto ct = detail::check_class_targets(lp, target, o.weight, o.ignore_index, "nll_loss");
  return detail::nll_from_targets(lp, ct, o.reduction);
}

/// F::cross_entropy(logits, target, {.weight, .reduction, .ignore_index, .label_smoothing}):
/// nll_loss(log_softmax(logits, class dim), target) with class-index targets (int64), plus
/// PyTorch's label smoothing: (1 - e) * nll + e / C * smooth, where smooth = -sum_c w_c logp_c
/// per element (0 where ignored), reduced as nll is (mean: by the same total weight).
template <operand E, class I>
  requires index_element<I>
tensor<value_type_t<E>> cross_entropy(
    const E& logits, const tensor<I>& target,
    const std::type_identity_t<cross_entropy_options<value_type_t<E>>>& o = {}) {
  using T = value_type_t<E>;
  static_assert(std::is_floating_point_v<T>, "ember: cross_entropy needs float or double logits");
  constexpr const char* op = "cross_entropy";
  detail::check_label_smoothing(o.label_smoothing, op);
  const tensor<T> x = detail::materialize(logits);
  const auto ct = detail::check_class_targets(x, target, o.weight, o.ignore_index, op);
  const tensor<T> logp = ember::log_softmax(x, ct.cdim);
  const tensor<T> nll = detail::nll_from_targets(logp, ct, o.reduction);
  if (o.label_smoothing == 0) return nll;
  // the smoothing term: -sum over classes of (w_c *) logp, zero where the target is ignored
  tensor<T> per_class;
  if (o.weight.defined()) {
    per_class = ember::sum(logp * detail::class_weight_along(o.weight.detach(), x.dim(), ct.cdim),
                           ct.cdim);
  } else {
    per_class = ember::sum(logp, ct.cdim);
  }
  const tensor<T> kept = ember::cast<T>(ct.weight != T(0));
  const T eps = static_cast<T>(o.label_smoothing), scale = eps / static_cast<T>(ct.classes);
  switch (o.reduction) {
    case nn::reduction::none:
      return tensor<T>(nll * (T(1) - eps) - per_class * kept * scale);
    case nn::reduction::sum:
      return tensor<T>(nll * (T(1) - eps) - ember::sum(per_class * kept) * scale);
    case nn::reduction::mean: break;
  }
  return tensor<T>(nll * (T(1) - eps) -
                   ember::sum(per_class * kept) * (scale / static_cast<T>(ct.total_weight)));
}

/// F::cross_entropy(logits, probs, ...) with class-probability targets of the logits' shape:
/// -sum_c w_c t_c logp_c per element, t smoothed to t (1 - e) + e / C; mean divides by the
/// number of elements (N x d1 x ...), as PyTorch. ignore_index does not apply.
template <operand E>
tensor<value_type_t<E>> cross_entropy(
    const E& logits, const tensor<value_type_t<E>>& probs,
    const std::type_identity_t<cross_entropy_options<value_type_t<E>>>& o = {}) {
  using T = value_type_t<E>;
  static_assert(std::is_floating_point_v<T>, "ember: cross_entropy needs float or double logits");
  constexpr const char* op = "cross_entropy";
  detail::check_label_smoothing(o.label_smoothing, op);
  const tensor<T> x = detail::materialize(logits);
  detail::check(x.dim() >= 1, errc::shape, op, ": input must have a class dim, got shape ", x.shape());
  detail::check(probs.shape() == x.shape(), errc::shape, op, ": probability targets must have the input's shape ",
        x.shape(), ", got ", probs.shape());
  const std::int64_t cdim = x.dim() == 1 ? 0 : 1;
  const std::int64_t classes = x.shape()[static_cast<std::size_t>(cdim)];
  const tensor<T> logp = ember::log_softmax(x, cdim);
  const T eps = static_cast<T>(o.label_smoothing);
  tensor<T> per;
  if (const tensor<T> w = detail::checked_class_weight(o.weight, classes, op); w.defined()) {
    per = ember::sum(logp * (probs * (T(1) - eps) + eps / static_cast<T>(classes)) *
                         detail::class_weight_along(w, x.dim(), cdim), cdim);
  } else {
    per = ember::sum(logp * (probs * (T(1) - eps) + eps / static_cast<T>(classes)), cdim);
  }
  switch (o.reduction) {
    case nn::reduction::none: return tensor<T>(-per);
    case nn::reduction::sum: return ember::sum(-per);
    case nn::reduction::mean: break;
  }
  return ember::mean(-per);
}

}  // namespace ember::nn::functional
