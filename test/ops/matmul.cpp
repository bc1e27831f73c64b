// Tests for include/ember/ops/gemm.hpp and include/ember/ops/matmul.hpp: golden values from
// PyTorch (test/data/oracle/ops/{,f32/}{matmul,linear}.safetensors) and, for every GEMM edge
// (sizes around the register and cache blocks, transposes, step slices, alpha/beta, NaN in C,
// batch broadcasting, threads), a long double reference computed here from the same inputs
// with a rounding-error bound |got - exact| <= (k + 2) * eps * (sum |a||b| + |beta c|) * 2.
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/core/allocator.hpp>
#include <ember/ops/gemm.hpp>
#include <ember/ops/matmul.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace em = ember;
namespace et = ember_test;
namespace F = ember::nn::functional;
using Catch::Matchers::Contains;
using shp = em::shape;

namespace {

/// Expects `expr` to throw ember::error of category `cat` whose message contains each part.
#define CHECK_EMBER_ERROR(expr, cat, ...)                    \
  do {                                                       \
    bool thrown_ = false;                                    \
    try {                                                    \
      (void)(expr);                                          \
    } catch (const em::error& e_) {                          \
      thrown_ = true;                                        \
      CHECK(e_.category() == (cat));                         \
      for (const char* part_ : {__VA_ARGS__})                \
        CHECK_THAT(std::string(e_.what()), Contains(part_)); \
    }                                                        \
    CHECK(thrown_);                                          \
  } while (0)

/// Row-major copy of a tensor's values, read through its strides.
template <class T>
std::vector<T> values_of(const em::tensor<T>& t) {
  std::vector<T> out;
  if (t.numel() == 0) return out;
  const auto& s = t.shape();
  std::vector<std::int64_t> idx(s.size(), 0);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    std::int64_t off = 0;
    for (std::size_t d = 0; d < s.size(); ++d) off += idx[d] * t.strides()[d];
    out.push_back(t.data()[off]);
    for (std::size_t d = s.size(); d-- > 0;) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

template <class T>
std::vector<T> random_values(std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<double> d(-1.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(g));
  return v;
}

template <class T>
em::tensor<T> random_tensor(const shp& s, unsigned seed) {
  return em::from_vector<T>(random_values<T>(static_cast<std::size_t>(s.numel()), seed), s);
}

/// One strided matrix operand over its own buffer.
template <class T>
struct strided {
  std::vector<T> buf;
  std::int64_t rs = 0, cs = 0;
  T at(std::int64_t i, std::int64_t j) const { return buf[static_cast<std::size_t>(i * rs + j * cs)]; }
};

/// A rows x cols matrix stored row-major (trans = false) or column-major (trans = true),
/// optionally as a step-slice of a larger buffer (rows every `step` rows, columns every
/// `step + 1` columns).
template <class T>
strided<T> make_operand(std::int64_t rows, std::int64_t cols, bool trans, std::int64_t step,
                        unsigned seed) {
  const std::int64_t sr = step, sc = step == 1 ? 1 : step + 1;
  const std::int64_t R = std::max<std::int64_t>(rows, 1) * sr, C = std::max<std::int64_t>(cols, 1) * sc;
  strided<T> m;
  m.buf = random_values<T>(static_cast<std::size_t>(R * C), seed);
  if (!trans) m.rs = C * sr, m.cs = sc;
  else m.rs = sr, m.cs = R * sc;
  return m;
}

/// Worst |got - exact| / bound over C, where exact is computed in long double from the same
/// inputs (and C's value before the call) and bound is the classical dot-product error bound
/// widened by 2. > 1 means a wrong result. NaN anywhere counts as infinitely wrong.
template <class T>
double gemm_error(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const strided<T>& a,
                  const strided<T>& b, T beta, const strided<T>& c0, const strided<T>& c) {
  const long double eps = std::numeric_limits<T>::epsilon();
  double worst = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      long double s = 0, mag = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        const long double x = static_cast<long double>(a.at(i, p)) * b.at(p, j);
        s += x;
        mag += std::fabs(x);
      }
      long double want = static_cast<long double>(alpha) * s;
      long double bound = std::fabs(static_cast<long double>(alpha)) * mag;
      if (beta != T(0)) {
        want += static_cast<long double>(beta) * c0.at(i, j);
        bound += std::fabs(static_cast<long double>(beta) * c0.at(i, j));
      }
      bound = 2 * (static_cast<long double>(k) + 2) * eps * bound + std::numeric_limits<T>::min();
      const long double got = c.at(i, j);
      const double e = std::isnan(static_cast<double>(got))
                           ? std::numeric_limits<double>::infinity()
                           : static_cast<double>(std::fabs(got - want) / bound);
      worst = std::max(worst, e);
    }
  return worst;
}

/// Runs detail::gemm on one configuration and returns gemm_error.
template <class T>
double run_gemm_case(std::int64_t m, std::int64_t n, std::int64_t k, bool ta, bool tb, bool tc,
                     std::int64_t step, T alpha, T beta, bool nan_c, unsigned seed) {
  const auto a = make_operand<T>(m, k, ta, step, seed);
  const auto b = make_operand<T>(k, n, tb, step, seed + 1);
  auto c = make_operand<T>(m, n, tc, 1, seed + 2);
  if (nan_c)
    for (auto& x : c.buf) x = std::numeric_limits<T>::quiet_NaN();
  const auto c0 = c;
  em::detail::gemm<T>(m, n, k, alpha, a.buf.data(), a.rs, a.cs, b.buf.data(), b.rs, b.cs, beta,
                      c.buf.data(), c.rs, c.cs);
  return gemm_error(m, n, k, alpha, a, b, beta, c0, c);
}

/// Naive float64 matmul of two row-major matrices given as value lists.
std::vector<double> naive_mm(const std::vector<double>& a, const std::vector<double>& b,
                             std::int64_t m, std::int64_t k, std::int64_t n) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      long double s = 0;
      for (std::int64_t p = 0; p < k; ++p)
        s += static_cast<long double>(a[static_cast<std::size_t>(i * k + p)]) * b[static_cast<std::size_t>(p * n + j)];
      c[static_cast<std::size_t>(i * n + j)] = static_cast<double>(s);
    }
  return c;
}

template <class T>
std::vector<double> as_double(const em::tensor<T>& t) {
  std::vector<double> out;
  for (auto v : values_of(t)) out.push_back(static_cast<double>(v));
  return out;
}

/// |got - want| <= tol * (1 + |want|) elementwise, with equal shapes.
template <class T>
void check_close(const em::tensor<T>& got, const shp& want_shape, const std::vector<double>& want,
                 double tol) {
  REQUIRE(got.shape() == want_shape);
  const auto g = as_double(got);
  REQUIRE(g.size() == want.size());
  double worst = 0;
  for (std::size_t i = 0; i < g.size(); ++i)
    worst = std::max(worst, std::isnan(g[i]) ? 1e300 : std::abs(g[i] - want[i]) / (1 + std::abs(want[i])));
  INFO("shape " << got.shape() << ", worst relative error " << worst);
  CHECK(worst <= tol);
}

template <class T>
constexpr double tol_of = std::is_same_v<T, double> ? 1e-12 : 2e-5;

/// Reference for matmul on arbitrary (broadcast) shapes: loops over the broadcast batch with
/// torch's 1-D promotion rules, in long double.
template <class T>
std::pair<shp, std::vector<double>> matmul_reference(const em::tensor<T>& a, const em::tensor<T>& b) {
  em::tensor<T> a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
  em::tensor<T> b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
  const shp ba(a2.shape().begin(), a2.shape().end() - 2), bb(b2.shape().begin(), b2.shape().end() - 2);
  const shp batch = em::broadcast_shapes(ba, bb);
  const std::int64_t m = a2.size(-2), k = a2.size(-1), n = b2.size(-1);
  shp ea = batch, eb = batch;
  ea.push_back(m), ea.push_back(k), eb.push_back(k), eb.push_back(n);
  const auto av = as_double(a2.expand(ea)), bv = as_double(b2.expand(eb));
  std::vector<double> out;
  for (std::int64_t t = 0; t < batch.numel(); ++t) {
    std::vector<double> x(av.begin() + t * m * k, av.begin() + (t + 1) * m * k);
    std::vector<double> y(bv.begin() + t * k * n, bv.begin() + (t + 1) * k * n);
    const auto c = naive_mm(x, y, m, k, n);
    out.insert(out.end(), c.begin(), c.end());
  }
  shp s = batch;
  if (a.dim() > 1) s.push_back(m);
  if (b.dim() > 1) s.push_back(n);
  return {s, out};
}

template <class T>
std::string oracle_file(const std::string& family) {
  return et::test_data(std::string("oracle/ops/") + (std::is_same_v<T, float> ? "f32/" : "") +
                       family + ".safetensors");
}

template <class T>
constexpr double oracle_tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;

}  // namespace

// ---- PyTorch oracle ---------------------------------------------------------------------------

TEMPLATE_TEST_CASE("matmul: PyTorch oracle (matmul.safetensors)", "[matmul][oracle]", double, float) {
  using T = TestType;
  const auto f = et::read_safetensors(oracle_file<T>("matmul"));
  const int cases = std::stoi(f.meta("num_cases"));
  REQUIRE(cases == 8);
  for (int i = 0; i < cases; ++i) {
    const std::string c = "case" + std::to_string(i);
    INFO(c << ": " << f.meta(c));
    const auto a = f.template get<T>(c + ".in0"), b = f.template get<T>(c + ".in1"), want = f.template get<T>(c + ".out");
    check_close(em::matmul(a, b), want.shape(), as_double(want), oracle_tol<T>);
  }
}

TEMPLATE_TEST_CASE("linear: PyTorch oracle (linear.safetensors)", "[matmul][linear][oracle]", double,
                   float) {
  using T = TestType;
  const auto f = et::read_safetensors(oracle_file<T>("linear"));
  const int cases = std::stoi(f.meta("num_cases"));
  REQUIRE(cases == 4);
  for (int i = 0; i < cases; ++i) {
    const std::string c = "case" + std::to_string(i);
    INFO(c << ": " << f.meta(c));
    const auto x = f.template get<T>(c + ".in0"), w = f.template get<T>(c + ".in1"), want = f.template get<T>(c + ".out");
    const auto got = f.contains(c + ".in2") ? F::linear(x, w, f.template get<T>(c + ".in2")) : F::linear(x, w);
    check_close(got, want.shape(), as_double(want), oracle_tol<T>);
  }
}

// ---- GEMM edges against a long double reference ---------------------------------------------

TEMPLATE_TEST_CASE("gemm: every small size, transpose and C layout", "[gemm]", float, double) {
  using T = TestType;
  const std::int64_t sizes[] = {0, 1, 2, 7, 17, 33};
  unsigned seed = 1;
  double worst = 0;
  int runs = 0;
  for (auto m : sizes)
    for (auto n : sizes)
      for (auto k : sizes)
        for (int layout = 0; layout < 8; ++layout) {
          const bool ta = layout & 1, tb = layout & 2, tc = layout & 4;
          const double e = run_gemm_case<T>(m, n, k, ta, tb, tc, 1, T(1), T(0), false, seed++);
          if (!(e <= 1)) {
            INFO("m=" << m << " n=" << n << " k=" << k << " ta=" << ta << " tb=" << tb << " tc=" << tc);
            CHECK(e <= 1);
          }
          worst = std::max(worst, e);
          ++runs;
        }
  CHECK(runs == 6 * 6 * 6 * 8);
  CHECK(worst <= 1);
}

TEMPLATE_TEST_CASE("gemm: sizes across the register and cache blocks", "[gemm]", float, double) {
  using T = TestType;
  using blk = em::detail::gemm_blocking<T>;
  const std::int64_t mr = blk::mr, nr = blk::nr;
  struct dims {
    std::int64_t m, n, k;
  };
  const std::vector<dims> cases = {
      {257, 33, 17},           {17, 257, 33},           {33, 17, 257},
      {mr, nr, 64},            {mr + 1, nr + 1, 65},    {2 * mr - 1, 2 * nr - 1, 40},
      {blk::mc + 3, 20, 24},   {20, blk::kc + 5, 24},   {24, 20, 2 * blk::kc + 9},
      {3, blk::nc + 37, 5},    {1, 300, 200},           {300, 1, 200},
      {64, 100, 1},            {40, 40, 40}};
  unsigned seed = 100;
  for (const auto& d : cases)
    for (int layout = 0; layout < 4; ++layout) {
      const bool ta = layout & 1, tb = layout & 2;
      INFO("m=" << d.m << " n=" << d.n << " k=" << d.k << " ta=" << ta << " tb=" << tb);
      CHECK(run_gemm_case<T>(d.m, d.n, d.k, ta, tb, false, 1, T(1), T(0), false, seed++) <= 1);
    }
}

TEMPLATE_TEST_CASE("gemm: alpha, beta, NaN in C, step-sliced operands", "[gemm]", float, double) {
  using T = TestType;
  const std::int64_t sizes[][3] = {{5, 6, 7}, {33, 40, 17}, {70, 45, 400}, {1, 50, 30}, {50, 1, 30}};
  unsigned seed = 500;
  for (const auto& s : sizes)
    for (int layout = 0; layout < 8; ++layout) {
      const bool ta = layout & 1, tb = layout & 2, tc = layout & 4;
      INFO("m=" << s[0] << " n=" << s[1] << " k=" << s[2] << " layout=" << layout);
      // beta != 0 and alpha != 1 (over several k blocks for k = 400)
      CHECK(run_gemm_case<T>(s[0], s[1], s[2], ta, tb, tc, 1, T(0.75), T(-1.5), false, seed++) <= 1);
      // beta == 0 never reads C: NaN in C does not propagate
      CHECK(run_gemm_case<T>(s[0], s[1], s[2], ta, tb, tc, 1, T(2), T(0), true, seed++) <= 1);
      // operands sliced with a step in both dims (no unit stride anywhere)
      CHECK(run_gemm_case<T>(s[0], s[1], s[2], ta, tb, tc, 2, T(1), T(0.5), false, seed++) <= 1);
    }
  // k == 0 and alpha == 0: C = beta * C (zeros when beta == 0, even over NaN)
  for (const T beta : {T(0), T(3)}) {
    auto c = make_operand<T>(4, 5, false, 1, 9);
    c.buf[0] = beta == T(0) ? std::numeric_limits<T>::quiet_NaN() : T(1);
    const auto c0 = c;
    em::detail::gemm<T>(4, 5, 0, T(1), nullptr, 0, 1, nullptr, 1, 0, beta, c.buf.data(), c.rs, c.cs);
    for (std::int64_t i = 0; i < 4; ++i)
      for (std::int64_t j = 0; j < 5; ++j) CHECK(c.at(i, j) == (beta == T(0) ? T(0) : beta * c0.at(i, j)));
    auto a = make_operand<T>(4, 3, false, 1, 10), b = make_operand<T>(3, 5, false, 1, 11);
    a.buf[0] = std::numeric_limits<T>::quiet_NaN();  // alpha == 0: A is not read, as BLAS
    auto c2 = c0;
    em::detail::gemm<T>(4, 5, 3, T(0), a.buf.data(), a.rs, a.cs, b.buf.data(), b.rs, b.cs, beta,
                        c2.buf.data(), c2.rs, c2.cs);
    for (std::int64_t i = 0; i < 4; ++i)
      for (std::int64_t j = 0; j < 5; ++j) CHECK(c2.at(i, j) == (beta == T(0) ? T(0) : beta * c0.at(i, j)));
  }
}

TEST_CASE("gemm: other element types use the plain loop", "[gemm]") {
  const std::int64_t a[] = {1, 2, 3, 4, 5, 6}, b[] = {7, 8, 9, 10, 11, 12};
  std::int64_t c[4] = {100, 100, 100, 100};
  em::detail::gemm<std::int64_t>(2, 2, 3, 1, a, 3, 1, b, 2, 1, 1, c, 2, 1);
  CHECK(c[0] == 158);
  CHECK(c[1] == 164);
  CHECK(c[2] == 239);
  CHECK(c[3] == 254);
  const em::half ha[] = {1.5f, 2.f}, hb[] = {4.f, 0.25f};
  em::half hc[1] = {em::half(-99.f)};
  em::detail::gemm<em::half>(1, 1, 2, em::half(1.f), ha, 2, 1, hb, 1, 1, em::half(0.f), hc, 1, 1);
  CHECK(float(hc[0]) == 6.5f);
}

TEMPLATE_TEST_CASE("gemm: one and two threads give the same bits", "[gemm][threads]", float, double) {
  using T = TestType;
  const int saved = em::get_num_threads();
  const std::int64_t m = 203, n = 150, k = 420;
  for (int layout = 0; layout < 2; ++layout) {
    const auto a = make_operand<T>(m, k, layout == 1, 1, 77);
    const auto b = make_operand<T>(k, n, layout == 1, 1, 78);
    auto c1 = make_operand<T>(m, n, false, 1, 79);
    auto c2 = c1;
    em::set_num_threads(1);
    em::detail::gemm<T>(m, n, k, T(1), a.buf.data(), a.rs, a.cs, b.buf.data(), b.rs, b.cs, T(0.5),
                        c1.buf.data(), c1.rs, c1.cs);
    em::set_num_threads(2);
    em::detail::gemm<T>(m, n, k, T(1), a.buf.data(), a.rs, a.cs, b.buf.data(), b.rs, b.cs, T(0.5),
                        c2.buf.data(), c2.rs, c2.cs);
    CHECK(c1.buf == c2.buf);
    // and it is right: sample rows against the reference
    const auto c0 = make_operand<T>(m, n, false, 1, 79);
    CHECK(gemm_error<T>(7, n, k, T(1), a, b, T(0.5), c0, c1) <= 1);
  }
  // matrix-vector shapes (direct loops split over columns or rows)
  for (const auto& [m2, n2] : {std::pair<std::int64_t, std::int64_t>{1, 3001}, {2999, 1}}) {
    for (int layout = 0; layout < 2; ++layout) {
      const auto a = make_operand<T>(m2, 700, layout == 1, 1, 90);
      const auto b = make_operand<T>(700, n2, layout == 1, 1, 91);
      auto c1 = make_operand<T>(m2, n2, false, 1, 92);
      auto c2 = c1;
      const auto c0 = c1;
      em::set_num_threads(1);
      em::detail::gemm<T>(m2, n2, 700, T(1), a.buf.data(), a.rs, a.cs, b.buf.data(), b.rs, b.cs,
                          T(-1), c1.buf.data(), c1.rs, c1.cs);
      em::set_num_threads(2);
      em::detail::gemm<T>(m2, n2, 700, T(1), a.buf.data(), a.rs, a.cs, b.buf.data(), b.rs, b.cs,
                          T(-1), c2.buf.data(), c2.rs, c2.cs);
      CHECK(c1.buf == c2.buf);
      CHECK(gemm_error<T>(std::min<std::int64_t>(m2, 50), n2, 700, T(1), a, b, T(-1), c0, c1) <= 1);
    }
  }
  // batched matmul: parallel over batches vs serial
  const auto x = random_tensor<T>({6, 30, 20}, 5), y = random_tensor<T>({6, 20, 25}, 6);
  em::set_num_threads(1);
  const auto r1 = values_of(em::matmul(x, y));
  em::set_num_threads(2);
  const auto r2 = values_of(em::matmul(x, y));
  CHECK(r1 == r2);
  em::set_num_threads(saved);
}

// ---- matmul semantics --------------------------------------------------------------------------

TEMPLATE_TEST_CASE("matmul: ranks, promotion of 1-D operands, batch broadcasting", "[matmul]", float,
                   double) {
  using T = TestType;
  const std::vector<std::pair<shp, shp>> cases = {
      {{4}, {4}},       {{3, 4}, {4}},          {{4}, {4, 5}},          {{3, 4}, {4, 5}},
      {{2, 3, 4}, {4}}, {{4}, {2, 4, 5}},       {{2, 3, 4}, {4, 5}},    {{3, 4}, {2, 4, 5}},
      {{1, 3, 4}, {2, 4, 5}}, {{2, 1, 3, 4}, {5, 4, 2}}, {{2, 3, 4}, {2, 4, 5}}, {{7, 1, 1, 2}, {3, 2, 6}},
      {{1, 40}, {40, 1}}, {{1}, {1}},          {{30, 50}, {50, 40}},   {{3, 1, 20, 30}, {1, 4, 30, 10}}};
  unsigned seed = 1000;
  for (const auto& [sa, sb] : cases) {
    INFO(sa << " @ " << sb);
    const auto a = random_tensor<T>(sa, seed++), b = random_tensor<T>(sb, seed++);
    const auto [s, want] = matmul_reference(a, b);
    check_close(em::matmul(a, b), s, want, tol_of<T>);
  }
  CHECK(em::matmul(em::ones<T>({4}), em::ones<T>({4})).dim() == 0);
  CHECK(em::matmul(em::ones<T>({4}), em::ones<T>({4})).item() == T(4));
}

TEMPLATE_TEST_CASE("matmul: transposed, step-sliced and expanded views need no copies", "[matmul]",
                   float, double) {
  using T = TestType;
  const auto base = random_tensor<T>({40, 60}, 3);
  const auto other = random_tensor<T>({50, 90}, 4);
  const std::vector<std::pair<em::tensor<T>, em::tensor<T>>> cases = {
      {base.t(), base},                                            // (60,40)·(40,60), A transposed
      {base, base.t()},                                            // B transposed
      {base.slice(0, 0, 40, 2), other.slice(1, 1, 90, 3).slice(0, 0, 60)},  // steps, no unit stride in B
      {base.slice(1, 0, 60, 3).t(), base.slice(1, 0, 60, 2).slice(0, 0, 40)},
      {other.slice(0, 0, 50, 2).t().slice(0, 0, 90, 5), other.slice(0, 1, 25)},
      {random_tensor<T>({1, 8}, 9).expand({6, 8}), random_tensor<T>({8, 1}, 10).expand({8, 7})},
      {random_tensor<T>({5, 8}, 11).expand({3, 5, 8}), random_tensor<T>({3, 8, 4}, 12).transpose(1, 2).transpose(1, 2)},
      {random_tensor<T>({4, 6, 5}, 13).permute({1, 0, 2}), random_tensor<T>({6, 5, 3}, 14)},
      // one matrix on the right: batch rows folded into one GEMM when their strides allow
      {random_tensor<T>({1, 1, 8}, 15).expand({3, 1, 8}), random_tensor<T>({8, 5}, 16)},
      {random_tensor<T>({5, 1, 8}, 17).slice(0, 0, 5, 2), random_tensor<T>({8, 5}, 18)},
      {random_tensor<T>({4, 3, 8}, 19).slice(1, 0, 3, 2), random_tensor<T>({8, 5}, 20)},
      {random_tensor<T>({2, 3, 4, 8}, 21).transpose(0, 1), random_tensor<T>({8, 5}, 22)},
      {random_tensor<T>({2, 3, 4, 8}, 23), random_tensor<T>({8, 5}, 24).expand({3, 8, 5})},
  };
  for (const auto& [a, b] : cases) {
    if (a.size(-1) != b.size(-2)) continue;
    INFO(a.shape() << " strides " << a.strides() << " @ " << b.shape() << " strides " << b.strides());
    const auto [s, want] = matmul_reference(a, b);
    const auto before = em::memory_stats().allocations;
    const auto got = em::matmul(a, b);
    CHECK(em::memory_stats().allocations - before == 1);  // the result only: no operand copies
    check_close(got, s, want, tol_of<T>);
  }
}

TEMPLATE_TEST_CASE("matmul: empty dimensions", "[matmul]", float, double) {
  using T = TestType;
  const auto z = em::matmul(em::ones<T>({3, 0}), em::ones<T>({0, 4}));  // k = 0: zeros
  CHECK(z.shape() == shp{3, 4});
  for (auto v : values_of(z)) CHECK(v == T(0));
  CHECK(em::matmul(em::ones<T>({0, 5}), em::ones<T>({5, 4})).shape() == shp{0, 4});
  CHECK(em::matmul(em::ones<T>({3, 5}), em::ones<T>({5, 0})).shape() == shp{3, 0});
  CHECK(em::matmul(em::ones<T>({0, 3, 5}), em::ones<T>({5, 2})).shape() == shp{0, 3, 2});
  CHECK(em::matmul(em::ones<T>({2, 1, 3, 0}), em::ones<T>({4, 0, 2})).shape() == shp{2, 4, 3, 2});
  const auto d = em::matmul(em::ones<T>({0}), em::ones<T>({0}));
  CHECK(d.dim() == 0);
  CHECK(d.item() == T(0));
  CHECK(em::mm(em::ones<T>({2, 0}), em::ones<T>({0, 2})).shape() == shp{2, 2});
}

TEMPLATE_TEST_CASE("mm, bmm, mv, dot, addmm, baddbmm", "[matmul]", float, double) {
  using T = TestType;
  const auto a = random_tensor<T>({5, 7}, 21), b = random_tensor<T>({7, 3}, 22);
  {
    const auto [s, want] = matmul_reference(a, b);
    check_close(em::mm(a, b), s, want, tol_of<T>);
    check_close(em::mm(b.t(), a.t()), shp{3, 5}, as_double(em::matmul(a, b).t().contiguous()), tol_of<T>);
  }
  const auto x = random_tensor<T>({4, 5, 7}, 23), y = random_tensor<T>({4, 7, 6}, 24);
  {
    const auto [s, want] = matmul_reference(x, y);
    check_close(em::bmm(x, y), s, want, tol_of<T>);
  }
  const auto v = random_tensor<T>({7}, 25);
  {
    const auto [s, want] = matmul_reference(a, v);
    check_close(em::mv(a, v), s, want, tol_of<T>);
    const auto [s2, want2] = matmul_reference(v, v);
    check_close(em::dot(v, v), s2, want2, tol_of<T>);
  }
  // addmm: beta * bias + alpha * a·b, bias broadcast (row vector, column, scalar, full)
  const auto ab = as_double(em::mm(a, b));
  for (const shp& bs : {shp{3}, shp{5, 1}, shp{}, shp{5, 3}}) {
    INFO("bias shape " << bs);
    const auto bias = random_tensor<T>(bs, 26);
    const auto full = as_double(bias.expand({5, 3}));
    std::vector<double> want(ab.size());
    for (std::size_t i = 0; i < ab.size(); ++i) want[i] = 0.5 * full[i] + 2.0 * ab[i];
    check_close(em::addmm(bias, a, b, 0.5, 2.0), shp{5, 3}, want, tol_of<T>);
    for (std::size_t i = 0; i < ab.size(); ++i) want[i] = full[i] + ab[i];
    check_close(em::addmm(bias, a, b), shp{5, 3}, want, tol_of<T>);
  }
  // beta == 0: the bias is not read (NaN does not propagate)
  const auto nan_bias = em::full<T>({5, 3}, std::numeric_limits<T>::quiet_NaN());
  check_close(em::addmm(nan_bias, a, b, 0.0, 1.0), shp{5, 3}, ab, tol_of<T>);
  // baddbmm
  const auto bias3 = random_tensor<T>({5, 6}, 27);
  const auto xy = as_double(em::bmm(x, y));
  const auto full3 = as_double(bias3.expand({4, 5, 6}));
  std::vector<double> want3(xy.size());
  for (std::size_t i = 0; i < xy.size(); ++i) want3[i] = -1.0 * full3[i] + 0.25 * xy[i];
  check_close(em::baddbmm(bias3, x, y, -1.0, 0.25), shp{4, 5, 6}, want3, tol_of<T>);
}

TEMPLATE_TEST_CASE("matmul and linear take expressions", "[matmul]", float, double) {
  using T = TestType;
  const auto a = random_tensor<T>({6, 4}, 31), b = random_tensor<T>({4, 5}, 32);
  const auto want = as_double(em::matmul(a, b));
  std::vector<double> twice(want.size());
  for (std::size_t i = 0; i < want.size(); ++i) twice[i] = 2 * want[i];
  check_close(em::matmul(a * T(2), b), shp{6, 5}, twice, tol_of<T>);
  check_close(em::matmul(a, b + b), shp{6, 5}, twice, tol_of<T>);
  check_close(em::mm(a + a, b), shp{6, 5}, twice, tol_of<T>);
  check_close(F::linear(a, b.t() * T(2)), shp{6, 5}, twice, tol_of<T>);
}

TEMPLATE_TEST_CASE("linear: ranks, bias, non-contiguous input and weight", "[matmul][linear]", float,
                   double) {
  using T = TestType;
  const auto w = random_tensor<T>({6, 10}, 41), bias = random_tensor<T>({6}, 42);
  const std::vector<em::tensor<T>> inputs = {
      random_tensor<T>({10}, 43),                                  // 1-D -> (6)
      random_tensor<T>({3, 10}, 44),                               // 2-D
      random_tensor<T>({2, 3, 10}, 45),                            // 3-D: one GEMM of 6 rows
      random_tensor<T>({3, 2, 10}, 46).transpose(0, 1),            // rows not on one stride
      random_tensor<T>({2, 3, 20}, 47).slice(2, 0, 20, 2),         // step-sliced features
      random_tensor<T>({0, 10}, 48),                               // no rows
  };
  for (const auto& x : inputs) {
    INFO("x " << x.shape() << " strides " << x.strides());
    const auto [s, xw] = matmul_reference(x, w.t());
    check_close(F::linear(x, w), s, xw, tol_of<T>);
    std::vector<double> want = xw;
    const auto bv = as_double(bias);
    for (std::size_t i = 0; i < want.size(); ++i) want[i] += bv[i % 6];
    const auto before = em::memory_stats().allocations;
    const auto y = F::linear(x, w, bias);
    CHECK(em::memory_stats().allocations - before <= 1);  // the result only: no copies
    check_close(y, s, want, tol_of<T>);
    // a transposed (column-major) weight
    const auto wt = em::tensor<T>(w.t().contiguous()).t();
    check_close(F::linear(x, wt, bias), s, want, tol_of<T>);
  }
  // an undefined bias is no bias
  const auto x = random_tensor<T>({3, 10}, 49);
  check_close(F::linear(x, w, em::tensor<T>()), shp{3, 6}, as_double(F::linear(x, w)), 0.0);
}

TEST_CASE("matmul: integer tensors", "[matmul]") {
  const auto a = em::from_vector<std::int64_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  const auto b = em::from_vector<std::int64_t>({7, 8, 9, 10, 11, 12}, {3, 2});
  CHECK(values_of(em::matmul(a, b)) == std::vector<std::int64_t>{58, 64, 139, 154});
}

// ---- errors ------------------------------------------------------------------------------------

TEST_CASE("matmul: errors name the shapes", "[matmul][errors]") {
  try {
    (void)em::matmul(em::zeros<float>({2, 3}), em::zeros<float>({4, 5}));
    FAIL("no error");
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::shape);
    CHECK(std::string(e.what()) == "[ember.shape] matmul: cannot multiply (2,3) by (4,5)");
  }
  CHECK_EMBER_ERROR(em::matmul(em::zeros<float>({3}), em::zeros<float>({4})), em::errc::shape,
                    "matmul: cannot multiply (3) by (4)");
  CHECK_EMBER_ERROR(em::matmul(em::zeros<float>({2, 3}), em::zeros<float>({2})), em::errc::shape,
                    "(2,3) by (2)");
  CHECK_EMBER_ERROR(em::matmul(em::zeros<float>({}), em::zeros<float>({2, 3})), em::errc::shape,
                    "matmul", "at least 1", "()", "(2,3)");
  CHECK_EMBER_ERROR(em::matmul(em::zeros<float>({3}), em::zeros<float>({})), em::errc::shape,
                    "at least 1");
  CHECK_EMBER_ERROR(em::matmul(em::zeros<float>({2, 3, 4}), em::zeros<float>({3, 4, 5})),
                    em::errc::shape, "cannot multiply (2,3,4) by (3,4,5)", "batch");
  CHECK_EMBER_ERROR(em::mm(em::zeros<float>({2, 3, 4}), em::zeros<float>({4, 5})), em::errc::shape,
                    "mm: expects two 2-D tensors", "(2,3,4)");
  CHECK_EMBER_ERROR(em::mm(em::zeros<float>({2, 3}), em::zeros<float>({4, 5})), em::errc::shape,
                    "mm: cannot multiply (2,3) by (4,5)");
  CHECK_EMBER_ERROR(em::bmm(em::zeros<float>({2, 3, 4}), em::zeros<float>({3, 4, 5})), em::errc::shape,
                    "bmm: cannot multiply (2,3,4) by (3,4,5)");
  CHECK_EMBER_ERROR(em::bmm(em::zeros<float>({3, 4}), em::zeros<float>({4, 5})), em::errc::shape,
                    "bmm: expects two 3-D tensors");
  CHECK_EMBER_ERROR(em::mv(em::zeros<float>({3, 4}), em::zeros<float>({5})), em::errc::shape,
                    "mv: cannot multiply (3,4) by (5)");
  CHECK_EMBER_ERROR(em::dot(em::zeros<float>({3}), em::zeros<float>({4})), em::errc::shape,
                    "dot", "(3)", "(4)");
  CHECK_EMBER_ERROR(em::addmm(em::zeros<float>({4}), em::zeros<float>({2, 3}), em::zeros<float>({3, 5})),
                    em::errc::shape, "addmm: bias of shape (4)", "(2,5)");
  CHECK_EMBER_ERROR(em::baddbmm(em::zeros<float>({2, 3}), em::zeros<float>({2, 2, 3}),
                                em::zeros<float>({2, 4, 5})),
                    em::errc::shape, "baddbmm: cannot multiply (2,2,3) by (2,4,5)");
  CHECK_EMBER_ERROR(F::linear(em::zeros<float>({3, 4}), em::zeros<float>({5, 3})), em::errc::shape,
                    "linear", "(3,4)", "(5,3)");
  CHECK_EMBER_ERROR(F::linear(em::zeros<float>({3, 4}), em::zeros<float>({4})), em::errc::shape,
                    "linear: weight must be 2-D");
  CHECK_EMBER_ERROR(F::linear(em::zeros<float>({}), em::zeros<float>({5, 4})), em::errc::shape,
                    "linear", "()");
  CHECK_EMBER_ERROR(F::linear(em::zeros<float>({3, 4}), em::zeros<float>({5, 4}), em::zeros<float>({3})),
                    em::errc::shape, "linear: bias of shape (3)", "(3,5)");
}
