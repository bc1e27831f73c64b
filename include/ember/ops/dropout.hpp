// dropout: zeroes elements with probability p and scales the rest by 1/(1-p), drawing from
// ember's generator; detail::dropout_with_mask also returns the keep mask, which the backward
// (recorded by dropout) multiplies the gradient by.
#pragma once

#include <ember/autograd/engine.hpp>
#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/core/random.hpp>
#include <ember/eval/assign.hpp>
#include <ember/expr/operators.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace ember {
namespace nn::functional {

/// Options of dropout (the same fields as the positional form).
struct dropout_options {
  double p = 0.5;        ///< probability of zeroing an element, in [0, 1]
  bool training = true;  ///< false: the identity
};

}  // namespace nn::functional

namespace detail {

/// Output of dropout_with_mask: y = x * mask / (1 - p), and mask (true = kept). mask is
/// undefined when nothing was drawn (p = 0, eval mode, empty input: y is the input itself)
/// and all false for p = 1.
template <class T>
struct dropout_result {
  tensor<T> output;
  tensor<bool> mask;
};

// Note [Dropout draws]: element i of the (row-major) input is kept iff word i%4 of Philox
// block start + i/4 is below round((1 - p) * 2^32), where `start` is reserved from the
// generator for ceil(n/4) blocks, the same consumption as rand<float>(shape). So
// manual_seed(s) repeats the masks, for any thread count, and P(keep) = 1 - p within 2^-33.
// Kept elements are multiplied by 1/(1-p) and dropped ones by 0, as PyTorch does (a dropped
// NaN or inf therefore gives NaN, as in PyTorch). Attention dropout draws the same way over
// the (batch..., L, S) weights.

/// The keep threshold of Note [Dropout draws] for drop probability p in [0, 1].
inline std::uint64_t dropout_threshold(double p) {
  return static_cast<std::uint64_t>(std::llround((1 - p) * 4294967296.0));  // 2^32 when p = 0
}

/// The four words of each of the counter blocks first .. first + N - 1 under `key`, element
/// order (out[4 i + j] = word j of block first + i): generator::philox computed for N blocks at
/// once, lane by lane, so the ten dependent rounds of different blocks overlap (and vectorize).
template <int N>
void philox_words(std::uint64_t key, std::uint64_t first, std::uint32_t* out) {
  std::uint32_t c0[N], c1[N], c2[N], c3[N];
  for (int i = 0; i < N; ++i) {
    const std::uint64_t c = first + static_cast<std::uint64_t>(i);
    c0[i] = static_cast<std::uint32_t>(c);
    c1[i] = static_cast<std::uint32_t>(c >> 32);
    c2[i] = 0;
    c3[i] = 0;
  }
  std::uint32_t k0 = static_cast<std::uint32_t>(key), k1 = static_cast<std::uint32_t>(key >> 32);
  for (int r = 0; r < 10; ++r) {
    for (int i = 0; i < N; ++i) {
      const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * c0[i];
      const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * c2[i];
      const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1[i] ^ k0;
      const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3[i] ^ k1;
      c1[i] = static_cast<std::uint32_t>(p1);
      c3[i] = static_cast<std::uint32_t>(p0);
      c0[i] = n0;
      c2[i] = n2;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int i = 0; i < N; ++i) {
    out[4 * i] = c0[i];
    out[4 * i + 1] = c1[i];
    out[4 * i + 2] = c2[i];
    out[4 * i + 3] = c3[i];
  }
}

/// Dropout of elements [i0, i0 + count) of a draw whose blocks start at `start` (Note [Dropout
/// draws]): out[k] = in[k] * (kept ? scale : 0) and keep[k] = kept for k < count. in and out
/// may be the same buffer.
template <class T>
void dropout_span(const generator& gen, std::uint64_t start, std::int64_t i0, std::int64_t count,
                  std::uint64_t threshold, T scale, const T* in, T* out, bool* keep) {
  constexpr int blocks = 16;
  constexpr std::int64_t group = 4 * blocks;
  const std::int64_t end = i0 + count;
  auto one = [&](std::int64_t i, std::uint32_t word) {
    const bool k = word < threshold;
    keep[i - i0] = k;
    out[i - i0] = in[i - i0] * (k ? scale : T(0));
  };
  std::int64_t i = i0;
  // elements before the first whole group of blocks, one block at a time
  const std::int64_t body = std::min(end, (i0 + group - 1) / group * group);
  while (i < body) {
    const auto w = gen.block(start + static_cast<std::uint64_t>(i / 4));
    for (std::int64_t j = i % 4; j < 4 && i < body; ++j, ++i) one(i, w[static_cast<std::size_t>(j)]);
  }
  alignas(64) std::uint32_t words[group];
  for (; i + group <= end; i += group) {
    philox_words<blocks>(gen.initial_seed(), start + static_cast<std::uint64_t>(i / 4), words);
    for (std::int64_t j = 0; j < group; ++j) one(i + j, words[j]);
  }
  while (i < end) {
    const auto w = gen.block(start + static_cast<std::uint64_t>(i / 4));
    for (std::int64_t j = 0; j < 4 && i < end; ++j, ++i) one(i, w[static_cast<std::size_t>(j)]);
  }
}

template <class E>
dropout_result<value_type_t<E>> dropout_with_mask(const E& input, double p, bool training,
                                                  generator& gen) {
  using T = value_type_t<E>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "ember::dropout: needs a float or double input");
  check(p >= 0 && p <= 1, errc::value, "dropout: probability has to be between 0 and 1, got p = ",
        p);
  const tensor<T> x0 = materialize(input);
  if (p == 0 || !training || x0.numel() == 0) return {x0, tensor<bool>{}};
  const tensor<T> x = x0.contiguous();
  const std::int64_t n = x.numel();
  if (!x.device().is_cpu()) {
    // Note [Device dropout]: the same counter blocks of the same generator as on the CPU, drawn
    // by the device (dispatch/program.hpp's philox4x32_10): a seeded run drops the same
    // elements on a GPU as on the CPU.
    const device dev = x.device();
    dropout_result<T> r{make_tensor<T>(x.shape(), dev), make_tensor<bool>(x.shape(), dev)};
    dispatch::dropout_problem q;
    q.in = x.data();
    q.out = r.output.data();
    q.keep = r.mask.data();
    q.n = n;
    q.seed = gen.initial_seed();
    q.start = gen.reserve(static_cast<std::uint64_t>((n + 3) / 4));
    q.threshold = dropout_threshold(p);
    q.scale = static_cast<double>(p == 1 ? T(0) : static_cast<T>(1 / (1 - p)));
    q.dtype = static_cast<std::uint8_t>(dtype_of<T>);
    dispatch::kernel<op::dropout>(dev, dtype_of<T>, "dropout")(q, dev);
    return r;
  }
  dropout_result<T> r{make_tensor<T>(x.shape()), make_tensor<bool>(x.shape())};
  const std::uint64_t threshold = dropout_threshold(p);
  const T scale = p == 1 ? T(0) : static_cast<T>(1 / (1 - p));
  const std::uint64_t start = gen.reserve(static_cast<std::uint64_t>((n + 3) / 4));
  const T* src = x.data();
  T* dst = r.output.data();
  bool* keep = r.mask.data();
  // chunks of whole blocks (4 elements), so no block is computed twice
  parallel_for(0, (n + 3) / 4, elementwise_grain / 4, [&](std::int64_t b0, std::int64_t b1) {
    const std::int64_t i0 = 4 * b0, cnt = std::min(n, 4 * b1) - i0;
    dropout_span(gen, start, i0, cnt, threshold, scale, src + i0, dst + i0, keep + i0);
  });
  return r;
}

/// Records dropout's backward, g * mask / (1 - p) (the forward's own scale, so the gradient
/// of a kept element is exactly what its value was multiplied by), for y = r.output.
template <class T>
tensor<T> dropout_record(const tensor<T>& x, double p, dropout_result<T>&& r) {
  if (!r.mask.defined() || !autograd::detail::any_requires_grad(x)) return std::move(r.output);
  const T scale = p == 1 ? T(0) : static_cast<T>(1 / (1 - p));
  return autograd::detail::record<T>(
      "dropout_backward", std::move(r.output), {x}, [mask = r.mask, scale](const tensor<T>& g) {
        return std::vector<tensor<T>>{g * ember::cast<T>(mask) * scale};
      });
}

}  // namespace detail

namespace nn::functional {

/// Zeroes each element with probability p and multiplies the others by 1/(1-p), drawing from
/// the default generator (em::manual_seed makes it repeat); the identity when !training or
/// p == 0. p outside [0, 1] is an error. As torch.nn.functional.dropout.
///   em::manual_seed(0);  auto y = F::dropout(x, 0.2);        // or F::dropout(x, {.p = 0.2})
template <operand E>
tensor<value_type_t<E>> dropout(const E& input, double p = 0.5, bool training = true) {
  using T = value_type_t<E>;
  const tensor<T> x = ember::detail::materialize(input);
  if (training && p > 0) jit::detail::untraceable("dropout in training mode (call eval() first)");
  ember::detail::dropout_result<T> r;
  {
    no_grad_guard ng;
    r = ember::detail::dropout_with_mask(x, p, training, default_generator());
  }
  // p == 0, eval mode or an empty input: the input itself (no node), as in PyTorch
  return ember::detail::dropout_record(x, p, std::move(r));
}
template <operand E>
tensor<value_type_t<E>> dropout(const E& input, const dropout_options& options) {
  return dropout(input, options.p, options.training);
}

}  // namespace nn::functional
}  // namespace ember
