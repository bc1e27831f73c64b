// scaled_dot_product_attention: softmax(q·kᵀ·scale + mask)·v over broadcast batch dims, with
// boolean or additive masks, causal masking and dropout on the weights; detail::
// attention_forward also returns the attention weights and dropout mask, which the backward
// (recorded beside the forward) reuses.
#pragma once

#include <ember/autograd/engine.hpp>
#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/core/random.hpp>
#include <ember/eval/assign.hpp>
#include <ember/eval/reduce.hpp>
#include <ember/expr/operators.hpp>
#include <ember/ops/dropout.hpp>
#include <ember/ops/gemm.hpp>
#include <ember/ops/matmul.hpp>
#include <ember/ops/softmax.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

namespace ember {
namespace nn::functional {

/// Options of scaled_dot_product_attention (PyTorch 2.x's keyword arguments).
struct attention_options {
  double dropout_p = 0.0;         ///< dropout on the attention weights (applied whenever > 0)
  bool is_causal = false;         ///< query i attends to keys j <= i (top-left); no mask then
  std::optional<double> scale{};  ///< default 1/sqrt(E), E = q.size(-1)
};

}  // namespace nn::functional

namespace detail {

/// Output of attention_forward: the output (batch..., L, Ev), the attention weights
/// softmax(q·kᵀ·scale + mask) of shape (batch..., L, S) before dropout, and the dropout keep
/// mask of that shape (undefined when dropout_p == 0).
template <class T>
struct attention_result {
  tensor<T> output;
  tensor<T> weights;
  tensor<bool> dropout_mask;
};

/// Element offsets of every flattened batch index of an expanded tensor's leading dims.
inline std::vector<std::int64_t> batch_offsets(const shape& batch, const shape& strides) {
  std::vector<std::int64_t> off(static_cast<std::size_t>(batch.numel()));
  shape idx(batch.size(), 0);
  std::int64_t pos = 0;
  for (auto& o : off) {
    o = pos;
    for (std::size_t d = batch.size(); d-- > 0;) {
      pos += strides[d];
      if (++idx[d] < batch[d]) break;
      pos -= strides[d] * batch[d];
      idx[d] = 0;
    }
  }
  return off;
}

/// The causal mask (L, S) on `dev`: query i attends to keys j <= i (top-left aligned).
inline tensor<bool> causal_keep(std::int64_t L, std::int64_t S, device dev) {
  tensor<bool> keep = make_tensor<bool>({L, S});
  for (std::int64_t i = 0; i < L; ++i)
    for (std::int64_t j = 0; j < S; ++j) keep.data()[i * S + j] = j <= i;
  return dev.is_cpu() ? keep : keep.to(dev);
}

/// Note [Device attention]: on a device, attention is composed of the device's ops: a batched
/// GEMM for the scores, the mask as a fused where (or add), the device softmax, dropout with
/// the CPU's Philox counters (the same elements dropped as on the CPU: the weights are
/// numbered as the CPU's tiles number them), and a second batched GEMM. Operands are the
/// broadcast (expanded) q, k, v and mask; the backward is the CPU's (ember ops).
template <class T, class M>
attention_result<T> attention_on_device(const tensor<T>& qe, const tensor<T>& ke,
                                        const tensor<T>& ve, const tensor<M>& me,
                                        const nn::functional::attention_options& o, double scale,
                                        generator& gen) {
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  tensor<T> s = ember::matmul(qe, ke.transpose(-2, -1)) * static_cast<T>(scale);
  if (o.is_causal) {
    s = ember::where(causal_keep(qe.size(-2), ke.size(-2), qe.device()), s, neg_inf);
  } else if (me.defined()) {
    if constexpr (std::is_same_v<M, bool>) s = ember::where(me, s, neg_inf);
    else s = s + me;
  }
  attention_result<T> res;
  res.weights = ember::softmax(s, -1).contiguous();
  tensor<T> probs = res.weights;
  if (o.dropout_p > 0) {
    auto d = dropout_with_mask(res.weights, o.dropout_p, true, gen);
    probs = d.output;
    res.dropout_mask = d.mask;
  }
  res.output = ember::matmul(probs, ve).contiguous();
  return res;
}

/// Note [Attention masking]: a bool mask keeps the scores where it is true and sets the others
/// to -inf (PyTorch 2.x: true = attend); a float mask is added to the scores; is_causal masks
/// key j > query i. A query row whose every score is -inf (fully masked) has no softmax: its
/// weights and its output row are NaN, as PyTorch's math implementation (and torch.softmax)
/// give. Callers that can produce such rows should guard them (e.g. with where).
template <class T, class M>
attention_result<T> attention_forward(const tensor<T>& q, const tensor<T>& k, const tensor<T>& v,
                                      const tensor<M>& mask,
                                      const nn::functional::attention_options& o, generator& gen) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "ember::scaled_dot_product_attention: needs float or double q, k, v");
  static_assert(std::is_same_v<M, bool> || std::is_same_v<M, T>,
                "ember::scaled_dot_product_attention: the mask must be a bool tensor (true = "
                "attend) or a float tensor of q's element type (added to the scores)");
  constexpr const char* op = "scaled_dot_product_attention";
  check(q.dim() >= 2 && k.dim() >= 2 && v.dim() >= 2, errc::shape, op, ": q, k and v need at ",
        "least 2 dims (..., L, E), (..., S, E), (..., S, Ev); got q ", q.shape(), ", k ",
        k.shape(), ", v ", v.shape());
  check(k.device() == q.device() && v.device() == q.device(), errc::device, op, ": q is on ",
        q.device(), ", k on ", k.device(), " and v on ", v.device());
  const std::int64_t L = q.size(-2), E = q.size(-1), S = k.size(-2), Ev = v.size(-1);
  check(k.size(-1) == E, errc::shape, op, ": q ", q.shape(), " and k ", k.shape(),
        " differ in the embedding dim (last)");
  check(v.size(-2) == S, errc::shape, op, ": k ", k.shape(), " and v ", v.shape(),
        " differ in the number of keys (dim -2)");
  check(o.dropout_p >= 0 && o.dropout_p <= 1, errc::value, op,
        ": dropout_p has to be between 0 and 1, got ", o.dropout_p);
  check(!(mask.defined() && o.is_causal), errc::value, op, ": an explicit mask should not be ",
        "set when is_causal is true");
  const shape bq(q.shape().begin(), q.shape().end() - 2), bk(k.shape().begin(), k.shape().end() - 2),
      bv(v.shape().begin(), v.shape().end() - 2);
  auto broadcastable = [](const shape& a, const shape& b) {
    for (std::size_t i = 1; i <= std::min(a.size(), b.size()); ++i) {
      const auto x = a[a.size() - i], y = b[b.size() - i];
      if (x != y && x != 1 && y != 1) return false;
    }
    return true;
  };
  check(broadcastable(bq, bk) && broadcastable(bq, bv) && broadcastable(bk, bv), errc::shape, op,
        ": the batch dims of q ", q.shape(), ", k ", k.shape(), " and v ", v.shape(),
        " cannot be broadcast together");
  const shape batch = broadcast_shapes(broadcast_shapes(bq, bk, op), bv, op);
  auto with = [&](std::int64_t a, std::int64_t b) {
    shape s = batch;
    s.push_back(a);
    s.push_back(b);
    return s;
  };
  const tensor<T> qe = q.expand(with(L, E)), ke = k.expand(with(S, E)), ve = v.expand(with(S, Ev));
  tensor<M> me;
  if (mask.defined()) {
    check(mask.device() == q.device(), errc::device, op, ": the mask is on ", mask.device(),
          " but q is on ", q.device());
    check(broadcastable_to(mask.shape(), with(L, S)), errc::shape, op, ": a mask of shape ",
          mask.shape(), " does not broadcast to the scores' shape ", with(L, S), " (q ", q.shape(),
          ", k ", k.shape(), ")");
    me = mask.expand(with(L, S));
  }
  const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(E));
  if (!q.device().is_cpu()) return attention_on_device(qe, ke, ve, me, o, scale, gen);
  const std::int64_t nb = batch.numel();
  const std::size_t r = batch.size();
  const auto qoff = batch_offsets(batch, qe.strides()), koff = batch_offsets(batch, ke.strides()),
             voff = batch_offsets(batch, ve.strides());
  const auto moff = me.defined() ? batch_offsets(batch, me.strides()) : std::vector<std::int64_t>{};
  const std::int64_t q_rs = qe.strides()[r], q_cs = qe.strides()[r + 1];
  const std::int64_t k_rs = ke.strides()[r], k_cs = ke.strides()[r + 1];
  const std::int64_t v_rs = ve.strides()[r], v_cs = ve.strides()[r + 1];
  const std::int64_t m_rs = me.defined() ? me.strides()[r] : 0, m_cs = me.defined() ? me.strides()[r + 1] : 0;

  attention_result<T> res;
  res.output = make_tensor<T>(with(L, Ev));
  res.weights = make_tensor<T>(with(L, S));
  const bool drop = o.dropout_p > 0;
  if (drop) res.dropout_mask = make_tensor<bool>(with(L, S));
  if (res.output.numel() == 0 && res.weights.numel() == 0) return res;
  const std::uint64_t threshold = drop ? dropout_threshold(o.dropout_p) : 0;
  const T drop_scale = o.dropout_p == 1 ? T(0) : static_cast<T>(1 / (1 - o.dropout_p));
  const std::uint64_t start = drop ? gen.reserve(static_cast<std::uint64_t>((nb * L * S + 3) / 4)) : 0;

  // tasks: (batch, tile of up to 64 query rows); each runs both GEMMs on its tile
  constexpr std::int64_t tile = 64;
  const std::int64_t tiles = (L + tile - 1) / tile;
  const std::int64_t work = std::min(L, tile) * std::max<std::int64_t>(S, 1) * (E + Ev + 8);
  const T* qp = qe.data();
  const T* kp = ke.data();
  const T* vp = ve.data();
  const M* mp = me.defined() ? me.data() : nullptr;
  T* out = res.output.data();
  T* wts = res.weights.data();
  bool* keep = drop ? res.dropout_mask.data() : nullptr;
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  parallel_for(0, nb * tiles, std::max<std::int64_t>(1, elementwise_grain / std::max<std::int64_t>(work, 1)),
               [&](std::int64_t t0, std::int64_t t1) {
    std::vector<T> scores, dropped;  // per-task scratch: scores before the softmax, dropped weights
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t b = t / tiles, r0 = (t % tiles) * tile, rows = std::min(tile, L - r0);
      const auto bi = static_cast<std::size_t>(b);
      T* probs_out = wts + (b * L + r0) * S;
      T* o_tile = out + (b * L + r0) * Ev;
      if (S == 0) {  // no keys: empty softmax, zero output (as q·kᵀ·v with an empty inner dim)
        std::fill_n(o_tile, rows * Ev, T(0));
        continue;
      }
      scores.resize(static_cast<std::size_t>(rows * S));
      T* sc = scores.data();
      if (E > 0)
        gemm<T>(rows, S, E, static_cast<T>(scale), qp + qoff[bi] + r0 * q_rs, q_rs, q_cs,
                kp + koff[bi], k_cs, k_rs, T(0), sc, S, 1);
      else
        std::fill_n(sc, rows * S, static_cast<T>(0 * scale));
      for (std::int64_t i = 0; i < rows; ++i) {
        T* row = sc + i * S;
        if (o.is_causal) {
          for (std::int64_t j = r0 + i + 1; j < S; ++j) row[j] = neg_inf;
        } else if (mp) {
          const M* mrow = mp + moff[bi] + (r0 + i) * m_rs;
          for (std::int64_t j = 0; j < S; ++j) {
            if constexpr (std::is_same_v<M, bool>) {
              if (!mrow[j * m_cs]) row[j] = neg_inf;
            } else {
              row[j] += mrow[j * m_cs];
            }
          }
        }
        softmax_row<false>(row, probs_out + i * S, S);
      }
      const T* probs = probs_out;
      if (drop) {
        dropped.resize(static_cast<std::size_t>(rows * S));
        dropout_span(gen, start, (b * L + r0) * S, rows * S, threshold, drop_scale, probs_out,
                     dropped.data(), keep + (b * L + r0) * S);
        probs = dropped.data();
      }
      gemm<T>(rows, Ev, S, T(1), probs, S, 1, vp + voff[bi], v_rs, v_cs, T(0), o_tile, Ev, 1);
    }
  });
  return res;
}

/// A tensor for an attention operand (expressions are evaluated; tensors pass as handles).
template <class X>
tensor<value_type_t<X>> attention_operand(const X& x) {
  return materialize(x);
}

/// The attention weights softmax(q·kᵀ·scale + mask) computed with ember ops (differentiable
/// when they record): the backward's create_graph path (Note [Attention backward]).
template <class T, class M>
tensor<T> attention_weights(const tensor<T>& q, const tensor<T>& k, const tensor<M>& mask,
                            bool causal, double scale) {
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  tensor<T> s = ember::matmul(q, k.transpose(-2, -1)) * static_cast<T>(scale);
  if (causal) {
    s = ember::where(causal_keep(q.size(-2), k.size(-2), q.device()), s, neg_inf);
  } else if (mask.defined()) {
    if constexpr (std::is_same_v<M, bool>) s = ember::where(mask, s, neg_inf);
    else s = s + mask;
  }
  return ember::softmax(s, -1);
}

// Note [Attention backward]: with P the weights, D the dropout keep mask scaled by 1/(1-p)
// (ones without dropout) and O = (P * D)·v:
//   gv = (P * D)ᵀ·g,   gP = (g·vᵀ) * D,   gS = P * (gP - rowsum(gP * P)),
//   gq = gS·k·scale,   gk = gSᵀ·q·scale,  gmask = gS (a float mask; a bool mask has none),
// each summed back over the batch dims its operand was broadcast along. Masked scores have
// P = 0 and so get no gradient; a fully masked row has NaN weights and NaN gradients, as in
// PyTorch's math implementation. The forward's P is a constant of the backward; when the
// backward records (create_graph) P is recomputed from q and k with ember ops instead.

/// attention_forward plus the recorded backward (Note [Attention backward]).
template <class T, class M>
tensor<T> attention_untraced(const tensor<T>& q, const tensor<T>& k, const tensor<T>& v,
                             const tensor<M>& mask, const nn::functional::attention_options& o);

template <class T, class M>
tensor<T> attention(const tensor<T>& q, const tensor<T>& k, const tensor<T>& v,
                    const tensor<M>& mask, const nn::functional::attention_options& o) {
  const jit::detail::op_scope traced;
  tensor<T> out = attention_untraced(q, k, v, mask, o);
  if (traced) {
    check(o.dropout_p == 0, errc::not_implemented,
          "jit::trace: scaled_dot_product_attention with dropout_p > 0 cannot be traced");
    jit::attributes attrs{{"is_causal", std::int64_t{o.is_causal}}};
    if (o.scale) attrs["scale"] = *o.scale;
    if (mask.defined()) traced.record(op::scaled_dot_product_attention, out, std::move(attrs), q, k, v, mask);
    else traced.record(op::scaled_dot_product_attention, out, std::move(attrs), q, k, v);
  }
  return out;
}

template <class T, class M>
tensor<T> attention_untraced(const tensor<T>& q, const tensor<T>& k, const tensor<T>& v,
                             const tensor<M>& mask, const nn::functional::attention_options& o) {
  attention_result<T> r;
  {
    no_grad_guard ng;
    r = attention_forward(q, k, v, mask, o, default_generator());
  }
  tensor<T> fmask;  // a float mask is an input of the op (it gets a gradient)
  if constexpr (std::is_same_v<M, T>) fmask = mask;
  if (!autograd::detail::any_requires_grad(q, k, v, fmask)) return std::move(r.output);
  const bool need_q = q.requires_grad(), need_k = k.requires_grad(), need_v = v.requires_grad(),
             need_m = fmask.defined() && fmask.requires_grad();
  const autograd::detail::saved<T> sq(q), sk(k), sv(v);
  const autograd::detail::saved<M> sm(mask);
  const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const T drop_scale = o.dropout_p == 1 ? T(0) : static_cast<T>(1 / (1 - o.dropout_p));
  const bool causal = o.is_causal;
  return autograd::detail::record<T>(
      "scaled_dot_product_attention_backward", std::move(r.output), {q, k, v, fmask},
      [=, weights = r.weights, keep = r.dropout_mask](const tensor<T>& g) {
        constexpr const char* op = "scaled_dot_product_attention_backward";
        const tensor<T>& qs = sq.unpack(op);
        const tensor<T>& ks = sk.unpack(op);
        const tensor<T>& vs = sv.unpack(op);
        const tensor<T> P =
            is_grad_enabled() ? attention_weights(qs, ks, sm.unpack(op), causal, scale) : weights;
        std::vector<tensor<T>> grads(4);
        if (need_v) {
          const tensor<T> pd =
              keep.defined() ? tensor<T>(P * ember::cast<T>(keep) * drop_scale) : P;
          grads[2] = autograd::detail::sum_to(ember::matmul(pd.transpose(-2, -1), g), vs.shape());
        }
        if (need_q || need_k || need_m) {
          tensor<T> gp = ember::matmul(g, vs.transpose(-2, -1));
          if (keep.defined()) gp = gp * ember::cast<T>(keep) * drop_scale;
          const tensor<T> gs = P * (gp - ember::sum(gp * P, std::int64_t{-1}, true));
          if (need_q)
            grads[0] = autograd::detail::sum_to(
                tensor<T>(ember::matmul(gs, ks) * static_cast<T>(scale)), qs.shape());
          if (need_k)
            grads[1] = autograd::detail::sum_to(
                tensor<T>(ember::matmul(gs.transpose(-2, -1), qs) * static_cast<T>(scale)),
                ks.shape());
          if (need_m) grads[3] = autograd::detail::sum_to(gs, sm.peek().shape());
        }
        return grads;
      });
}

}  // namespace detail

namespace nn::functional {

/// softmax(q·kᵀ·scale + mask)·v for q (..., L, E), k (..., S, E), v (..., S, Ev); the batch
/// dims broadcast; the result is (batch..., L, Ev). As PyTorch 2.x's
/// torch.nn.functional.scaled_dot_product_attention (math implementation):
///   auto y = F::scaled_dot_product_attention(q, k, v);                  // (2, 4, 8)^3
///   auto yc = F::scaled_dot_product_attention(q, k, v, {.is_causal = true});
/// Fully masked query rows give NaN (Note [Attention masking]).
template <operand Q, operand K, operand V>
tensor<value_type_t<Q>> scaled_dot_product_attention(const Q& q, const K& k, const V& v,
                                                     const attention_options& options = {}) {
  static_assert(std::is_same_v<value_type_t<Q>, value_type_t<K>> &&
                    std::is_same_v<value_type_t<Q>, value_type_t<V>>,
                "ember::scaled_dot_product_attention: q, k and v must have the same element type");
  return ember::detail::attention(ember::detail::attention_operand(q),
                                  ember::detail::attention_operand(k),
                                  ember::detail::attention_operand(v), tensor<bool>{}, options);
}

/// The same with a mask broadcastable to (batch..., L, S): a bool mask (true = attend, the
/// others get -inf) or a float mask of q's type added to the scores.
///   em::tensor<bool> keep = em::rand<float>({4, 4}) > 0.2f;   // or any bool expression
///   auto y = F::scaled_dot_product_attention(q, k, v, keep, {.dropout_p = 0.1});
template <operand Q, operand K, operand V, operand M>
tensor<value_type_t<Q>> scaled_dot_product_attention(const Q& q, const K& k, const V& v,
                                                     const M& mask,
                                                     const attention_options& options = {}) {
  static_assert(std::is_same_v<value_type_t<Q>, value_type_t<K>> &&
                    std::is_same_v<value_type_t<Q>, value_type_t<V>>,
                "ember::scaled_dot_product_attention: q, k and v must have the same element type");
  return ember::detail::attention(
      ember::detail::attention_operand(q), ember::detail::attention_operand(k),
      ember::detail::attention_operand(v), ember::detail::attention_operand(mask), options);
}

}  // namespace nn::functional
}  // namespace ember
