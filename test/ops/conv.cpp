// Tests of include/ember/ops/conv.hpp: conv2d against the PyTorch oracle (f64 and f32, with
// the detail input/weight gradients against the oracle's gradients); conv1d, conv2d with
// groups/dilation/1x1/unbatched inputs and conv_transpose1d/2d against
// test/data/oracle/ops/conv_pool_extra.safetensors (test/tools/gen_conv_pool_cases.py); a
// sweep against a direct long-double convolution written here (non-contiguous inputs, both
// threading paths, expression inputs); identities (delta kernel, adjointness); every error.
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/ops/conv.hpp>

#include <ember/core/random.hpp>
#include <ember/expr/operators.hpp>
#include <ember/ops/factory.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace em = ember;
namespace et = ember_test;
namespace F = ember::nn::functional;
using et::json::value;

namespace {

template <class T>
constexpr double tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;

/// Row-major values of any tensor, read through its strides.
template <class T>
std::vector<double> values(const em::tensor<T>& t) {
  std::vector<double> out;
  if (t.numel() == 0) return out;
  const auto& s = t.shape();
  std::vector<std::int64_t> idx(s.size(), 0);
  for (std::int64_t n = 0; n < t.numel(); ++n) {
    std::int64_t off = 0;
    for (std::size_t d = 0; d < s.size(); ++d) off += idx[d] * t.strides()[d];
    out.push_back(static_cast<double>(t.data()[off]));
    for (std::size_t d = s.size(); d-- > 0;) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/// |got - want| <= tol * (1 + |want|) elementwise, shapes equal.
template <class T>
void check_close(const em::tensor<T>& got, const em::shape& shape, const std::vector<double>& want,
                 double eps = tol<T>) {
  REQUIRE(got.shape() == shape);
  const auto g = values(got);
  REQUIRE(g.size() == want.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (!(std::abs(g[i] - want[i]) <= eps * (1 + std::abs(want[i])))) {
      INFO("element " << i << ": got " << g[i] << ", want " << want[i]);
      CHECK(std::abs(g[i] - want[i]) <= eps * (1 + std::abs(want[i])));
    }
  }
}

template <class T, class U>
void check_close(const em::tensor<T>& got, const em::tensor<U>& want, double eps = tol<T>) {
  check_close(got, want.shape(), values(want), eps);
}

/// An integer or [h, w] from the case arguments.
em::size2 size_arg(const value& v) {
  if (v.is_array()) {
    const auto l = v.as_int_list();
    return {l.at(0), l.at(1)};
  }
  return v.as_int();
}

/// A float input stored as F32 (extra file) or as the file's dtype (shared oracle), as T.
template <class T>
em::tensor<T> input(const et::st_file& f, const std::string& name) {
  if (f.at(name).dtype == "F32") return f.get<float>(name).template to<T>();
  return f.get<T>(name);
}

// ---- reference convolution in long double ------------------------------------------------------

struct conv_cfg {
  em::shape x, w;  // (N, C, H, W) and (O, C/g, kh, kw), or (C, O/g, kh, kw) when transposed
  em::size2 stride = 1, padding = 0, dilation = 1, output_padding = 0;
  std::int64_t groups = 1;
  bool bias = true;
  bool transposed = false;
};

/// Direct convolution (or transposed convolution) of row-major x, w, b.
std::vector<double> ref_conv(const conv_cfg& c, const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>& b, bool transposed, em::shape& out_shape) {
  const std::int64_t n = c.x[0], ci = c.x[1], h = c.x[2], wd = c.x[3], kh = c.w[2], kw = c.w[3];
  const std::int64_t g = c.groups, cig = ci / g;
  const std::int64_t o = transposed ? c.w[1] * g : c.w[0], og = o / g;
  const auto [sh, sw] = c.stride;
  const auto [ph, pw] = c.padding;
  const auto [dh, dw] = c.dilation;
  std::int64_t oh, ow;
  if (transposed) {
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + c.output_padding.h + 1;
    ow = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + c.output_padding.w + 1;
  } else {
    oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  }
  out_shape = {n, o, oh, ow};
  std::vector<long double> acc(static_cast<std::size_t>(n * o * oh * ow), 0.0L);
  auto at = [](std::int64_t a, std::int64_t b2, std::int64_t c2, std::int64_t d, std::int64_t B,
               std::int64_t C, std::int64_t D) { return static_cast<std::size_t>(((a * B + b2) * C + c2) * D + d); };
  for (std::int64_t in = 0; in < n; ++in)
    for (std::int64_t gi = 0; gi < g; ++gi)
      for (std::int64_t oc = 0; oc < og; ++oc)
        for (std::int64_t ic = 0; ic < cig; ++ic)
          for (std::int64_t i = 0; i < kh; ++i)
            for (std::int64_t j = 0; j < kw; ++j) {
              const long double wv = transposed
                  ? w[at(gi * cig + ic, oc, i, j, og, kh, kw)]
                  : w[at(gi * og + oc, ic, i, j, cig, kh, kw)];
              if (transposed) {
                for (std::int64_t y = 0; y < h; ++y)
                  for (std::int64_t xx = 0; xx < wd; ++xx) {
                    const std::int64_t yy = y * sh - ph + i * dh, xo = xx * sw - pw + j * dw;
                    if (yy < 0 || yy >= oh || xo < 0 || xo >= ow) continue;
                    acc[at(in, gi * og + oc, yy, xo, o, oh, ow)] += wv * x[at(in, gi * cig + ic, y, xx, ci, h, wd)];
                  }
              } else {
                for (std::int64_t y = 0; y < oh; ++y)
                  for (std::int64_t xx = 0; xx < ow; ++xx) {
                    const std::int64_t yi = y * sh - ph + i * dh, xi = xx * sw - pw + j * dw;
                    if (yi < 0 || yi >= h || xi < 0 || xi >= wd) continue;
                    acc[at(in, gi * og + oc, y, xx, o, oh, ow)] += wv * x[at(in, gi * cig + ic, yi, xi, ci, h, wd)];
                  }
              }
            }
  std::vector<double> out(acc.size());
  for (std::size_t k = 0; k < acc.size(); ++k) {
    const std::int64_t oc = static_cast<std::int64_t>(k) / (oh * ow) % o;
    out[k] = static_cast<double>(acc[k] + (b.empty() ? 0.0L : b[static_cast<std::size_t>(oc)]));
  }
  return out;
}

/// conv2d's weight gradient, directly: gw[o, c, i, j] = sum of u[n, o, y, x] times the pixel
/// under tap (i, j) of window (y, x) in channel c of o's group.
std::vector<double> ref_weight_grad(const conv_cfg& c, const std::vector<double>& x, const std::vector<double>& u,
                                    const em::shape& u_shape) {
  const std::int64_t n = c.x[0], ci = c.x[1], h = c.x[2], wd = c.x[3];
  const std::int64_t o = c.w[0], cg = c.w[1], kh = c.w[2], kw = c.w[3], og = o / c.groups;
  const std::int64_t oh = u_shape[2], ow = u_shape[3];
  std::vector<double> gw;
  for (std::int64_t oc = 0; oc < o; ++oc)
    for (std::int64_t cc = 0; cc < cg; ++cc)
      for (std::int64_t i = 0; i < kh; ++i)
        for (std::int64_t j = 0; j < kw; ++j) {
          long double acc = 0;
          const std::int64_t chan = oc / og * cg + cc;
          for (std::int64_t in = 0; in < n; ++in)
            for (std::int64_t y = 0; y < oh; ++y)
              for (std::int64_t xx = 0; xx < ow; ++xx) {
                const std::int64_t yi = y * c.stride.h - c.padding.h + i * c.dilation.h;
                const std::int64_t xi = xx * c.stride.w - c.padding.w + j * c.dilation.w;
                if (yi < 0 || yi >= h || xi < 0 || xi >= wd) continue;
                acc += static_cast<long double>(u[static_cast<std::size_t>(((in * o + oc) * oh + y) * ow + xx)]) *
                       x[static_cast<std::size_t>(((in * ci + chan) * h + yi) * wd + xi)];
              }
          gw.push_back(static_cast<double>(acc));
        }
  return gw;
}

/// A non-contiguous view with x's values and shape: a transposed copy transposed back, or a
/// slice with step 2 of a larger tensor.
template <class T>
em::tensor<T> strided_copy(const em::tensor<T>& x, int kind) {
  if (kind == 1) return x.transpose(2, 3).contiguous().transpose(2, 3);
  if (kind == 2) {
    em::shape big = x.shape();
    big[1] *= 2;
    em::tensor<T> b = em::zeros<T>(big);
    b.slice(1, 0, big[1], 2).copy_(x);
    return b.slice(1, 0, big[1], 2);
  }
  return x;
}

// ---- oracle cases ---------------------------------------------------------------------------------

template <class T>
void run_oracle_conv2d() {
  const et::st_file f = et::read_safetensors(et::test_data(std::string("oracle/ops/") +
                                                    (std::is_same_v<T, float> ? "f32/" : "") + "conv2d.safetensors"));
  const int cases = std::stoi(f.meta("num_cases"));
  REQUIRE(cases == 5);
  for (int i = 0; i < cases; ++i) {
    const std::string p = "case" + std::to_string(i);
    const value meta = et::json::parse(f.meta(p));
    INFO(p << ": " << meta.at("expr").as_string());
    const value& a = meta.at("args");
    const auto x = f.get<T>(p + ".in0"), w = f.get<T>(p + ".in1");
    const bool has_bias = a.at("bias").as_bool();
    const em::tensor<T> b = has_bias ? f.get<T>(p + ".in2") : em::tensor<T>();
    const em::size2 s = size_arg(a.at("stride")), pd = size_arg(a.at("padding")), d = size_arg(a.at("dilation"));
    const std::int64_t g = a.at("groups").as_int();
    const auto y = F::conv2d(x, w, {.bias = b, .stride = s, .padding = pd, .dilation = d, .groups = g});
    check_close(y, f.get<T>(p + ".out"));
    // gradients: the detail helpers autograd will call
    const auto u = f.get<T>(p + ".upstream");
    const auto gx = em::detail::conv_transpose2d_nchw(u, w, em::tensor<T>(), s, pd, d, g,
                                                      em::size2{x.size(2), x.size(3)});
    check_close(gx, f.get<T>(p + ".grad0"));
    const auto gw = em::detail::conv2d_weight_grad(x, u, w.shape(), s, pd, d, g);
    check_close(gw, f.get<T>(p + ".grad1"));
    if (has_bias) {
      const auto uv = values(u);
      std::vector<double> gb(static_cast<std::size_t>(w.size(0)), 0.0);
      const std::int64_t plane = u.size(2) * u.size(3);
      for (std::size_t k = 0; k < uv.size(); ++k)
        gb[static_cast<std::size_t>(static_cast<std::int64_t>(k) / plane % w.size(0))] += uv[k];
      check_close(f.get<T>(p + ".grad2"), b.shape(), gb);
    }
  }
}

template <class T>
void run_extra_cases() {
  const et::st_file f = et::read_safetensors(et::test_data("oracle/ops/conv_pool_extra.safetensors"));
  int seen = 0;
  for (const auto& [name, text] : f.metadata) {
    const value meta = et::json::parse(text);
    const std::string op = meta.at("op").as_string();
    if (op.rfind("conv", 0) != 0) continue;
    ++seen;
    INFO(name << " (" << op << "): " << text);
    const value& a = meta.at("args");
    const auto x = input<T>(f, name + ".in0"), w = input<T>(f, name + ".in1");
    const em::tensor<T> b = a.at("bias").as_bool() ? input<T>(f, name + ".in2") : em::tensor<T>();
    const auto want = f.get<double>(name + ".out");
    const std::int64_t g = a.at("groups").as_int();
    em::tensor<T> y;
    if (op == "conv2d") {
      const em::size2 s = size_arg(a.at("stride")), pd = size_arg(a.at("padding")), d = size_arg(a.at("dilation"));
      y = F::conv2d(x, w, {.bias = b, .stride = s, .padding = pd, .dilation = d, .groups = g});
      if (f.contains(name + ".grad0")) {
        const auto u = input<T>(f, name + ".upstream");
        check_close(em::detail::conv_transpose2d_nchw(u, w, em::tensor<T>(), s, pd, d, g,
                                                      em::size2{x.size(2), x.size(3)}),
                    f.get<double>(name + ".grad0"));
        check_close(em::detail::conv2d_weight_grad(x, u, w.shape(), s, pd, d, g), f.get<double>(name + ".grad1"));
      }
    } else if (op == "conv1d") {
      y = F::conv1d(x, w, {.bias = b, .stride = a.at("stride").as_int(), .padding = a.at("padding").as_int(),
                           .dilation = a.at("dilation").as_int(), .groups = g});
    } else if (op == "conv_transpose2d") {
      const em::size2 s = size_arg(a.at("stride")), pd = size_arg(a.at("padding")), d = size_arg(a.at("dilation"));
      const em::size2 q = size_arg(a.at("output_padding"));
      y = F::conv_transpose2d(x, w, {.bias = b, .stride = s, .padding = pd, .output_padding = q, .groups = g, .dilation = d});
      if (f.contains(name + ".grad0")) {
        // the adjoint pair: d/dx of conv_transpose2d is conv2d, d/dw is conv2d's weight gradient
        // with the roles of input and output exchanged
        const auto u = input<T>(f, name + ".upstream");
        // (cropped: with output_padding >= stride, conv2d's windows run past the input)
        const auto gx = F::conv2d(u, w, {.stride = s, .padding = pd, .dilation = d, .groups = g});
        check_close(gx.narrow(2, 0, x.size(2)).narrow(3, 0, x.size(3)), f.get<double>(name + ".grad0"));
        check_close(em::detail::conv2d_weight_grad(u, x, w.shape(), s, pd, d, g), f.get<double>(name + ".grad1"));
      }
    } else if (op == "conv_transpose1d") {
      y = F::conv_transpose1d(x, w, {.bias = b, .stride = a.at("stride").as_int(), .padding = a.at("padding").as_int(),
                                     .output_padding = a.at("output_padding").as_int(), .groups = g,
                                     .dilation = a.at("dilation").as_int()});
    } else {
      FAIL("unknown op " << op);
    }
    check_close(y, want);
  }
  CHECK(seen == 18);
}

}  // namespace

TEST_CASE("conv2d matches the PyTorch oracle, with its input and weight gradients", "[conv][oracle]") {
  SECTION("float64") { run_oracle_conv2d<double>(); }
  SECTION("float32") { run_oracle_conv2d<float>(); }
}

TEST_CASE("conv1d, conv2d and conv_transpose1d/2d match PyTorch on the extra cases", "[conv][oracle]") {
  SECTION("float64") { run_extra_cases<double>(); }
  SECTION("float32") { run_extra_cases<float>(); }
}

TEST_CASE("conv2d and conv_transpose2d match a direct convolution", "[conv]") {
  em::generator gen(1234);
  const std::vector<conv_cfg> cfgs = {
      {{1, 1, 1, 1}, {1, 1, 1, 1}},                                   // every size 1
      {{3, 3, 7, 5}, {4, 3, 3, 3}, 1, 1},                             // batch 3 >= threads
      {{1, 4, 9, 11}, {6, 2, 3, 2}, {2, 1}, {1, 0}, {1, 2}, 0, 2},    // batch 1: GEMM threads
      {{5, 6, 6, 6}, {6, 1, 3, 3}, 2, 1, 1, 0, 6},                    // depthwise, odd batch
      {{2, 5, 8, 8}, {7, 5, 1, 1}, 1, 0, 1, 0, 1, false},             // 1×1 direct GEMM
      {{4, 2, 13, 3}, {3, 2, 5, 1}, {3, 1}, {2, 0}, 1, 0, 1},        // tall kernel, odd sizes
      {{1, 64, 23, 40}, {3, 64, 3, 3}, 1, 1},                         // 2 bands of window rows
      {{2, 60, 45, 50}, {2, 60, 3, 3}, 2, 1},                         // bands with stride 2
      {{2, 3, 6, 7}, {3, 4, 3, 3}, 2, 1, 1, 1, 1, true, true},        // transposed: output_padding 1
      {{1, 4, 20, 30}, {4, 64, 3, 3}, 2, 1, 1, 1, 1, true, true},     // transposed, 2 bands
      {{2, 4, 5, 5}, {4, 3, 1, 1}, 1, 0, 1, 0, 2, true, true},        // transposed 1×1 direct, groups
      {{3, 2, 4, 3}, {2, 2, 3, 2}, {1, 2}, {2, 0}, {2, 1}, {1, 1}, 1, false, true},  // op < dilation
  };
  for (std::size_t k = 0; k < cfgs.size(); ++k)
    for (int kind = 0; kind < 3; ++kind) {
      const conv_cfg& c = cfgs[k];
      const bool transposed = c.transposed;
      INFO("config " << k << ", layout " << kind);
      const auto x = em::randn<double>(c.x, gen), w = em::randn<double>(c.w, gen);
      const std::int64_t o = transposed ? c.w[1] * c.groups : c.w[0];
      const auto b = c.bias ? em::randn<double>({o}, gen) : em::tensor<double>();
      em::shape s;
      const auto want = ref_conv(c, values(x), values(w), c.bias ? values(b) : std::vector<double>{}, transposed, s);
      const auto xv = strided_copy(x, kind);
      if (kind && k != 0) REQUIRE_FALSE(xv.is_contiguous());
      if (transposed) {
        check_close(F::conv_transpose2d(xv, w, {.bias = b, .stride = c.stride, .padding = c.padding,
                                                .output_padding = c.output_padding, .groups = c.groups,
                                                .dilation = c.dilation}),
                    s, want);
      } else {
        check_close(F::conv2d(xv, w, {.bias = b, .stride = c.stride, .padding = c.padding,
                                      .dilation = c.dilation, .groups = c.groups}),
                    s, want);
      }
      if (!transposed && kind == 0) {
        // the gradients autograd will use: input (a transposed convolution back to x's size)
        // and weight, against direct formulas
        const auto u = em::randn<double>(s, gen);
        const em::size2 natural{(s[2] - 1) * c.stride.h - 2 * c.padding.h + c.dilation.h * (c.w[2] - 1) + 1,
                                (s[3] - 1) * c.stride.w - 2 * c.padding.w + c.dilation.w * (c.w[3] - 1) + 1};
        conv_cfg t{s, c.w, c.stride, c.padding, c.dilation, {c.x[2] - natural.h, c.x[3] - natural.w}, c.groups, false};
        em::shape gs;
        const auto want_gx = ref_conv(t, values(u), values(w), {}, true, gs);
        REQUIRE(gs == c.x);
        check_close(em::detail::conv_transpose2d_nchw(u, w, em::tensor<double>(), c.stride, c.padding, c.dilation,
                                                      c.groups, em::size2{c.x[2], c.x[3]}),
                    c.x, want_gx);
        check_close(em::detail::conv2d_weight_grad(x, u, c.w, c.stride, c.padding, c.dilation, c.groups), c.w,
                    ref_weight_grad(c, values(x), values(u), s));
      }
      // float: same values to float rounding (sums of K products of N(0, 1) values)
      const auto xf = strided_copy(x.to<float>(), kind);
      const auto wf = w.to<float>();
      const auto bf = c.bias ? b.to<float>() : em::tensor<float>();
      if (!transposed)
        check_close(F::conv2d(xf, wf, {.bias = bf, .stride = c.stride, .padding = c.padding,
                                       .dilation = c.dilation, .groups = c.groups}),
                    s, want, 1e-5 * std::sqrt(static_cast<double>(c.w[1] * c.w[2] * c.w[3])));
    }
}

TEST_CASE("conv2d gives the same results on one thread and on the pool", "[conv]") {
  const int before = em::get_num_threads();
  em::generator gen(7);
  const auto x = em::randn<float>({4, 3, 10, 9}, gen), w = em::randn<float>({5, 3, 3, 3}, gen);
  const auto x1 = em::randn<float>({1, 3, 10, 9}, gen);
  em::set_num_threads(1);
  const auto a = F::conv2d(x, w, {.padding = 1}), a1 = F::conv2d(x1, w, {.padding = 1});
  em::set_num_threads(2);
  const auto b = F::conv2d(x, w, {.padding = 1}), b1 = F::conv2d(x1, w, {.padding = 1});
  em::set_num_threads(before);
  check_close(b, a);
  check_close(b1, a1);
}

TEST_CASE("conv2d identities: delta kernel, unbatched input, expression input, empty batch", "[conv]") {
  em::generator gen(99);
  const auto x = em::randn<double>({2, 3, 5, 6}, gen);
  // a delta kernel (1 at the center of channel c -> output c) with "same" padding is the identity
  auto w = em::zeros<double>({3, 3, 3, 3});
  for (std::int64_t c = 0; c < 3; ++c) w.data()[((c * 3 + c) * 3 + 1) * 3 + 1] = 1;
  check_close(F::conv2d(x, w, {.padding = 1}), x, 0.0);
  // a delta kernel at the corner with stride 2 picks every other pixel
  auto wc = em::zeros<double>({3, 3, 2, 2});
  for (std::int64_t c = 0; c < 3; ++c) wc.data()[(c * 3 + c) * 4] = 1;
  check_close(F::conv2d(x, wc, {.stride = 2}), x.slice(2, 0, 4, 2).slice(3, 0, 6, 2), 0.0);

  const auto w2 = em::randn<double>({4, 3, 3, 2}, gen), b = em::randn<double>({4}, gen);
  const auto batched = F::conv2d(x, w2, {.bias = b, .stride = {1, 2}, .padding = {1, 0}});
  const auto single = F::conv2d(x[1], w2, {.bias = b, .stride = {1, 2}, .padding = {1, 0}});
  check_close(single, batched[1]);
  check_close(em::conv2d(x * 2.0, w2), F::conv2d(em::tensor<double>(x * 2.0), w2), 0.0);

  const auto empty = F::conv2d(em::zeros<double>({0, 3, 5, 6}), w2, {.bias = b});
  CHECK(empty.shape() == em::shape{0, 4, 3, 5});
  const auto none = F::conv2d(x, em::zeros<double>({0, 3, 3, 3}));
  CHECK(none.shape() == em::shape{2, 0, 3, 4});
}

TEST_CASE("conv_transpose2d is the adjoint of conv2d", "[conv]") {
  // <conv2d(x, w), y> == <x, conv_transpose2d(y, w)> with the output_padding that restores x's size
  em::generator gen(5);
  struct cfg { em::shape x, w; em::size2 s, p, d; std::int64_t g; };
  for (const cfg& c : {cfg{{2, 4, 9, 8}, {6, 2, 3, 3}, 2, 1, 1, 2}, cfg{{1, 3, 7, 10}, {2, 3, 2, 3}, {3, 2}, {1, 0}, {1, 2}, 1}}) {
    const auto x = em::randn<double>(c.x, gen), w = em::randn<double>(c.w, gen);
    const auto y = F::conv2d(x, w, {.stride = c.s, .padding = c.p, .dilation = c.d, .groups = c.g});
    const auto v = em::randn<double>(y.shape(), gen);
    const em::size2 q{(c.x[2] + 2 * c.p.h - c.d.h * (c.w[2] - 1) - 1) % c.s.h,
                      (c.x[3] + 2 * c.p.w - c.d.w * (c.w[3] - 1) - 1) % c.s.w};
    const auto xt = F::conv_transpose2d(v, w, {.stride = c.s, .padding = c.p, .output_padding = q,
                                              .groups = c.g, .dilation = c.d});
    REQUIRE(xt.shape() == x.shape());
    double lhs = 0, rhs = 0;
    const auto yv = values(y), vv = values(v), xv = values(x), tv = values(xt);
    for (std::size_t i = 0; i < yv.size(); ++i) lhs += yv[i] * vv[i];
    for (std::size_t i = 0; i < xv.size(); ++i) rhs += xv[i] * tv[i];
    CHECK(std::abs(lhs - rhs) <= 1e-10 * (1 + std::abs(lhs)));
  }
}

TEST_CASE("conv options: contract spelling, defaults, size2", "[conv]") {
  auto img = em::randn<float>({2, 4, 8, 8}), cw = em::randn<float>({6, 4, 3, 3});
  auto b6 = em::randn<float>({6});
  auto y = F::conv2d(img, cw, {.bias = b6, .stride = {2, 2}, .padding = {1, 1}, .dilation = 1, .groups = 1});
  CHECK(y.shape() == em::shape{2, 6, 4, 4});
  CHECK(F::conv2d(img, cw).shape() == em::shape{2, 6, 6, 6});
  CHECK(em::conv2d(img, cw, {.padding = 1}).shape() == em::shape{2, 6, 8, 8});
  constexpr em::size2 a = 3, b{2, 5};
  static_assert(a.h == 3 && a.w == 3 && b.h == 2 && b.w == 5 && a != b);
  const std::size_t n = 4;
  const em::size2 c{n, n};
  CHECK(c == em::size2{4});
  CHECK(F::conv1d(em::randn<float>({2, 3, 10}), em::randn<float>({4, 3, 3}), {.stride = 2}).shape() == em::shape{2, 4, 4});
  CHECK(em::conv_transpose2d(img, em::randn<float>({4, 2, 3, 3}), {.stride = 2, .padding = 1, .output_padding = 1}).shape() ==
        em::shape{2, 2, 16, 16});
}

namespace {
/// Runs f, requires an ember::error of category c whose message contains `part`.
template <class F>
void require_error(F f, em::errc c, const std::string& part) {
  try {
    f();
    FAIL("expected an ember::error containing '" << part << "'");
  } catch (const em::error& e) {
    INFO(e.what());
    CHECK(e.category() == c);
    CHECK(std::string(e.what()).find(part) != std::string::npos);
  }
}
}  // namespace

TEST_CASE("conv argument errors name the shapes", "[conv][errors]") {
  const auto x = em::zeros<float>({2, 4, 5, 5}), w = em::zeros<float>({6, 4, 3, 3});
  using em::errc;
  require_error([&] { F::conv2d(em::zeros<float>({4, 5}), w); }, errc::shape, "got shape (4,5)");
  require_error([&] { F::conv2d(em::zeros<float>({1, 2, 4, 5, 5}), w); }, errc::shape, "4-D (N,C,H,W)");
  require_error([&] { F::conv2d(x, em::zeros<float>({6, 4, 3})); }, errc::shape, "weight");
  require_error([&] { F::conv2d(x, em::zeros<float>({6, 3, 3, 3})); }, errc::shape,
                "input of shape (2,4,5,5) has 4 channels, but weight of shape (6,3,3,3) with groups=1 expects 3");
  require_error([&] { F::conv2d(x, em::zeros<float>({6, 2, 3, 3}), {.groups = 4}); }, errc::shape, "expects 8");
  require_error([&] { F::conv2d(x, em::zeros<float>({6, 1, 3, 3}), {.groups = 4}); }, errc::shape,
                "not divisible by groups=4");
  require_error([&] { F::conv2d(x, w, {.groups = 0}); }, errc::value, "groups must be positive");
  require_error([&] { F::conv2d(x, w, {.stride = {1, 0}}); }, errc::value, "stride must be positive, got (1,0)");
  require_error([&] { F::conv2d(x, w, {.stride = -1}); }, errc::value, "stride");
  require_error([&] { F::conv2d(x, w, {.dilation = 0}); }, errc::value, "dilation must be positive");
  require_error([&] { F::conv2d(x, w, {.padding = {0, -1}}); }, errc::value, "padding must be non-negative");
  require_error([&] { F::conv2d(x, em::zeros<float>({6, 4, 6, 3})); }, errc::shape,
                "larger than the padded input (5,5) (input shape (2,4,5,5)");
  require_error([&] { F::conv2d(x, w, {.dilation = 3}); }, errc::shape, "spans (7,7)");
  require_error([&] { F::conv2d(x, em::zeros<float>({6, 4, 0, 3})); }, errc::shape, "empty kernel");
  require_error([&] { F::conv2d(x, w, {.bias = em::zeros<float>({5})}); }, errc::shape, "bias of shape (5)");
  require_error([&] { F::conv2d(x, w, {.bias = em::zeros<float>({6, 1})}); }, errc::shape, "bias");
  require_error([&] { F::conv2d(em::zeros<float>({2, 4, 0, 5}), w, {.padding = 2}); }, errc::shape, "non-empty");
  require_error([&] { F::conv2d(x, em::tensor<float>()); }, errc::value, "defined");
  // conv1d reports 1-D sizes
  const auto x1 = em::zeros<float>({2, 3, 4});
  require_error([&] { F::conv1d(x1, em::zeros<float>({2, 3, 5})); }, errc::shape, "kernel 5 with dilation 1 spans 5");
  require_error([&] { F::conv1d(x1, em::zeros<float>({2, 3, 3, 3})); }, errc::shape, "3-D weight");
  require_error([&] { F::conv1d(x1, em::zeros<float>({2, 3, 3}), {.stride = 0}); }, errc::value, "got 0");
  // conv_transpose2d
  const auto wt = em::zeros<float>({4, 2, 3, 3});
  require_error([&] { F::conv_transpose2d(x, em::zeros<float>({3, 2, 3, 3})); }, errc::shape, "expects 3");
  require_error([&] { F::conv_transpose2d(x, wt, {.stride = 2, .output_padding = 2}); }, errc::value,
                "output_padding (2,2) must be non-negative and smaller than either stride (2,2) or dilation (1,1)");
  require_error([&] { F::conv_transpose2d(x, wt, {.output_padding = -1}); }, errc::value, "output_padding");
  require_error([&] { F::conv_transpose2d(x, wt, {.padding = 4}); }, errc::shape, "empty output");
  require_error([&] { F::conv_transpose2d(x, wt, {.bias = em::zeros<float>({4})}); }, errc::shape,
                "does not match the 2 output channels");
  require_error([&] { F::conv_transpose2d(x, em::zeros<float>({4, 2, 3, 3}), {.groups = 3}); }, errc::shape,
                "not divisible by groups=3");
}
