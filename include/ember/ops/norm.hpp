// Normalization layers' functional forms: batch_norm (training and eval, running-stat update),
// layer_norm and group_norm, with their options structs, plus the detail:: forwards that also
// return the statistics a backward needs (batch mean / inverse std, per-row mean / rstd), and
// the backward of each (recorded beside its forward).
#pragma once

#include <ember/autograd/engine.hpp>
#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/eval/assign.hpp>
#include <ember/eval/reduce.hpp>
#include <ember/expr/operators.hpp>
#include <ember/simd/batch.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember {
namespace nn::functional {

/// Options of batch_norm, in PyTorch's argument order. weight/bias may be left undefined
/// (no affine transform); every field has a default.
template <class T = float>
struct batch_norm_options {
  tensor<T> weight{};      ///< per-channel scale (C elements), or undefined
  tensor<T> bias{};        ///< per-channel shift (C elements), or undefined
  bool training = false;   ///< batch statistics (and running-stat update) vs running statistics
  double momentum = 0.1;   ///< running = (1 - momentum) * running + momentum * batch_stat
  double eps = 1e-5;       ///< added to the variance before the square root
};

/// Options of layer_norm: the trailing shape normalized over, optional affine, eps.
template <class T = float>
struct layer_norm_options {
  shape normalized_shape{};  ///< the trailing dims of the input to normalize over
  tensor<T> weight{};        ///< elementwise scale of shape normalized_shape, or undefined
  tensor<T> bias{};          ///< elementwise shift of shape normalized_shape, or undefined
  double eps = 1e-5;
};

/// Options of group_norm (the number of groups is a separate argument, as in PyTorch).
template <class T = float>
struct group_norm_options {
  tensor<T> weight{};  ///< per-channel scale (C elements), or undefined
  tensor<T> bias{};    ///< per-channel shift (C elements), or undefined
  double eps = 1e-5;
};

}  // namespace nn::functional

namespace detail {

/// Note [Norm statistics]: statistics are two-pass (mean, then squared deviations from it) so
/// E[x^2] - E[x]^2 never cancels. Values are summed with SIMD accumulators of T over blocks of
/// 16 packets (each lane adds at most 4 values per accumulator), and the block sums are added
/// in double: float inputs get nearly double-accurate sums at float SIMD speed. The second
/// pass also sums the deviations themselves, which corrects the variance and the mean for
/// the rounding of the first pass's mean to T (the "corrected two-pass" algorithm). The work
/// split never depends on the thread count, so the results do not either.
template <class T>
double block_sum(const T* p, std::int64_t n) {
  double total = 0;
  std::int64_t i = 0;
#if EMBER_HAS_XSIMD
  if constexpr (simd::has_batch_v<T>) {
    using B = simd::batch<T>;
    constexpr auto W = static_cast<std::int64_t>(simd::width<T>);
    for (; i + 16 * W <= n; i += 16 * W) {
      B a0 = simd::load(p + i), a1 = simd::load(p + i + W), a2 = simd::load(p + i + 2 * W),
        a3 = simd::load(p + i + 3 * W);
      for (std::int64_t k = 4 * W; k < 16 * W; k += 4 * W) {
        a0 += simd::load(p + i + k);
        a1 += simd::load(p + i + k + W);
        a2 += simd::load(p + i + k + 2 * W);
        a3 += simd::load(p + i + k + 3 * W);
      }
      total += static_cast<double>(simd::hsum((a0 + a1) + (a2 + a3)));
    }
    for (; i + W <= n; i += W) total += static_cast<double>(simd::hsum(simd::load(p + i)));
  }
#endif
  for (; i < n; ++i) total += static_cast<double>(p[i]);
  return total;
}

/// Adds sum(x - c) to s1 and sum((x - c)^2) to s2 over n contiguous values (Note [Norm
/// statistics]).
template <class T>
void block_dev_sums(const T* p, std::int64_t n, T c, double& s1, double& s2) {
  std::int64_t i = 0;
#if EMBER_HAS_XSIMD
  if constexpr (simd::has_batch_v<T>) {
    using B = simd::batch<T>;
    constexpr auto W = static_cast<std::int64_t>(simd::width<T>);
    const B vc(c);
    for (; i + 8 * W <= n; i += 8 * W) {
      B d0 = simd::load(p + i) - vc, d1 = simd::load(p + i + W) - vc;
      B q0 = d0 * d0, q1 = d1 * d1;
      for (std::int64_t k = 2 * W; k < 8 * W; k += 2 * W) {
        const B e0 = simd::load(p + i + k) - vc, e1 = simd::load(p + i + k + W) - vc;
        d0 += e0;
        d1 += e1;
        q0 += e0 * e0;
        q1 += e1 * e1;
      }
      s1 += static_cast<double>(simd::hsum(d0 + d1));
      s2 += static_cast<double>(simd::hsum(q0 + q1));
    }
  }
#endif
  for (; i < n; ++i) {
    const double d = static_cast<double>(p[i] - c);
    s1 += d;
    s2 += d * d;
  }
}

/// Clamps a variance that rounding made slightly negative to 0; NaN stays NaN (an input with
/// NaN or inf gives NaN statistics, as in PyTorch).
inline double nonneg(double v) { return v < 0 ? 0.0 : v; }

/// Mean and biased variance of each of `rows` contiguous rows of length m, in double.
template <class T>
void row_moments(const T* x, std::int64_t rows, std::int64_t m, double* mean, double* var) {
  parallel_for(0, rows, std::max<std::int64_t>(1, elementwise_grain / std::max<std::int64_t>(m, 1)),
               [&](std::int64_t r0, std::int64_t r1) {
                 for (std::int64_t r = r0; r < r1; ++r) {
                   const T* p = x + r * m;
                   const double n = static_cast<double>(m);
                   const T c = static_cast<T>(block_sum(p, m) / n);
                   double s1 = 0, s2 = 0;
                   block_dev_sums(p, m, c, s1, s2);
                   mean[r] = static_cast<double>(c) + s1 / n;
                   var[r] = nonneg((s2 - s1 * s1 / n) / n);
                 }
               });
}

/// Adds the column sums of rows [n0, n1) of a contiguous (rows, cols) block to a1: of x, or
/// (center given) of d = x - center[j] to a1 and of d^2 to a2. Rows are summed in T, SIMD along
/// the row, 16 rows at a time, then folded into double (Note [Norm statistics]).
template <class T>
void column_sums(const T* x, std::int64_t n0, std::int64_t n1, std::int64_t cols, const T* center,
                 double* a1, double* a2) {
  std::vector<T> b1(static_cast<std::size_t>(cols)), b2(b1.size());
  auto add_row = [&](const T* row, auto with_center) {
    constexpr bool dev = decltype(with_center)::value;
    std::int64_t j = 0;
#if EMBER_HAS_XSIMD
    if constexpr (simd::has_batch_v<T>) {
      using B = simd::batch<T>;
      constexpr auto W = static_cast<std::int64_t>(simd::width<T>);
      for (; j + W <= cols; j += W) {
        B v = simd::load(row + j);
        if constexpr (dev) {
          v -= simd::load(center + j);
          simd::store(b2.data() + j, simd::load(b2.data() + j) + v * v);
        }
        simd::store(b1.data() + j, simd::load(b1.data() + j) + v);
      }
    }
#endif
    for (; j < cols; ++j) {
      T v = row[j];
      if constexpr (dev) {
        v -= center[j];
        b2[static_cast<std::size_t>(j)] += v * v;
      }
      b1[static_cast<std::size_t>(j)] += v;
    }
  };
  for (std::int64_t n = n0; n < n1; n += 16) {
    std::fill(b1.begin(), b1.end(), T(0));
    std::fill(b2.begin(), b2.end(), T(0));
    for (std::int64_t r = n; r < std::min(n1, n + 16); ++r) {
      if (center) add_row(x + r * cols, std::true_type{});
      else add_row(x + r * cols, std::false_type{});
    }
    for (std::int64_t j = 0; j < cols; ++j) {
      a1[j] += static_cast<double>(b1[static_cast<std::size_t>(j)]);
      a2[j] += static_cast<double>(b2[static_cast<std::size_t>(j)]);
    }
  }
}

/// Per-channel mean and biased variance of a contiguous (N, C, S) block, in double. Channels
/// with long runs (S >= 16) are reduced run by run, in parallel over channels; short runs
/// ((N, C) inputs above all) are swept row by row into per-column accumulators, in a fixed
/// number of row chunks merged in order.
template <class T>
void channel_moments(const T* x, std::int64_t N, std::int64_t C, std::int64_t S, double* mean,
                     double* var) {
  const double count = static_cast<double>(N * S);
  if (S >= 16) {
    parallel_for(0, C, std::max<std::int64_t>(1, elementwise_grain / std::max<std::int64_t>(N * S, 1)),
                 [&](std::int64_t c0, std::int64_t c1) {
                   for (std::int64_t c = c0; c < c1; ++c) {
                     double s = 0;
                     for (std::int64_t n = 0; n < N; ++n) s += block_sum(x + (n * C + c) * S, S);
                     const T m = static_cast<T>(s / count);
                     double s1 = 0, s2 = 0;
                     for (std::int64_t n = 0; n < N; ++n) block_dev_sums(x + (n * C + c) * S, S, m, s1, s2);
                     mean[c] = static_cast<double>(m) + s1 / count;
                     var[c] = nonneg((s2 - s1 * s1 / count) / count);
                   }
                 });
    return;
  }
  const std::int64_t cols = C * S;
  const std::int64_t tasks = std::clamp<std::int64_t>(N * cols / elementwise_grain, 1, 64);
  const std::int64_t chunk = (N + tasks - 1) / tasks;
  const auto ucols = static_cast<std::size_t>(cols);
  std::vector<double> acc1(static_cast<std::size_t>(tasks) * ucols), acc2(acc1.size());
  auto sweep = [&](const T* center) {
    std::fill(acc1.begin(), acc1.end(), 0.0);
    std::fill(acc2.begin(), acc2.end(), 0.0);
    parallel_for(0, tasks, 1, [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t)
        column_sums(x, t * chunk, std::min(N, (t + 1) * chunk), cols, center,
                    acc1.data() + static_cast<std::size_t>(t) * ucols,
                    acc2.data() + static_cast<std::size_t>(t) * ucols);
    });
  };
  auto channel_total = [&](const std::vector<double>& acc, std::int64_t c) {
    double s = 0;
    for (std::int64_t t = 0; t < tasks; ++t)
      for (std::int64_t k = 0; k < S; ++k) s += acc[static_cast<std::size_t>(t * cols + c * S + k)];
    return s;
  };
  sweep(nullptr);
  std::vector<T> center(ucols);
  for (std::int64_t c = 0; c < C; ++c) {
    mean[c] = static_cast<double>(static_cast<T>(channel_total(acc1, c) / count));
    for (std::int64_t k = 0; k < S; ++k) center[static_cast<std::size_t>(c * S + k)] = static_cast<T>(mean[c]);
  }
  sweep(center.data());
  for (std::int64_t c = 0; c < C; ++c) {
    const double s1 = channel_total(acc1, c), s2 = channel_total(acc2, c);
    mean[c] += s1 / count;
    var[c] = nonneg((s2 - s1 * s1 / count) / count);
  }
}

/// A 1-D tensor<T> of n values computed in double by f(i).
template <class T, class F>
tensor<T> vector_from(std::int64_t n, F&& f) {
  tensor<T> out = make_tensor<T>({n});
  T* p = out.data();
  for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(f(i));
  return out;
}

template <class T>
tensor<T> zeros_vector(std::int64_t n) {
  return vector_from<T>(n, [](std::int64_t) { return 0.0; });
}
template <class T>
tensor<T> ones_vector(std::int64_t n) {
  return vector_from<T>(n, [](std::int64_t) { return 1.0; });
}

/// The values of a tensor with numel n as a contiguous 1-D tensor (a view when possible).
template <class T>
tensor<T> as_vector(const tensor<T>& t) {
  return t.reshape({t.numel()}).contiguous();
}

/// The input of a normalization: a contiguous float/double tensor, on the CPU unless the
/// op has a device path (batch_norm: Note [Device batch norm]).
template <class E>
tensor<value_type_t<E>> norm_input(const E& e, const char* op, bool device_ok = false) {
  using T = value_type_t<E>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "ember: normalization layers need a float or double input");
  tensor<T> x = materialize(e);
  check(device_ok || x.device().is_cpu(), errc::not_implemented, op,
        ": not available for tensors on ", x.device(), " without a device backend");
  return x.contiguous();
}

/// Checks an optional per-channel tensor (weight, bias, running stats): C elements, same device.
template <class T>
void check_channel_param(const tensor<T>& p, std::int64_t C, const tensor<T>& x, const char* op,
                         const char* what) {
  if (!p.defined()) return;
  check(p.numel() == C, errc::shape, op, ": ", what, " should contain ", C,
        " elements (one per channel of the input of shape ", x.shape(), "), got shape ",
        p.shape());
  check(p.device() == x.device(), errc::device, op, ": ", what, " is on ", p.device(),
        " but the input is on ", x.device());
}

/// Result of batch_norm_forward: the output and the per-channel mean and inverse standard
/// deviation it normalized with (the batch statistics in training, 1/sqrt(running_var + eps)
/// and running_mean in eval), each of shape (C): what the backward needs.
template <class T>
struct batch_norm_result {
  tensor<T> output;
  tensor<T> mean;
  tensor<T> invstd;
};

/// batch_norm with its saved statistics (see nn::functional::batch_norm).
template <class E>
batch_norm_result<value_type_t<E>> batch_norm_forward(
    const E& input, const tensor<value_type_t<E>>& running_mean,
    const tensor<value_type_t<E>>& running_var,
    const nn::functional::batch_norm_options<value_type_t<E>>& o) {
  using T = value_type_t<E>;
  constexpr const char* op = "batch_norm";
  const tensor<T> x = norm_input(input, op, true);
  check(x.dim() >= 2, errc::shape, op, ": expected an input of shape (N, C) or (N, C, *), got ",
        "shape ", x.shape());
  const std::int64_t N = x.size(0), C = x.size(1), S = N * C != 0 ? x.numel() / (N * C) : 0;
  check_channel_param(o.weight, C, x, op, "weight");
  check_channel_param(o.bias, C, x, op, "bias");
  check_channel_param(running_mean, C, x, op, "running_mean");
  check_channel_param(running_var, C, x, op, "running_var");
  check(std::isfinite(o.eps) && o.eps >= 0, errc::value, op, ": eps must be >= 0, got ", o.eps);
  if (!x.device().is_cpu()) {
    // Note [Device batch norm]: on a device the statistics come from the device's reductions
    // (mean and biased variance over N and the spatial dims, accumulated in double) and the
    // output and running-stat updates are fused elementwise passes, in T (the CPU's centering
    // of Note [Norm centering] is not done). The backward is batch_norm_record's, unchanged.
    no_grad_guard ng;
    const tensor<T> x3 = x.view({N, C, S});
    const shape dims{0, 2}, pc{1, C, 1};
    tensor<T> mean_t, var_t;
    if (o.training) {
      check(N * S != 1, errc::value, op, ": expected more than 1 value per channel when ",
            "training, got input of shape ", x.shape());
      mean_t = ember::mean(x3, dims);
      var_t = ember::var(x3, dims, false);
      const double count = static_cast<double>(N * S);
      const T m = static_cast<T>(o.momentum);
      if (count > 0 && running_mean.defined())
        tensor<T>(running_mean)
            .copy_(running_mean * (T(1) - m) + mean_t.reshape(running_mean.shape()) * m);
      if (count > 0 && running_var.defined())
        tensor<T>(running_var)
            .copy_(running_var * (T(1) - m) +
                   var_t.reshape(running_var.shape()) * static_cast<T>(count / (count - 1)) * m);
    } else {
      check(running_mean.defined() && running_var.defined(), errc::value, op, ": running_mean ",
            "and running_var must be defined in evaluation mode (training = false)");
      mean_t = running_mean.reshape({C}).contiguous();
      var_t = running_var.reshape({C}).contiguous();
    }
    batch_norm_result<T> r;
    r.mean = mean_t;
    r.invstd = ember::rsqrt(var_t + static_cast<T>(o.eps));
    tensor<T> y = (x3 - r.mean.view(pc)) * r.invstd.view(pc);
    if (o.weight.defined()) y = y * o.weight.reshape(pc);
    if (o.bias.defined()) y = y + o.bias.reshape(pc);
    r.output = y.view(x.shape());
    return r;
  }
  std::vector<double> mean(static_cast<std::size_t>(C)), var(mean.size());
  if (o.training) {
    check(N * S != 1, errc::value, op, ": expected more than 1 value per channel when ",
          "training, got input of shape ", x.shape());
    channel_moments(x.data(), N, C, S, mean.data(), var.data());
    // running stats: (1 - m) * running + m * stat in double, with the unbiased variance
    const double count = static_cast<double>(N * S), m = o.momentum;
    auto update = [&](const tensor<T>& running, auto stat) {
      if (!running.defined() || count == 0) return;
      const tensor<T> old = as_vector(running);
      const tensor<T> next = vector_from<T>(C, [&](std::int64_t c) {
        return (1 - m) * static_cast<double>(old.data()[c]) + m * stat(static_cast<std::size_t>(c));
      });
      tensor<T>(running).copy_(next.reshape(running.shape()));
    };
    update(running_mean, [&](std::size_t c) { return mean[c]; });
    update(running_var, [&](std::size_t c) { return var[c] * count / (count - 1); });
  } else {
    check(running_mean.defined() && running_var.defined(), errc::value, op, ": running_mean ",
          "and running_var must be defined in evaluation mode (training = false)");
    const tensor<T> rm = as_vector(running_mean), rv = as_vector(running_var);
    for (std::int64_t c = 0; c < C; ++c) {
      mean[static_cast<std::size_t>(c)] = static_cast<double>(rm.data()[c]);
      var[static_cast<std::size_t>(c)] = static_cast<double>(rv.data()[c]);
    }
  }
  // Note [Norm centering]: y = (x - c) * a + (b - (mean - c) * a) with c = mean rounded to T
  // and a = invstd * weight: x - c is exact near the mean and the rounding of the mean to T is
  // folded into the shift, so inputs far from zero (x ~ 1e4 + noise in float) keep their digits.
  batch_norm_result<T> r;
  std::vector<double> invstd(mean.size());
  for (std::size_t c = 0; c < invstd.size(); ++c) invstd[c] = 1.0 / std::sqrt(var[c] + o.eps);
  r.mean = vector_from<T>(C, [&](std::int64_t c) { return mean[static_cast<std::size_t>(c)]; });
  r.invstd = vector_from<T>(C, [&](std::int64_t c) { return invstd[static_cast<std::size_t>(c)]; });
  const tensor<T> w = o.weight.defined() ? as_vector(o.weight) : tensor<T>{};
  const tensor<T> bias = o.bias.defined() ? as_vector(o.bias) : tensor<T>{};
  std::vector<double> a(mean.size());
  for (std::int64_t c = 0; c < C; ++c)
    a[static_cast<std::size_t>(c)] =
        invstd[static_cast<std::size_t>(c)] * (w.defined() ? static_cast<double>(w.data()[c]) : 1.0);
  const tensor<T> scale = vector_from<T>(C, [&](std::int64_t c) { return a[static_cast<std::size_t>(c)]; });
  const tensor<T> shift = vector_from<T>(C, [&](std::int64_t c) {
    const auto i = static_cast<std::size_t>(c);
    const double b = bias.defined() ? static_cast<double>(bias.data()[c]) : 0.0;
    return b - (mean[i] - static_cast<double>(r.mean.data()[c])) * a[i];
  });
  const shape per_channel{C, 1};
  const tensor<T> xv = x.view({N, C, S});
  const tensor<T> y = (xv - r.mean.view(per_channel)) * scale.view(per_channel) +
                      shift.view(per_channel);
  r.output = y.view(x.shape());
  return r;
}

/// Result of layer_norm_forward / group_norm_forward: the output and the per-row mean and
/// reciprocal standard deviation 1/sqrt(var + eps) (layer_norm: shape of the leading dims
/// followed by ones, as PyTorch's native_layer_norm; group_norm: (N, num_groups)).
template <class T>
struct norm_rows_result {
  tensor<T> output;
  tensor<T> mean;
  tensor<T> rstd;
};

/// Per-row statistics of a contiguous (rows, m) block as T tensors of shape `stat_shape` in r,
/// and the returned per-row correction -(mean - mean_T) * rstd of shape (rows) (Note [Norm
/// centering]): y = (x - mean_T) * rstd + correction.
template <class T>
tensor<T> row_stats(const tensor<T>& x, std::int64_t rows, std::int64_t m, double eps,
                    const shape& stat_shape, norm_rows_result<T>& r) {
  std::vector<double> mean(static_cast<std::size_t>(rows)), rstd(mean.size());
  row_moments(x.data(), rows, m, mean.data(), rstd.data());
  for (auto& v : rstd) v = 1.0 / std::sqrt(v + eps);
  r.mean = vector_from<T>(rows, [&](std::int64_t i) { return mean[static_cast<std::size_t>(i)]; });
  r.rstd = vector_from<T>(rows, [&](std::int64_t i) { return rstd[static_cast<std::size_t>(i)]; });
  const tensor<T> corr = vector_from<T>(rows, [&](std::int64_t i) {
    const auto k = static_cast<std::size_t>(i);
    return -(mean[k] - static_cast<double>(r.mean.data()[i])) * rstd[k];
  });
  r.mean = r.mean.view(stat_shape);
  r.rstd = r.rstd.view(stat_shape);
  return corr;
}

/// Note [Device row norms]: layer_norm and group_norm on a device normalize the rows of a
/// (rows, m) view with the device's reductions (mean and biased variance per row, accumulated
/// in double, as batch norm's: Note [Device batch norm]) and one fused pass for the output;
/// the CPU's centering correction (Note [Norm centering]) is not applied. The optional weight
/// and bias (either may be undefined) apply reshaped to `wshape` over the normalized values
/// viewed as `view`. The backward is the ops' *_record, unchanged: it is written with ember
/// ops, which have device paths.
template <class T>
norm_rows_result<T> device_row_norm(const tensor<T>& x, std::int64_t rows, std::int64_t m,
                                    double eps, const shape& stat_shape, const shape& view,
                                    const tensor<T>& weight, const tensor<T>& bias,
                                    const shape& wshape) {
  no_grad_guard ng;
  const tensor<T> x2 = x.view({rows, m});
  norm_rows_result<T> r;
  r.mean = ember::mean(x2, std::int64_t{1}, true);
  r.rstd = ember::rsqrt(ember::var(x2, std::int64_t{1}, false, true) + static_cast<T>(eps));
  tensor<T> y = tensor<T>((x2 - r.mean) * r.rstd).view(view);
  if (weight.defined() && bias.defined()) y = y * weight.reshape(wshape) + bias.reshape(wshape);
  else if (weight.defined()) y = y * weight.reshape(wshape);
  else if (bias.defined()) y = y + bias.reshape(wshape);
  r.output = y.view(x.shape());
  r.mean = r.mean.view(stat_shape);
  r.rstd = r.rstd.view(stat_shape);
  return r;
}

/// layer_norm with its saved statistics (see nn::functional::layer_norm).
template <class E>
norm_rows_result<value_type_t<E>> layer_norm_forward(
    const E& input, const nn::functional::layer_norm_options<value_type_t<E>>& o) {
  using T = value_type_t<E>;
  constexpr const char* op = "layer_norm";
  const tensor<T> x = norm_input(input, op, true);
  const shape& ns = o.normalized_shape;
  const std::int64_t k = ns.rank(), lead = x.dim() - k;
  check(k >= 1, errc::shape, op, ": normalized_shape must have at least one dimension, got ", ns);
  bool match = lead >= 0;
  for (std::int64_t d = 0; match && d < k; ++d)
    match = x.shape()[static_cast<std::size_t>(lead + d)] == ns[static_cast<std::size_t>(d)];
  check(match, errc::shape, op, ": normalized_shape ", ns, " does not match the trailing ",
        "dimensions of the input of shape ", x.shape());
  for (const tensor<T>* p : {&o.weight, &o.bias}) {
    if (!p->defined()) continue;
    const char* what = p == &o.weight ? "weight" : "bias";
    check(p->shape() == ns, errc::shape, op, ": ", what, " of shape ", p->shape(),
          " does not match normalized_shape ", ns);
    check(p->device() == x.device(), errc::device, op, ": ", what, " is on ", p->device(),
          " but the input is on ", x.device());
  }
  check(std::isfinite(o.eps) && o.eps >= 0, errc::value, op, ": eps must be >= 0, got ", o.eps);
  shape stat_shape(x.shape().begin(), x.shape().begin() + lead);
  const std::int64_t m = ns.numel(), rows = stat_shape.numel();
  for (std::int64_t d = 0; d < k; ++d) stat_shape.push_back(1);
  if (!x.device().is_cpu()) {  // Note [Device row norms]
    return device_row_norm(x, rows, m, o.eps, stat_shape, shape{rows, m}, o.weight, o.bias,
                           shape{m});
  }
  norm_rows_result<T> r;
  const tensor<T> corr = row_stats(x, rows, m, o.eps, stat_shape, r).view({rows, 1});
  // y = ((x - mean) * rstd) * weight + bias over the view (rows, m): one fused pass
  const tensor<T> x2 = x.view({rows, m});
  const tensor<T> mc = r.mean.view({rows, 1}), rc = r.rstd.view({rows, 1});
  tensor<T> y;
  if (!o.weight.defined() && !o.bias.defined()) {
    y = (x2 - mc) * rc + corr;
  } else {
    const tensor<T> w = o.weight.defined() ? o.weight.reshape({m}) : ones_vector<T>(m);
    const tensor<T> b = o.bias.defined() ? o.bias.reshape({m}) : zeros_vector<T>(m);
    y = ((x2 - mc) * rc + corr) * w + b;
  }
  r.output = y.view(x.shape());
  return r;
}

/// group_norm with its saved statistics (see nn::functional::group_norm).
template <class E>
norm_rows_result<value_type_t<E>> group_norm_forward(
    const E& input, std::int64_t num_groups,
    const nn::functional::group_norm_options<value_type_t<E>>& o) {
  using T = value_type_t<E>;
  constexpr const char* op = "group_norm";
  const tensor<T> x = norm_input(input, op, true);
  check(x.dim() >= 2, errc::shape, op, ": expected an input of shape (N, C) or (N, C, *), got ",
        "shape ", x.shape());
  const std::int64_t N = x.size(0), C = x.size(1), G = num_groups;
  check(G > 0, errc::value, op, ": num_groups must be positive, got ", G);
  check(C % G == 0, errc::shape, op, ": expected the number of channels of the input of shape ",
        x.shape(), " (", C, ") to be divisible by num_groups = ", G);
  check_channel_param(o.weight, C, x, op, "weight");
  check_channel_param(o.bias, C, x, op, "bias");
  check(std::isfinite(o.eps) && o.eps >= 0, errc::value, op, ": eps must be >= 0, got ", o.eps);
  const std::int64_t S = N * C != 0 ? x.numel() / (N * C) : 0, cg = C / G;
  if (!x.device().is_cpu()) {  // Note [Device row norms]
    return device_row_norm(x, N * G, cg * S, o.eps, shape{N, G}, shape{N, G, cg, S}, o.weight,
                           o.bias, shape{G, cg, 1});
  }
  norm_rows_result<T> r;
  const tensor<T> corr =
      row_stats(x, N * G, cg * S, o.eps, shape{N, G}, r).view({N, G, 1, 1});
  // y = (x - mean[n, g]) * rstd[n, g] * weight[c] + bias[c] over the view (N, G, C/G, S)
  const tensor<T> xv = x.view({N, G, cg, S});
  const tensor<T> mc = r.mean.view({N, G, 1, 1}), rc = r.rstd.view({N, G, 1, 1});
  tensor<T> y;
  if (!o.weight.defined() && !o.bias.defined()) {
    y = (xv - mc) * rc + corr;
  } else {
    const shape wshape{G, cg, 1};
    const tensor<T> w = o.weight.defined() ? o.weight.reshape(wshape) : ones_vector<T>(C).view(wshape);
    const tensor<T> b = o.bias.defined() ? o.bias.reshape(wshape) : zeros_vector<T>(C).view(wshape);
    y = ((xv - mc) * rc + corr) * w + b;
  }
  r.output = y.view(x.shape());
  return r;
}

// ---- backward ---------------------------------------------------------------------------------
// Note [Norm backward]: with xhat = (x - mean) * rstd over a group of M values and gy the
// gradient reaching xhat (g times the weight), the input gradient is
//   gx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat))       (means over the group),
// weight gets sum(g * xhat) and bias sum(g) over everything but the channel / normalized dims.
// The statistics saved by the forward are constants of the backward; when the backward itself
// records (create_graph), they are recomputed from x with ember reductions instead, so a
// second derivative sees them depend on x. Batch norm in eval mode is an affine map (the
// running statistics are not differentiable): gx = g * weight * invstd.

/// rstd * (gy - mean(gy) - xhat * mean(gy * xhat)) over `dims` (Note [Norm backward]).
template <class T>
tensor<T> norm_input_grad(const tensor<T>& gy, const tensor<T>& xhat, const tensor<T>& rstd,
                          const shape& dims) {
  const tensor<T> m1 = ember::mean(gy, dims, true);
  const tensor<T> m2 = ember::mean(gy * xhat, dims, true);
  return rstd * (gy - m1 - xhat * m2);
}

/// Mean and rstd of x over dims (keepdim), as functions of x (the create_graph path).
template <class T>
std::pair<tensor<T>, tensor<T>> norm_stats(const tensor<T>& x, const shape& dims, double eps) {
  tensor<T> mu = ember::mean(x, dims, true);
  tensor<T> rs = ember::rsqrt(ember::var(x, dims, false, true) + static_cast<T>(eps));
  return {std::move(mu), std::move(rs)};
}

/// t, or (for the tracer: every input of a graph op is defined) a tensor of shape s filled with v.
template <class T>
tensor<T> filled_or(const tensor<T>& t, const shape& s, double v) {
  if (t.defined()) return t;
  tensor<T> f = make_tensor<T>(s);
  f.fill_(v);
  return f;
}
template <class T>
tensor<T> filled_or(const tensor<T>& t, std::int64_t n, double v) {
  return filled_or(t, shape{n}, v);
}

/// Records batch_norm's backward for y = r.output (x is the materialized input).
template <class T>
tensor<T> batch_norm_record(const tensor<T>& x, const nn::functional::batch_norm_options<T>& o,
                            batch_norm_result<T>&& r) {
  if (!autograd::detail::any_requires_grad(x, o.weight, o.bias)) return std::move(r.output);
  const bool need_x = x.requires_grad(), need_w = o.weight.defined() && o.weight.requires_grad(),
             need_b = o.bias.defined() && o.bias.requires_grad();
  const autograd::detail::saved<T> sx(x), sw(o.weight);
  const shape wshape = o.weight.defined() ? o.weight.shape() : shape{};
  const shape bshape = o.bias.defined() ? o.bias.shape() : shape{};
  const bool training = o.training;
  const double eps = o.eps;
  return autograd::detail::record<T>(
      "batch_norm_backward", std::move(r.output), {x, o.weight, o.bias},
      [=, mean = r.mean, invstd = r.invstd](const tensor<T>& g) {
        constexpr const char* op = "batch_norm_backward";
        const tensor<T>& xs = sx.unpack(op);
        const tensor<T>& w = sw.unpack(op);
        const std::int64_t N = xs.size(0), C = xs.size(1), S = N * C != 0 ? xs.numel() / (N * C) : 0;
        const shape pc{1, C, 1}, dims{0, 2};
        const tensor<T> x3 = xs.reshape({N, C, S}), g3 = g.reshape({N, C, S});
        tensor<T> mu = mean.view(pc), rs = invstd.view(pc);
        if (training && is_grad_enabled()) std::tie(mu, rs) = norm_stats(x3, dims, eps);
        const tensor<T> xhat = (x3 - mu) * rs;
        std::vector<tensor<T>> grads(3);
        if (need_x) {
          const tensor<T> gy = w.defined() ? tensor<T>(g3 * w.reshape(pc)) : g3;
          grads[0] = (training ? norm_input_grad(gy, xhat, rs, dims) : tensor<T>(gy * rs))
                         .reshape(xs.shape());
        }
        if (need_w) grads[1] = ember::sum(g3 * xhat, dims).reshape(wshape);
        if (need_b) grads[2] = ember::sum(g3, dims).reshape(bshape);
        return grads;
      });
}

/// Records layer_norm's backward for y = r.output.
template <class T>
tensor<T> layer_norm_record(const tensor<T>& x, const nn::functional::layer_norm_options<T>& o,
                            norm_rows_result<T>&& r) {
  if (!autograd::detail::any_requires_grad(x, o.weight, o.bias)) return std::move(r.output);
  const bool need_x = x.requires_grad(), need_w = o.weight.defined() && o.weight.requires_grad(),
             need_b = o.bias.defined() && o.bias.requires_grad();
  const autograd::detail::saved<T> sx(x), sw(o.weight);
  const shape ns = o.normalized_shape;
  const double eps = o.eps;
  return autograd::detail::record<T>(
      "layer_norm_backward", std::move(r.output), {x, o.weight, o.bias},
      [=, mean = r.mean, rstd = r.rstd](const tensor<T>& g) {
        constexpr const char* op = "layer_norm_backward";
        const tensor<T>& xs = sx.unpack(op);
        const tensor<T>& w = sw.unpack(op);
        const std::int64_t m = ns.numel(), rows = m != 0 ? xs.numel() / m : mean.numel();
        const shape dims{1};
        const tensor<T> x2 = xs.reshape({rows, m}), g2 = g.reshape({rows, m});
        tensor<T> mu = mean.reshape({rows, 1}), rs = rstd.reshape({rows, 1});
        if (is_grad_enabled()) std::tie(mu, rs) = norm_stats(x2, dims, eps);
        const tensor<T> xhat = (x2 - mu) * rs;
        std::vector<tensor<T>> grads(3);
        if (need_x) {
          const tensor<T> gy = w.defined() ? tensor<T>(g2 * w.reshape({m})) : g2;
          grads[0] = norm_input_grad(gy, xhat, rs, dims).reshape(xs.shape());
        }
        if (need_w) grads[1] = ember::sum(g2 * xhat, std::int64_t{0}).reshape(ns);
        if (need_b) grads[2] = ember::sum(g2, std::int64_t{0}).reshape(ns);
        return grads;
      });
}

/// Records group_norm's backward for y = r.output.
template <class T>
tensor<T> group_norm_record(const tensor<T>& x, std::int64_t G,
                            const nn::functional::group_norm_options<T>& o,
                            norm_rows_result<T>&& r) {
  if (!autograd::detail::any_requires_grad(x, o.weight, o.bias)) return std::move(r.output);
  const bool need_x = x.requires_grad(), need_w = o.weight.defined() && o.weight.requires_grad(),
             need_b = o.bias.defined() && o.bias.requires_grad();
  const autograd::detail::saved<T> sx(x), sw(o.weight);
  const shape wshape = o.weight.defined() ? o.weight.shape() : shape{};
  const shape bshape = o.bias.defined() ? o.bias.shape() : shape{};
  const double eps = o.eps;
  return autograd::detail::record<T>(
      "group_norm_backward", std::move(r.output), {x, o.weight, o.bias},
      [=, mean = r.mean, rstd = r.rstd](const tensor<T>& g) {
        constexpr const char* op = "group_norm_backward";
        const tensor<T>& xs = sx.unpack(op);
        const tensor<T>& w = sw.unpack(op);
        const std::int64_t N = xs.size(0), C = xs.size(1), cg = C / G,
                           S = N * C != 0 ? xs.numel() / (N * C) : 0;
        const shape dims{2, 3};
        const tensor<T> x4 = xs.reshape({N, G, cg, S}), g4 = g.reshape({N, G, cg, S});
        tensor<T> mu = mean.reshape({N, G, 1, 1}), rs = rstd.reshape({N, G, 1, 1});
        if (is_grad_enabled()) std::tie(mu, rs) = norm_stats(x4, dims, eps);
        const tensor<T> xhat = (x4 - mu) * rs;
        std::vector<tensor<T>> grads(3);
        if (need_x) {
          const tensor<T> gy = w.defined() ? tensor<T>(g4 * w.reshape({G, cg, 1})) : g4;
          grads[0] = norm_input_grad(gy, xhat, rs, dims).reshape(xs.shape());
        }
        if (need_w) grads[1] = ember::sum(g4 * xhat, shape{0, 3}).reshape(wshape);
        if (need_b) grads[2] = ember::sum(g4, shape{0, 3}).reshape(bshape);
        return grads;
      });
}

}  // namespace detail

namespace nn::functional {

/// Batch normalization over every dim but the channel dim 1 of an (N, C) or (N, C, *) input.
/// Training: normalizes with the batch mean and biased variance and, when given, updates the
/// running stats in place (running = (1 - momentum) * running + momentum * stat, with the
/// unbiased variance). Eval: normalizes with the running stats. As torch.nn.functional.
///   auto rm = em::zeros<float>({8}), rv = em::ones<float>({8});
///   auto y = F::batch_norm(x, rm, rv, {.weight = g, .bias = b, .training = true});
/// Undefined running stats (em::tensor<float>{}) are allowed in training. Errors: a C mismatch
/// of weight/bias/running stats, one value per channel in training, eval without running stats.
template <operand E>
tensor<value_type_t<E>> batch_norm(const E& input, const tensor<value_type_t<E>>& running_mean,
                                   const tensor<value_type_t<E>>& running_var,
                                   const batch_norm_options<value_type_t<E>>& options = {}) {
  using T = value_type_t<E>;
  const tensor<T> x = ember::detail::materialize(input);
  const jit::detail::op_scope traced;
  ember::detail::batch_norm_result<T> r;
  {
    no_grad_guard ng;
    r = ember::detail::batch_norm_forward(x, running_mean, running_var, options);
  }
  tensor<T> out = ember::detail::batch_norm_record(x, options, std::move(r));
  if (traced) {
    const std::int64_t C = x.dim() > 1 ? x.size(1) : 1;
    using ember::detail::filled_or;
    traced.record(op::batch_norm, out,
                  {{"eps", options.eps}, {"momentum", options.momentum},
                   {"training", std::int64_t{options.training}}},
                  x, filled_or(running_mean, C, 0.0), filled_or(running_var, C, 1.0),
                  filled_or(options.weight, C, 1.0), filled_or(options.bias, C, 0.0));
  }
  return out;
}

/// Layer normalization over the trailing dims `normalized_shape` (biased variance), then the
/// optional elementwise affine weight/bias of that shape. As torch.nn.functional.layer_norm.
///   auto y = F::layer_norm(x /* (2, 5, 64) */, {.normalized_shape = {64}, .weight = g, .bias = b});
template <operand E>
tensor<value_type_t<E>> layer_norm(const E& input,
                                   const layer_norm_options<value_type_t<E>>& options) {
  using T = value_type_t<E>;
  const tensor<T> x = ember::detail::materialize(input);
  const jit::detail::op_scope traced;
  ember::detail::norm_rows_result<T> r;
  {
    no_grad_guard ng;
    r = ember::detail::layer_norm_forward(x, options);
  }
  tensor<T> out = ember::detail::layer_norm_record(x, options, std::move(r));
  if (traced) {
    using ember::detail::filled_or;
    traced.record(op::layer_norm, out,
                  {{"normalized_shape", jit::detail::ints(options.normalized_shape)},
                   {"eps", options.eps}},
                  x, filled_or(options.weight, options.normalized_shape, 1.0),
                  filled_or(options.bias, options.normalized_shape, 0.0));
  }
  return out;
}

/// Group normalization: the C channels of an (N, C, *) input are split into num_groups groups,
/// each (sample, group) normalized over its channels and spatial dims, then the optional
/// per-channel weight/bias. As torch.nn.functional.group_norm.
///   auto y = F::group_norm(x /* (2, 6, 4, 4) */, 3, {.weight = g, .bias = b});
template <operand E>
tensor<value_type_t<E>> group_norm(const E& input, std::int64_t num_groups,
                                   const group_norm_options<value_type_t<E>>& options = {}) {
  using T = value_type_t<E>;
  const tensor<T> x = ember::detail::materialize(input);
  const jit::detail::op_scope traced;
  ember::detail::norm_rows_result<T> r;
  {
    no_grad_guard ng;
    r = ember::detail::group_norm_forward(x, num_groups, options);
  }
  tensor<T> out = ember::detail::group_norm_record(x, num_groups, options, std::move(r));
  if (traced) {
    const std::int64_t C = x.dim() > 1 ? x.size(1) : 1;
    using ember::detail::filled_or;
    traced.record(op::group_norm, out, {{"groups", num_groups}, {"eps", options.eps}}, x,
                  filled_or(options.weight, C, 1.0), filled_or(options.bias, C, 0.0));
  }
  return out;
}

}  // namespace nn::functional
}  // namespace ember
