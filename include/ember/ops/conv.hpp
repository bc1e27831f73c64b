// Convolution: ember::size2 (the 2-D extent shared with pooling), F::conv1d, F::conv2d,
// F::conv_transpose1d and F::conv_transpose2d via im2col + GEMM with their backward nodes, and
// the detail helpers (im2col, col2im, input and weight gradients) the backward passes use.
#pragma once

#include <ember/autograd/engine.hpp>
#include <ember/autograd/meta.hpp>
#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/eval/assign.hpp>
#include <ember/eval/reduce.hpp>
#include <ember/ops/matmul.hpp>
#include <ember/ops/gemm.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember {

/// A 2-D extent (kernel, stride, padding, dilation, output size): one integer for both
/// dimensions, or {h, w}.
///   em::size2 k = 3;          // k.h == 3, k.w == 3
///   em::size2 s = {2, 1};     // s.h == 2, s.w == 1
struct size2 {
  std::int64_t h = 0;
  std::int64_t w = 0;

  constexpr size2() noexcept = default;
  template <std::integral I>
  constexpr size2(I v) noexcept  // NOLINT: implicit, so `.stride = 2` reads like PyTorch
      : h(static_cast<std::int64_t>(v)), w(static_cast<std::int64_t>(v)) {}
  template <std::integral I, std::integral J>
  constexpr size2(I h_, J w_) noexcept
      : h(static_cast<std::int64_t>(h_)), w(static_cast<std::int64_t>(w_)) {}

  friend constexpr bool operator==(const size2&, const size2&) noexcept = default;
};

/// Prints "(h,w)", like a shape.
inline std::ostream& operator<<(std::ostream& os, const size2& s) {
  return os << '(' << s.h << ',' << s.w << ')';
}

namespace detail {

/// Note [Sliding window]: the geometry of a 2-D window sliding over an image of c channels
/// and h×w pixels: kernel kh×kw, stride, zero padding and dilation, giving an oh×ow grid of
/// window positions. Window (y, x), tap (i, j) reads pixel (y*sh - ph + i*dh, x*sw - pw + j*dw).
/// Convolution and pooling share it; for conv_transpose2d the "image" is the output and the
/// grid is the input (it is the adjoint of a convolution).
struct window2d {
  std::int64_t c = 1, h = 0, w = 0;
  std::int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  std::int64_t oh = 0, ow = 0;

  std::int64_t rows() const noexcept { return c * kh * kw; }  ///< rows of the im2col matrix
  std::int64_t cols() const noexcept { return oh * ow; }      ///< its columns
};

/// floor(a / b) for b > 0 and any sign of a.
constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/// The window positions o in [0, n) whose tap at o*stride + offset lies in [0, extent):
/// [lo, hi), empty when lo == hi.
struct tap_span {
  std::int64_t lo, hi;
};
constexpr tap_span valid_taps(std::int64_t n, std::int64_t stride, std::int64_t offset,
                              std::int64_t extent) noexcept {
  const std::int64_t lo = std::clamp<std::int64_t>(-floor_div(offset, stride), 0, n);
  const std::int64_t hi = std::clamp<std::int64_t>(-floor_div(offset - extent, stride), 0, n);
  return {lo, std::max(lo, hi)};
}

/// Note [im2col]: col is a g.rows() × g.cols() row-major matrix; row (ci*kh + i)*kw + j holds,
/// for every window (y, x), the pixel under tap (i, j) of channel ci, or 0 in the padding.
/// A convolution is then weight (out × rows) · col. col2im is the adjoint: it adds every entry
/// back onto the pixel it came from (overlapping windows sum), which is what conv2d's input
/// gradient and conv_transpose2d need. img has strides cs, hs, ws. im2col writes rows
/// [r0, r1) (so callers can split the work) of the band of window rows [y0, y1) only: then col
/// is g.rows() × (y1 - y0)*g.ow (Note [Conv bands]).
template <class T>
void im2col(const T* img, std::int64_t cs, std::int64_t hs, std::int64_t ws, const window2d& g,
            T* col, std::int64_t r0, std::int64_t r1, std::int64_t y0, std::int64_t y1) {
  const std::int64_t n = (y1 - y0) * g.ow;
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int64_t ci = r / (g.kh * g.kw), i = r / g.kw % g.kh, j = r % g.kw;
    T* dst = col + r * n;
    const auto taps = valid_taps(g.oh, g.sh, i * g.dh - g.ph, g.h);
    const std::int64_t ylo = std::clamp(taps.lo, y0, y1), yhi = std::clamp(taps.hi, ylo, y1);
    const auto [xlo, xhi] = valid_taps(g.ow, g.sw, j * g.dw - g.pw, g.w);
    std::fill(dst, dst + (ylo - y0) * g.ow, T(0));
    const std::int64_t off = j * g.dw - g.pw;  // pixel column of window x is x*sw + off
    for (std::int64_t y = ylo; y < yhi; ++y) {
      const T* row = img + ci * cs + (y * g.sh - g.ph + i * g.dh) * hs;
      T* d = dst + (y - y0) * g.ow;
      std::fill(d, d + xlo, T(0));
      if (g.sw == 1 && ws == 1) {
        if (xhi > xlo)
          std::memcpy(d + xlo, row + (xlo + off), static_cast<std::size_t>(xhi - xlo) * sizeof(T));
      } else {
        for (std::int64_t x = xlo; x < xhi; ++x) d[x] = row[(x * g.sw + off) * ws];
      }
      std::fill(d + xhi, d + g.ow, T(0));
    }
    std::fill(dst + (yhi - y0) * g.ow, dst + n, T(0));
  }
}

/// Adds the columns of the band of window rows [y0, y1) back onto a contiguous (c, h, w) image
/// (Note [im2col]), channels [c0, c1) only: different channels touch disjoint pixels, so they
/// may run in parallel.
template <class T>
void col2im(const T* col, const window2d& g, T* img, std::int64_t c0, std::int64_t c1,
            std::int64_t y0, std::int64_t y1) {
  const std::int64_t n = (y1 - y0) * g.ow;
  for (std::int64_t ci = c0; ci < c1; ++ci)
    for (std::int64_t i = 0; i < g.kh; ++i)
      for (std::int64_t j = 0; j < g.kw; ++j) {
        const T* src = col + ((ci * g.kh + i) * g.kw + j) * n;
        const auto taps = valid_taps(g.oh, g.sh, i * g.dh - g.ph, g.h);
        const std::int64_t ylo = std::clamp(taps.lo, y0, y1), yhi = std::clamp(taps.hi, ylo, y1);
        const auto [xlo, xhi] = valid_taps(g.ow, g.sw, j * g.dw - g.pw, g.w);
        const std::int64_t off = j * g.dw - g.pw;
        for (std::int64_t y = ylo; y < yhi; ++y) {
          T* row = img + (ci * g.h + y * g.sh - g.ph + i * g.dh) * g.w;
          const T* s = src + (y - y0) * g.ow;
          if (g.sw == 1) {
            T* d = row + (xlo + off);
            for (std::int64_t x = 0; x < xhi - xlo; ++x) d[x] += s[xlo + x];
          } else {
            for (std::int64_t x = xlo; x < xhi; ++x) row[x * g.sw + off] += s[x];
          }
        }
      }
}

/// Elements per parallel task below which im2col/col2im stay on one thread.
inline constexpr std::int64_t conv_grain = 32768;

/// Note [Conv bands]: conv2d runs im2col and the GEMM on bands of window rows whose column
/// matrix holds about conv_band_elems elements (at least 512 columns or one window row): the
/// band stays in cache between im2col and the GEMM, and the scratch memory is bounded (a whole
/// 224×224 image with 64 channels and a 3×3 kernel would need 115 MB of float columns).
inline constexpr std::int64_t conv_band_elems = std::int64_t{1} << 18;

inline std::int64_t conv_band_rows(const window2d& g) {
  const std::int64_t cols = std::max<std::int64_t>(512, conv_band_elems / std::max<std::int64_t>(g.rows(), 1));
  return std::clamp<std::int64_t>(cols / std::max<std::int64_t>(g.ow, 1), 1, std::max<std::int64_t>(g.oh, 1));
}

/// im2col of the band [y0, y1), split over the pool.
template <class T>
void im2col_parallel(const T* img, std::int64_t cs, std::int64_t hs, std::int64_t ws,
                     const window2d& g, T* col, std::int64_t y0, std::int64_t y1) {
  const std::int64_t n = std::max<std::int64_t>((y1 - y0) * g.ow, 1);
  parallel_for(0, g.rows(), std::max<std::int64_t>(1, conv_grain / n), [&](std::int64_t r0, std::int64_t r1) {
    im2col(img, cs, hs, ws, g, col, r0, r1, y0, y1);
  });
}

/// col2im of the band [y0, y1), split over the pool by channels.
template <class T>
void col2im_parallel(const T* col, const window2d& g, T* img, std::int64_t y0, std::int64_t y1) {
  const std::int64_t per_channel = std::max<std::int64_t>(g.kh * g.kw * (y1 - y0) * g.ow, 1);
  parallel_for(0, g.c, std::max<std::int64_t>(1, conv_grain / per_channel),
               [&](std::int64_t c0, std::int64_t c1) { col2im(col, g, img, c0, c1, y0, y1); });
}

/// The column stride that walks an (h, w) plane as one row of h*w elements, or 0 when its
/// strides do not allow that.
inline std::int64_t plane_stride(std::int64_t h, std::int64_t w, std::int64_t hs, std::int64_t ws) {
  if (h == 1) return ws;
  if (w == 1) return hs;
  return hs == w * ws ? ws : 0;
}

/// out[n, o, ...] += bias[o] on a contiguous (n, o, p) tensor.
template <class T>
void add_bias(T* out, const tensor<T>& bias, std::int64_t channels, std::int64_t plane) {
  if (!bias.defined()) return;
  const T* b = bias.data();
  const std::int64_t bs = bias.stride(0);
  for (std::int64_t o = 0; o < channels; ++o) {
    const T v = b[o * bs];
    T* p = out + o * plane;
    for (std::int64_t q = 0; q < plane; ++q) p[q] += v;
  }
}

/// Runs f(n, scratch) for every image n of a batch. Note [Conv threading]: with at least as
/// many images as threads (and enough work), images run in parallel, each task with its own
/// scratch buffer, and the GEMM inside runs single-threaded (a nested parallel_for runs
/// inline); otherwise images run one after another and im2col, col2im and the GEMM split
/// each image over the pool.
template <class T, class F>
void for_each_image(std::int64_t batch, std::int64_t scratch, std::int64_t work_per_image, F&& f) {
  const int threads = get_num_threads();
  auto run = [&](std::int64_t n0, std::int64_t n1) {
    tensor<T> buf = scratch ? make_tensor<T>({scratch}) : tensor<T>();
    T* p = scratch ? buf.data() : nullptr;
    for (std::int64_t n = n0; n < n1; ++n) f(n, p);
  };
  if (threads > 1 && batch >= threads)
    parallel_for(0, batch, std::max<std::int64_t>(1, (1 << 16) / std::max<std::int64_t>(work_per_image, 1)), run);
  else
    run(0, batch);
}

/// Convolution of a 4-D (n, c, h, w) input of any strides with a (o, c/groups, kh, kw) weight;
/// arguments already checked. Bias may be undefined.
template <class T>
tensor<T> conv2d_nchw(const tensor<T>& x, const tensor<T>& weight, const tensor<T>& bias,
                      size2 stride, size2 padding, size2 dilation, std::int64_t groups) {
  const std::int64_t batch = x.size(0), c = x.size(1), o = weight.size(0);
  window2d g{c / groups, x.size(2), x.size(3), weight.size(2), weight.size(3), stride.h, stride.w,
             padding.h, padding.w, dilation.h, dilation.w, 0, 0};
  g.oh = (g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  tensor<T> out = make_tensor<T>({batch, o, g.oh, g.ow});
  if (out.numel() == 0) return out;
  const tensor<T> w = weight.contiguous();
  const std::int64_t og = o / groups, k = g.rows(), p = g.cols();
  const std::int64_t xs_n = x.stride(0), xs_c = x.stride(1), xs_h = x.stride(2), xs_w = x.stride(3);
  // a 1×1 stride-1 unpadded convolution is a GEMM on the input itself: no im2col
  const std::int64_t direct_cs = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 &&
                                         g.pw == 0
                                     ? plane_stride(g.h, g.w, xs_h, xs_w)
                                     : 0;
  const T* xp = x.data();
  T* op = out.data();
  const std::int64_t band = conv_band_rows(g);
  for_each_image<T>(batch, direct_cs ? 0 : k * band * g.ow, o * k * p, [&](std::int64_t n, T* col) {
    for (std::int64_t gi = 0; gi < groups; ++gi) {
      const T* img = xp + n * xs_n + gi * g.c * xs_c;
      const T* wg = w.data() + gi * og * k;
      T* dst = op + (n * o + gi * og) * p;
      if (direct_cs) {
        gemm<T>(og, p, k, T(1), wg, k, 1, img, xs_c, direct_cs, T(0), dst, p, 1);
        continue;
      }
      for (std::int64_t y0 = 0; y0 < g.oh; y0 += band) {
        const std::int64_t y1 = std::min(g.oh, y0 + band), cols = (y1 - y0) * g.ow;
        im2col_parallel(img, xs_c, xs_h, xs_w, g, col, y0, y1);
        gemm<T>(og, cols, k, T(1), wg, k, 1, col, cols, 1, T(0), dst + y0 * g.ow, p, 1);
      }
    }
    add_bias(op + n * o * p, bias, o, p);
  });
  return out;
}

/// The transposed convolution (the adjoint of conv2d_nchw with the same weight) of a 4-D
/// (n, c, h, w) input with a (c, o/groups, kh, kw) weight, into an out_h × out_w output;
/// arguments already checked. conv2d's input gradient is this with out = the input's size.
template <class T>
tensor<T> conv_transpose2d_nchw(const tensor<T>& input, const tensor<T>& weight,
                                const tensor<T>& bias, size2 stride, size2 padding,
                                size2 dilation, std::int64_t groups, size2 out_size) {
  const std::int64_t batch = input.size(0), c = input.size(1);
  const std::int64_t cg = c / groups, og = weight.size(1), o = og * groups;
  const window2d g{og, out_size.h, out_size.w, weight.size(2), weight.size(3), stride.h, stride.w,
                   padding.h, padding.w, dilation.h, dilation.w, input.size(2), input.size(3)};
  tensor<T> out = make_tensor<T>({batch, o, g.h, g.w});
  if (out.numel() == 0) return out;
  const tensor<T> x = plane_stride(g.oh, g.ow, input.stride(2), input.stride(3)) ? input : input.contiguous();
  const tensor<T> w = weight.contiguous();
  const std::int64_t m = g.rows(), p = g.cols(), plane = g.h * g.w;
  const std::int64_t xs_n = x.stride(0), xs_c = x.stride(1);
  const std::int64_t xs_p = plane_stride(g.oh, g.ow, x.stride(2), x.stride(3));
  const bool direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 &&
                      g.h == g.oh && g.w == g.ow;
  const T* xp = x.data();
  T* outp = out.data();
  const std::int64_t band = conv_band_rows(g);  // bands of input rows (Note [Conv bands])
  for_each_image<T>(batch, direct ? 0 : m * band * g.ow, groups * m * p * cg,
                    [&](std::int64_t n, T* col) {
    for (std::int64_t gi = 0; gi < groups; ++gi) {
      const T* b = xp + n * xs_n + gi * cg * xs_c;
      const T* wg = w.data() + gi * cg * m;  // (cg × m) row-major; the GEMM uses its transpose
      T* dst = outp + (n * o + gi * og) * plane;
      if (direct) {
        gemm<T>(og, p, cg, T(1), wg, 1, m, b, xs_c, xs_p, T(0), dst, p, 1);
        continue;
      }
      std::fill(dst, dst + og * plane, T(0));
      for (std::int64_t y0 = 0; y0 < g.oh; y0 += band) {
        const std::int64_t y1 = std::min(g.oh, y0 + band), cols = (y1 - y0) * g.ow;
        gemm<T>(m, cols, cg, T(1), wg, 1, m, b + y0 * g.ow * xs_p, xs_c, xs_p, T(0), col, cols, 1);
        col2im_parallel(col, g, dst, y0, y1);
      }
    }
    add_bias(outp + n * o * plane, bias, o, plane);
  });
  return out;
}

/// conv2d's weight gradient: sum over the batch of grad_out (o/groups × p) · col^T, per group,
/// for a 4-D input and grad_out of the convolution's output shape. Returns (o, c/groups, kh, kw).
template <class T>
tensor<T> conv2d_weight_grad(const tensor<T>& x, const tensor<T>& grad_out, const shape& weight_shape,
                             size2 stride, size2 padding, size2 dilation, std::int64_t groups) {
  const std::int64_t batch = x.size(0), o = weight_shape[0];
  const window2d g{weight_shape[1], x.size(2), x.size(3), weight_shape[2], weight_shape[3],
                   stride.h, stride.w, padding.h, padding.w, dilation.h, dilation.w,
                   grad_out.size(2), grad_out.size(3)};
  const std::int64_t og = o / groups, k = g.rows(), p = g.cols();
  tensor<T> gw = make_tensor<T>(weight_shape);
  std::fill(gw.data(), gw.data() + gw.numel(), T(0));
  if (gw.numel() == 0 || p == 0) return gw;
  const tensor<T> go = grad_out.contiguous();
  const std::int64_t band = conv_band_rows(g);  // Note [Conv bands]
  tensor<T> col = make_tensor<T>({k * band * g.ow});
  for (std::int64_t n = 0; n < batch; ++n)
    for (std::int64_t gi = 0; gi < groups; ++gi) {
      const T* img = x.data() + n * x.stride(0) + gi * g.c * x.stride(1);
      for (std::int64_t y0 = 0; y0 < g.oh; y0 += band) {
        const std::int64_t y1 = std::min(g.oh, y0 + band), cols = (y1 - y0) * g.ow;
        im2col_parallel(img, x.stride(1), x.stride(2), x.stride(3), g, col.data(), y0, y1);
        gemm<T>(og, k, cols, T(1), go.data() + (n * o + gi * og) * p + y0 * g.ow, p, 1, col.data(), 1,
                cols, T(1), gw.data() + gi * og * k, k, 1);
      }
    }
  return gw;
}

/// A 1-D or 2-D size for messages: "3" or "(3,3)".
inline std::string spatial_str(size2 v, int sd) {
  std::ostringstream os;
  if (sd == 1) os << v.w; else os << v;
  return os.str();
}

/// What the argument checks of conv1d/conv2d/conv_transpose*d need; 1-D ops use the w fields.
struct conv_args {
  const char* op;
  int sd;  ///< spatial dimensions: 1 or 2
  bool transposed;
  size2 stride, padding, dilation, output_padding;
  std::int64_t groups;
};

/// Validates input, weight, bias and options (errc::shape / value / device, naming the shapes)
/// and returns the output's spatial size.
template <class T>
size2 check_conv(const conv_args& a, const tensor<T>& x, const tensor<T>& w, const tensor<T>& bias) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "ember convolution: needs float or double tensors");
  const char* op = a.op;
  const int sd = a.sd;
  check(x.defined() && w.defined(), errc::value, op, ": input and weight must be defined tensors");
  check(x.dim() == sd + 1 || x.dim() == sd + 2, errc::shape, op, ": expects a ", sd + 1, "-D (C,",
        sd == 1 ? "L" : "H,W", ") or ", sd + 2, "-D (N,C,", sd == 1 ? "L" : "H,W",
        ") input, got shape ", x.shape());
  check(w.dim() == sd + 2, errc::shape, op, ": expects a ", sd + 2, "-D weight (",
        a.transposed ? "in_channels, out_channels/groups" : "out_channels, in_channels/groups",
        sd == 1 ? ", k" : ", kh, kw", "), got shape ", w.shape());
  check(w.device() == x.device() && (!bias.defined() || bias.device() == x.device()), errc::device,
        op, ": input on ", x.device(), ", weight on ", w.device(), bias.defined() ? ", bias on " : "",
        bias.defined() ? bias.device() : x.device(), "; move them to one device");
  check(x.device().is_cpu() || !a.transposed, errc::not_implemented, op, ": not available on ",
        x.device(), " (Note [Device convolution])");
  check(a.groups > 0, errc::value, op, ": groups must be positive, got ", a.groups);
  const size2 s = a.stride, p = a.padding, d = a.dilation, q = a.output_padding;
  check(s.h > 0 && s.w > 0, errc::value, op, ": stride must be positive, got ", spatial_str(s, sd));
  check(d.h > 0 && d.w > 0, errc::value, op, ": dilation must be positive, got ", spatial_str(d, sd));
  check(p.h >= 0 && p.w >= 0, errc::value, op, ": padding must be non-negative, got ", spatial_str(p, sd));
  check(q.h >= 0 && q.w >= 0 && (q.h < s.h || q.h < d.h) && (q.w < s.w || q.w < d.w), errc::value,
        op, ": output_padding ", spatial_str(q, sd), " must be non-negative and smaller than ",
        "either stride ", spatial_str(s, sd), " or dilation ", spatial_str(d, sd));
  const std::int64_t c = x.size(-sd - 1);
  for (std::int64_t i = x.dim() - sd - 1; i < x.dim(); ++i)
    check(x.size(i) > 0, errc::shape, op, ": expects non-empty channel and spatial dimensions, ",
          "got input shape ", x.shape());
  const std::int64_t in_ch = a.transposed ? w.size(0) : w.size(1) * a.groups;
  check(c == in_ch, errc::shape, op, ": input of shape ", x.shape(), " has ", c,
        " channels, but weight of shape ", w.shape(), " with groups=", a.groups, " expects ", in_ch);
  check(w.size(0) % a.groups == 0, errc::shape, op, ": weight of shape ", w.shape(), " has ",
        w.size(0), a.transposed ? " input" : " output", " channels, not divisible by groups=", a.groups);
  const std::int64_t out_ch = a.transposed ? w.size(1) * a.groups : w.size(0);
  if (bias.defined())
    check(bias.dim() == 1 && bias.size(0) == out_ch, errc::shape, op, ": bias of shape ",
          bias.shape(), " does not match the ", out_ch, " output channels of weight ", w.shape());
  const size2 in = sd == 1 ? size2{1, x.size(-1)} : size2{x.size(-2), x.size(-1)};
  const size2 k = sd == 1 ? size2{1, w.size(-1)} : size2{w.size(-2), w.size(-1)};
  check(k.h > 0 && k.w > 0, errc::shape, op, ": weight of shape ", w.shape(), " has an empty kernel");
  if (a.transposed) {
    const size2 out{(in.h - 1) * s.h - 2 * p.h + d.h * (k.h - 1) + q.h + 1,
                    (in.w - 1) * s.w - 2 * p.w + d.w * (k.w - 1) + q.w + 1};
    check(out.h > 0 && out.w > 0, errc::shape, op, ": input of shape ", x.shape(), " with kernel ",
          spatial_str(k, sd), ", stride ", spatial_str(s, sd), ", padding ", spatial_str(p, sd),
          " and dilation ", spatial_str(d, sd), " gives an empty output ", spatial_str(out, sd));
    return out;
  }
  const size2 eff{d.h * (k.h - 1) + 1, d.w * (k.w - 1) + 1};
  const size2 padded{in.h + 2 * p.h, in.w + 2 * p.w};
  check(padded.h >= eff.h && padded.w >= eff.w, errc::shape, op, ": kernel ", spatial_str(k, sd),
        " with dilation ", spatial_str(d, sd), " spans ", spatial_str(eff, sd),
        ", larger than the padded input ", spatial_str(padded, sd), " (input shape ", x.shape(),
        ", padding ", spatial_str(p, sd), ")");
  return {(padded.h - eff.h) / s.h + 1, (padded.w - eff.w) / s.w + 1};
}

/// t as 4-D (N, C, H, W): an unbatched input gets a batch of 1, a 1-D one (sd == 1) a height
/// of 1. Views only; callers run it without recording.
template <class T>
tensor<T> as_nchw(const tensor<T>& t, int sd, bool unbatched) {
  const tensor<T> b = unbatched ? t.unsqueeze(0) : t;
  return sd == 1 ? b.unsqueeze(2) : b;
}

/// Sum of a contiguous (n, c, h, w) tensor over n, h and w: a bias gradient of shape (c).
template <class T>
tensor<T> channel_sum(const tensor<T>& g4) {
  if (!g4.device().is_cpu()) return ember::sum(g4, shape{0, 2, 3});
  const std::int64_t batch = g4.size(0), c = g4.size(1), p = g4.size(2) * g4.size(3);
  tensor<T> s = make_tensor<T>({c});
  const T* gp = g4.data();
  for (std::int64_t o = 0; o < c; ++o) {
    T acc = 0;
    for (std::int64_t n = 0; n < batch; ++n)
      for (std::int64_t q = 0; q < p; ++q) acc += gp[(n * c + o) * p + q];
    s.data()[o] = acc;
  }
  return s;
}

// ---- convolution on a device ------------------------------------------------------------------
// Note [Device convolution]: on a device, conv2d is built from the device's kernels (no kernel
// of its own): the input, zero-padded, is viewed as its windows (N, C, kh, kw, oh, ow) by
// strides alone (im2col as a view), made contiguous by the fused copy kernel, and multiplied
// by the weight with one strided batched GEMM per group. The backward: dw = dy . columns^T
// (summed over the batch), d columns = w^T . dy, and dx gathers the columns back (col2im) as
// kh * kw strided in-place additions: for one kernel offset the windows' elements are
// distinct, so each addition is an ordinary elementwise update. conv_transpose on a device is
// not implemented.

/// The windows of x (N, C, H, W; padded by p) as a contiguous (N, C, kh, kw, oh, ow) tensor.
template <class T>
tensor<T> device_conv_columns(const tensor<T>& x, size2 k, size2 s, size2 p, size2 d, size2 out) {
  const std::int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  tensor<T> xp;
  if (p.h || p.w) {
    xp = make_tensor<T>({n, c, h + 2 * p.h, w + 2 * p.w}, x.device());
    xp.zero_();
    xp.slice(2, p.h, p.h + h).slice(3, p.w, p.w + w).copy_(x);
  } else {
    xp = x.contiguous();
  }
  const shape& st = xp.strides();
  // every window element lies inside xp: (k - 1) d + (out - 1) s < padded extent
  return xp.make_view({n, c, k.h, k.w, out.h, out.w},
                      {st[0], st[1], st[2] * d.h, st[3] * d.w, st[2] * s.h, st[3] * s.w},
                      xp.storage_offset())
      .contiguous();
}

/// conv2d of a 4-D input on a device (no recording).
template <class T>
tensor<T> device_conv2d(const tensor<T>& x, const tensor<T>& w, const tensor<T>& bias, size2 s,
                        size2 p, size2 d, std::int64_t groups) {
  const std::int64_t n = x.size(0), c = x.size(1), o = w.size(0);
  const size2 k{w.size(2), w.size(3)};
  const size2 out{(x.size(2) + 2 * p.h - d.h * (k.h - 1) - 1) / s.h + 1,
                  (x.size(3) + 2 * p.w - d.w * (k.w - 1) - 1) / s.w + 1};
  const std::int64_t kk = c / groups * k.h * k.w, l = out.h * out.w, og = o / groups;
  const tensor<T> cols = device_conv_columns(x, k, s, p, d, out).view({n, groups, kk, l});
  const tensor<T> w3 = w.contiguous().view({groups, og, kk});
  tensor<T> y = make_tensor<T>({n, groups, og, l}, x.device());
  for (std::int64_t g = 0; g < groups; ++g)  // (og, kk) . (n, kk, l): one strided batched GEMM
    matmul_into(w3.select(0, g).unsqueeze(0).expand({n, og, kk}), cols.select(1, g),
                y.select(1, g), T(1), T(0));
  y = y.view({n, o, out.h, out.w});
  if (bias.defined()) y += bias.view({1, o, 1, 1});
  return y;
}

/// The gradients of device_conv2d for dy (N, O, oh, ow): dx (reads w) and dw (reads x), as
/// asked; x_shape and w_shape are the 4-D shapes of input and weight.
template <class T>
std::pair<tensor<T>, tensor<T>> device_conv2d_backward(const tensor<T>& x, const tensor<T>& w,
                                                       const tensor<T>& dy, const shape& x_shape,
                                                       const shape& w_shape, size2 s, size2 p,
                                                       size2 d, std::int64_t groups, bool need_x,
                                                       bool need_w) {
  const std::int64_t n = x_shape[0], c = x_shape[1], h = x_shape[2], wd = x_shape[3];
  const std::int64_t o = w_shape[0];
  const size2 k{w_shape[2], w_shape[3]};
  const size2 out{dy.size(2), dy.size(3)};
  const std::int64_t l = out.h * out.w, og = o / groups;
  const tensor<T> g3 = dy.contiguous().view({n, groups, og, l});
  tensor<T> gx, gw;
  if (need_w) {
    const std::int64_t kk = c / groups * k.h * k.w;
    const tensor<T> cols = device_conv_columns(x, k, s, p, d, out).view({n, groups, kk, l});
    gw = make_tensor<T>({groups, og, kk}, dy.device());
    for (std::int64_t g = 0; g < groups; ++g) {
      tensor<T> per = make_tensor<T>({n, og, kk}, dy.device());
      matmul_into(g3.select(1, g), cols.select(1, g).transpose(1, 2), per, T(1), T(0));
      gw.select(0, g).copy_(ember::sum(per, 0));
    }
    gw = gw.view(w_shape);
  }
  if (need_x) {
    const std::int64_t cg = c / groups, kk = cg * k.h * k.w;
    const tensor<T> w3 = w.contiguous().view({groups, og, kk});
    tensor<T> gcols = make_tensor<T>({n, groups, kk, l}, dy.device());
    for (std::int64_t g = 0; g < groups; ++g)  // (kk, og) . (n, og, l)
      matmul_into(w3.select(0, g).transpose(0, 1).unsqueeze(0).expand({n, kk, og}),
                  g3.select(1, g), gcols.select(1, g), T(1), T(0));
    const tensor<T> gc6 = gcols.view({n, c, k.h, k.w, out.h, out.w});
    tensor<T> gxp = make_tensor<T>({n, c, h + 2 * p.h, wd + 2 * p.w}, dy.device());
    gxp.zero_();
    for (std::int64_t i = 0; i < k.h; ++i)
      for (std::int64_t j = 0; j < k.w; ++j)
        gxp.slice(2, i * d.h, i * d.h + (out.h - 1) * s.h + 1, s.h)
            .slice(3, j * d.w, j * d.w + (out.w - 1) * s.w + 1, s.w) += gc6.select(2, i).select(2, j);
    gx = gxp.slice(2, p.h, p.h + h).slice(3, p.w, p.w + wd).contiguous();
  }
  return {gx, gw};
}

/// Note [Conv backward]: one node for the whole op (the rank-adapting views are not recorded).
/// For y = conv2d(x, w): dx = conv_transpose2d(dy, w) onto x's size, dw = conv2d_weight_grad(x,
/// dy), db = sum of dy over batch and space. conv_transpose2d is conv2d's adjoint, so for
/// y = conv_transpose2d(x, w): dx = conv2d(dy, w), cut to x's size (with output_padding not
/// below the stride the convolution sees extra rows), and dw = conv2d_weight_grad with the
/// roles of input and output swapped: conv2d_weight_grad(dy, x). Only the tensors a needed
/// gradient reads are saved. Not twice differentiable.
template <class T>
tensor<T> conv_backward_node(const conv_args& a, const tensor<T>& x, const tensor<T>& w,
                             const tensor<T>& bias, tensor<T> y, bool unbatched) {
  const bool need_x = x.requires_grad(), need_w = w.requires_grad();
  const bool need_b = bias.defined() && bias.requires_grad();
  // dx reads w, dw reads x
  const autograd::detail::saved<T> sx(need_w ? x : tensor<T>()), sw(need_x ? w : tensor<T>());
  std::string name = std::string(a.op) + "_backward";
  const shape xs = x.shape(), ws = w.shape();
  return autograd::detail::record<T>(
      name, std::move(y), {x, w, bias},
      [sx, sw, a, xs, ws, unbatched, need_x, need_w, need_b, name](const tensor<T>& g) {
        no_grad_guard ng;
        const tensor<T> g4 = as_nchw(g, a.sd, unbatched).contiguous();
        const shape ws4 = a.sd == 1 ? shape{ws[0], ws[1], 1, ws[2]} : ws;
        tensor<T> gx, gw, gb;
        if (need_x) {
          const tensor<T> w = sw.unpack(name);
          const tensor<T> w4 = a.sd == 1 ? w.unsqueeze(2) : w;
          const size2 in = a.sd == 1 ? size2{1, xs[xs.size() - 1]}
                                     : size2{xs[xs.size() - 2], xs[xs.size() - 1]};
          tensor<T> gx4;
          if (!g4.device().is_cpu()) {  // Note [Device convolution]
            gx4 = device_conv2d_backward(tensor<T>(), w4, g4,
                                         {g4.size(0), w4.size(1) * a.groups, in.h, in.w},
                                         w4.shape(), a.stride, a.padding, a.dilation, a.groups,
                                         true, false)
                      .first;
          } else if (a.transposed) {
            gx4 = conv2d_nchw(g4, w4, tensor<T>(), a.stride, a.padding, a.dilation, a.groups);
            if (gx4.size(2) != in.h || gx4.size(3) != in.w)
              gx4 = gx4.slice(2, 0, in.h).slice(3, 0, in.w).contiguous();
          } else {
            gx4 = conv_transpose2d_nchw(g4, w4, tensor<T>(), a.stride, a.padding, a.dilation,
                                        a.groups, in);
          }
          gx = gx4.view(xs);
        }
        if (need_w) {
          const tensor<T> x4 = as_nchw(sx.unpack(name), a.sd, unbatched);
          if (!g4.device().is_cpu()) {  // Note [Device convolution]
            gw = device_conv2d_backward(x4, tensor<T>(), g4, x4.shape(), ws4, a.stride,
                                        a.padding, a.dilation, a.groups, false, true)
                     .second.view(ws);
          } else
          gw = (a.transposed ? conv2d_weight_grad(g4, x4, ws4, a.stride, a.padding, a.dilation, a.groups)
                             : conv2d_weight_grad(x4, g4, ws4, a.stride, a.padding, a.dilation, a.groups))
                   .view(ws);
        }
        if (need_b) gb = channel_sum(g4);
        return std::vector<tensor<T>>{gx, gw, gb};
      });
}

template <class T>
tensor<T> conv_untraced(const conv_args& a, const tensor<T>& x, const tensor<T>& w, const tensor<T>& bias);

/// conv1d/conv2d/conv_transpose*d for any accepted rank: checks, views the input as 4-D
/// (unbatched inputs get a batch of 1, 1-D ones a height of 1), runs, views the result back,
/// and records the backward node (Note [Conv backward]).
template <class T>
tensor<T> conv_entry(const conv_args& a, const tensor<T>& x, const tensor<T>& w, const tensor<T>& bias) {
  const jit::detail::op_scope traced;
  tensor<T> y = conv_untraced(a, x, w, bias);
  if (traced) {
    check(a.sd == 2 && !a.transposed && x.dim() == 4, errc::not_implemented,
          "jit::trace: ", a.op, " on an input of shape ", x.shape(),
          " cannot be traced (conv2d on (N, C, H, W) inputs can)");
    tensor<T> b = bias;
    if (!b.defined()) b = make_tensor<T>({w.size(0)}).zero_();
    traced.record(op::conv2d, y,
                  {{"stride", std::vector<std::int64_t>{a.stride.h, a.stride.w}},
                   {"padding", std::vector<std::int64_t>{a.padding.h, a.padding.w}},
                   {"dilation", std::vector<std::int64_t>{a.dilation.h, a.dilation.w}},
                   {"groups", a.groups}},
                  x, w, b);
  }
  return y;
}

template <class T>
tensor<T> conv_untraced(const conv_args& a, const tensor<T>& x, const tensor<T>& w, const tensor<T>& bias) {
  const size2 out = check_conv(a, x, w, bias);
  const bool unbatched = x.dim() == a.sd + 1;
  tensor<T> y;
  {
    no_grad_guard ng;
    const tensor<T> x4 = as_nchw(x, a.sd, unbatched);
    const tensor<T> w4 = a.sd == 1 ? w.unsqueeze(2) : w;
    if (!x4.device().is_cpu())  // Note [Device convolution]
      y = device_conv2d(x4, w4, bias, a.stride, a.padding, a.dilation, a.groups);
    else
      y = a.transposed ? conv_transpose2d_nchw(x4, w4, bias, a.stride, a.padding, a.dilation, a.groups, out)
                       : conv2d_nchw(x4, w4, bias, a.stride, a.padding, a.dilation, a.groups);
    if (a.sd == 1) y = y.squeeze(2);
    if (unbatched) y = y.squeeze(0);
  }
  if (!autograd::detail::any_requires_grad(x, w, bias)) return y;
  return conv_backward_node(a, x, w, bias, std::move(y), unbatched);
}

}  // namespace detail

namespace nn::functional {

/// Options of conv2d (fields in PyTorch's order; an undefined bias means none).
template <class T = float>
struct conv2d_options {
  tensor<T> bias = {};
  size2 stride = 1;
  size2 padding = 0;
  size2 dilation = 1;
  std::int64_t groups = 1;
};

/// Options of conv1d.
template <class T = float>
struct conv1d_options {
  tensor<T> bias = {};
  std::int64_t stride = 1;
  std::int64_t padding = 0;
  std::int64_t dilation = 1;
  std::int64_t groups = 1;
};

/// Options of conv_transpose2d (PyTorch's order: output_padding, then groups, then dilation).
template <class T = float>
struct conv_transpose2d_options {
  tensor<T> bias = {};
  size2 stride = 1;
  size2 padding = 0;
  size2 output_padding = 0;
  std::int64_t groups = 1;
  size2 dilation = 1;
};

/// Options of conv_transpose1d.
template <class T = float>
struct conv_transpose1d_options {
  tensor<T> bias = {};
  std::int64_t stride = 1;
  std::int64_t padding = 0;
  std::int64_t output_padding = 0;
  std::int64_t groups = 1;
  std::int64_t dilation = 1;
};

/// 2-D convolution (cross-correlation, as PyTorch) of x (N, C, H, W) or (C, H, W) with weight
/// (out, C/groups, kh, kw): output (N, out, H', W'), H' = (H + 2*pad - dil*(kh-1) - 1)/stride + 1.
///   auto y = F::conv2d(x, w, {.bias = b, .stride = 2, .padding = {1, 1}});
template <operand E>
tensor<value_type_t<E>> conv2d(const E& x, const tensor<value_type_t<E>>& weight,
                               const std::type_identity_t<conv2d_options<value_type_t<E>>>& opt = {}) {
  return detail::conv_entry<value_type_t<E>>(
      {"conv2d", 2, false, opt.stride, opt.padding, opt.dilation, 0, opt.groups},
      detail::materialize(x), weight, opt.bias);
}

/// 1-D convolution of x (N, C, L) or (C, L) with weight (out, C/groups, k).
///   auto y = F::conv1d(x, w, {.stride = 2, .padding = 1});
template <operand E>
tensor<value_type_t<E>> conv1d(const E& x, const tensor<value_type_t<E>>& weight,
                               const std::type_identity_t<conv1d_options<value_type_t<E>>>& opt = {}) {
  return detail::conv_entry<value_type_t<E>>(
      {"conv1d", 1, false, {1, opt.stride}, {0, opt.padding}, {1, opt.dilation}, 0, opt.groups},
      detail::materialize(x), weight, opt.bias);
}

/// Transposed 2-D convolution ("deconvolution", the adjoint of conv2d) of x (N, C, H, W) or
/// (C, H, W) with weight (C, out/groups, kh, kw): output (N, out, H', W'),
/// H' = (H - 1)*stride - 2*pad + dil*(kh-1) + output_padding + 1.
///   auto up = F::conv_transpose2d(x, w, {.stride = 2, .padding = 1, .output_padding = 1});
template <operand E>
tensor<value_type_t<E>> conv_transpose2d(
    const E& x, const tensor<value_type_t<E>>& weight,
    const std::type_identity_t<conv_transpose2d_options<value_type_t<E>>>& opt = {}) {
  return detail::conv_entry<value_type_t<E>>(
      {"conv_transpose2d", 2, true, opt.stride, opt.padding, opt.dilation, opt.output_padding, opt.groups},
      detail::materialize(x), weight, opt.bias);
}

/// Transposed 1-D convolution of x (N, C, L) or (C, L) with weight (C, out/groups, k).
///   auto up = F::conv_transpose1d(x, w, {.stride = 2});
template <operand E>
tensor<value_type_t<E>> conv_transpose1d(
    const E& x, const tensor<value_type_t<E>>& weight,
    const std::type_identity_t<conv_transpose1d_options<value_type_t<E>>>& opt = {}) {
  return detail::conv_entry<value_type_t<E>>(
      {"conv_transpose1d", 1, true, {1, opt.stride}, {0, opt.padding}, {1, opt.dilation},
       {0, opt.output_padding}, opt.groups},
      detail::materialize(x), weight, opt.bias);
}

}  // namespace nn::functional

// em::conv2d etc., as libtorch's torch::conv2d next to torch::nn::functional::conv2d
using nn::functional::conv1d;
using nn::functional::conv2d;
using nn::functional::conv_transpose1d;
using nn::functional::conv_transpose2d;

}  // namespace ember
