// nn::multihead_attention (torch.nn.MultiheadAttention: packed in_proj, out_proj, masks,
// head-averaged weights) and nn::transformer_encoder_layer (post- or pre-norm), with PyTorch's
// keys, initialization and printouts.
#pragma once

#include <ember/expr/operators.hpp>
#include <ember/nn/dropout.hpp>
#include <ember/nn/init.hpp>
#include <ember/nn/linear.hpp>
#include <ember/nn/module.hpp>
#include <ember/nn/normalization.hpp>
#include <ember/ops/dropout.hpp>
#include <ember/ops/factory.hpp>
#include <ember/ops/matmul.hpp>
#include <ember/ops/softmax.hpp>
#include <ember/eval/reduce.hpp>

#include <boost/hana/define_struct.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>

namespace ember::nn {

/// Options of multihead_attention (torch.nn.MultiheadAttention's; kdim/vdim = embed_dim).
struct multihead_attention_options {
  std::int64_t embed_dim = 0;
  std::int64_t num_heads = 1;
  double dropout = 0.0;      ///< dropout on the attention weights (training mode)
  bool bias = true;          ///< in_proj_bias and out_proj.bias
  bool batch_first = false;  ///< inputs (N, L, E) instead of PyTorch's default (L, N, E)
};

/// What multihead_attention's forward takes besides query, key and value.
template <class T>
struct attention_forward_options {
  tensor<bool> key_padding_mask{};  ///< (N, S) or (S): true = ignore that key
  bool need_weights = true;         ///< also return the attention weights
  tensor<bool> attn_mask{};         ///< (L, S) or (N * num_heads, L, S): true = not allowed
  tensor<T> attn_bias{};            ///< a float attn_mask: added to the scores, same shapes
  bool average_attn_weights = true;  ///< weights averaged over heads: (N, L, S)
};

/// The output projection of multihead_attention (a linear layer under PyTorch's name for it).
template <class T = float>
class attention_out_projection : public basic_linear<T> {
 public:
  using basic_linear<T>::basic_linear;
  std::string type_name() const override { return "NonDynamicallyQuantizableLinear"; }
};

/// Multi-head scaled dot-product attention with learned projections:
///   em::nn::multihead_attention mha({.embed_dim = 64, .num_heads = 8, .batch_first = true});
///   auto [out, weights] = mha(x, x, x);   // self-attention; weights (N, L, S) averaged over heads
template <class T = float>
class basic_multihead_attention : public module<basic_multihead_attention<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_multihead_attention, (tensor<T>, in_proj_weight),
                           (tensor<T>, in_proj_bias), (attention_out_projection<T>, out_proj));

  basic_multihead_attention(std::int64_t embed_dim, std::int64_t num_heads)
      : basic_multihead_attention(multihead_attention_options{.embed_dim = embed_dim, .num_heads = num_heads}) {}
  explicit basic_multihead_attention(const multihead_attention_options& o)
      : out_proj(checked(o).embed_dim, o.embed_dim, o.bias), options(o) {
    in_proj_weight = empty<T>({3 * o.embed_dim, o.embed_dim}).requires_grad_();
    if (o.bias) in_proj_bias = zeros<T>({3 * o.embed_dim}).requires_grad_();
    reset_parameters();
  }

  /// PyTorch's _reset_parameters: xavier_uniform in_proj, zero biases (out_proj.weight keeps
  /// the linear default).
  void reset_parameters() {
    init::xavier_uniform_(in_proj_weight);
    if (in_proj_bias.defined()) init::zeros_(in_proj_bias);
    if (out_proj.bias.defined()) init::zeros_(out_proj.bias);
  }

  /// (output, weights): output like query; weights (N, L, S) averaged over heads (or
  /// (N, H, L, S)), undefined when need_weights is false. Unbatched inputs (L, E) work too.
  std::tuple<tensor<T>, tensor<T>> forward(const tensor<T>& query, const tensor<T>& key,
                                           const tensor<T>& value,
                                           const attention_forward_options<T>& fo = {}) {
    const std::int64_t E = options.embed_dim, H = options.num_heads, Dh = E / H;
    const bool batched = query.dim() == 3;
    ember::detail::check((query.dim() == 3 || query.dim() == 2) && key.dim() == query.dim() &&
                             value.dim() == query.dim() && query.size(-1) == E && key.size(-1) == E &&
                             value.size(-1) == E,
                         errc::shape, "MultiheadAttention: query, key and value must all be (L, N, ",
                         E, ") or unbatched (L, ", E, "), got ", query.shape(), ", ", key.shape(), ", ",
                         value.shape());
    // to (N, L, E)
    auto batch_major = [&](const tensor<T>& t) {
      if (!batched) return t.unsqueeze(0);
      return options.batch_first ? t : t.transpose(0, 1);
    };
    const tensor<T> q_in = batch_major(query), k_in = batch_major(key), v_in = batch_major(value);
    const std::int64_t N = q_in.size(0), L = q_in.size(1), S = k_in.size(1);
    ember::detail::check(k_in.size(0) == N && v_in.size(0) == N && v_in.size(1) == S, errc::shape,
                         "MultiheadAttention: key and value must match the query's batch and each "
                         "other's length, got ", query.shape(), ", ", key.shape(), ", ", value.shape());

    auto project = [&](const tensor<T>& x, std::int64_t i, std::int64_t len) {
      const tensor<T> w = in_proj_weight.slice(0, i * E, (i + 1) * E);
      const tensor<T> y = in_proj_bias.defined()
                              ? functional::linear(x, w, in_proj_bias.slice(0, i * E, (i + 1) * E))
                              : functional::linear(x, w);
      return y.reshape({N, len, H, Dh}).transpose(1, 2);  // (N, H, len, Dh)
    };
    const tensor<T> q = project(q_in, 0, L), k = project(k_in, 1, S), v = project(v_in, 2, S);

    tensor<T> scores = ember::matmul(q, k.transpose(-2, -1)) * static_cast<T>(1.0 / std::sqrt(double(Dh)));
    constexpr T neg_inf = -std::numeric_limits<T>::infinity();
    if (fo.attn_mask.defined()) scores = ember::where(mask_view(fo.attn_mask, N, L, S), neg_inf, scores);
    if (fo.attn_bias.defined()) scores = scores + mask_view(fo.attn_bias, N, L, S);
    if (fo.key_padding_mask.defined()) {
      const auto& kpm = fo.key_padding_mask;
      ember::detail::check((kpm.dim() == 2 && kpm.size(0) == N && kpm.size(1) == S) ||
                               (!batched && kpm.dim() == 1 && kpm.size(0) == S),
                           errc::shape, "MultiheadAttention: key_padding_mask must be (N, S) = (", N,
                           ", ", S, "), got ", kpm.shape());
      scores = ember::where(kpm.reshape({N, 1, 1, S}), neg_inf, scores);
    }
    tensor<T> weights = ember::softmax(scores, -1);
    if (options.dropout > 0 && this->is_training()) weights = functional::dropout(weights, options.dropout, true);
    const tensor<T> heads = ember::matmul(weights, v);  // (N, H, L, Dh)
    tensor<T> out = out_proj(heads.transpose(1, 2).reshape({N, L, E}));
    if (!batched) out = out.squeeze(0);
    else if (!options.batch_first) out = out.transpose(0, 1);

    tensor<T> w_out;
    if (fo.need_weights) {
      w_out = fo.average_attn_weights ? ember::mean(weights, 1) : weights;
      if (!batched) w_out = w_out.squeeze(0);
    }
    return {out, w_out};
  }

  std::string type_name() const override { return "MultiheadAttention"; }

  multihead_attention_options options;

 private:
  static const multihead_attention_options& checked(const multihead_attention_options& o) {
    ember::detail::check(o.embed_dim > 0 && o.num_heads > 0 && o.embed_dim % o.num_heads == 0, errc::value,
                         "MultiheadAttention: embed_dim = ", o.embed_dim,
                         " must be a positive multiple of num_heads = ", o.num_heads);
    ember::detail::check(o.dropout >= 0 && o.dropout <= 1, errc::value,
                         "MultiheadAttention: dropout must be in [0, 1], got ", o.dropout);
    return o;
  }
  /// An attention mask (L, S) or (N * H, L, S) as a view broadcastable to (N, H, L, S).
  template <class M>
  tensor<M> mask_view(const tensor<M>& m, std::int64_t N, std::int64_t L, std::int64_t S) const {
    const std::int64_t H = options.num_heads;
    if (m.dim() == 2 && m.size(0) == L && m.size(1) == S) return m;
    ember::detail::check(m.dim() == 3 && m.size(0) == N * H && m.size(1) == L && m.size(2) == S,
                         errc::shape, "MultiheadAttention: attn_mask must be (L, S) = (", L, ", ", S,
                         ") or (N * num_heads, L, S) = (", N * H, ", ", L, ", ", S, "), got ", m.shape());
    return m.reshape({N, H, L, S});
  }
};
using multihead_attention = basic_multihead_attention<float>;

/// Options of transformer_encoder_layer (torch.nn.TransformerEncoderLayer's).
struct transformer_encoder_layer_options {
  std::int64_t d_model = 0;
  std::int64_t nhead = 1;
  std::int64_t dim_feedforward = 2048;
  double dropout = 0.1;
  std::string activation = "relu";  ///< "relu" or "gelu"
  double layer_norm_eps = 1e-5;
  bool batch_first = false;
  bool norm_first = false;  ///< pre-norm (x + sa(norm1(x))) instead of post-norm
};

/// Self-attention and a feed-forward block, each with a residual connection and layer norm:
///   em::nn::transformer_encoder_layer enc({.d_model = 64, .nhead = 4, .dim_feedforward = 128});
///   auto y = enc(x);   // x (L, N, 64)
template <class T = float>
class basic_transformer_encoder_layer : public module<basic_transformer_encoder_layer<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_transformer_encoder_layer, (basic_multihead_attention<T>, self_attn),
                           (basic_linear<T>, linear1), (nn::dropout, dropout), (basic_linear<T>, linear2),
                           (basic_layer_norm<T>, norm1), (basic_layer_norm<T>, norm2),
                           (nn::dropout, dropout1), (nn::dropout, dropout2));

  explicit basic_transformer_encoder_layer(const transformer_encoder_layer_options& o)
      : self_attn(multihead_attention_options{.embed_dim = o.d_model, .num_heads = o.nhead,
                                              .dropout = o.dropout, .batch_first = o.batch_first}),
        linear1(o.d_model, o.dim_feedforward), dropout(o.dropout), linear2(o.dim_feedforward, o.d_model),
        norm1(layer_norm_options{.normalized_shape = {o.d_model}, .eps = o.layer_norm_eps}),
        norm2(layer_norm_options{.normalized_shape = {o.d_model}, .eps = o.layer_norm_eps}),
        dropout1(o.dropout), dropout2(o.dropout), options(o) {
    ember::detail::check(o.activation == "relu" || o.activation == "gelu", errc::value,
                         "TransformerEncoderLayer: activation must be 'relu' or 'gelu', got '",
                         o.activation, "'");
  }

  /// src (L, N, E), or (N, L, E) with batch_first; masks as multihead_attention's.
  tensor<T> forward(const tensor<T>& src, const attention_forward_options<T>& masks = {}) {
    tensor<T> x = src;
    if (options.norm_first) {
      x = x + self_attention(norm1(x), masks);
      x = x + feed_forward(norm2(x));
    } else {
      x = norm1(x + self_attention(x, masks));
      x = norm2(x + feed_forward(x));
    }
    return x;
  }

  std::string type_name() const override { return "TransformerEncoderLayer"; }

  transformer_encoder_layer_options options;

 private:
  tensor<T> self_attention(const tensor<T>& x, attention_forward_options<T> masks) {
    masks.need_weights = false;
    return dropout1(std::get<0>(self_attn(x, x, x, masks)));
  }
  tensor<T> feed_forward(const tensor<T>& x) {
    const tensor<T> h = linear1(x);
    const tensor<T> a = options.activation == "gelu" ? tensor<T>(ember::gelu(h)) : tensor<T>(ember::relu(h));
    return dropout2(linear2(dropout(a)));
  }
};
using transformer_encoder_layer = basic_transformer_encoder_layer<float>;

}  // namespace ember::nn
