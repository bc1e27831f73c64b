// nn::dropout (active in training mode only) and nn::embedding (a lookup table with an
// optional padding row).
#pragma once

#include <ember/expr/concepts.hpp>
#include <ember/nn/init.hpp>
#include <ember/nn/module.hpp>
#include <ember/nn/repr.hpp>
#include <ember/ops/dropout.hpp>
#include <ember/ops/factory.hpp>
#include <ember/ops/index.hpp>

#include <boost/hana/define_struct.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace ember::nn {

/// Zeroes elements with probability p in training mode and scales the rest by 1/(1-p); the
/// identity in eval mode.   em::nn::dropout d(0.1);
class dropout : public module<dropout> {
 public:
  explicit dropout(double p = 0.5) : p(p) {
    ember::detail::check(p >= 0.0 && p <= 1.0, errc::value, "Dropout: p must be in [0, 1], got ", p);
  }
  template <operand E>
  tensor<value_type_t<E>> forward(const E& x) const {
    return functional::dropout(x, p, is_training());
  }
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override { return "p=" + detail::py_float(p) + ", inplace=False"; }
  double p;
};

/// Options of embedding. padding_idx (negative counts from the end): that row starts at zero
/// and gets no gradient.
struct embedding_options {
  std::int64_t num_embeddings = 0;
  std::int64_t embedding_dim = 0;
  std::optional<std::int64_t> padding_idx = std::nullopt;
};

/// A table of num_embeddings vectors, initialized N(0, 1); forward looks rows up by index.
///   em::nn::embedding emb({.num_embeddings = 10, .embedding_dim = 3, .padding_idx = 0});
template <class T = float>
class basic_embedding : public module<basic_embedding<T>, T> {
 public:
  BOOST_HANA_DEFINE_STRUCT(basic_embedding, (tensor<T>, weight));

  basic_embedding(std::int64_t num_embeddings, std::int64_t embedding_dim)
      : basic_embedding(embedding_options{num_embeddings, embedding_dim}) {}
  explicit basic_embedding(const embedding_options& o) : options(o) {
    ember::detail::check(o.num_embeddings > 0 && o.embedding_dim > 0, errc::value,
                         "Embedding: sizes must be positive, got ", o.num_embeddings, " x ",
                         o.embedding_dim);
    if (o.padding_idx) {
      const std::int64_t p = *o.padding_idx;
      ember::detail::check(p >= -o.num_embeddings && p < o.num_embeddings, errc::index,
                           "Embedding: padding_idx ", p, " is out of range for ", o.num_embeddings,
                           " embeddings");
      if (p < 0) options.padding_idx = p + o.num_embeddings;
    }
    weight = empty<T>({o.num_embeddings, o.embedding_dim}).requires_grad_();
    reset_parameters();
  }
  void reset_parameters() {
    init::normal_(weight);
    if (options.padding_idx) {
      no_grad_guard ng;
      weight.select(0, *options.padding_idx).zero_();
    }
  }

  template <operand Ix>
  tensor<T> forward(const Ix& indices) {
    return functional::embedding(indices, weight, {.padding_idx = options.padding_idx});
  }

  std::string type_name() const override { return "Embedding"; }
  std::string extra_repr() const override {
    std::string s = std::to_string(options.num_embeddings) + ", " + std::to_string(options.embedding_dim);
    if (options.padding_idx) s += ", padding_idx=" + std::to_string(*options.padding_idx);
    return s;
  }

  embedding_options options;
};
using embedding = basic_embedding<float>;

}  // namespace ember::nn
