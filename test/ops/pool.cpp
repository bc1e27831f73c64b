// Tests of include/ember/ops/pool.hpp: max_pool2d and avg_pool2d against the PyTorch oracle
// (f64 and f32, with the detail backward helpers against the oracle's gradients); ceil_mode,
// dilation, NaN/-inf/ties, count_include_pad=false, divisor_override, adaptive average and
// max pooling against test/data/oracle/ops/conv_pool_extra.safetensors
// (test/tools/gen_conv_pool_cases.py); a sweep against direct references written here
// (non-contiguous inputs, many planes for the threaded path); every error.
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/ops/pool.hpp>

#include <ember/core/random.hpp>
#include <ember/expr/operators.hpp>
#include <ember/ops/factory.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

/// |got - want| <= tol * (1 + |want|); NaN and infinities must match exactly.
template <class T>
void check_close(const em::tensor<T>& got, const em::shape& shape, const std::vector<double>& want,
                 double eps = tol<T>) {
  REQUIRE(got.shape() == shape);
  const auto g = values(got);
  REQUIRE(g.size() == want.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    const bool ok = std::isnan(want[i]) ? std::isnan(g[i])
                    : std::isinf(want[i]) ? g[i] == want[i]
                                          : std::abs(g[i] - want[i]) <= eps * (1 + std::abs(want[i]));
    if (!ok) {
      INFO("element " << i << ": got " << g[i] << ", want " << want[i]);
      CHECK(ok);
    }
  }
}

template <class T, class U>
void check_close(const em::tensor<T>& got, const em::tensor<U>& want, double eps = tol<T>) {
  check_close(got, want.shape(), values(want), eps);
}

void check_equal(const em::tensor<std::int64_t>& got, const em::tensor<std::int64_t>& want) {
  REQUIRE(got.shape() == want.shape());
  CHECK(values(got) == values(want));
}

/// An integer, [h, w] or null (0: "not given") from the case arguments.
em::size2 size_arg(const value& v) {
  if (v.is_null()) return 0;
  if (v.is_array()) {
    const auto l = v.as_int_list();
    return {l.at(0), l.at(1)};
  }
  return v.as_int();
}

template <class T>
em::tensor<T> input(const et::st_file& f, const std::string& name) {
  if (f.at(name).dtype == "F32") return f.get<float>(name).template to<T>();
  return f.get<T>(name);
}

/// Runs f, requires an ember::error of category c whose message contains `part`.
template <class Fn>
void require_error(Fn f, em::errc c, const std::string& part) {
  try {
    f();
    FAIL("expected an ember::error containing '" << part << "'");
  } catch (const em::error& e) {
    INFO(e.what());
    CHECK(e.category() == c);
    CHECK(std::string(e.what()).find(part) != std::string::npos);
  }
}

// ---- oracle cases ---------------------------------------------------------------------------------

template <class T>
void run_oracle(const std::string& family) {
  const et::st_file f = et::read_safetensors(et::test_data(
      std::string("oracle/ops/") + (std::is_same_v<T, float> ? "f32/" : "") + family + ".safetensors"));
  const int cases = std::stoi(f.meta("num_cases"));
  REQUIRE(cases >= 3);
  for (int i = 0; i < cases; ++i) {
    const std::string p = "case" + std::to_string(i);
    const value meta = et::json::parse(f.meta(p));
    INFO(p << ": " << meta.at("expr").as_string());
    const value& a = meta.at("args");
    const auto x = f.get<T>(p + ".in0");
    const em::size2 k = size_arg(a.at("kernel_size")), s = size_arg(a.at("stride")), pd = size_arg(a.at("padding"));
    const bool ceil = a.at("ceil_mode").as_bool();
    const auto u = f.get<T>(p + ".upstream");
    if (family == "max_pool2d") {
      const auto [y, idx] = F::max_pool2d_with_indices(x, {.kernel = k, .stride = s, .padding = pd, .ceil_mode = ceil});
      check_close(y, f.get<T>(p + ".out"));
      check_close(F::max_pool2d(x, {.kernel = k, .stride = s, .padding = pd, .ceil_mode = ceil}), y, 0.0);
      check_close(em::detail::max_pool2d_backward(u, idx, x.shape()), f.get<T>(p + ".grad0"));
    } else {
      const F::avg_pool2d_options o{.kernel = k, .stride = s, .padding = pd,
                                    .count_include_pad = a.at("count_include_pad").as_bool(), .ceil_mode = ceil};
      check_close(F::avg_pool2d(x, o), f.get<T>(p + ".out"));
      check_close(em::detail::avg_pool2d_backward(u, x.shape(), o), f.get<T>(p + ".grad0"));
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
    if (op.find("pool") == std::string::npos) continue;
    ++seen;
    INFO(name << " (" << op << "): " << text);
    const value& a = meta.at("args");
    const auto x = input<T>(f, name + ".in0");
    const auto want = f.get<double>(name + ".out");
    const bool grads = f.contains(name + ".grad0");
    const em::tensor<T> u = grads ? input<T>(f, name + ".upstream") : em::tensor<T>();
    if (op == "max_pool2d") {
      const F::max_pool2d_options o{.kernel = size_arg(a.at("kernel")), .stride = size_arg(a.at("stride")),
                                    .padding = size_arg(a.at("padding")), .dilation = size_arg(a.at("dilation")),
                                    .ceil_mode = a.at("ceil_mode").as_bool()};
      const auto [y, idx] = F::max_pool2d_with_indices(x, o);
      check_close(y, want);
      check_equal(idx, f.get<std::int64_t>(name + ".out1"));
      check_close(F::max_pool2d(x, o), want);
      if (grads) check_close(em::detail::max_pool2d_backward(u, idx, x.shape()), f.get<double>(name + ".grad0"));
    } else if (op == "avg_pool2d") {
      const value& dv = a.at("divisor_override");
      const F::avg_pool2d_options o{.kernel = size_arg(a.at("kernel")), .stride = size_arg(a.at("stride")),
                                    .padding = size_arg(a.at("padding")),
                                    .count_include_pad = a.at("count_include_pad").as_bool(),
                                    .ceil_mode = a.at("ceil_mode").as_bool(),
                                    .divisor_override = dv.is_null() ? 0 : dv.as_int()};
      check_close(F::avg_pool2d(x, o), want);
      if (grads) check_close(em::detail::avg_pool2d_backward(u, x.shape(), o), f.get<double>(name + ".grad0"));
    } else if (op == "adaptive_avg_pool2d") {
      check_close(F::adaptive_avg_pool2d(x, {.output_size = size_arg(a.at("output_size"))}), want);
    } else if (op == "adaptive_max_pool2d") {
      const em::size2 size = size_arg(a.at("output_size"));
      const auto [y, idx] = F::adaptive_max_pool2d_with_indices(x, {.output_size = size});
      check_close(y, want);
      check_equal(idx, f.get<std::int64_t>(name + ".out1"));
      check_close(F::adaptive_max_pool2d(x, {.output_size = size}), want);
      if (grads) check_close(em::detail::max_pool2d_backward(u, idx, x.shape()), f.get<double>(name + ".grad0"));
    } else {
      FAIL("unknown op " << op);
    }
  }
  CHECK(seen == 16);
}

// ---- direct references -------------------------------------------------------------------------

struct pool_cfg {
  em::shape x;
  em::size2 k, s, p, d = 1;
  bool ceil = false;
};

/// Output extent by counting window starts: floor mode keeps the windows that end inside input +
/// padding; ceil mode also keeps a partial last one if it starts inside the input or the left
/// padding.
std::int64_t ref_out(std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t p, std::int64_t d, bool ceil) {
  const std::int64_t last = in + 2 * p - d * (k - 1) - 1;  // the last start of a full window
  std::int64_t n = 0;
  while (ceil ? (n * s < last + s && n * s - p < in) : n * s <= last) ++n;
  return n;
}

/// max (with PyTorch's index rule) and mean (count_include_pad) over each window, per plane.
void ref_pool(const pool_cfg& c, const std::vector<double>& x, std::vector<double>& mx,
              std::vector<std::int64_t>& ix, std::vector<double>& avg, em::shape& out) {
  const std::int64_t planes = c.x[0] * c.x[1], h = c.x[2], w = c.x[3];
  const std::int64_t oh = ref_out(h, c.k.h, c.s.h, c.p.h, c.d.h, c.ceil);
  const std::int64_t ow = ref_out(w, c.k.w, c.s.w, c.p.w, c.d.w, c.ceil);
  out = {c.x[0], c.x[1], oh, ow};
  for (std::int64_t q = 0; q < planes; ++q)
    for (std::int64_t y = 0; y < oh; ++y)
      for (std::int64_t xx = 0; xx < ow; ++xx) {
        double m = -std::numeric_limits<double>::infinity(), sum = 0;
        std::int64_t mi = -1, cnt = 0;
        for (std::int64_t i = 0; i < c.k.h; ++i)
          for (std::int64_t j = 0; j < c.k.w; ++j) {
            const std::int64_t hh = y * c.s.h - c.p.h + i * c.d.h, ww = xx * c.s.w - c.p.w + j * c.d.w;
            if (hh < h + c.p.h && ww < w + c.p.w) ++cnt;  // inside input + padding
            if (hh < 0 || hh >= h || ww < 0 || ww >= w) continue;
            const double v = x[static_cast<std::size_t>((q * h + hh) * w + ww)];
            if (mi < 0 || v > m || std::isnan(v)) {
              m = v;
              mi = hh * w + ww;
            }
            sum += v;
          }
        mx.push_back(m);
        ix.push_back(mi);
        avg.push_back(sum / static_cast<double>(cnt));
      }
}

}  // namespace

TEST_CASE("max_pool2d and avg_pool2d match the PyTorch oracle, with their gradients", "[pool][oracle]") {
  SECTION("max_pool2d float64") { run_oracle<double>("max_pool2d"); }
  SECTION("max_pool2d float32") { run_oracle<float>("max_pool2d"); }
  SECTION("avg_pool2d float64") { run_oracle<double>("avg_pool2d"); }
  SECTION("avg_pool2d float32") { run_oracle<float>("avg_pool2d"); }
}

TEST_CASE("pooling matches PyTorch on the extra cases (ceil_mode, dilation, NaN, adaptive)", "[pool][oracle]") {
  SECTION("float64") { run_extra_cases<double>(); }
  SECTION("float32") { run_extra_cases<float>(); }
}

TEST_CASE("max_pool2d and avg_pool2d match direct references", "[pool]") {
  em::generator gen(2024);
  const std::vector<pool_cfg> cfgs = {
      {{1, 1, 1, 1}, 1, 1, 0},
      {{2, 3, 7, 9}, 3, 2, 1, 1, true},
      {{1, 2, 8, 5}, {2, 3}, {2, 1}, {1, 1}, {2, 1}, false},
      {{3, 1, 6, 6}, 2, 2, 0, 1, true},
      {{16, 24, 17, 13}, 3, 2, 1, 1, true},  // many planes: the threaded path
      // wide rows: the SIMD path (gathered with stride 2, loaded with stride 1), with NaN,
      // -inf and ties (data rounded to halves) in the data
      {{2, 3, 9, 70}, 3, 2, 1, 1, true},
      {{1, 2, 6, 41}, {2, 3}, 1, {1, 1}, {1, 2}, false},
      {{1, 1, 4, 37}, 2, {1, 1}, 0, 1, false},
  };
  for (std::size_t k = 0; k < cfgs.size(); ++k)
    for (int layout = 0; layout < 2; ++layout) {
      const pool_cfg& c = cfgs[k];
      INFO("config " << k << ", layout " << layout);
      auto x = em::randn<double>(c.x, gen);
      if (k >= 5) {
        double* p = x.data();
        for (std::int64_t e = 0; e < x.numel(); ++e) {
          p[e] = std::round(2 * p[e]) / 2;
          if (e % 37 == 5) p[e] = std::numeric_limits<double>::quiet_NaN();
          if (e % 41 == 7) p[e] = -std::numeric_limits<double>::infinity();
        }
      }
      std::vector<double> mx, avg;
      std::vector<std::int64_t> ix;
      em::shape s;
      ref_pool(c, values(x), mx, ix, avg, s);
      const auto xv = layout ? x.transpose(2, 3).contiguous().transpose(2, 3) : x;
      const auto [y, idx] = F::max_pool2d_with_indices(xv, {.kernel = c.k, .stride = c.s, .padding = c.p,
                                                            .dilation = c.d, .ceil_mode = c.ceil});
      check_close(y, s, mx, 0.0);
      CHECK(values(idx) == std::vector<double>(ix.begin(), ix.end()));
      const auto [yf, idxf] = F::max_pool2d_with_indices(xv.to<float>(), {.kernel = c.k, .stride = c.s, .padding = c.p,
                                                                          .dilation = c.d, .ceil_mode = c.ceil});
      check_close(yf, s, mx, 1e-7);
      if (k >= 5) CHECK(values(idxf) == values(idx));  // halves: exact in float, no new ties
      check_close(F::max_pool2d(xv, {.kernel = c.k, .stride = c.s, .padding = c.p, .dilation = c.d,
                                     .ceil_mode = c.ceil}),
                  s, mx, 0.0);
      if (c.d == em::size2{1}) {
        check_close(F::avg_pool2d(xv, {.kernel = c.k, .stride = c.s, .padding = c.p, .ceil_mode = c.ceil}), s, avg);
        const auto xf = xv.to<float>();
        check_close(F::avg_pool2d(xf, {.kernel = c.k, .stride = c.s, .padding = c.p, .ceil_mode = c.ceil}), s, avg);
      }
    }
}

TEST_CASE("max_pool2d: NaN propagates, -inf windows, expression and unbatched inputs", "[pool]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const auto x = em::from_vector<double>({1, nan, 3, 4,  //
                                          5, 6, -inf, -inf,  //
                                          0, 2, -inf, -inf,  //
                                          9, 9, 1, 1},
                                         {1, 1, 4, 4});
  const auto [y, idx] = F::max_pool2d_with_indices(x, {.kernel = 2});
  const auto v = values(y);
  CHECK(std::isnan(v[0]));
  CHECK(v[1] == 4);
  CHECK(v[2] == 9);
  CHECK(v[3] == 1);
  CHECK(values(idx) == std::vector<double>{1, 3, 12, 14});  // ties: the first maximum
  const auto only_inf = em::full<double>({1, 2, 2}, -inf);
  const auto [yi, ii] = F::max_pool2d_with_indices(only_inf, {.kernel = 2});
  CHECK(yi.shape() == em::shape{1, 1, 1});
  CHECK(yi.item() == -inf);
  CHECK(ii.item() == 0);
  // an expression input, and the default stride (= kernel)
  check_close(F::max_pool2d(x * 2.0, {.kernel = 2}), em::tensor<double>(y * 2.0), 0.0);
  check_close(em::max_pool2d(x, {.kernel = 2, .stride = 2}), y, 0.0);
  // unbatched (C, H, W) input keeps its rank
  em::generator gen(3);
  const auto x4 = em::randn<float>({2, 3, 6, 5}, gen);
  check_close(F::avg_pool2d(x4[1], {.kernel = 2, .padding = 1}), F::avg_pool2d(x4, {.kernel = 2, .padding = 1})[1], 0.0);
  check_close(em::adaptive_avg_pool2d(x4[0], {.output_size = {2, 3}}),
              F::adaptive_avg_pool2d(x4, {.output_size = {2, 3}})[0], 0.0);
  // global average pooling is the mean over each plane
  const auto g = F::adaptive_avg_pool2d(x4, {.output_size = 1});
  CHECK(g.shape() == em::shape{2, 3, 1, 1});
  const auto xv = values(x4);
  for (std::size_t q = 0; q < 6; ++q) {
    double s = 0;
    for (std::size_t i = 0; i < 30; ++i) s += xv[q * 30 + i];
    CHECK(std::abs(values(g)[q] - s / 30) <= 1e-6);
  }
  // an empty batch gives an empty result
  CHECK(F::max_pool2d(em::zeros<float>({0, 3, 4, 4}), {.kernel = 2}).shape() == em::shape{0, 3, 2, 2});
  CHECK(F::adaptive_avg_pool2d(x4, {.output_size = 0}).shape() == em::shape{2, 3, 0, 0});
}

TEST_CASE("pooling options: contract spelling and defaults", "[pool]") {
  auto img = em::randn<float>({2, 4, 8, 8});
  CHECK(F::max_pool2d(img, {.kernel = {2, 2}, .stride = {2, 2}, .padding = 0}).shape() == em::shape{2, 4, 4, 4});
  CHECK(F::avg_pool2d(img, {.kernel = 2, .stride = 2, .padding = 0, .count_include_pad = true}).shape() ==
        em::shape{2, 4, 4, 4});
  CHECK(F::adaptive_avg_pool2d(img, {.output_size = 1}).shape() == em::shape{2, 4, 1, 1});
  CHECK(F::max_pool2d(img, {.kernel = 3, .stride = 2, .ceil_mode = true}).shape() == em::shape{2, 4, 4, 4});
  CHECK(F::max_pool2d(img, {.kernel = 3, .stride = 2}).shape() == em::shape{2, 4, 3, 3});
  CHECK(F::avg_pool2d(img, {.kernel = {3, 1}}).shape() == em::shape{2, 4, 2, 8});
  const auto [v, i] = em::max_pool2d_with_indices(img, {.kernel = 2});
  CHECK(v.shape() == i.shape());
  CHECK(em::adaptive_max_pool2d(img, {.output_size = {3, 5}}).shape() == em::shape{2, 4, 3, 5});
  CHECK(em::detail::pool_output_size(5, 2, 2, 1, 1, true) == 3);  // the last window would start in the right padding
  CHECK(em::detail::pool_output_size(6, 3, 2, 0, 1, true) == 3);
  CHECK(em::detail::pool_output_size(6, 3, 2, 0, 1, false) == 2);
}

TEST_CASE("pooling argument errors", "[pool][errors]") {
  const auto x = em::zeros<float>({2, 3, 5, 5});
  using em::errc;
  require_error([&] { F::max_pool2d(em::zeros<float>({5, 5}), {.kernel = 2}); }, errc::shape, "got shape (5,5)");
  require_error([&] { F::avg_pool2d(em::zeros<float>({1, 1, 2, 5, 5}), {.kernel = 2}); }, errc::shape, "4-D");
  require_error([&] { F::max_pool2d(em::zeros<float>({2, 0, 5, 5}), {.kernel = 2}); }, errc::shape, "non-empty");
  require_error([&] { F::max_pool2d(x, {}); }, errc::value, "kernel must be positive, got (0,0) (set .kernel)");
  require_error([&] { F::max_pool2d(x, {.kernel = {2, -1}}); }, errc::value, "kernel must be positive");
  require_error([&] { F::max_pool2d(x, {.kernel = 2, .stride = {1, 0}}); }, errc::value, "stride must be positive, got (1,0)");
  require_error([&] { F::avg_pool2d(x, {.kernel = 2, .stride = -2}); }, errc::value, "stride");
  require_error([&] { F::max_pool2d(x, {.kernel = 2, .dilation = 0}); }, errc::value, "dilation");
  require_error([&] { F::max_pool2d(x, {.kernel = 3, .padding = 2}); }, errc::value,
                "padding (2,2) must be non-negative and at most half the kernel (3,3)");
  require_error([&] { F::avg_pool2d(x, {.kernel = 2, .padding = -1}); }, errc::value, "padding");
  require_error([&] { F::max_pool2d(x, {.kernel = 6}); }, errc::shape,
                "input of shape (2,3,5,5) is too small for kernel (6,6)");
  require_error([&] { F::max_pool2d(x, {.kernel = 3, .dilation = 3}); }, errc::shape, "too small");
  require_error([&] { F::adaptive_avg_pool2d(x, {.output_size = {2, -1}}); }, errc::value,
                "output_size must be non-negative, got (2,-1)");
  require_error([&] { F::adaptive_max_pool2d(em::zeros<float>({3, 0, 4}), {}); }, errc::shape, "non-empty");
  require_error([&] { F::adaptive_avg_pool2d(em::tensor<float>(), {}); }, errc::value, "undefined");
}
