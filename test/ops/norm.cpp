// Tests of include/ember/ops/norm.hpp: batch_norm (training / eval, running-stat updates),
// layer_norm and group_norm against PyTorch 1.13 (the shared oracle, plus the cases of
// test/tools/gen_norm_attention_cases.py) and against long double references written here
// for larger inputs (both statistic paths, many threads, inputs far from zero); the saved
// statistics of the detail:: forwards; every error case.
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/ops/norm.hpp>

#include <ember/ops/factory.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace em = ember;
namespace et = ember_test;
namespace F = ember::nn::functional;

namespace {

/// Row-major values of any tensor, read through its strides.
template <class T>
std::vector<double> host(const em::tensor<T>& t) {
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

/// |got - want| <= tol * (1 + |want|) elementwise (NaN must match NaN).
template <class T>
void check_close(const em::tensor<T>& got, const em::shape& shape, const std::vector<double>& want,
                 double tol) {
  REQUIRE(got.shape() == shape);
  const auto g = host(got);
  REQUIRE(g.size() == want.size());
  int reported = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const bool ok = std::isnan(want[i]) ? std::isnan(g[i])
                                        : std::abs(g[i] - want[i]) <= tol * (1 + std::abs(want[i]));
    if (!ok && reported++ < 5) {
      INFO("element " << i << ": got " << g[i] << ", want " << want[i] << " (tol " << tol << ")");
      CHECK(ok);
    }
  }
  CHECK(reported == 0);
}
template <class T>
void check_close(const em::tensor<T>& got, const em::tensor<T>& want, double tol) {
  check_close(got, want.shape(), host(want), tol);
}

template <class T>
constexpr double oracle_tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;

template <class T>
std::string dtype_dir() {
  return std::is_same_v<T, float> ? "f32/" : "";
}
template <class T>
std::string dtype_tag() {
  return std::is_same_v<T, float> ? "f32" : "f64";
}

const et::st_file& extra_file() {
  static const et::st_file f =
      et::read_safetensors(et::test_data("oracle/ops/norm_attention_extra.safetensors"));
  return f;
}

/// Tensor `name` of an extra case, or undefined when the case has none.
template <class T>
em::tensor<T> extra(const std::string& prefix, const std::string& name) {
  const auto& f = extra_file();
  return f.contains(prefix + name) ? f.get<T>(prefix + name) : em::tensor<T>{};
}

/// Oracle inputs by role ("input", "weight", "running_mean", ...) from the case metadata.
template <class T>
em::tensor<T> by_role(const et::st_file& f, const et::json::value& meta, const std::string& p,
                      const std::string& role) {
  for (const auto& in : meta.at("inputs").arr)
    if (in.at("role").as_string() == role) return f.get<T>(p + "." + in.at("name").as_string());
  return {};
}

// ---- long double references ---------------------------------------------------------------
/// Normalizes `count` groups of elements: element e of group g is at index(g, e) in x; each
/// group gets mean 0, variance 1 (biased, + eps), then y = yhat * w(i) + b(i).
template <class Index, class Affine>
std::vector<double> ref_normalize(const std::vector<double>& x, std::int64_t groups,
                                  std::int64_t per, double eps, Index index, Affine affine) {
  std::vector<double> y(x.size());
  for (std::int64_t g = 0; g < groups; ++g) {
    long double s = 0;
    for (std::int64_t e = 0; e < per; ++e) s += x[index(g, e)];
    const long double mean = s / per;
    long double ss = 0;
    for (std::int64_t e = 0; e < per; ++e) ss += (x[index(g, e)] - mean) * (x[index(g, e)] - mean);
    const long double rstd = 1 / std::sqrt(ss / per + eps);
    for (std::int64_t e = 0; e < per; ++e) {
      const std::size_t i = index(g, e);
      y[i] = static_cast<double>(affine(i, (x[i] - mean) * rstd));
    }
  }
  return y;
}

/// batch_norm in training mode over a row-major (N, C, S) input: output, mean, biased var.
struct bn_ref {
  std::vector<double> y, mean, var;
};
bn_ref ref_batch_norm(const std::vector<double>& x, std::int64_t N, std::int64_t C, std::int64_t S,
                      const std::vector<double>& w, const std::vector<double>& b, double eps) {
  bn_ref r;
  auto index = [&](std::int64_t c, std::int64_t e) {
    return static_cast<std::size_t>(((e / S) * C + c) * S + e % S);
  };
  r.y = ref_normalize(x, C, N * S, eps, index, [&](std::size_t i, long double v) {
    const auto c = static_cast<std::size_t>((static_cast<std::int64_t>(i) / S) % C);
    return v * (w.empty() ? 1.0L : w[c]) + (b.empty() ? 0.0L : b[c]);
  });
  for (std::int64_t c = 0; c < C; ++c) {
    long double s = 0, ss = 0;
    for (std::int64_t e = 0; e < N * S; ++e) s += x[index(c, e)];
    const long double m = s / (N * S);
    for (std::int64_t e = 0; e < N * S; ++e) ss += (x[index(c, e)] - m) * (x[index(c, e)] - m);
    r.mean.push_back(static_cast<double>(m));
    r.var.push_back(static_cast<double>(ss / (N * S)));
  }
  return r;
}

template <class T>
em::tensor<T> vec(const std::vector<double>& v) {
  std::vector<T> t(v.begin(), v.end());
  return em::from_vector<T>(t, {static_cast<std::int64_t>(v.size())});
}

/// Runs f with n threads, restoring the previous count.
template <class Fn>
auto with_threads(int n, Fn f) {
  const int old = em::get_num_threads();
  em::set_num_threads(n);
  auto r = f();
  em::set_num_threads(old);
  return r;
}

/// Requires that f throws an ember::error of category c whose message contains every part.
template <class Fn>
void require_error(Fn f, em::errc c, std::vector<std::string> parts) {
  try {
    f();
    FAIL("no ember::error thrown");
  } catch (const em::error& e) {
    INFO(e.what());
    CHECK(e.category() == c);
    for (const auto& p : parts) CHECK(std::string(e.what()).find(p) != std::string::npos);
  }
}

}  // namespace

// ---- PyTorch oracle ---------------------------------------------------------------------------
TEMPLATE_TEST_CASE("batch_norm matches the PyTorch oracle", "[norm][batch_norm][oracle]", float,
                   double) {
  using T = TestType;
  const et::st_file f = et::read_safetensors(et::test_data("oracle/ops/" + dtype_dir<T>() + "batch_norm.safetensors"));
  const int cases = std::stoi(f.meta("num_cases"));
  REQUIRE(cases == 5);
  for (int i = 0; i < cases; ++i) {
    const std::string p = "case" + std::to_string(i);
    SECTION(p) {
      const auto meta = et::json::parse(f.meta(p));
      const auto& args = meta.at("args");
      const auto x = by_role<T>(f, meta, p, "input");
      const auto rm = by_role<T>(f, meta, p, "running_mean").clone();
      const auto rv = by_role<T>(f, meta, p, "running_var").clone();
      const bool training = args.at("training").as_bool();
      const double momentum = args.find("momentum") ? args.at("momentum").as_double() : 0.1;
      const auto y = F::batch_norm(x, rm, rv,
                                   {.weight = by_role<T>(f, meta, p, "weight"),
                                    .bias = by_role<T>(f, meta, p, "bias"),
                                    .training = training,
                                    .momentum = momentum,
                                    .eps = args.at("eps").as_double()});
      check_close(y, f.get<T>(p + ".out"), oracle_tol<T>);
      if (f.contains(p + ".out1")) {
        check_close(rm, f.get<T>(p + ".out1"), oracle_tol<T>);
        check_close(rv, f.get<T>(p + ".out2"), oracle_tol<T>);
      }
    }
  }
}

TEMPLATE_TEST_CASE("layer_norm matches the PyTorch oracle", "[norm][layer_norm][oracle]", float,
                   double) {
  using T = TestType;
  const et::st_file f = et::read_safetensors(et::test_data("oracle/ops/" + dtype_dir<T>() + "layer_norm.safetensors"));
  const int cases = std::stoi(f.meta("num_cases"));
  REQUIRE(cases == 4);
  for (int i = 0; i < cases; ++i) {
    const std::string p = "case" + std::to_string(i);
    SECTION(p) {
      const auto meta = et::json::parse(f.meta(p));
      const auto& args = meta.at("args");
      const auto y = F::layer_norm(by_role<T>(f, meta, p, "input"),
                                   {.normalized_shape = em::shape(args.at("normalized_shape").as_int_list()),
                                    .weight = by_role<T>(f, meta, p, "weight"),
                                    .bias = by_role<T>(f, meta, p, "bias"),
                                    .eps = args.at("eps").as_double()});
      check_close(y, f.get<T>(p + ".out"), oracle_tol<T>);
    }
  }
}

TEMPLATE_TEST_CASE("normalization cases generated with PyTorch", "[norm][oracle]", float, double) {
  using T = TestType;
  const auto& f = extra_file();
  const std::string dt = dtype_tag<T>();
  auto each_case = [&](const std::string& family, auto run) {
    const int cases = std::stoi(f.meta(family + ".num_cases"));
    REQUIRE(cases >= 5);
    for (int i = 0; i < cases; ++i) {
      const std::string c = "case" + std::to_string(i);
      INFO(family << " " << c << " " << f.meta(family + "." + c));
      run(et::json::parse(f.meta(family + "." + c)), family + "." + dt + "." + c + ".");
    }
  };
  SECTION("group_norm") {
    each_case("group_norm", [](const et::json::value& args, const std::string& p) {
      const auto y = F::group_norm(extra<T>(p, "x"), args.at("num_groups").as_int(),
                                   {.weight = extra<T>(p, "weight"), .bias = extra<T>(p, "bias"),
                                    .eps = args.at("eps").as_double()});
      check_close(y, extra<T>(p, "out"), oracle_tol<T>);
    });
  }
  SECTION("batch_norm") {
    each_case("batch_norm", [](const et::json::value& args, const std::string& p) {
      auto rm = extra<T>(p, "running_mean"), rv = extra<T>(p, "running_var");
      if (rm.defined()) rm = rm.clone(), rv = rv.clone();
      const auto y = F::batch_norm(extra<T>(p, "x"), rm, rv,
                                   {.weight = extra<T>(p, "weight"), .bias = extra<T>(p, "bias"),
                                    .training = args.at("training").as_bool(),
                                    .momentum = args.at("momentum").as_double(),
                                    .eps = args.at("eps").as_double()});
      check_close(y, extra<T>(p, "out"), oracle_tol<T>);
      if (const auto want = extra<T>(p, "running_mean_out"); want.defined()) {
        check_close(rm, want, oracle_tol<T>);
        check_close(rv, extra<T>(p, "running_var_out"), oracle_tol<T>);
      } else if (rm.defined()) {  // eval: untouched
        check_close(rm, extra<T>(p, "running_mean"), 0);
        check_close(rv, extra<T>(p, "running_var"), 0);
      }
    });
  }
  SECTION("layer_norm") {
    each_case("layer_norm", [](const et::json::value& args, const std::string& p) {
      const auto y = F::layer_norm(extra<T>(p, "x"),
                                   {.normalized_shape = em::shape(args.at("normalized_shape").as_int_list()),
                                    .weight = extra<T>(p, "weight"),
                                    .bias = extra<T>(p, "bias"),
                                    .eps = args.at("eps").as_double()});
      check_close(y, extra<T>(p, "out"), oracle_tol<T>);
    });
  }
}

// ---- larger inputs against long double references -------------------------------------------
TEMPLATE_TEST_CASE("batch_norm statistics on both paths, for any thread count", "[norm][batch_norm]",
                   float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-12;
  // (N, C, S): column sweep with several row chunks; per-channel runs; short runs
  const std::vector<std::vector<std::int64_t>> shapes = {{20000, 5}, {3, 5, 40, 30}, {6, 3, 7}};
  for (const auto& sv : shapes) {
    const em::shape s(sv);
    INFO("shape " << s);
    em::manual_seed(11);
    const auto x = em::tensor<T>(em::randn<T>(s) * T(3) + T(2));
    const std::int64_t N = s[0], C = s[1], S = x.numel() / (N * C);
    const auto w = em::randn<T>({C}), b = em::randn<T>({C});
    const auto rm0 = em::randn<T>({C}), rv0 = em::tensor<T>(em::rand<T>({C}) + T(0.5));
    const auto ref = ref_batch_norm(host(x), N, C, S, host(w), host(b), 1e-5);
    auto run = [&](int threads) {
      return with_threads(threads, [&] {
        const auto rm = rm0.clone(), rv = rv0.clone();
        auto r = em::detail::batch_norm_forward(x, rm, rv, {.weight = w, .bias = b, .training = true});
        return std::vector<em::tensor<T>>{r.output, r.mean, r.invstd, rm, rv};
      });
    };
    const auto one = run(1), two = run(2);
    check_close(one[0], s, ref.y, tol);
    check_close(one[1], {C}, ref.mean, tol);
    std::vector<double> invstd, rm_want, rv_want;
    const double n = static_cast<double>(N * S);
    for (std::int64_t c = 0; c < C; ++c) {
      const auto k = static_cast<std::size_t>(c);
      invstd.push_back(1 / std::sqrt(ref.var[k] + 1e-5));
      rm_want.push_back(0.9 * host(rm0)[k] + 0.1 * ref.mean[k]);
      rv_want.push_back(0.9 * host(rv0)[k] + 0.1 * ref.var[k] * n / (n - 1));
    }
    check_close(one[2], {C}, invstd, tol);
    check_close(one[3], {C}, rm_want, tol);
    check_close(one[4], {C}, rv_want, tol);
    for (std::size_t k = 0; k < one.size(); ++k) CHECK(host(one[k]) == host(two[k]));  // bitwise
  }
}

TEST_CASE("normalizations keep float precision far from zero", "[norm]") {
  // x = 1e4 + noise: E[x^2] - E[x]^2 in float would lose every digit of the variance
  em::manual_seed(3);
  const auto x = em::tensor<float>(em::randn<float>({64, 4, 50}) + 1e4f);
  const auto hx = host(x);
  SECTION("batch_norm") {
    const auto ref = ref_batch_norm(hx, 64, 4, 50, {}, {}, 1e-5);
    const auto y = F::batch_norm(x, em::tensor<float>{}, em::tensor<float>{}, {.training = true});
    check_close(y, x.shape(), ref.y, 1e-5);
  }
  SECTION("layer_norm") {
    const auto y = F::layer_norm(x, {.normalized_shape = {4, 50}});
    const auto ref = ref_normalize(hx, 64, 200, 1e-5, [](std::int64_t g, std::int64_t e) {
      return static_cast<std::size_t>(g * 200 + e);
    }, [](std::size_t, long double v) { return v; });
    check_close(y, x.shape(), ref, 1e-5);
  }
  SECTION("group_norm") {
    const auto y = F::group_norm(x, 2);
    const auto ref = ref_normalize(hx, 128, 100, 1e-5, [](std::int64_t g, std::int64_t e) {
      return static_cast<std::size_t>(g * 100 + e);
    }, [](std::size_t, long double v) { return v; });
    check_close(y, x.shape(), ref, 1e-5);
  }
}

TEST_CASE("layer_norm and group_norm on long rows, saved statistics, threads", "[norm]") {
  em::manual_seed(5);
  const auto x = em::randn<double>({3, 4, 1000});
  const auto w = em::randn<double>({4, 1000}), b = em::randn<double>({4, 1000});
  const auto hx = host(x), hw = host(w), hb = host(b);
  auto ln = [&] { return em::detail::layer_norm_forward(x, {.normalized_shape = {4, 1000}, .weight = w, .bias = b}); };
  const auto r1 = with_threads(1, ln), r2 = with_threads(2, ln);
  const auto ref = ref_normalize(hx, 3, 4000, 1e-5, [](std::int64_t g, std::int64_t e) {
    return static_cast<std::size_t>(g * 4000 + e);
  }, [&](std::size_t i, long double v) { return v * hw[i % 4000] + hb[i % 4000]; });
  check_close(r1.output, x.shape(), ref, 1e-12);
  CHECK(host(r1.output) == host(r2.output));
  REQUIRE(r1.mean.shape() == em::shape{3, 1, 1});
  REQUIRE(r1.rstd.shape() == em::shape{3, 1, 1});
  check_close(r1.mean, em::mean(x, {1, 2}, true), 1e-12);
  check_close(r1.rstd, em::tensor<double>(em::rsqrt(em::var(x, {1, 2}, false, true) + 1e-5)), 1e-12);

  const auto gw = em::randn<double>({4}), gb = em::randn<double>({4});
  const auto g = em::detail::group_norm_forward(x, 2, {.weight = gw, .bias = gb, .eps = 1e-3});
  REQUIRE(g.mean.shape() == em::shape{3, 2});
  const auto xg = x.view({3, 2, 2000});
  check_close(g.mean, em::mean(xg, -1), 1e-12);
  check_close(g.rstd, em::tensor<double>(em::rsqrt(em::var(xg, -1, false) + 1e-3)), 1e-12);
  const auto hgw = host(gw), hgb = host(gb);
  const auto gref = ref_normalize(hx, 6, 2000, 1e-3, [](std::int64_t gi, std::int64_t e) {
    return static_cast<std::size_t>(gi * 2000 + e);
  }, [&](std::size_t i, long double v) { return v * hgw[(i / 1000) % 4] + hgb[(i / 1000) % 4]; });
  check_close(g.output, x.shape(), gref, 1e-12);
}

// ---- semantics ---------------------------------------------------------------------------------
TEST_CASE("batch_norm eval mode uses and keeps the running stats", "[norm][batch_norm]") {
  em::manual_seed(8);
  const auto x = em::randn<double>({4, 3, 5});
  const auto rm = em::randn<double>({3}), rv = em::tensor<double>(em::rand<double>({3}) + 0.5);
  const auto rm0 = host(rm), rv0 = host(rv);
  const auto w = em::randn<double>({3}), b = em::randn<double>({3});
  const auto r = em::detail::batch_norm_forward(x, rm, rv, {.weight = w, .bias = b, .eps = 1e-3});
  const auto want = em::tensor<double>((x - rm.view({3, 1})) / em::sqrt(rv.view({3, 1}) + 1e-3) *
                                           w.view({3, 1}) + b.view({3, 1}));
  check_close(r.output, want, 1e-14);
  CHECK(host(rm) == rm0);
  CHECK(host(rv) == rv0);
  check_close(r.mean, rm, 0);
  check_close(r.invstd, em::tensor<double>(em::rsqrt(rv + 1e-3)), 1e-15);
}

TEST_CASE("batch_norm running stats: undefined, strided views, expressions", "[norm][batch_norm]") {
  em::manual_seed(9);
  const auto x = em::randn<float>({6, 4, 3});
  const auto w = em::randn<float>({4});
  auto rm = em::zeros<float>({4}), rv = em::ones<float>({4});
  const auto y = F::batch_norm(x, rm, rv, {.weight = w, .training = true, .momentum = 0.25});
  SECTION("undefined running stats give the same output and stay undefined") {
    em::tensor<float> none;
    const auto y2 = F::batch_norm(x, none, none, {.weight = w, .training = true});
    CHECK(!none.defined());
    CHECK(host(y2) == host(y));
  }
  SECTION("running stats that are strided views are updated in place") {
    auto big_m = em::full<float>({8}, 7.f), big_v = em::full<float>({4, 2}, 7.f);
    auto vm = big_m.slice(0, 0, 8, 2), vv = big_v.select(1, 1);
    REQUIRE(!vm.is_contiguous());
    vm.zero_();
    vv.fill_(1.f);
    const auto y2 = F::batch_norm(x, vm, vv, {.weight = w, .training = true, .momentum = 0.25});
    CHECK(host(y2) == host(y));
    CHECK(host(vm) == host(rm));
    CHECK(host(vv) == host(rv));
    CHECK(host(big_m.slice(0, 1, 8, 2)) == std::vector<double>(4, 7.0));
    CHECK(host(big_v.select(1, 0)) == std::vector<double>(4, 7.0));
  }
  SECTION("momentum 0 keeps, momentum 1 replaces the running stats") {
    auto m0 = em::full<float>({4}, 5.f), v0 = em::full<float>({4}, 5.f);
    (void)F::batch_norm(x, m0, v0, {.training = true, .momentum = 0});
    CHECK(host(m0) == std::vector<double>(4, 5.0));
    auto m1 = em::full<float>({4}, 5.f), v1 = em::full<float>({4}, 5.f);
    (void)F::batch_norm(x, m1, v1, {.training = true, .momentum = 1});
    check_close(m1, em::mean(x, {0, 2}), 1e-6);
    check_close(v1, em::var(x, {0, 2}), 1e-6);  // unbiased
  }
  SECTION("expression inputs are evaluated first") {
    auto m2 = em::zeros<float>({4}), v2 = em::ones<float>({4});
    const auto x2 = em::tensor<float>(x * 2.f + 1.f);
    auto m3 = em::zeros<float>({4}), v3 = em::ones<float>({4});
    CHECK(host(F::batch_norm(x * 2.f + 1.f, m2, v2, {.training = true})) ==
          host(F::batch_norm(x2, m3, v3, {.training = true})));
  }
  SECTION("non-contiguous input") {
    const auto xt = x.transpose(0, 2).contiguous().transpose(0, 2);
    REQUIRE(!xt.is_contiguous());
    auto m2 = em::zeros<float>({4}), v2 = em::ones<float>({4});
    CHECK(host(F::batch_norm(xt, m2, v2, {.weight = w, .training = true, .momentum = 0.25})) == host(y));
  }
}

TEST_CASE("layer_norm: non-contiguous input, empty input, weight or bias alone", "[norm][layer_norm]") {
  em::manual_seed(10);
  const auto x = em::randn<double>({5, 7});
  const auto w = em::randn<double>({7}), b = em::randn<double>({7});
  const auto plain = F::layer_norm(x, {.normalized_shape = {7}});
  const auto hx = host(x);
  const auto ref = ref_normalize(hx, 5, 7, 1e-5, [](std::int64_t g, std::int64_t e) {
    return static_cast<std::size_t>(g * 7 + e);
  }, [](std::size_t, long double v) { return v; });
  check_close(plain, x.shape(), ref, 1e-13);
  check_close(F::layer_norm(x, {.normalized_shape = {7}, .weight = w}),
              em::tensor<double>(plain * w), 1e-14);
  check_close(F::layer_norm(x, {.normalized_shape = {7}, .bias = b}),
              em::tensor<double>(plain + b), 1e-14);
  const auto xt = x.t().contiguous().t();
  REQUIRE(!xt.is_contiguous());
  CHECK(host(F::layer_norm(xt, {.normalized_shape = {7}})) == host(plain));
  const auto e = F::layer_norm(em::zeros<double>({0, 7}), {.normalized_shape = {7}, .weight = w});
  CHECK(e.shape() == em::shape{0, 7});
  // a constant row has variance 0: (x - mean) = 0, the output is the bias
  check_close(F::layer_norm(em::full<double>({2, 7}, 3.0), {.normalized_shape = {7}, .bias = b}),
              em::tensor<double>(b.expand({2, 7}) + 0.0), 0);
}

TEST_CASE("NaN and inf stay in their channel or row", "[norm]") {
  em::manual_seed(12);
  auto x = em::randn<float>({6, 3, 4});
  x.select(1, 1).select(0, 2).fill_(std::numeric_limits<float>::quiet_NaN());
  auto rm = em::zeros<float>({3}), rv = em::ones<float>({3});
  const auto y = F::batch_norm(x, rm, rv, {.training = true});
  const auto hy = host(y.select(1, 1)), h0 = host(y.select(1, 0)), hrv = host(rv), hrm = host(rm);
  for (double v : hy) CHECK(std::isnan(v));
  for (double v : h0) CHECK(std::isfinite(v));
  CHECK(std::isnan(hrm[1]));
  CHECK(std::isnan(hrv[1]));
  CHECK(std::isfinite(hrv[0]));
  CHECK(std::isfinite(hrv[2]));
  auto r = em::randn<double>({3, 5});
  r.select(0, 1).select(0, 4).fill_(std::numeric_limits<double>::infinity());
  const auto l = em::detail::layer_norm_forward(r, {.normalized_shape = {5}});
  for (double v : host(l.output.select(0, 1))) CHECK(std::isnan(v));
  for (double v : host(l.output.select(0, 0))) CHECK(std::isfinite(v));
  CHECK(std::isnan(host(l.rstd)[1]));
}

// ---- errors ------------------------------------------------------------------------------------
TEST_CASE("normalization errors name the shapes", "[norm][errors]") {
  const auto x = em::zeros<float>({4, 3, 5});
  auto c3 = em::zeros<float>({3}), c4 = em::zeros<float>({4});
  em::tensor<float> none;
  SECTION("batch_norm") {
    require_error([&] { (void)F::batch_norm(em::zeros<float>({3}), c3, c3); }, em::errc::shape,
                  {"batch_norm", "(3)"});
    require_error([&] { (void)F::batch_norm(x, c3, c3, {.weight = c4}); }, em::errc::shape,
                  {"weight", "3", "(4,3,5)", "(4)"});
    require_error([&] { (void)F::batch_norm(x, c3, c3, {.bias = c4}); }, em::errc::shape, {"bias"});
    require_error([&] { (void)F::batch_norm(x, c4, c3, {.training = true}); }, em::errc::shape,
                  {"running_mean", "(4)"});
    require_error([&] { (void)F::batch_norm(x, c3, c4); }, em::errc::shape, {"running_var"});
    require_error([&] { (void)F::batch_norm(em::zeros<float>({1, 3}), c3, c3, {.training = true}); },
                  em::errc::value, {"more than 1 value per channel", "(1,3)"});
    require_error([&] { (void)F::batch_norm(em::zeros<float>({1, 3, 1, 1}), none, none, {.training = true}); },
                  em::errc::value, {"more than 1 value per channel", "(1,3,1,1)"});
    require_error([&] { (void)F::batch_norm(x, none, c3); }, em::errc::value, {"evaluation mode"});
    require_error([&] { (void)F::batch_norm(x, c3, c3, {.eps = -1}); }, em::errc::value, {"eps"});
    // one value per channel is fine in eval mode, as in PyTorch
    auto ones3 = em::ones<float>({3});
    CHECK(F::batch_norm(em::zeros<float>({1, 3}), c3, ones3).shape() == em::shape{1, 3});
  }
  SECTION("layer_norm") {
    require_error([&] { (void)F::layer_norm(x, {.normalized_shape = {3}}); }, em::errc::shape,
                  {"normalized_shape (3)", "(4,3,5)"});
    require_error([&] { (void)F::layer_norm(x, {.normalized_shape = {2, 4, 3, 5}}); }, em::errc::shape,
                  {"(2,4,3,5)"});
    require_error([&] { (void)F::layer_norm(x, {.normalized_shape = {}}); }, em::errc::shape,
                  {"at least one dimension"});
    require_error([&] { (void)F::layer_norm(x, {.normalized_shape = {3, 5}, .weight = em::zeros<float>({15})}); },
                  em::errc::shape, {"weight of shape (15)", "(3,5)"});
    require_error([&] { (void)F::layer_norm(x, {.normalized_shape = {5}, .bias = c3}); },
                  em::errc::shape, {"bias of shape (3)"});
  }
  SECTION("group_norm") {
    require_error([&] { (void)F::group_norm(x, 2); }, em::errc::shape,
                  {"divisible by num_groups = 2", "(4,3,5)"});
    require_error([&] { (void)F::group_norm(x, 0); }, em::errc::value, {"num_groups"});
    require_error([&] { (void)F::group_norm(x, 3, {.weight = c4}); }, em::errc::shape,
                  {"weight", "(4)"});
    require_error([&] { (void)F::group_norm(em::zeros<float>({6}), 3); }, em::errc::shape, {"(6)"});
  }
}
