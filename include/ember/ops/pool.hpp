// Pooling: F::max_pool2d (and max_pool2d_with_indices), F::avg_pool2d, F::adaptive_avg_pool2d
// and F::adaptive_max_pool2d over (N, C, H, W) or (C, H, W) inputs, parallel over the N*C
// planes, each with its backward node (Note [Pool backward]), plus the detail helpers the
// backward passes use.
#pragma once

#include <ember/autograd/engine.hpp>
#include <ember/autograd/meta.hpp>
#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/eval/assign.hpp>
#include <ember/eval/reduce.hpp>
#include <ember/ops/conv.hpp>
#include <ember/ops/factory.hpp>
#include <ember/simd/batch.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember {
namespace nn::functional {

/// Options of max_pool2d. A stride of 0 (the default) means "equal to the kernel", as
/// PyTorch's stride=None. The kernel has no usable default: it must be set.
struct max_pool2d_options {
  size2 kernel = 0;
  size2 stride = 0;
  size2 padding = 0;
  size2 dilation = 1;
  bool ceil_mode = false;
};

/// Options of avg_pool2d. A stride of 0 (the default) means "equal to the kernel"; a
/// divisor_override of 0 (the default) means none: divide by the window's size.
struct avg_pool2d_options {
  size2 kernel = 0;
  size2 stride = 0;
  size2 padding = 0;
  bool count_include_pad = true;
  bool ceil_mode = false;
  std::int64_t divisor_override = 0;
};

/// Options of adaptive_avg_pool2d (the default, 1, is global average pooling).
struct adaptive_avg_pool2d_options {
  size2 output_size = 1;
};

/// Options of adaptive_max_pool2d (the default, 1, is global max pooling).
struct adaptive_max_pool2d_options {
  size2 output_size = 1;
};

}  // namespace nn::functional

namespace detail {

/// PyTorch's pooling output size: floor (or ceil) of (in + 2p - d(k-1) - 1)/s, plus 1; in
/// ceil mode the last window must start inside the input or the left padding.
constexpr std::int64_t pool_output_size(std::int64_t in, std::int64_t k, std::int64_t s,
                                        std::int64_t p, std::int64_t d, bool ceil_mode) noexcept {
  std::int64_t out = floor_div(in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0), s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

/// Checks a pooling input (3-D or 4-D, non-empty channel and spatial dims, on the CPU) and
/// returns it as 4-D (an unbatched input gets a batch of 1).
template <class T>
tensor<T> pool_input(const char* op, const tensor<T>& x, bool device_ok = false) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "ember pooling: needs a float or double tensor");
  check(x.defined(), errc::value, op, ": input is an undefined tensor");
  check(x.dim() == 3 || x.dim() == 4, errc::shape, op,
        ": expects a 3-D (C,H,W) or 4-D (N,C,H,W) input, got shape ", x.shape());
  check(x.size(-1) > 0 && x.size(-2) > 0 && x.size(-3) > 0, errc::shape, op,
        ": expects non-empty channel and spatial dimensions, got input shape ", x.shape());
  check(device_ok || x.device().is_cpu(), errc::not_implemented, op, ": not available on ",
        x.device());
  return x.dim() == 3 ? x.unsqueeze(0) : x;
}

/// Validates kernel, stride (0 = kernel), padding, dilation and the output size against the
/// input x (errc::value / errc::shape, naming them) and returns the window geometry.
inline window2d pool_window(const char* op, const shape& x, size2 k, size2 s, size2 p, size2 d,
                            bool ceil_mode) {
  if (s == size2{0}) s = k;
  check(k.h > 0 && k.w > 0, errc::value, op, ": kernel must be positive, got ", k,
        " (set .kernel)");
  check(s.h > 0 && s.w > 0, errc::value, op, ": stride must be positive, got ", s);
  check(d.h > 0 && d.w > 0, errc::value, op, ": dilation must be positive, got ", d);
  check(p.h >= 0 && p.w >= 0 && p.h <= k.h / 2 && p.w <= k.w / 2, errc::value, op, ": padding ",
        p, " must be non-negative and at most half the kernel ", k);
  const std::int64_t h = x[x.size() - 2], w = x[x.size() - 1];
  window2d g{1, h, w, k.h, k.w, s.h, s.w, p.h, p.w, d.h, d.w,
             pool_output_size(h, k.h, s.h, p.h, d.h, ceil_mode),
             pool_output_size(w, k.w, s.w, p.w, d.w, ceil_mode)};
  check(g.oh > 0 && g.ow > 0, errc::shape, op, ": input of shape ", x, " is too small for kernel ",
        k, ", stride ", s, ", padding ", p, " and dilation ", d, " (output would be ",
        size2{g.oh, g.ow}, ")");
  return g;
}

/// Calls f(plane, src, hs, ws) for every (n, c) plane of a 4-D tensor, planes in parallel.
template <class T, class F>
void for_each_plane(const tensor<T>& x, std::int64_t work_per_plane, F f) {
  const std::int64_t c = x.size(1), planes = x.size(0) * c;
  const std::int64_t ns = x.stride(0), cs = x.stride(1), hs = x.stride(2), ws = x.stride(3);
  const T* base = x.data();
  parallel_for(0, planes, std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(work_per_plane, 1)),
               [&](std::int64_t p0, std::int64_t p1) {
                 std::int64_t n = p0 / c, ch = p0 % c;  // counters, not a division per plane
                 for (std::int64_t q = p0; q < p1; ++q) {
                   f(q, base + n * ns + ch * cs, hs, ws);
                   if (++ch == c) {
                     ch = 0;
                     ++n;
                   }
                 }
               });
}

/// The taps inside the input of every window row (first) and column (second), computed once
/// per call: valid_taps divides, which would dominate a per-window computation.
inline std::pair<std::vector<tap_span>, std::vector<tap_span>> window_taps(const window2d& g) {
  std::vector<tap_span> rows(static_cast<std::size_t>(g.oh)), cols(static_cast<std::size_t>(g.ow));
  for (std::int64_t y = 0; y < g.oh; ++y)
    rows[static_cast<std::size_t>(y)] = valid_taps(g.kh, g.dh, y * g.sh - g.ph, g.h);
  for (std::int64_t x = 0; x < g.ow; ++x)
    cols[static_cast<std::size_t>(x)] = valid_taps(g.kw, g.dw, x * g.sw - g.pw, g.w);
  return {std::move(rows), std::move(cols)};
}

/// Note [Max pooling]: the largest value of each window and its flat index h*W + w in the
/// plane. A NaN wins over every number and a later NaN over an earlier one (row-major order in
/// the window); among equal maxima the first wins; a window of only -inf reports its first
/// pixel (all as PyTorch). A window that lies entirely in the padding (possible only with
/// dilation) gives -inf and index -1. Windows that lie horizontally inside the input are
/// computed simd::width<T> outputs at a time (lanes = consecutive outputs x, loaded
/// contiguously when the stride along w is 1, gathered otherwise), with the same order of
/// comparisons per lane, so both paths give identical values and indices.
template <bool Idx, class T>
void max_pool_plane(const T* src, std::int64_t hs, std::int64_t ws, const window2d& g,
                    const tap_span* rows, const tap_span* cols, T* out, std::int64_t* ind) {
  const std::int64_t W = g.w, ow = g.ow, sw = g.sw, dw = g.dw, pw = g.pw, dh = g.dh;
  auto scalar = [&](std::int64_t y, std::int64_t h0, std::int64_t ilo, std::int64_t ihi, std::int64_t x) {
    const std::int64_t w0 = x * sw - pw;
    const auto [jlo, jhi] = cols[x];
    T m = -std::numeric_limits<T>::infinity();
    std::int64_t mi = ilo < ihi && jlo < jhi ? (h0 + ilo * dh) * W + w0 + jlo * dw : -1;
    for (std::int64_t i = ilo; i < ihi; ++i) {
      const std::int64_t hh = h0 + i * dh;
      const T* row = src + hh * hs;
      for (std::int64_t j = jlo; j < jhi; ++j) {
        const std::int64_t ww = w0 + j * dw;
        const T v = row[ww * ws];
        if (v > m || v != v) {
          m = v;
          mi = hh * W + ww;
        }
      }
    }
    out[y * ow + x] = m;
    if constexpr (Idx) ind[y * ow + x] = mi;
  };
  // [xa, xb): windows whose columns all lie inside the input
  std::int64_t xa = 0, xb = ow;
  while (xa < ow && !(cols[xa].lo == 0 && cols[xa].hi == g.kw)) ++xa;
  xb = xa;
  while (xb < ow && cols[xb].lo == 0 && cols[xb].hi == g.kw) ++xb;
#if EMBER_HAS_XSIMD
  using B = simd::batch<T>;
  using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;  // same lane count
  constexpr auto L = static_cast<std::int64_t>(simd::width<T>);
  // indices ride in a batch<T>: exact while below 2^(mantissa bits + 1)
  const bool vector = xb - xa >= L && g.h * W < (std::int64_t{1} << std::numeric_limits<T>::digits) &&
                      L * sw * ws < std::numeric_limits<I>::max();
  alignas(64) T lane[L];
  alignas(64) I gofs[L];
  for (std::int64_t l = 0; l < L; ++l) {
    lane[l] = static_cast<T>(l * sw);
    gofs[l] = static_cast<I>(l * sw * ws);
  }
  const B lanes = B::load_aligned(lane);
  const auto gather = xsimd::batch<I>::load_aligned(gofs);
  const bool contiguous = sw * ws == 1;
#else
  constexpr std::int64_t L = 1;
  const bool vector = false;
#endif
  for (std::int64_t y = 0; y < g.oh; ++y) {
    const std::int64_t h0 = y * g.sh - g.ph;
    const auto [ilo, ihi] = rows[y];
    std::int64_t x = 0;
    if (vector && ilo < ihi) {
      for (; x < xa; ++x) scalar(y, h0, ilo, ihi, x);
#if EMBER_HAS_XSIMD
      for (; x + L <= xb; x += L) {
        B m(-std::numeric_limits<T>::infinity());
        B mi = lanes + B(static_cast<T>((h0 + ilo * dh) * W + x * sw - pw));
        for (std::int64_t i = ilo; i < ihi; ++i) {
          const std::int64_t hh = h0 + i * dh;
          const T* row = src + hh * hs;
          for (std::int64_t j = 0; j < g.kw; ++j) {
            const std::int64_t ww = x * sw - pw + j * dw;  // lane 0's column
            const B v = contiguous ? B::load_unaligned(row + ww) : B::gather(row + ww * ws, gather);
            const auto take = (v > m) | xsimd::isnan(v);
            m = xsimd::select(take, v, m);
            if constexpr (Idx) mi = xsimd::select(take, lanes + B(static_cast<T>(hh * W + ww)), mi);
          }
        }
        m.store_unaligned(out + y * ow + x);
        if constexpr (Idx) {
          alignas(64) T tmp[L];
          mi.store_aligned(tmp);
          for (std::int64_t l = 0; l < L; ++l) ind[y * ow + x + l] = static_cast<std::int64_t>(tmp[l]);
        }
      }
#endif
    }
    for (; x < ow; ++x) scalar(y, h0, ilo, ihi, x);
  }
  (void)L;
}

/// Sum of n contiguous values, SIMD where available (float sums are not vectorized by the
/// compiler without -ffast-math).
template <class T>
T contiguous_sum(const T* p, std::int64_t n) {
  std::int64_t i = 0;
  T s = 0;
#if EMBER_HAS_XSIMD
  constexpr auto W = static_cast<std::int64_t>(simd::width<T>);
  if (n >= W) {
    simd::batch<T> acc(T(0));
    for (; i + W <= n; i += W) acc += simd::load(p + i);
    alignas(64) T lanes[W];  // not simd::hsum: GCC 12 warns in xsimd's AVX-512 double hadd
    acc.store_aligned(lanes);
    for (const T v : lanes) s += v;
  }
#endif
  for (; i < n; ++i) s += p[i];
  return s;
}

/// Sum of the pixels [h0, h1) × [w0, w1) of a plane with strides hs, ws: SIMD over whole
/// contiguous rows or wide windows, a plain loop for small windows.
template <class T>
EMBER_ALWAYS_INLINE T window_sum(const T* src, std::int64_t hs, std::int64_t ws, std::int64_t h0,
                                 std::int64_t h1, std::int64_t w0, std::int64_t w1) {
  if (ws == 1 && hs == w1 - w0) return contiguous_sum(src + h0 * hs + w0, (h1 - h0) * hs);  // whole rows
  T sum = 0;
  if (ws == 1 && w1 - w0 >= static_cast<std::int64_t>(simd::width<T>)) {
    for (std::int64_t hh = h0; hh < h1; ++hh) sum += contiguous_sum(src + hh * hs + w0, w1 - w0);
    return sum;
  }
  for (std::int64_t hh = h0; hh < h1; ++hh)
    for (std::int64_t ww = w0; ww < w1; ++ww) sum += src[hh * hs + ww * ws];
  return sum;
}

/// Averages each window; windows are clipped to the input plus padding (count_include_pad)
/// or to the input, or divided by divisor_override when it is not 0. As PyTorch.
template <class T>
void avg_pool_plane(const T* src, std::int64_t hs, std::int64_t ws, const window2d& g,
                    bool count_include_pad, std::int64_t divisor_override, T* out) {
  for (std::int64_t y = 0; y < g.oh; ++y) {
    const std::int64_t hb = y * g.sh - g.ph, he = std::min(hb + g.kh, g.h + g.ph);
    const std::int64_t h0 = std::max<std::int64_t>(hb, 0), h1 = std::min(he, g.h);
    for (std::int64_t x = 0; x < g.ow; ++x) {
      const std::int64_t wb = x * g.sw - g.pw, we = std::min(wb + g.kw, g.w + g.pw);
      const std::int64_t w0 = std::max<std::int64_t>(wb, 0), w1 = std::min(we, g.w);
      if (h0 >= h1 || w0 >= w1) {
        out[y * g.ow + x] = T(0);
        continue;
      }
      const T sum = window_sum(src, hs, ws, h0, h1, w0, w1);
      const std::int64_t div = divisor_override ? divisor_override
                               : count_include_pad ? (he - hb) * (we - wb)
                                                   : (h1 - h0) * (w1 - w0);
      out[y * g.ow + x] = sum / static_cast<T>(div);
    }
  }
}

/// Adaptive pooling window i of n over an extent of `in`: [floor(i*in/n), ceil((i+1)*in/n)).
constexpr tap_span adaptive_window(std::int64_t i, std::int64_t n, std::int64_t in) noexcept {
  return {i * in / n, ((i + 1) * in + n - 1) / n};
}

/// Adaptive average (Max = false) or max with indices (Max = true, Note [Max pooling]) of one
/// plane of width w into an oh × ow grid of windows rows[y] × cols[x] (adaptive_window, computed
/// once per call: it divides).
template <bool Max, class T>
void adaptive_pool_plane(const T* src, std::int64_t hs, std::int64_t ws, std::int64_t w,
                         const std::vector<tap_span>& rows, const std::vector<tap_span>& cols, T* out,
                         std::int64_t* ind) {
  const auto oh = static_cast<std::int64_t>(rows.size()), ow = static_cast<std::int64_t>(cols.size());
  for (std::int64_t y = 0; y < oh; ++y) {
    const auto [h0, h1] = rows[static_cast<std::size_t>(y)];
    for (std::int64_t x = 0; x < ow; ++x) {
      const auto [w0, w1] = cols[static_cast<std::size_t>(x)];
      if constexpr (Max) {
        T m = -std::numeric_limits<T>::infinity();
        std::int64_t mi = h0 * w + w0;
        for (std::int64_t hh = h0; hh < h1; ++hh)
          for (std::int64_t ww = w0; ww < w1; ++ww) {
            const T v = src[hh * hs + ww * ws];
            if (v > m || v != v) {
              m = v;
              mi = hh * w + ww;
            }
          }
        out[y * ow + x] = m;
        ind[y * ow + x] = mi;
      } else {
        out[y * ow + x] = window_sum(src, hs, ws, h0, h1, w0, w1) / static_cast<T>((h1 - h0) * (w1 - w0));
      }
    }
  }
}

/// Result shape: (N, C, oh, ow), or (C, oh, ow) for an unbatched input.
template <class T>
shape pool_output_shape(const tensor<T>& x, std::int64_t oh, std::int64_t ow) {
  return x.dim() == 3 ? shape{x.size(0), oh, ow} : shape{x.size(0), x.size(1), oh, ow};
}

/// max_pool2d, with the indices when Idx (otherwise the second tensor is undefined).
template <bool Idx, class T>
std::tuple<tensor<T>, tensor<std::int64_t>> max_pool2d_impl(const tensor<T>& x,
                                                            const nn::functional::max_pool2d_options& o,
                                                            const char* op) {
  const tensor<T> x4 = pool_input(op, x);
  const window2d g = pool_window(op, x.shape(), o.kernel, o.stride, o.padding, o.dilation, o.ceil_mode);
  tensor<T> out = make_tensor<T>(pool_output_shape(x, g.oh, g.ow));
  tensor<std::int64_t> ind = Idx ? make_tensor<std::int64_t>(out.shape()) : tensor<std::int64_t>();
  const std::int64_t n = g.cols();
  T* op_ = out.data();
  std::int64_t* ip = Idx ? ind.data() : nullptr;
  const auto taps = window_taps(g);  // (no structured binding: clang 14 cannot capture one)
  const tap_span* rows = taps.first.data();
  const tap_span* cols = taps.second.data();
  for_each_plane(x4, n * g.kh * g.kw, [&](std::int64_t q, const T* src, std::int64_t hs, std::int64_t ws) {
    max_pool_plane<Idx>(src, hs, ws, g, rows, cols, op_ + q * n, Idx ? ip + q * n : nullptr);
  });
  return {out, ind};
}

template <bool Max, class T>
std::tuple<tensor<T>, tensor<std::int64_t>> adaptive_pool_impl(const tensor<T>& x, size2 size,
                                                               const char* op) {
  const tensor<T> x4 = pool_input(op, x);
  check(size.h >= 0 && size.w >= 0, errc::value, op, ": output_size must be non-negative, got ", size);
  const std::int64_t h = x4.size(2), w = x4.size(3), n = size.h * size.w;
  tensor<T> out = make_tensor<T>(pool_output_shape(x, size.h, size.w));
  tensor<std::int64_t> ind = Max ? make_tensor<std::int64_t>(out.shape()) : tensor<std::int64_t>();
  T* op_ = out.data();
  std::int64_t* ip = Max ? ind.data() : nullptr;
  std::vector<tap_span> rows, cols;
  for (std::int64_t y = 0; y < size.h; ++y) rows.push_back(adaptive_window(y, size.h, h));
  for (std::int64_t x = 0; x < size.w; ++x) cols.push_back(adaptive_window(x, size.w, w));
  const std::int64_t work = std::max<std::int64_t>(h * w, n);
  for_each_plane(x4, work, [&](std::int64_t q, const T* src, std::int64_t hs, std::int64_t ws) {
    adaptive_pool_plane<Max>(src, hs, ws, w, rows, cols, op_ + q * n, Max ? ip + q * n : nullptr);
  });
  return {out, ind};
}

/// Backward of max pooling (also adaptive): scatters grad_out onto the input positions the
/// indices name (Note [Max pooling]; negative indices are skipped), summing repeats.
template <class T>
tensor<T> max_pool2d_backward(const tensor<T>& grad_out, const tensor<std::int64_t>& indices,
                              const shape& input_shape) {
  tensor<T> gi = make_tensor<T>(input_shape);
  std::fill(gi.data(), gi.data() + gi.numel(), T(0));
  const std::int64_t plane = input_shape[input_shape.size() - 2] * input_shape[input_shape.size() - 1];
  const std::int64_t n = indices.size(-1) * indices.size(-2);
  if (gi.numel() == 0 || n == 0) return gi;
  const tensor<T> go = grad_out.contiguous();
  const tensor<std::int64_t> id = indices.contiguous();
  parallel_for(0, gi.numel() / plane, std::max<std::int64_t>(1, 32768 / n), [&](std::int64_t q0, std::int64_t q1) {
    for (std::int64_t q = q0; q < q1; ++q)
      for (std::int64_t k = 0; k < n; ++k) {
        const std::int64_t at = id.data()[q * n + k];
        check(at < plane, errc::index, "max_pool2d_backward: index ", at, " out of range for a plane of ", plane);
        if (at >= 0) gi.data()[q * plane + at] += go.data()[q * n + k];
      }
  });
  return gi;
}

/// Backward of avg_pool2d: each output's gradient, divided as in the forward pass, spread over
/// its window (the adjoint of avg_pool_plane).
template <class T>
tensor<T> avg_pool2d_backward(const tensor<T>& grad_out, const shape& input_shape,
                              const nn::functional::avg_pool2d_options& o) {
  const window2d g = pool_window("avg_pool2d_backward", input_shape, o.kernel, o.stride, o.padding,
                                 size2{1}, o.ceil_mode);
  tensor<T> gi = make_tensor<T>(input_shape);
  std::fill(gi.data(), gi.data() + gi.numel(), T(0));
  const std::int64_t plane = g.h * g.w, n = g.cols();
  if (gi.numel() == 0) return gi;
  const tensor<T> go = grad_out.contiguous();
  parallel_for(0, gi.numel() / plane, std::max<std::int64_t>(1, 32768 / (n * g.kh * g.kw)),
               [&](std::int64_t q0, std::int64_t q1) {
    for (std::int64_t q = q0; q < q1; ++q) {
      T* dst = gi.data() + q * plane;
      const T* src = go.data() + q * n;
      for (std::int64_t y = 0; y < g.oh; ++y) {
        const std::int64_t hb = y * g.sh - g.ph, he = std::min(hb + g.kh, g.h + g.ph);
        const std::int64_t h0 = std::max<std::int64_t>(hb, 0), h1 = std::min(he, g.h);
        for (std::int64_t x = 0; x < g.ow; ++x) {
          const std::int64_t wb = x * g.sw - g.pw, we = std::min(wb + g.kw, g.w + g.pw);
          const std::int64_t w0 = std::max<std::int64_t>(wb, 0), w1 = std::min(we, g.w);
          if (h0 >= h1 || w0 >= w1) continue;
          const std::int64_t div = o.divisor_override ? o.divisor_override
                                   : o.count_include_pad ? (he - hb) * (we - wb)
                                                         : (h1 - h0) * (w1 - w0);
          const T v = src[y * g.ow + x] / static_cast<T>(div);
          for (std::int64_t hh = h0; hh < h1; ++hh)
            for (std::int64_t ww = w0; ww < w1; ++ww) dst[hh * g.w + ww] += v;
        }
      }
    }
  });
  return gi;
}

/// Backward of adaptive_avg_pool2d: each output's gradient, divided by its window's area,
/// spread over the window (the adjoint of adaptive_pool_plane<false>).
template <class T>
tensor<T> adaptive_avg_pool2d_backward(const tensor<T>& grad_out, const shape& input_shape) {
  const std::int64_t h = input_shape[input_shape.size() - 2], w = input_shape[input_shape.size() - 1];
  const std::int64_t oh = grad_out.size(-2), ow = grad_out.size(-1), plane = h * w, n = oh * ow;
  tensor<T> gi = make_tensor<T>(input_shape);
  std::fill(gi.data(), gi.data() + gi.numel(), T(0));
  if (gi.numel() == 0 || n == 0) return gi;
  const tensor<T> go = grad_out.contiguous();
  std::vector<tap_span> rows, cols;
  for (std::int64_t y = 0; y < oh; ++y) rows.push_back(adaptive_window(y, oh, h));
  for (std::int64_t x = 0; x < ow; ++x) cols.push_back(adaptive_window(x, ow, w));
  parallel_for(0, gi.numel() / plane, std::max<std::int64_t>(1, 32768 / std::max(plane, n)),
               [&](std::int64_t q0, std::int64_t q1) {
    for (std::int64_t q = q0; q < q1; ++q) {
      T* dst = gi.data() + q * plane;
      const T* src = go.data() + q * n;
      for (std::int64_t y = 0; y < oh; ++y) {
        const auto [h0, h1] = rows[static_cast<std::size_t>(y)];
        for (std::int64_t x = 0; x < ow; ++x) {
          const auto [w0, w1] = cols[static_cast<std::size_t>(x)];
          const T v = src[y * ow + x] / static_cast<T>((h1 - h0) * (w1 - w0));
          for (std::int64_t hh = h0; hh < h1; ++hh)
            for (std::int64_t ww = w0; ww < w1; ++ww) dst[hh * w + ww] += v;
        }
      }
    }
  });
  return gi;
}

/// Note [Pool backward]: every pooling op records one "<op>_backward" node. Max pooling (plain
/// or adaptive) saves the argmax indices of the forward pass, version-checked, and scatters
/// the gradient onto them (the first maximum of a window gets it, as PyTorch); average pooling
/// saves nothing but the input's shape and options. Not twice differentiable.
template <class T>
tensor<T> record_max_pool(const char* op, const tensor<T>& x, tensor<T> out,
                          const tensor<std::int64_t>& indices) {
  const autograd::detail::saved<std::int64_t> si(indices);
  std::string name = std::string(op) + "_backward";
  const shape xs = x.shape();
  return autograd::detail::record<T>(name, std::move(out), {x}, [si, xs, name](const tensor<T>& g) {
    no_grad_guard ng;
    return std::vector<tensor<T>>{max_pool2d_backward(g, si.unpack(name), xs)};
  });
}

// Note [Device max pooling]: on a device, the input padded with -inf is viewed as its windows
// (N, C, oh, ow, kh * kw) by strides alone, made contiguous by the fused copy kernel, and
// reduced with amax (the values: NaN propagates) and argmax (the first maximum, NaN counting
// as the maximum: PyTorch's choice). The backward adds each output's gradient back at its
// argmax: for one kernel offset the windows' elements are distinct, so that is kh * kw strided
// in-place additions of where(argmax == offset, g, 0). The plane indices of
// max_pool2d_with_indices are computed from the window argmax by integer arithmetic.

/// The -inf-padded windows of x4 as a contiguous (N, C, oh, ow, kh * kw) tensor, and the
/// padded extent (hp, wp) they were cut from.
template <class T>
std::pair<tensor<T>, size2> device_pool_windows(const tensor<T>& x4, const window2d& g,
                                                T pad = -std::numeric_limits<T>::infinity()) {
  const std::int64_t n = x4.size(0), c = x4.size(1), h = x4.size(2), w = x4.size(3);
  // room for every window (ceil_mode's last windows may pass the padded end)
  const size2 ext{std::max(h + 2 * g.ph, (g.oh - 1) * g.sh + g.dh * (g.kh - 1) + 1),
                  std::max(w + 2 * g.pw, (g.ow - 1) * g.sw + g.dw * (g.kw - 1) + 1)};
  tensor<T> xp = make_tensor<T>({n, c, ext.h, ext.w}, x4.device());
  xp.fill_(pad);
  xp.slice(2, g.ph, g.ph + h).slice(3, g.pw, g.pw + w).copy_(x4);
  const shape& st = xp.strides();
  const tensor<T> win = xp.make_view({n, c, g.oh, g.ow, g.kh, g.kw},
                                     {st[0], st[1], st[2] * g.sh, st[3] * g.sw, st[2] * g.dh,
                                      st[3] * g.dw},
                                     xp.storage_offset())
                            .contiguous();
  return {win.view({n, c, g.oh, g.ow, g.kh * g.kw}), ext};
}

/// The input gradient of a device max pooling from the window argmax `local` (N, C, oh, ow).
template <class T>
tensor<T> device_max_pool2d_backward(const tensor<T>& grad, const tensor<std::int64_t>& local,
                                     const shape& x_shape, const window2d& g, size2 ext) {
  const shape& xs = x_shape;
  const std::int64_t h = xs[xs.size() - 2], w = xs[xs.size() - 1];
  const std::int64_t n = local.size(0), c = local.size(1);
  const tensor<T> g4 = grad.reshape({n, c, g.oh, g.ow});
  tensor<T> gxp = make_tensor<T>({n, c, ext.h, ext.w}, grad.device());
  gxp.zero_();
  for (std::int64_t i = 0; i < g.kh; ++i)
    for (std::int64_t j = 0; j < g.kw; ++j)
      gxp.slice(2, i * g.dh, i * g.dh + (g.oh - 1) * g.sh + 1, g.sh)
          .slice(3, j * g.dw, j * g.dw + (g.ow - 1) * g.sw + 1, g.sw) +=
          where(local == std::int64_t{i * g.kw + j}, g4, T(0));
  return gxp.slice(2, g.ph, g.ph + h).slice(3, g.pw, g.pw + w).reshape(xs);
}

/// max_pool2d on a device, recorded, with PyTorch's plane indices when asked.
template <class T>
std::tuple<tensor<T>, tensor<std::int64_t>> device_max_pool2d_entry(
    const tensor<T>& x, const nn::functional::max_pool2d_options& o, bool want_indices,
    const char* op) {
  const tensor<T> x4 = pool_input(op, x, true);
  const window2d g = pool_window(op, x.shape(), o.kernel, o.stride, o.padding, o.dilation, o.ceil_mode);
  tensor<T> out;
  tensor<std::int64_t> local, indices;
  size2 ext;
  {
    no_grad_guard ng;
    const auto [win, e] = device_pool_windows(x4, g);
    ext = e;
    out = amax(win, std::int64_t{4}).reshape(pool_output_shape(x, g.oh, g.ow));
    local = argmax(win, std::int64_t{4});
    if (want_indices) {
      const tensor<std::int64_t> oy = arange<std::int64_t>(std::int64_t{0}, g.oh, 1, x.device()).view({g.oh, 1});
      const tensor<std::int64_t> ox = arange<std::int64_t>(std::int64_t{0}, g.ow, 1, x.device()).view({1, g.ow});
      const tensor<std::int64_t> ky = local / g.kw;
      indices = tensor<std::int64_t>((oy * g.sh - g.ph + ky * g.dh) * x4.size(3) +
                                     (ox * g.sw - g.pw + (local - ky * g.kw) * g.dw))
                    .reshape(out.shape());
    }
  }
  if (autograd::detail::any_requires_grad(x)) {
    const shape xs = x.shape();
    std::string name = std::string(op) + "_backward";
    out = autograd::detail::record<T>(name, std::move(out), {x},
                                      [local, xs, g, ext](const tensor<T>& gr) {
                                        no_grad_guard ng;
                                        return std::vector<tensor<T>>{
                                            device_max_pool2d_backward(gr, local, xs, g, ext)};
                                      });
  }
  return {out, indices};
}

// Note [Device average pooling]: the zero-padded windows' sums divided by the divisor
// (divisor_override, the window size with count_include_pad, else the count of input positions
// in each window: the same windows over a padded tensor of ones). The backward spreads g /
// divisor back over the windows: kh * kw strided in-place additions. ceil_mode is CPU-only.
template <class T>
tensor<T> device_avg_pool2d(const tensor<T>& x, const nn::functional::avg_pool2d_options& o,
                            const char* op) {
  check(!o.ceil_mode, errc::not_implemented, op, ": ceil_mode on ", x.device(),
        " (Note [Device average pooling])");
  const tensor<T> x4 = pool_input(op, x, true);
  const window2d g = pool_window(op, x.shape(), o.kernel, o.stride, o.padding, size2{1}, false);
  tensor<T> out, divisor;
  size2 ext;
  {
    no_grad_guard ng;
    const auto [win, e] = device_pool_windows(x4, g, T(0));
    ext = e;
    if (o.divisor_override > 0 || o.count_include_pad) {
      const std::int64_t d = o.divisor_override > 0 ? o.divisor_override : g.kh * g.kw;
      divisor = make_tensor<T>({1, 1, g.oh, g.ow}, x.device());
      divisor.fill_(static_cast<T>(d));
    } else {
      tensor<T> ones = make_tensor<T>({1, 1, x4.size(2), x4.size(3)}, x.device());
      ones.fill_(T(1));
      divisor = ember::sum(device_pool_windows(ones, g, T(0)).first, std::int64_t{4});
    }
    out = tensor<T>(ember::sum(win, std::int64_t{4}) / divisor).reshape(pool_output_shape(x, g.oh, g.ow));
  }
  if (!autograd::detail::any_requires_grad(x)) return out;
  const shape xs = x.shape();
  return autograd::detail::record<T>(
      std::string(op) + "_backward", std::move(out), {x}, [xs, g, ext, divisor](const tensor<T>& gr) {
        no_grad_guard ng;
        const std::int64_t h = xs[xs.size() - 2], w = xs[xs.size() - 1];
        const std::int64_t n = xs.size() == 4 ? xs[0] : 1, c = xs[xs.size() - 3];
        const tensor<T> share = gr.reshape({n, c, g.oh, g.ow}) / divisor;
        tensor<T> gxp = make_tensor<T>({n, c, ext.h, ext.w}, gr.device());
        gxp.zero_();
        for (std::int64_t i = 0; i < g.kh; ++i)
          for (std::int64_t j = 0; j < g.kw; ++j)
            gxp.slice(2, i, i + (g.oh - 1) * g.sh + 1, g.sh)
                .slice(3, j, j + (g.ow - 1) * g.sw + 1, g.sw) += share;
        return std::vector<tensor<T>>{
            gxp.slice(2, g.ph, g.ph + h).slice(3, g.pw, g.pw + w).reshape(xs)};
      });
}

/// max_pool2d (with indices when asked or when x records gradients), recorded.
template <class T>
std::tuple<tensor<T>, tensor<std::int64_t>> max_pool2d_entry(const tensor<T>& x,
                                                             const nn::functional::max_pool2d_options& o,
                                                             bool want_indices, const char* op) {
  if (x.defined() && !x.device().is_cpu()) return device_max_pool2d_entry(x, o, want_indices, op);
  const bool grad = autograd::detail::any_requires_grad(x);
  std::tuple<tensor<T>, tensor<std::int64_t>> r;
  {
    no_grad_guard ng;
    r = want_indices || grad ? max_pool2d_impl<true>(x, o, op) : max_pool2d_impl<false>(x, o, op);
  }
  if (grad) std::get<0>(r) = record_max_pool(op, x, std::move(std::get<0>(r)), std::get<1>(r));
  return r;
}

/// adaptive_avg_pool2d (Max = false) or adaptive_max_pool2d with indices, recorded.
template <bool Max, class T>
std::tuple<tensor<T>, tensor<std::int64_t>> adaptive_pool_entry(const tensor<T>& x, size2 size,
                                                                 const char* op) {
  if (x.defined() && !x.device().is_cpu()) {
    // on a device: output sizes that divide the input's are average or max pooling with kernel
    // = stride = input / output (the adaptive windows then coincide with those)
    const tensor<T> x4 = pool_input(op, x, true);
    const std::int64_t h = x4.size(2), w = x4.size(3);
    check(size.h > 0 && size.w > 0 && h % size.h == 0 && w % size.w == 0, errc::not_implemented,
          op, ": on ", x.device(), " the output size ", size, " must divide the input's (", h,
          ", ", w, ")");
    const size2 k{h / size.h, w / size.w};
    if constexpr (Max)
      return device_max_pool2d_entry(x, {.kernel = k, .stride = k}, true, op);
    else
      return {device_avg_pool2d(x, {.kernel = k, .stride = k}, op), tensor<std::int64_t>()};
  }
  std::tuple<tensor<T>, tensor<std::int64_t>> r;
  {
    no_grad_guard ng;
    r = adaptive_pool_impl<Max>(x, size, op);
  }
  if (!autograd::detail::any_requires_grad(x)) return r;
  if constexpr (Max) {
    std::get<0>(r) = record_max_pool(op, x, std::move(std::get<0>(r)), std::get<1>(r));
  } else {
    const shape xs = x.shape();
    std::get<0>(r) = autograd::detail::record<T>(
        std::string(op) + "_backward", std::move(std::get<0>(r)), {x}, [xs](const tensor<T>& g) {
          no_grad_guard ng;
          return std::vector<tensor<T>>{adaptive_avg_pool2d_backward(g, xs)};
        });
  }
  return r;
}

template <class T>
tensor<T> avg_pool2d_untraced(const tensor<T>& x, const nn::functional::avg_pool2d_options& opt);

}  // namespace detail

namespace nn::functional {

/// Max over sliding windows of x (N, C, H, W) or (C, H, W); padding counts as -inf and a NaN
/// in a window gives NaN.
///   auto y = F::max_pool2d(x, {.kernel = 2});                 // stride = kernel
///   auto z = F::max_pool2d(x, {.kernel = 3, .stride = 2, .padding = 1, .ceil_mode = true});
template <operand E>
tensor<value_type_t<E>> max_pool2d(const E& e, const max_pool2d_options& opt) {
  const auto x = detail::materialize(e);
  const size2 stride = opt.stride.h == 0 && opt.stride.w == 0 ? opt.kernel : opt.stride;
  return jit::detail::traced_op(
      op::max_pool2d,
      {{"kernel", std::vector<std::int64_t>{opt.kernel.h, opt.kernel.w}},
       {"stride", std::vector<std::int64_t>{stride.h, stride.w}},
       {"padding", std::vector<std::int64_t>{opt.padding.h, opt.padding.w}},
       {"dilation", std::vector<std::int64_t>{opt.dilation.h, opt.dilation.w}},
       {"ceil_mode", std::int64_t{opt.ceil_mode}}},
      [&] { return std::get<0>(detail::max_pool2d_entry(x, opt, false, "max_pool2d")); }, x);
}

/// max_pool2d and the int64 position of each maximum, flat within its (H, W) plane (h*W + w),
/// as PyTorch's return_indices=True.
///   auto [values, indices] = F::max_pool2d_with_indices(x, {.kernel = 2});
template <operand E>
std::tuple<tensor<value_type_t<E>>, tensor<std::int64_t>> max_pool2d_with_indices(
    const E& x, const max_pool2d_options& opt) {
  return detail::max_pool2d_entry(detail::materialize(x), opt, true, "max_pool2d_with_indices");
}

/// Mean over sliding windows of x (N, C, H, W) or (C, H, W).
///   auto y = F::avg_pool2d(x, {.kernel = 3, .stride = 2, .padding = 1, .count_include_pad = false});
template <operand E>
tensor<value_type_t<E>> avg_pool2d(const E& e, const avg_pool2d_options& opt) {
  using T = value_type_t<E>;
  const tensor<T> x = detail::materialize(e);
  const size2 stride = opt.stride.h == 0 && opt.stride.w == 0 ? opt.kernel : opt.stride;
  ember::detail::check(opt.divisor_override == 0 || !jit::detail::tracing(), errc::not_implemented,
                       "jit::trace: avg_pool2d with divisor_override cannot be traced");
  return jit::detail::traced_op(
      op::avg_pool2d,
      {{"kernel", std::vector<std::int64_t>{opt.kernel.h, opt.kernel.w}},
       {"stride", std::vector<std::int64_t>{stride.h, stride.w}},
       {"padding", std::vector<std::int64_t>{opt.padding.h, opt.padding.w}},
       {"ceil_mode", std::int64_t{opt.ceil_mode}},
       {"count_include_pad", std::int64_t{opt.count_include_pad}}},
      [&] { return detail::avg_pool2d_untraced(x, opt); }, x);
}

}  // namespace nn::functional

namespace detail {
template <class T>
tensor<T> avg_pool2d_untraced(const tensor<T>& x, const nn::functional::avg_pool2d_options& opt) {
  if (x.defined() && !x.device().is_cpu()) return detail::device_avg_pool2d(x, opt, "avg_pool2d");
  tensor<T> out;
  {
    no_grad_guard ng;
    const tensor<T> x4 = detail::pool_input("avg_pool2d", x);
    const detail::window2d g = detail::pool_window("avg_pool2d", x.shape(), opt.kernel, opt.stride,
                                                   opt.padding, size2{1}, opt.ceil_mode);
    out = detail::make_tensor<T>(detail::pool_output_shape(x, g.oh, g.ow));
    const std::int64_t n = g.cols();
    T* op = out.data();
    detail::for_each_plane(x4, n * g.kh * g.kw, [&](std::int64_t q, const T* src, std::int64_t hs, std::int64_t ws) {
      detail::avg_pool_plane(src, hs, ws, g, opt.count_include_pad, opt.divisor_override, op + q * n);
    });
  }
  if (!autograd::detail::any_requires_grad(x)) return out;
  const shape xs = x.shape();
  return autograd::detail::record<T>("avg_pool2d_backward", std::move(out), {x},
                                     [xs, opt](const tensor<T>& g) {  // Note [Pool backward]
    no_grad_guard ng;
    return std::vector<tensor<T>>{detail::avg_pool2d_backward(g, xs, opt)};
  });
}
}  // namespace detail

namespace nn::functional {

/// Mean over an output_size grid of windows that cover x (N, C, H, W) or (C, H, W); window i
/// of n spans [floor(i*H/n), ceil((i+1)*H/n)), as PyTorch.
///   auto pooled = F::adaptive_avg_pool2d(x, {.output_size = 1});   // global average pool
template <operand E>
tensor<value_type_t<E>> adaptive_avg_pool2d(const E& e, const adaptive_avg_pool2d_options& opt) {
  const auto x = detail::materialize(e);
  return jit::detail::traced_op(
      op::adaptive_avg_pool2d,
      {{"output_size", std::vector<std::int64_t>{opt.output_size.h, opt.output_size.w}}},
      [&] {
        return std::get<0>(detail::adaptive_pool_entry<false>(x, opt.output_size, "adaptive_avg_pool2d"));
      },
      x);
}

/// Max over adaptive windows (as adaptive_avg_pool2d; NaN and ties as max_pool2d).
///   auto pooled = F::adaptive_max_pool2d(x, {.output_size = {2, 2}});
template <operand E>
tensor<value_type_t<E>> adaptive_max_pool2d(const E& x, const adaptive_max_pool2d_options& opt) {
  return std::get<0>(detail::adaptive_pool_entry<true>(detail::materialize(x), opt.output_size,
                                                       "adaptive_max_pool2d"));
}

/// adaptive_max_pool2d and the flat h*W + w index of each maximum in its plane.
///   auto [values, indices] = F::adaptive_max_pool2d_with_indices(x, {.output_size = 2});
template <operand E>
std::tuple<tensor<value_type_t<E>>, tensor<std::int64_t>> adaptive_max_pool2d_with_indices(
    const E& x, const adaptive_max_pool2d_options& opt) {
  return detail::adaptive_pool_entry<true>(detail::materialize(x), opt.output_size,
                                           "adaptive_max_pool2d_with_indices");
}

}  // namespace nn::functional

// em::max_pool2d etc., as libtorch's torch::max_pool2d
using nn::functional::adaptive_avg_pool2d;
using nn::functional::adaptive_max_pool2d;
using nn::functional::adaptive_max_pool2d_with_indices;
using nn::functional::avg_pool2d;
using nn::functional::max_pool2d;
using nn::functional::max_pool2d_with_indices;

}  // namespace ember
