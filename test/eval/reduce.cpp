// Tests of include/ember/eval/reduce.hpp: sum prod amax amin mean var std norm logsumexp argmax
// argmin over all / one / several dims, on contiguous, transposed, strided and broadcast inputs
// and on fused expressions, against double-precision loops written here; accuracy of long
// float sums, thread-count independence, errors and edge cases (empty, NaN, ties, 0-d).
// Set EMBER_TEST_VERBOSE=1 to print the measured errors of the large reductions.
#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace em = ember;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();

/// Row-major values of any tensor, read through its strides (not through ember's evaluator).
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

/// The values of shape s grouped by output element of a reduction over `dims` (empty = all,
/// negative allowed), with the output shape.
struct grouping {
  em::shape out_shape;
  std::vector<std::vector<double>> groups;
};
grouping group_by(const std::vector<double>& v, const em::shape& s, std::vector<std::int64_t> dims,
                  bool all, bool keepdim) {
  const auto r = static_cast<std::int64_t>(s.size());
  std::vector<bool> red(s.size(), all || dims.empty());
  for (auto d : dims) red[static_cast<std::size_t>(d < 0 ? d + r : d)] = true;
  grouping g;
  std::int64_t outputs = 1;
  for (std::size_t d = 0; d < s.size(); ++d) {
    if (!red[d]) { g.out_shape.push_back(s[d]); outputs *= s[d]; }
    else if (keepdim) g.out_shape.push_back(1);
  }
  g.groups.resize(static_cast<std::size_t>(outputs));
  std::vector<std::int64_t> idx(s.size(), 0);
  for (std::size_t n = 0; n < v.size(); ++n) {
    std::int64_t o = 0;
    for (std::size_t d = 0; d < s.size(); ++d)
      if (!red[d]) o = o * s[d] + idx[d];
    g.groups[static_cast<std::size_t>(o)].push_back(v[n]);
    for (std::size_t d = s.size(); d-- > 0;) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
  return g;
}

// ---- double references ------------------------------------------------------------------------
double ref_sum(const std::vector<double>& v) { double s = 0; for (double x : v) s += x; return s; }
double ref_prod(const std::vector<double>& v) { double p = 1; for (double x : v) p *= x; return p; }
double ref_max(const std::vector<double>& v) {
  double m = -inf_v;
  for (double x : v) if (std::isnan(x) || x > m) { m = x; if (std::isnan(x)) break; }
  return m;
}
double ref_min(const std::vector<double>& v) {
  double m = inf_v;
  for (double x : v) if (std::isnan(x) || x < m) { m = x; if (std::isnan(x)) break; }
  return m;
}
double ref_mean(const std::vector<double>& v) { return ref_sum(v) / static_cast<double>(v.size()); }
double ref_var(const std::vector<double>& v, bool unbiased) {
  const double m = ref_mean(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return ss / static_cast<double>(static_cast<std::int64_t>(v.size()) - (unbiased ? 1 : 0));
}
double ref_norm(const std::vector<double>& v) { double s = 0; for (double x : v) s += x * x; return std::sqrt(s); }
double ref_lse(const std::vector<double>& v) {
  const double m = ref_max(v);
  if (std::isinf(m)) return m;
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}
double ref_argmax(const std::vector<double>& v, bool max) {  // first occurrence; NaN wins
  std::size_t best = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) return static_cast<double>(i);
    if (max ? v[i] > v[best] : v[i] < v[best]) best = i;
  }
  return static_cast<double>(best);
}

/// |got - want| <= tol * (1 + |want|) elementwise; NaN must match NaN, inf must be equal.
template <class T>
void check_close(const em::tensor<T>& got, const em::shape& shape, const std::vector<double>& want,
                 double tol) {
  REQUIRE(got.shape() == shape);
  const auto g = host(got);
  REQUIRE(g.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i << ": got " << g[i] << ", want " << want[i]);
    if (std::isnan(want[i])) CHECK(std::isnan(g[i]));
    else if (std::isinf(want[i])) CHECK(g[i] == want[i]);
    else CHECK(std::abs(g[i] - want[i]) <= tol * (1 + std::abs(want[i])));
  }
}

template <class T>
constexpr double tol_of = std::is_same_v<T, double> ? 1e-12 : 2e-5;

struct dim_spec {
  bool all;  // call f(x) with no dims
  std::vector<std::int64_t> dims;
  bool list;  // pass dims as a shape (list overload), else dims[0] as one int
  bool keepdim;
};
const std::vector<dim_spec> dim_specs = {
    {true, {}, false, false},     {false, {0}, false, false},   {false, {1}, false, true},
    {false, {2}, false, false},   {false, {-1}, false, true},   {false, {-3}, false, false},
    {false, {0, 2}, true, false}, {false, {2, 0}, true, true},  {false, {-1, 1}, true, false},
    {false, {0, 1, 2}, true, true}, {false, {}, true, true},   {false, {1}, true, false}};

/// Runs f over every dim spec on x and compares with ref applied to each group.
template <class T, class F, class R>
void check_reduction(const char* name, const em::tensor<T>& x, F f, R ref, double tol) {
  const auto v = host(x);
  for (const auto& sp : dim_specs) {
    INFO(name << " dims " << em::shape(sp.dims) << (sp.all ? " (all)" : sp.list ? " (list)" : "")
              << " keepdim " << sp.keepdim << " input strides " << x.strides());
    const em::tensor<T> got = sp.all ? f(x) : sp.list ? f(x, em::shape(sp.dims), sp.keepdim)
                                                      : f(x, sp.dims[0], sp.keepdim);
    const grouping g = group_by(v, x.shape(), sp.dims, sp.all, sp.keepdim);
    std::vector<double> want;
    for (const auto& grp : g.groups) want.push_back(ref(grp));
    check_close(got, g.out_shape, want, tol);
  }
}

/// (2,3,4) inputs with different memory layouts (same logical shape).
template <class T>
std::vector<std::pair<std::string, em::tensor<T>>> layouts(em::generator& g) {
  const auto base = em::randn<T>({2, 3, 4}, g);
  return {{"contiguous", base},
          {"transposed", em::randn<T>({4, 3, 2}, g).permute({2, 1, 0})},
          {"strided slice", em::randn<T>({2, 7, 4}, g).slice(1, 1, 7, 2)},
          {"broadcast", em::randn<T>({3, 1}, g).expand({2, 3, 4})},
          {"offset view", em::randn<T>({3, 3, 4}, g).slice(0, 1, 3)}};
}

template <class F>
std::pair<em::errc, std::string> error_of(F f) {
  try {
    f();
  } catch (const em::error& e) {
    return {e.category(), e.what()};
  }
  FAIL("expected an ember::error");
  return {em::errc::internal, ""};
}

/// Sets the thread count for a scope.
struct threads_guard {
  int saved = em::get_num_threads();
  explicit threads_guard(int n) { em::set_num_threads(n); }
  ~threads_guard() { em::set_num_threads(saved); }
};

bool verbose() { return std::getenv("EMBER_TEST_VERBOSE") != nullptr; }

}  // namespace

TEMPLATE_TEST_CASE("reductions over all, one and several dims, any layout", "[reduce]", float, double) {
  using T = TestType;
  em::generator g(7);
  const double tol = tol_of<T>;
  for (const auto& [layout, x] : layouts<T>(g)) {
    INFO("layout: " << layout);
    check_reduction("sum", x, [](const auto&... a) { return em::sum(a...); }, ref_sum, tol);
    check_reduction("prod", x, [](const auto&... a) { return em::prod(a...); }, ref_prod, tol);
    check_reduction("amax", x, [](const auto&... a) { return em::amax(a...); }, ref_max, 0.0);
    check_reduction("amin", x, [](const auto&... a) { return em::amin(a...); }, ref_min, 0.0);
    check_reduction("mean", x, [](const auto&... a) { return em::mean(a...); }, ref_mean, tol);
    check_reduction("norm", x, [](const auto&... a) { return em::norm(a...); }, ref_norm, tol);
    for (const bool unbiased : {true, false}) {
      INFO("unbiased " << unbiased);
      auto var = [unbiased](const auto& t, const auto&... a) {
        if constexpr (sizeof...(a) == 0) return em::var(t, unbiased);
        else return [&](const auto& d, bool k) { return em::var(t, d, unbiased, k); }(a...);
      };
      auto sd = [unbiased](const auto& t, const auto&... a) {
        if constexpr (sizeof...(a) == 0) return em::std(t, unbiased);
        else return [&](const auto& d, bool k) { return em::std(t, d, unbiased, k); }(a...);
      };
      auto ref_v = [unbiased](const std::vector<double>& v) { return ref_var(v, unbiased); };
      auto ref_s = [unbiased](const std::vector<double>& v) { return std::sqrt(ref_var(v, unbiased)); };
      check_reduction("var", x, var, ref_v, tol);
      check_reduction("std", x, sd, ref_s, tol);
    }
    // logsumexp has no all-dims overload: only the dim specs
    const auto v = host(x);
    for (const auto& sp : dim_specs) {
      if (sp.all) continue;
      INFO("logsumexp dims " << em::shape(sp.dims) << " keepdim " << sp.keepdim);
      const em::tensor<T> got = sp.list ? em::logsumexp(x, em::shape(sp.dims), sp.keepdim)
                                        : em::logsumexp(x, sp.dims[0], sp.keepdim);
      const grouping gr = group_by(v, x.shape(), sp.dims, false, sp.keepdim);
      std::vector<double> want;
      for (const auto& grp : gr.groups) want.push_back(ref_lse(grp));
      check_close(got, gr.out_shape, want, tol);
    }
    // argmax / argmin: flattened, and along each dim (keepdim both ways)
    for (const bool mx : {true, false}) {
      const em::tensor<std::int64_t> flat = mx ? em::argmax(x) : em::argmin(x);
      CHECK(flat.dim() == 0);
      CHECK(flat.item() == static_cast<std::int64_t>(ref_argmax(v, mx)));
      for (std::int64_t d = -3; d < 3; ++d)
        for (const bool keep : {false, true}) {
          const auto got = mx ? em::argmax(x, d, keep) : em::argmin(x, d, keep);
          const grouping gr = group_by(v, x.shape(), {d}, false, keep);
          std::vector<double> want;
          for (const auto& grp : gr.groups) want.push_back(ref_argmax(grp, mx));
          INFO("arg" << (mx ? "max" : "min") << " dim " << d << " keepdim " << keep);
          check_close(got, gr.out_shape, want, 0.0);
        }
    }
    // tensor methods
    check_close(x.sum(), {}, {ref_sum(v)}, tol);
    check_close(x.mean(), {}, {ref_mean(v)}, tol);
  }
}

TEMPLATE_TEST_CASE("reductions fuse with their input expression", "[reduce]", float, double) {
  using T = TestType;
  em::generator g(11);
  const double tol = tol_of<T>;
  const auto a = em::randn<T>({5, 6, 7}, g), b = em::randn<T>({5, 6, 7}, g);
  const auto c = em::randn<T>({7}, g);                       // broadcast along the last dim
  const auto at = em::randn<T>({7, 6, 5}, g).permute({2, 1, 0});  // transposed operand
  const auto va = host(a), vb = host(b), vc = host(c), vat = host(at);
  auto pointwise = [](const std::vector<double>& x, const std::vector<double>& y, auto op) {
    std::vector<double> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = op(x[i], y[i]);
    return out;
  };
  const std::vector<double> cb = [&] {  // c broadcast to (5,6,7)
    std::vector<double> out(va.size());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = vc[i % 7];
    return out;
  }();
  // products are rounded to T first, as the fused expression does
  const auto ab = pointwise(va, vb, [](double x, double y) { return double(T(T(x) * T(y))); });
  const auto exp_a = pointwise(va, va, [](double x, double) { return std::exp(x); });
  const auto a_minus_c = pointwise(va, cb, [](double x, double y) { return double(T(x) - T(y)); });
  const auto at_b = pointwise(vat, vb, [](double x, double y) { return double(T(T(x) * T(y))); });
  const em::shape s{5, 6, 7};
  auto reduce_ref = [&](const std::vector<double>& v, std::vector<std::int64_t> dims, bool keep,
                        auto ref) {
    const grouping gr = group_by(v, s, dims, dims.empty(), keep);
    std::vector<double> want;
    for (const auto& grp : gr.groups) want.push_back(ref(grp));
    return std::pair{gr.out_shape, want};
  };
  auto check = [&](const em::tensor<T>& got, const std::pair<em::shape, std::vector<double>>& w,
                   double t) { check_close(got, w.first, w.second, t); };

  check(em::sum(a * b), reduce_ref(ab, {}, false, ref_sum), tol);
  check(em::sum(a * b, 1), reduce_ref(ab, {1}, false, ref_sum), tol);
  check(em::sum(a * b, {0, 2}, true), reduce_ref(ab, {0, 2}, true, ref_sum), tol);
  check(em::mean(em::exp(a)), reduce_ref(exp_a, {}, false, ref_mean), tol);
  check(em::mean(em::exp(a), -1), reduce_ref(exp_a, {-1}, false, ref_mean), tol);
  check(em::amax(a - c, 0), reduce_ref(a_minus_c, {0}, false, ref_max), 0.0);
  check(em::amin(a - c, {1, 2}), reduce_ref(a_minus_c, {1, 2}, false, ref_min), 0.0);
  check(em::sum(at * b, 2), reduce_ref(at_b, {2}, false, ref_sum), tol);
  check(em::sum(at * b, 0), reduce_ref(at_b, {0}, false, ref_sum), tol);
  check(em::var(a - c, 1), reduce_ref(a_minus_c, {1}, false, [](const auto& v) { return ref_var(v, true); }), tol);
  check(em::norm(a - c, 2), reduce_ref(a_minus_c, {2}, false, ref_norm), tol);
  check(em::logsumexp(a * b, 1), reduce_ref(ab, {1}, false, ref_lse), tol);
  // an expression broadcasting two leaves to a shape neither has
  const auto col = em::randn<T>({4, 1}, g), row = em::randn<T>({1, 9}, g);
  const auto vcol = host(col), vrow = host(row);
  std::vector<double> outer;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 9; ++j) outer.push_back(double(T(T(vcol[i]) + T(vrow[j]))));
  const grouping gr = group_by(outer, {4, 9}, {1}, false, false);
  std::vector<double> want;
  for (const auto& grp : gr.groups) want.push_back(ref_sum(grp));
  check_close(em::sum(col + row, 1), gr.out_shape, want, tol);
  check_close(em::sum(col + row), {}, {ref_sum(outer)}, tol);
  // argmax of an expression
  const auto am = em::argmax(a * b, 1);
  const grouping ga = group_by(ab, s, {1}, false, false);
  std::vector<double> wa;
  for (const auto& grp : ga.groups) wa.push_back(ref_argmax(grp, true));
  check_close(am, ga.out_shape, wa, 0.0);
}

TEMPLATE_TEST_CASE("outer reductions (innermost dim kept) on rows wider than a packet",
                   "[reduce]", float, double) {
  // Note [Outer reduction]: rows combined into a row of accumulators; odd widths leave a
  // partial last packet, 600 rows cross the float-block flush (256 rows)
  using T = TestType;
  em::generator g(23);
  const double tol = tol_of<T>;
  const auto x = em::randn<T>({600, 3, 37}, g);
  const auto v = host(x);
  for (const auto& dims : {std::vector<std::int64_t>{0}, {1}, {0, 1}, {-3, -2}}) {
    for (const bool keep : {false, true}) {
      INFO("dims " << em::shape(dims) << " keepdim " << keep);
      const grouping gr = group_by(v, x.shape(), dims, false, keep);
      std::vector<double> ws, wmx, wv;
      for (const auto& grp : gr.groups) {
        ws.push_back(ref_sum(grp));
        wmx.push_back(ref_max(grp));
        wv.push_back(ref_var(grp, true));
      }
      check_close(em::sum(x, em::shape(dims), keep), gr.out_shape, ws, tol);
      check_close(em::amax(x, em::shape(dims), keep), gr.out_shape, wmx, 0.0);
      check_close(em::var(x, em::shape(dims), true, keep), gr.out_shape, wv, tol);
    }
  }
  // a broadcast leaf (stride 0 along the kept row) and a fused expression
  const auto c = em::randn<T>({600, 1}, g);
  const auto y = em::randn<T>({600, 45}, g);
  const auto cv = host(c), yv = host(y);
  std::vector<double> want(45, 0.0);
  for (std::int64_t i = 0; i < 600; ++i)
    for (std::int64_t j = 0; j < 45; ++j) want[j] += yv[i * 45 + j] * cv[i] + 1.0;
  check_close(em::sum(y * c + T(1), 0), {45}, want, tol);
  // NaN in one column propagates through amax, the other columns are untouched
  auto z = em::randn<T>({300, 40}, g);
  z.data()[123 * 40 + 17] = std::numeric_limits<T>::quiet_NaN();
  const auto zm = em::amax(z, 0);
  const auto zv = host(z);
  for (std::int64_t j = 0; j < 40; ++j) {
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t i = 0; i < 300; ++i) m = std::max(m, zv[i * 40 + j]);
    if (j == 17) CHECK(std::isnan(zm.data()[j]));
    else CHECK(zm.data()[j] == m);
  }
}

TEST_CASE("integer reductions are exact", "[reduce]") {
  const auto i = em::arange<std::int64_t>(0, 100).reshape({10, 10});
  CHECK(em::sum(i).item() == 4950);
  CHECK(host(em::sum(i, 0)) == std::vector<double>{450, 460, 470, 480, 490, 500, 510, 520, 530, 540});
  CHECK(em::amax(i).item() == 99);
  CHECK(em::amin(i, 1).at({3}) == 30);
  CHECK(em::prod(em::arange<std::int64_t>(1, 11)).item() == 3628800);
  CHECK(em::argmax(i).item() == 99);
  const auto big = em::full<std::int64_t>({3}, std::int64_t(1) << 60);
  CHECK(em::sum(big.slice(0, 0, 2)).item() == (std::int64_t(1) << 61));
}

TEST_CASE("sums of 1e7 float values are accurate to 1e-6", "[reduce][numerics]") {
  constexpr std::int64_t n = 10'000'000;
  em::generator g(2024);
  SECTION("uniform [0, 1)") {
    const auto u = em::rand<float>({n}, g);
    double want = 0;
    float naive = 0;
    for (std::int64_t i = 0; i < n; ++i) { want += u.data()[i]; naive += u.data()[i]; }
    const double got = em::sum(u).item();
    const double rel = std::abs(got - want) / want;
    if (verbose())
      std::printf("sum 1e7 uniform: rel err %.3g (naive float loop %.3g)\n", rel,
                  std::abs(naive - want) / want);
    CHECK(rel < 1e-6);
    const double mean_rel = std::abs(em::mean(u).item() - want / n) / (want / n);
    CHECK(mean_rel < 1e-6);
    // the same values reduced along a dim: the inner dim (rows of 1e6) and the outer dim
    const auto rows = u.view({10, n / 10}), cols = u.view({n / 10, 10});
    const auto rs = em::sum(rows, 1), cs = em::sum(cols, 0);
    double worst = 0;
    for (std::int64_t r = 0; r < 10; ++r) {
      double wr = 0, wc = 0;
      for (std::int64_t k = 0; k < n / 10; ++k) {
        wr += u.data()[r * (n / 10) + k];
        wc += u.data()[k * 10 + r];
      }
      worst = std::max({worst, std::abs(rs.data()[r] - wr) / wr, std::abs(cs.data()[r] - wc) / wc});
    }
    if (verbose()) std::printf("sum of (10,1e6) over dim 1 / of (1e6,10) over dim 0: rel err %.3g\n", worst);
    CHECK(worst < 1e-6);
  }
  SECTION("1 + 1e-4 * i") {
    auto x = em::empty<float>({n});
    double want = 0;
    float naive = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      x.data()[i] = static_cast<float>(1 + 1e-4 * static_cast<double>(i));
      want += x.data()[i];
      naive += x.data()[i];
    }
    const double rel = std::abs(em::sum(x).item() - want) / want;
    if (verbose())
      std::printf("sum 1e7 of 1+1e-4*i: rel err %.3g (naive float loop %.3g)\n", rel,
                  std::abs(naive - want) / want);
    CHECK(rel < 1e-6);
  }
}

TEST_CASE("var of 1e7 floats with a large mean is accurate", "[reduce][numerics]") {
  constexpr std::int64_t n = 10'000'000;
  em::generator g(99);
  const em::tensor<float> x = em::randn<float>({n}, g) + 1e4f;
  double m = 0;
  for (std::int64_t i = 0; i < n; ++i) m += x.data()[i];
  m /= n;
  double ss = 0;
  for (std::int64_t i = 0; i < n; ++i) ss += (x.data()[i] - m) * (x.data()[i] - m);
  for (const bool unbiased : {true, false}) {
    const double want = ss / static_cast<double>(n - (unbiased ? 1 : 0));
    const double got = em::var(x, unbiased).item();
    const double rel = std::abs(got - want) / want;
    if (verbose()) std::printf("var 1e7 (mean 1e4), unbiased=%d: rel err %.3g\n", unbiased, rel);
    CHECK(rel < 1e-4);
    CHECK(std::abs(em::std(x, unbiased).item() - std::sqrt(want)) / std::sqrt(want) < 1e-4);
  }
  // along a dim too
  const auto v2 = em::var(x.view({2, n / 2}), 1);
  for (std::int64_t r = 0; r < 2; ++r) {
    double mr = 0, sr = 0;
    const float* p = x.data() + r * (n / 2);
    for (std::int64_t i = 0; i < n / 2; ++i) mr += p[i];
    mr /= (n / 2);
    for (std::int64_t i = 0; i < n / 2; ++i) sr += (p[i] - mr) * (p[i] - mr);
    CHECK(std::abs(v2.data()[r] - sr / (n / 2 - 1)) / (sr / (n / 2 - 1)) < 1e-4);
  }
}

TEST_CASE("reductions give the same bits for any thread count", "[reduce][threads]") {
  // 62 blocks of reduce_block_size (16384, the last partial) and 4 row blocks of
  // outer_block_rows (256): uneven splits for 2 and 4 threads (10M elements took 100 s of the
  // sanitized run, for no more coverage)
  constexpr std::int64_t n = 1'000'000;
  em::generator g(5);
  const auto x = em::rand<float>({n}, g);
  const auto x2 = x.view({1000, n / 1000});
  std::vector<float> totals, sums_dim0, means;
  for (const int t : {1, 2, 4}) {
    threads_guard guard(t);
    CHECK(em::get_num_threads() == t);
    totals.push_back(em::sum(x).item());
    means.push_back(em::mean(em::exp(x)).item());
    const auto s0 = em::sum(x2, 0);
    sums_dim0.insert(sums_dim0.end(), s0.data(), s0.data() + s0.numel());
  }
  const int before = em::get_num_threads();
  CHECK(before >= 1);
  for (int k = 1; k < 3; ++k) {
    CHECK(std::memcmp(&totals[0], &totals[k], sizeof(float)) == 0);
    CHECK(std::memcmp(&means[0], &means[k], sizeof(float)) == 0);
    CHECK(std::memcmp(sums_dim0.data(), sums_dim0.data() + k * (n / 1000),
                      sizeof(float) * (n / 1000)) == 0);
  }
}

TEST_CASE("reduction errors name the problem", "[reduce][errors]") {
  const auto x = em::zeros<float>({2, 3, 4});
  for (auto [cat, msg] : {error_of([&] { (void)em::sum(x, 3); }),
                          error_of([&] { (void)em::sum(x, -4); }),
                          error_of([&] { (void)em::mean(x, {0, 5}); }),
                          error_of([&] { (void)em::amax(x, 7, true); }),
                          error_of([&] { (void)em::var(x, 3); }),
                          error_of([&] { (void)em::logsumexp(x, -5); }),
                          error_of([&] { (void)em::argmax(x, 3); }),
                          error_of([&] { (void)em::sum(em::zeros<float>({}), 1); })}) {
    INFO(msg);
    CHECK(cat == em::errc::index);
    CHECK((msg.find("rank") != std::string::npos || msg.find("(2,3,4)") != std::string::npos));
  }
  for (auto [cat, msg] : {error_of([&] { (void)em::sum(x, {0, 0}); }),
                          error_of([&] { (void)em::sum(x, {1, -2}); }),
                          error_of([&] { (void)em::var(x, em::shape{2, -1}); })}) {
    INFO(msg);
    CHECK(cat == em::errc::value);
    CHECK(msg.find("more than once") != std::string::npos);
  }
  CHECK_THROWS_AS(em::argmax(em::zeros<float>({0})), em::error);
  CHECK_THROWS_AS(em::argmin(em::zeros<double>({2, 0})), em::error);
  CHECK_THROWS_AS(em::argmax(em::zeros<double>({0, 3}), 0), em::error);
  CHECK(em::argmax(em::zeros<double>({0, 3}), 1).shape() == em::shape{0});  // as PyTorch
  CHECK(em::argmin(em::zeros<float>({0, 3}), -1, true).shape() == em::shape{0, 1});
  const auto [cat, msg] = error_of([&] { (void)em::sum(x, 0).item(); });
  CHECK(cat == em::errc::shape);
  CHECK(msg.find("(3,4)") != std::string::npos);
}

TEST_CASE("reductions over empty dims", "[reduce][edge]") {
  const auto e = em::zeros<float>({0, 3});
  CHECK(em::sum(e, 0).shape() == em::shape{3});
  CHECK(host(em::sum(e, 0)) == std::vector<double>{0, 0, 0});
  CHECK(host(em::prod(e, 0)) == std::vector<double>{1, 1, 1});
  CHECK(em::sum(e).item() == 0.f);
  CHECK(em::sum(e, 1).shape() == em::shape{0});
  CHECK(em::sum(e, {0}, true).shape() == em::shape{1, 3});
  CHECK(std::isnan(em::mean(e).item()));   // PyTorch: nan
  for (double v : host(em::mean(e, 0))) CHECK(std::isnan(v));
  for (double v : host(em::var(e, 0))) CHECK(std::isnan(v));
  CHECK(host(em::logsumexp(e, 0)) == std::vector<double>{-inf_v, -inf_v, -inf_v});  // PyTorch: -inf
  CHECK(em::amax(e, 1).shape() == em::shape{0});  // reducing a non-empty dim of an empty tensor
  // PyTorch: "amax(): Expected reduction dim 0 to have non-zero size."
  CHECK(error_of([&] { (void)em::amax(e, 0); }).first == em::errc::index);
  CHECK(error_of([&] { (void)em::amin(e); }).first == em::errc::index);
  CHECK(error_of([&] { (void)em::amax(e, {0, 1}, true); }).first == em::errc::index);
  CHECK(error_of([&] { (void)em::amin(em::zeros<float>({3, 0}), 1); }).first == em::errc::index);
}

TEMPLATE_TEST_CASE("NaN propagates through amax/amin; argmax picks the first extreme", "[reduce][edge]",
                   float, double) {
  using T = TestType;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (const std::int64_t n : {1, 3, 8, 37, 100}) {
    for (const std::int64_t pos : {std::int64_t(0), n / 2, n - 1}) {
      auto x = em::arange<T>(0, n);
      x.data()[pos] = nan;
      INFO("n " << n << " NaN at " << pos);
      CHECK(std::isnan(em::amax(x).item()));
      CHECK(std::isnan(em::amin(x).item()));
      CHECK(em::argmax(x).item() == pos);
      CHECK(em::argmin(x).item() == pos);
      // strided: the same values down a column
      const auto col = em::zeros<T>({n, 3});
      col.select(1, 1).copy_(x);
      CHECK(std::isnan(em::amax(col, 0).at({1})));
      CHECK(em::amax(col, 0).at({0}) == 0);
      CHECK(em::argmin(col, 0).at({1}) == pos);
      CHECK(std::isnan(em::logsumexp(x, 0).item()));
    }
  }
  auto v = em::from_vector<T>({1, 3, 3, 2, 0, 0, 3}, {7});
  CHECK(em::argmax(v).item() == 1);
  CHECK(em::argmin(v).item() == 4);
  auto w = em::from_vector<T>({1, nan, 5, nan}, {4});
  CHECK(em::argmax(w).item() == 1);
  CHECK(em::argmin(w).item() == 1);
  auto m = em::from_vector<T>({2, 2, 1, 4, 4, 4}, {2, 3});
  CHECK(host(em::argmax(m, 1)) == std::vector<double>{0, 0});
  CHECK(host(em::argmin(m, 1)) == std::vector<double>{2, 0});
  CHECK(host(em::argmax(m.t(), 0)) == std::vector<double>{0, 0});
  const T inf = std::numeric_limits<T>::infinity();
  auto infs = em::from_vector<T>({-inf, -inf, -inf, inf, 1, inf}, {2, 3});
  CHECK(host(em::amax(infs, 1)) == std::vector<double>{-inf_v, inf_v});
  CHECK(host(em::argmax(infs, 1)) == std::vector<double>{0, 0});
  CHECK(host(em::logsumexp(infs, 1)) == std::vector<double>{-inf_v, inf_v});
}

TEST_CASE("0-d inputs", "[reduce][edge]") {
  const auto s = em::full<double>({}, 2.5);
  CHECK(em::sum(s).shape() == em::shape{});
  CHECK(em::sum(s).item() == 2.5);
  CHECK(em::sum(s, 0).item() == 2.5);
  CHECK(em::sum(s, -1, true).shape() == em::shape{});
  CHECK(em::prod(s, {0}).item() == 2.5);
  CHECK(em::amax(s).item() == 2.5);
  CHECK(em::amin(s, 0).item() == 2.5);
  CHECK(em::mean(s).item() == 2.5);
  CHECK(std::isnan(em::var(s).item()));   // PyTorch: nan (one element, unbiased)
  CHECK(em::var(s, false).item() == 0.0);
  CHECK(em::norm(s).item() == 2.5);
  CHECK(em::logsumexp(s, 0).item() == 2.5);
  CHECK(em::argmax(s).item() == 0);
  CHECK(em::argmax(s, 0).shape() == em::shape{});
  CHECK(em::argmin(s, -1, true).item() == 0);
  CHECK(s.sum().item() == 2.5);
  CHECK(em::sum(s * s).item() == 6.25);
}
