// Tests of include/ember/expr/operators.hpp: every elementwise function and operator on float
// and double (and int64) tensors, broadcasting, non-contiguous leaves, SIMD tails and the ways
// an expression is materialized. Expected values are computed here with <cmath> in double from
// the definitions (PyTorch semantics), never taken from ember.
#include <catch2/catch.hpp>

#include <ember/ember.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace em = ember;
using Catch::Matchers::Contains;

namespace {

constexpr double pinf = std::numeric_limits<double>::infinity();
constexpr double qnan = std::numeric_limits<double>::quiet_NaN();

/// Row-major element list read straight from storage with the tensor's offset and strides.
template <class T>
std::vector<T> values(const em::tensor<T>& t) {
  std::vector<T> out;
  if (t.numel() == 0) return out;
  const T* base = static_cast<const T*>(t.storage()->data());
  const std::int64_t n = t.dim();
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n), 0);
  for (;;) {
    std::int64_t off = t.storage_offset();
    for (std::int64_t d = 0; d < n; ++d) off += idx[d] * t.strides()[d];
    out.push_back(base[off]);
    std::int64_t d = n - 1;
    while (d >= 0 && ++idx[d] == t.shape()[d]) idx[d--] = 0;
    if (d < 0) return out;
  }
}

/// A contiguous tensor of T holding the given values (converted to T).
template <class T>
em::tensor<T> make(const std::vector<double>& v, const em::shape& s) {
  std::vector<T> tv;
  for (double x : v) tv.push_back(static_cast<T>(x));
  return em::from_vector<T>(tv, s);
}
template <class T>
em::tensor<T> make(const std::vector<double>& v) {
  return make<T>(v, {static_cast<std::int64_t>(v.size())});
}

/// Deterministic values in [lo, hi]: a linear grid, shuffled by a multiplicative step.
std::vector<double> grid(std::size_t n, double lo, double hi) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t j = (i * 7919) % n;
    v[i] = lo + (hi - lo) * static_cast<double>(j) / static_cast<double>(n > 1 ? n - 1 : 1);
  }
  return v;
}

/// Tolerances, relative to (1 + |want|):
///  - exact: ops that are correctly rounded in T (+ - * / sqrt abs floor ...), so the ember
///    result and the double reference differ by the final rounding only;
///  - math: the SIMD transcendentals. float: 2e-6 ~ 16 ulp near 1, against <= 2.3 ulp measured
///    in test/simd/math.cpp (gelu's 1 + erf cancellation adds |x| 2^-24 absolute, < 1e-6 for
///    the |x| <= 8 used here). double: 1e-13, against xsimd's double erf measured at 34 eps
///    (7.5e-15) and pow's error growing like |b log a| eps (< 100 eps for these arguments).
template <class T>
struct tol {
  static constexpr double exact = std::is_same_v<T, float> ? 2e-6 : 1e-15;
  static constexpr double math = std::is_same_v<T, float> ? 2e-6 : 1e-13;
};

/// Every element of got matches want: NaN where NaN, the same infinity, else within
/// rel * (1 + |want|).
template <class T>
void check_close(const em::tensor<T>& got, const std::vector<double>& want, double rel,
                 const std::vector<double>& inputs = {}) {
  REQUIRE(static_cast<std::size_t>(got.numel()) == want.size());
  const std::vector<T> g = values(got);
  int bad = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double x = static_cast<double>(g[i]), w = want[i];
    const bool ok = std::isnan(w)   ? std::isnan(x)
                    : std::isinf(w) ? x == w
                                    : std::fabs(x - w) <= rel * (1 + std::fabs(w));
    if (!ok && ++bad <= 5) {
      INFO(std::setprecision(17) << "element " << i << (inputs.empty() ? "" : " input ") << (inputs.empty() ? 0 : inputs[i])
                      << ": got " << x << ", want " << w);
      CHECK(ok);
    }
  }
  CHECK(bad == 0);
}

/// Elementwise reference over the T-rounded inputs.
template <class T, class F>
std::vector<double> ref(const em::tensor<T>& x, F f) {
  std::vector<double> out;
  for (T v : values(x)) out.push_back(f(static_cast<double>(v)));
  return out;
}
template <class T, class F>
std::vector<double> ref2(const std::vector<double>& a, const std::vector<double>& b, F f) {
  std::vector<double> out;
  for (std::size_t i = 0; i < a.size(); ++i)
    out.push_back(f(static_cast<double>(static_cast<T>(a[i])), static_cast<double>(static_cast<T>(b[i]))));
  return out;
}

double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh_ref(double x) {
  return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
double sigmoid_ref(double x) { return 1 / (1 + std::exp(-x)); }

}  // namespace

/// check_close, reporting the line of the call.
#define CHECK_CLOSE(...)                     \
  do {                                       \
    INFO("checked at line " << __LINE__);    \
    check_close(__VA_ARGS__);                \
  } while (0)

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

TEMPLATE_TEST_CASE("unary functions match <cmath> definitions", "[expr][operators]", float, double) {
  using T = TestType;
  using fn = std::function<em::tensor<T>(const em::tensor<T>&)>;
  struct unary_case {
    const char* name;
    fn f;
    std::function<double(double)> want;
    int domain;  // 0: any real, 1: positive, 2: > -1
    bool math;   // transcendental tolerance
  };
  const std::vector<unary_case> cases = {
      {"neg", [](const auto& x) -> em::tensor<T> { return em::neg(x); }, [](double x) { return -x; }, 0, false},
      {"unary -", [](const auto& x) -> em::tensor<T> { return -x; }, [](double x) { return -x; }, 0, false},
      {"abs", [](const auto& x) -> em::tensor<T> { return em::abs(x); }, [](double x) { return std::fabs(x); }, 0, false},
      {"exp", [](const auto& x) -> em::tensor<T> { return em::exp(x); }, [](double x) { return std::exp(x); }, 0, true},
      {"expm1", [](const auto& x) -> em::tensor<T> { return em::expm1(x); }, [](double x) { return std::expm1(x); }, 0, true},
      {"log", [](const auto& x) -> em::tensor<T> { return em::log(x); }, [](double x) { return std::log(x); }, 1, true},
      {"log1p", [](const auto& x) -> em::tensor<T> { return em::log1p(x); }, [](double x) { return std::log1p(x); }, 2, true},
      {"log2", [](const auto& x) -> em::tensor<T> { return em::log2(x); }, [](double x) { return std::log2(x); }, 1, true},
      {"sqrt", [](const auto& x) -> em::tensor<T> { return em::sqrt(x); }, [](double x) { return std::sqrt(x); }, 1, false},
      {"rsqrt", [](const auto& x) -> em::tensor<T> { return em::rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, 1, false},
      {"square", [](const auto& x) -> em::tensor<T> { return em::square(x); }, [](double x) { return x * x; }, 0, false},
      {"sin", [](const auto& x) -> em::tensor<T> { return em::sin(x); }, [](double x) { return std::sin(x); }, 0, true},
      {"cos", [](const auto& x) -> em::tensor<T> { return em::cos(x); }, [](double x) { return std::cos(x); }, 0, true},
      {"tanh", [](const auto& x) -> em::tensor<T> { return em::tanh(x); }, [](double x) { return std::tanh(x); }, 0, true},
      {"sigmoid", [](const auto& x) -> em::tensor<T> { return em::sigmoid(x); }, sigmoid_ref, 0, true},
      {"relu", [](const auto& x) -> em::tensor<T> { return em::relu(x); }, [](double x) { return x > 0 ? x : 0.0; }, 0, false},
      {"gelu", [](const auto& x) -> em::tensor<T> { return em::gelu(x); }, gelu_ref, 0, true},
      {"gelu_tanh", [](const auto& x) -> em::tensor<T> { return em::gelu_tanh(x); }, gelu_tanh_ref, 0, true},
      {"silu", [](const auto& x) -> em::tensor<T> { return em::silu(x); }, [](double x) { return x / (1 + std::exp(-x)); }, 0, true},
      {"softplus", [](const auto& x) -> em::tensor<T> { return em::softplus(x); },
       [](double x) { return x > 20 ? x : std::log1p(std::exp(x)); }, 0, true},
      {"sign", [](const auto& x) -> em::tensor<T> { return em::sign(x); }, [](double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0; }, 0, false},
      {"floor", [](const auto& x) -> em::tensor<T> { return em::floor(x); }, [](double x) { return std::floor(x); }, 0, false},
      {"ceil", [](const auto& x) -> em::tensor<T> { return em::ceil(x); }, [](double x) { return std::ceil(x); }, 0, false},
      {"round", [](const auto& x) -> em::tensor<T> { return em::round(x); }, [](double x) { return std::nearbyint(x); }, 0, false},
      {"reciprocal", [](const auto& x) -> em::tensor<T> { return em::reciprocal(x); }, [](double x) { return 1 / x; }, 0, false},
      {"erf", [](const auto& x) -> em::tensor<T> { return em::erf(x); }, [](double x) { return std::erf(x); }, 0, true},
  };
  // any real: a grid over [-8, 8] (257 values, so the SIMD tail is used) plus halves for round
  // and the softplus threshold; positive: 1e-6 .. 1e6 logarithmically; > -1: from -0.999.
  std::vector<double> any = grid(257, -8, 8);
  for (double v : {-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 19.5, 20.0, 20.5, 25.0, -25.0, 1e-3, -1e-3, 0.0})
    any.push_back(v);
  std::vector<double> pos;
  for (int i = 0; i <= 120; ++i) pos.push_back(std::pow(10.0, -6 + i * 0.1));
  std::vector<double> gt_m1 = grid(101, -0.999, 50);
  for (const auto& c : cases) {
    SECTION(c.name) {
      const auto& in = c.domain == 0 ? any : c.domain == 1 ? pos : gt_m1;
      const em::tensor<T> x = make<T>(in);
      const em::tensor<T> y = c.f(x);
      CHECK(y.shape() == x.shape());
      CHECK_CLOSE(y, ref(x, c.want), c.math ? tol<T>::math : tol<T>::exact, in);
    }
  }
}

TEMPLATE_TEST_CASE("unary special values follow PyTorch", "[expr][operators]", float, double) {
  using T = TestType;
  const auto x = make<T>({qnan, -0.0, 0.0, -pinf, pinf, -2.0, 3.0});
  const auto v = [](const em::tensor<T>& t) { return values(t); };
  auto r = v(em::relu(x));  // NaN propagates as torch.relu
  CHECK(std::isnan(r[0]));
  CHECK(r[3] == 0);
  CHECK(r[4] == pinf);
  CHECK(r[5] == 0);
  CHECK(r[6] == 3);
  auto s = v(em::sign(x));
  CHECK(s[1] == 0);
  CHECK(s[2] == 0);
  CHECK(s[3] == -1);
  CHECK(s[4] == 1);
  CHECK(s[5] == -1);
  // round is half-to-even (torch.round): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0, -2.5 -> -2
  CHECK(values(em::tensor<T>(em::round(make<T>({0.5, 1.5, 2.5, -0.5, -2.5, 3.5, -3.5, 0.49999997})))) ==
        std::vector<T>{0, 2, 2, -0.0, -2, 4, -4, 0});
  CHECK(std::signbit(v(em::round(make<T>({-0.5})))[0]));
  CHECK(std::signbit(v(em::floor(make<T>({-0.0})))[0]));
  CHECK(std::signbit(v(em::ceil(make<T>({-0.5})))[0]));
  CHECK(std::signbit(v(-make<T>({0.0}))[0]));
  // softplus is exactly x above the threshold 20
  CHECK(values(em::tensor<T>(em::softplus(make<T>({20.5, 25, 100, 1e30})))) == std::vector<T>{20.5, 25, 100, T(1e30)});
  // sigmoid saturates to exactly 0 and 1; tanh and erf to +-1
  auto sg = v(em::sigmoid(x));
  CHECK(sg[3] == 0);
  CHECK(sg[4] == 1);
  CHECK(sg[1] == 0.5);
  CHECK(std::isnan(sg[0]));
  CHECK(v(em::tanh(x))[3] == -1);
  CHECK(v(em::erf(x))[4] == 1);
  // maximum/minimum propagate NaN from either side, as torch.maximum
  const auto a = make<T>({qnan, 1.0, qnan, -1.0});
  const auto b = make<T>({2.0, qnan, qnan, -3.0});
  for (auto m : {v(em::maximum(a, b)), v(em::minimum(a, b)), v(em::maximum(b, a)), v(em::minimum(b, a))}) {
    CHECK(std::isnan(m[0]));
    CHECK(std::isnan(m[1]));
    CHECK(std::isnan(m[2]));
  }
  CHECK(v(em::maximum(a, b))[3] == -1);
  CHECK(v(em::minimum(a, b))[3] == -3);
  // reciprocal of signed zeros
  CHECK(v(em::reciprocal(make<T>({0.0, -0.0}))) == std::vector<T>{T(pinf), T(-pinf)});
}

TEMPLATE_TEST_CASE("binary operators and functions", "[expr][operators]", float, double) {
  using T = TestType;
  const std::size_t n = 203;
  const std::vector<double> av = grid(n, -5, 5), bv0 = grid(n, 0.25, 4);
  std::vector<double> bv = bv0;
  for (std::size_t i = 0; i < n; i += 2) bv[i] = -bv[i];  // both signs, never zero
  const auto a = make<T>(av), b = make<T>(bv);
  const double ex = tol<T>::exact, mt = tol<T>::math;
  CHECK_CLOSE(em::tensor<T>(a + b), ref2<T>(av, bv, [](double x, double y) { return x + y; }), ex);
  CHECK_CLOSE(em::tensor<T>(a - b), ref2<T>(av, bv, [](double x, double y) { return x - y; }), ex);
  CHECK_CLOSE(em::tensor<T>(a * b), ref2<T>(av, bv, [](double x, double y) { return x * y; }), ex);
  CHECK_CLOSE(em::tensor<T>(a / b), ref2<T>(av, bv, [](double x, double y) { return x / y; }), ex);
  CHECK_CLOSE(em::tensor<T>(em::add(a, b)), ref2<T>(av, bv, [](double x, double y) { return x + y; }), ex);
  CHECK_CLOSE(em::tensor<T>(em::sub(a, b)), ref2<T>(av, bv, [](double x, double y) { return x - y; }), ex);
  CHECK_CLOSE(em::tensor<T>(em::mul(a, b)), ref2<T>(av, bv, [](double x, double y) { return x * y; }), ex);
  CHECK_CLOSE(em::tensor<T>(em::div(a, b)), ref2<T>(av, bv, [](double x, double y) { return x / y; }), ex);
  CHECK_CLOSE(em::tensor<T>(em::maximum(a, b)), ref2<T>(av, bv, [](double x, double y) { return std::fmax(x, y); }), 0);
  CHECK_CLOSE(em::tensor<T>(em::minimum(a, b)), ref2<T>(av, bv, [](double x, double y) { return std::fmin(x, y); }), 0);
  // pow(e, e): positive bases with real exponents, negative bases with integer exponents
  const std::vector<double> base = grid(n, 0.1, 10), expo = grid(n, -3, 3);
  CHECK_CLOSE(em::tensor<T>(em::pow(make<T>(base), make<T>(expo))),
              ref2<T>(base, expo, [](double x, double y) { return std::pow(x, y); }), mt);
  std::vector<double> nb, ie;
  for (std::size_t i = 0; i < 40; ++i) {
    nb.push_back(-0.5 - 0.1 * static_cast<double>(i));
    ie.push_back(static_cast<double>(static_cast<int>(i % 9) - 4));
  }
  CHECK_CLOSE(em::tensor<T>(em::pow(make<T>(nb), make<T>(ie))),
              ref2<T>(nb, ie, [](double x, double y) { return std::pow(x, y); }), mt);
  CHECK_CLOSE(em::tensor<T>(em::pow(make<T>({-2.0, -1.5}), make<T>({0.5, 2.5}))), {qnan, qnan}, mt);
  // pow(e, scalar) and pow(scalar, e), scalars of any arithmetic type
  const auto pb = make<T>(base);
  CHECK_CLOSE(em::tensor<T>(em::pow(pb, 2)), ref(pb, [](double x) { return x * x; }), mt);
  CHECK_CLOSE(em::tensor<T>(em::pow(pb, 0.5)), ref(pb, [](double x) { return std::sqrt(x); }), mt);
  CHECK_CLOSE(em::tensor<T>(em::pow(pb, -1.5f)), ref(pb, [](double x) { return std::pow(x, -1.5); }), mt);
  CHECK_CLOSE(em::tensor<T>(em::pow(2, a)), ref(a, [](double x) { return std::exp2(x); }), mt);
  CHECK_CLOSE(em::tensor<T>(em::pow(2.5, a)), ref(a, [](double x) { return std::pow(2.5, x); }), mt);
  // expression (op) scalar and scalar (op) expression with int, double, float scalars; the
  // scalar converts to the tensor's element type first (as PyTorch's wrapped numbers)
  const double tenth = static_cast<double>(static_cast<T>(0.1));
  CHECK_CLOSE(em::tensor<T>(a + 2), ref(a, [](double x) { return x + 2; }), ex);
  CHECK_CLOSE(em::tensor<T>(a + 0.1), ref(a, [&](double x) { return x + tenth; }), ex);
  CHECK_CLOSE(em::tensor<T>(2 - a), ref(a, [](double x) { return 2 - x; }), ex);
  CHECK_CLOSE(em::tensor<T>(a * 3), ref(a, [](double x) { return 3 * x; }), ex);
  CHECK_CLOSE(em::tensor<T>(1.5f * a), ref(a, [](double x) { return 1.5 * x; }), ex);
  CHECK_CLOSE(em::tensor<T>(1 / b), ref(b, [](double x) { return 1 / x; }), ex);
  CHECK_CLOSE(em::tensor<T>(b / 4u), ref(b, [](double x) { return x / 4; }), ex);
  CHECK_CLOSE(em::tensor<T>(em::maximum(a, 0)), ref(a, [](double x) { return std::fmax(x, 0.0); }), 0);
  CHECK_CLOSE(em::tensor<T>(em::minimum(1.0, a)), ref(a, [](double x) { return std::fmin(x, 1.0); }), 0);
  CHECK_CLOSE(em::tensor<T>(std::int64_t{3} + a * a - a / 2), ref(a, [](double x) { return 3 + x * x - x / 2; }), 4 * ex);
  // a deeper fused expression mixing everything
  CHECK_CLOSE(em::tensor<T>(0.5 * a + em::exp(-a * a) - em::tanh(b) / (1 + em::abs(a))),
              ref2<T>(av, bv, [](double x, double y) { return 0.5 * x + std::exp(-x * x) - std::tanh(y) / (1 + std::fabs(x)); }),
              mt);
}

TEMPLATE_TEST_CASE("comparisons give tensor<bool>", "[expr][operators]", float, double) {
  using T = TestType;
  const std::vector<double> av{1, 2, 3, qnan, -0.0, 5, -1, 2.5, 7};
  const std::vector<double> bv{1, 3, 2, 1, 0.0, qnan, -2, 2.5, 8};
  const auto a = make<T>(av), b = make<T>(bv);
  auto cmp = [&](auto f) {
    std::vector<bool> w;
    for (std::size_t i = 0; i < av.size(); ++i) w.push_back(f(av[i], bv[i]));
    return w;
  };
  em::tensor<bool> eq = a == b, ne = a != b, lt = a < b, le = a <= b, gt = a > b, ge = a >= b;
  CHECK(eq.dtype() == em::dtype_of<bool>);
  CHECK(values(eq) == cmp([](double x, double y) { return x == y; }));
  CHECK(values(ne) == cmp([](double x, double y) { return x != y; }));
  CHECK(values(lt) == cmp([](double x, double y) { return x < y; }));
  CHECK(values(le) == cmp([](double x, double y) { return x <= y; }));
  CHECK(values(gt) == cmp([](double x, double y) { return x > y; }));
  CHECK(values(ge) == cmp([](double x, double y) { return x >= y; }));
  std::vector<bool> w0, w1;
  for (double x : av) {
    w0.push_back(x > 0);
    w1.push_back(2 <= x);
  }
  CHECK(values(em::tensor<bool>(a > 0.f)) == w0);
  CHECK(values(em::tensor<bool>(2 <= a)) == w1);
  // comparison of an expression, broadcast against a row
  em::tensor<bool> m = em::exp(make<T>({0, 1, 2, 3}, {4, 1})) > make<T>({1.5, 5}, {2});
  CHECK(m.shape() == em::shape{4, 2});
  CHECK(values(m) == std::vector<bool>{false, false, true, false, true, true, true, true});
}

TEMPLATE_TEST_CASE("where, clamp, leaky_relu, elu, cast", "[expr][operators]", float, double) {
  using T = TestType;
  const std::vector<double> xv = grid(37, -4, 4), yv = grid(37, -1, 9);
  const auto x = make<T>(xv), y = make<T>(yv);
  CHECK_CLOSE(em::tensor<T>(em::where(x > 0, x, y)), ref2<T>(xv, yv, [](double p, double q) { return p > 0 ? p : q; }), 0);
  CHECK_CLOSE(em::tensor<T>(em::where(x > y, 1, y)), ref2<T>(xv, yv, [](double p, double q) { return p > q ? 1 : q; }), 0);
  CHECK_CLOSE(em::tensor<T>(em::where(x < 0, x * 2, 0.5)), ref(x, [](double p) { return p < 0 ? 2 * p : 0.5; }), tol<T>::exact);
  // a tensor<bool> condition (scalar path), broadcast (3,1) x (1,4) x ()
  const em::tensor<bool> c = em::from_vector<bool>({true, false, true}, {3, 1});
  const auto row = make<T>({1, 2, 3, 4}, {1, 4});
  em::tensor<T> w = em::where(c, row, -1.0);
  CHECK(w.shape() == em::shape{3, 4});
  CHECK(values(w) == std::vector<T>{1, 2, 3, 4, -1, -1, -1, -1, 1, 2, 3, 4});
  em::tensor<T> w2 = em::where(em::tensor<bool>(x > 1), y, x);
  CHECK_CLOSE(w2, ref2<T>(xv, yv, [](double p, double q) { return p > 1 ? q : p; }), 0);
  // clamp (integer and floating bounds, NaN stays NaN)
  CHECK_CLOSE(em::tensor<T>(em::clamp(x, -1, 2)), ref(x, [](double p) { return std::fmin(std::fmax(p, -1.0), 2.0); }), 0);
  CHECK_CLOSE(em::tensor<T>(em::clamp(x * 2, -0.5, 0.25f)),
              ref(x, [](double p) { return std::fmin(std::fmax(2 * p, -0.5), 0.25); }), 0);
  CHECK(std::isnan(values(em::tensor<T>(em::clamp(make<T>({qnan}), 0, 1)))[0]));
  // leaky_relu (default slope 0.01) and elu (default alpha 1)
  const double slope = static_cast<double>(static_cast<T>(0.01)), s2 = static_cast<double>(static_cast<T>(0.2f));
  CHECK_CLOSE(em::tensor<T>(em::leaky_relu(x)), ref(x, [&](double p) { return p > 0 ? p : slope * p; }), tol<T>::exact);
  CHECK_CLOSE(em::tensor<T>(em::leaky_relu(x, 0.2f)), ref(x, [&](double p) { return p > 0 ? p : s2 * p; }), tol<T>::exact);
  CHECK_CLOSE(em::tensor<T>(em::elu(x)), ref(x, [](double p) { return p > 0 ? p : std::expm1(p); }), tol<T>::math);
  CHECK_CLOSE(em::tensor<T>(em::elu(x, 0.5)), ref(x, [](double p) { return p > 0 ? p : 0.5 * std::expm1(p); }), tol<T>::math);
  // cast<double> of a float expression is exact; cast then mix with a double tensor
  em::tensor<double> cd = em::cast<double>(x * 2);
  CHECK(cd.dtype() == em::dtype::f64);
  CHECK_CLOSE(cd, ref(x, [](double p) { return 2 * p; }), 0);
  em::tensor<double> mixed = em::cast<double>(x) * make<double>(yv);
  std::vector<double> wm;
  for (std::size_t i = 0; i < xv.size(); ++i) wm.push_back(static_cast<double>(static_cast<T>(xv[i])) * yv[i]);
  CHECK_CLOSE(mixed, wm, 1e-15);
  em::tensor<float> cf = em::cast<float>(em::from_vector<std::int64_t>({-3, 0, 7}) * 2);
  CHECK(values(cf) == std::vector<float>{-6, 0, 14});
}

TEST_CASE("broadcasting shapes", "[expr][operators][broadcast]") {
  std::vector<double> v24, v4{10, 20, 30, 40};
  for (int i = 0; i < 24; ++i) v24.push_back(i);
  em::tensor<float> r1 = make<float>(v24, {2, 3, 4}) + make<float>(v4);
  CHECK(r1.shape() == em::shape{2, 3, 4});
  std::vector<double> w1;
  for (int i = 0; i < 24; ++i) w1.push_back(i + v4[i % 4]);
  CHECK_CLOSE(r1, w1, 0);

  em::tensor<float> r2 = make<float>({1, 2, 3, 4}, {4, 1}) * make<float>({1, 10, 100, 1000, 10000}, {1, 5});
  CHECK(r2.shape() == em::shape{4, 5});
  std::vector<double> w2;
  for (int i = 1; i <= 4; ++i)
    for (double m : {1, 10, 100, 1000, 10000}) w2.push_back(i * m);
  CHECK_CLOSE(r2, w2, 0);

  const std::vector<double> v8{1, 2, 3, 4, 5, 6, 7, 8}, v3{100, 200, 300};
  em::tensor<double> r3 = make<double>(v8, {2, 1, 4}) - make<double>(v3, {3, 1});
  CHECK(r3.shape() == em::shape{2, 3, 4});
  std::vector<double> w3;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) w3.push_back(v8[i * 4 + k] - v3[j]);
  CHECK_CLOSE(r3, w3, 0);

  const auto zero_d = make<float>({2.5}, {});
  CHECK(zero_d.dim() == 0);
  em::tensor<float> r4 = zero_d * make<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(r4.shape() == em::shape{2, 3});
  CHECK_CLOSE(r4, {2.5, 5, 7.5, 10, 12.5, 15}, 0);
  em::tensor<float> r5 = zero_d + zero_d;
  CHECK(r5.dim() == 0);
  CHECK(r5.item() == 5.f);

  CHECK_EMBER_ERROR(em::zeros<float>({2, 3}) + em::zeros<float>({4, 3}), em::errc::shape, "(2,3)", "(4,3)");
  CHECK_EMBER_ERROR(em::exp(em::zeros<double>({2, 3})) * em::zeros<double>({3, 2}), em::errc::shape, "(2,3)", "(3,2)");
  CHECK_EMBER_ERROR(em::where(em::zeros<bool>({2}), em::zeros<float>({3}), 0.f), em::errc::shape, "(2)", "(3)");
}

TEST_CASE("non-contiguous leaves: transposed, stepped, expanded, mixed", "[expr][operators]") {
  std::vector<double> m;
  for (int i = 0; i < 6 * 9; ++i) m.push_back(0.1 * i - 2);
  const auto a = make<float>(m, {6, 9});
  const auto at = a.t();  // (9,6), strides (1,9)
  const auto va = values(at);
  const auto b = make<float>(grid(54, -1, 1), {9, 6});
  const auto vb = values(b);
  std::vector<double> want;
  for (std::size_t i = 0; i < va.size(); ++i) want.push_back(std::exp(double(va[i])) * double(vb[i]) + 1);
  CHECK_CLOSE(em::tensor<float>(em::exp(at) * b + 1), want, tol<float>::math);

  const auto s = a.slice(1, 0, 9, 2);  // (6,5), stride 2 along rows
  CHECK(s.stride(1) == 2);
  const auto vs = values(s);
  want.clear();
  for (float v : vs) want.push_back(std::sin(double(v)) - double(v));
  CHECK_CLOSE(em::tensor<float>(em::sin(s) - s), want, tol<float>::math);

  const auto row = make<float>({1, 2, 3, 4, 5}, {1, 5});
  const auto e = row.expand({6, 5});  // stride 0
  CHECK(e.stride(0) == 0);
  want.clear();
  for (std::size_t i = 0; i < 30; ++i) want.push_back(double(vs[i]) * (1 + i % 5) - 1.0);
  CHECK_CLOSE(em::tensor<float>(s * e - 1), want, tol<float>::exact);

  // a mix: transposed slice, stepped slice and an expanded column in one expression
  const auto big = make<double>(grid(20 * 12, -3, 3), {20, 12});
  const auto p = big.slice(0, 1, 20, 2).slice(1, 0, 12, 3);  // (10,4), strides (24,3)
  const auto q = big.slice(1, 2, 12, 1).slice(0, 0, 4).t();  // (10,4), strides (1,12)
  const auto col = make<double>(grid(10, 1, 2), {10, 1}).expand({10, 4});
  const auto vp = values(p), vq = values(q), vc = values(col);
  want.clear();
  for (std::size_t i = 0; i < 40; ++i) want.push_back(vp[i] * vq[i] + std::tanh(vc[i]) - vp[i] / vc[i]);
  CHECK_CLOSE(em::tensor<double>(p * q + em::tanh(col) - p / col), want, tol<double>::math);
}

TEST_CASE("outputs of many sizes exercise the SIMD tails", "[expr][operators]") {
  for (std::int64_t n : {1, 7, 8, 9, 31, 33, 1000, 100003}) {
    CAPTURE(n);
    const auto xv = grid(static_cast<std::size_t>(n), -3, 3);
    const auto yv = grid(static_cast<std::size_t>(n), 0.5, 2);
    const auto x = make<float>(xv), y = make<float>(yv);
    CHECK_CLOSE(em::tensor<float>(em::exp(x) * y - em::gelu(x)),
                ref2<float>(xv, yv, [](double p, double q) { return std::exp(p) * q - gelu_ref(p); }), tol<float>::math);
    const auto xd = make<double>(xv);
    CHECK_CLOSE(em::tensor<double>(em::sigmoid(xd) + xd * 2), ref(xd, [](double p) { return sigmoid_ref(p) + 2 * p; }),
                tol<double>::math);
    // the same sizes through the gather path (every other element of a 2n buffer)
    std::vector<double> wide(static_cast<std::size_t>(2 * n));
    for (std::size_t i = 0; i < wide.size(); ++i) wide[i] = xv[i / 2];
    const auto xs = make<float>(wide).slice(0, 0, 2 * n, 2);
    CHECK_CLOSE(em::tensor<float>(em::tanh(xs) + 1), ref(x, [](double p) { return std::tanh(p) + 1; }), tol<float>::math);
  }
}

TEST_CASE("integer tensors: exact int64 arithmetic and comparisons", "[expr][operators]") {
  const std::int64_t big = (std::int64_t{1} << 53) + 1;  // not representable in double
  const auto a = em::from_vector<std::int64_t>({big, 3000000000, -7, 0, 5});
  const auto b = em::from_vector<std::int64_t>({1, 3, 2, -4, 5});
  em::tensor<std::int64_t> r = a * b + 1 - b;
  CHECK(values(r) == std::vector<std::int64_t>{big, 8999999998, -15, 5, 21});
  CHECK(values(em::tensor<std::int64_t>(a * 2 + 1)) == std::vector<std::int64_t>{2 * big + 1, 6000000001, -13, 1, 11});
  CHECK(values(em::tensor<std::int64_t>(-a)) == std::vector<std::int64_t>{-big, -3000000000, 7, 0, -5});
  CHECK(values(em::tensor<std::int64_t>(em::abs(a))) == std::vector<std::int64_t>{big, 3000000000, 7, 0, 5});
  CHECK(values(em::tensor<std::int64_t>(em::maximum(a, b))) == std::vector<std::int64_t>{big, 3000000000, 2, 0, 5});
  CHECK(values(em::tensor<std::int64_t>(em::square(b))) == std::vector<std::int64_t>{1, 9, 4, 16, 25});
  CHECK(values(em::tensor<std::int64_t>(em::where(a > b, a, b))) == std::vector<std::int64_t>{big, 3000000000, 2, 0, 5});
  CHECK(values(em::tensor<std::int64_t>(em::clamp(a, -1, 10))) == std::vector<std::int64_t>{10, 10, -1, 0, 5});
  const auto c = em::from_vector<std::int64_t>({big - 1, big, big + 1});
  const std::int64_t e = big;
  CHECK(values(em::tensor<bool>(c == e)) == std::vector<bool>{false, true, false});
  CHECK(values(em::tensor<bool>(c > e)) == std::vector<bool>{false, false, true});
  CHECK(values(em::tensor<bool>(c <= e)) == std::vector<bool>{true, true, false});
  CHECK(values(em::tensor<bool>(a != b)) == std::vector<bool>{true, true, true, true, false});
  CHECK(values(em::tensor<bool>(a >= b)) == std::vector<bool>{true, true, false, true, true});
  // broadcasting in the scalar path
  em::tensor<std::int32_t> m = em::from_vector<std::int32_t>({1, 2, 3}, {3, 1}) * em::from_vector<std::int32_t>({10, 100}, {1, 2});
  CHECK(values(m) == std::vector<std::int32_t>{10, 100, 20, 200, 30, 300});
}

TEST_CASE("materializing an expression", "[expr][operators]") {
  const auto a = make<float>({1, 2, 3});
  const auto e = a + 1.f;
  CHECK(e.dim() == 1);
  CHECK(e.numel() == 3);
  CHECK(e.shape() == em::shape{3});
  em::tensor<float> m = e;
  CHECK(m.is_contiguous());
  CHECK(values(m) == std::vector<float>{2, 3, 4});
  auto m2 = e.eval();
  static_assert(std::is_same_v<decltype(m2), em::tensor<float>>);
  CHECK(values(m2) == std::vector<float>{2, 3, 4});
  CHECK(!m2.is_same(m));
  CHECK(m2.storage() != m.storage());
  CHECK(m.storage() != a.storage());  // a new tensor, a untouched
  CHECK(values(a) == std::vector<float>{1, 2, 3});
  auto bools = (a > 1.5f).eval();
  static_assert(std::is_same_v<decltype(bools), em::tensor<bool>>);
  CHECK(values(bools) == std::vector<bool>{false, true, true});
  // printing an expression prints its value
  std::ostringstream os;
  os << e;
  CHECK(os.str() == "tensor([2., 3., 4.], shape=(3), dtype=f32)");
  std::ostringstream os2;
  os2 << (a > 1.5f);
  CHECK(os2.str() == "tensor([False,  True,  True], shape=(3), dtype=bool)");
  // item() of a one-element expression (any rank); an error otherwise
  CHECK((a.slice(0, 1, 2) * 2.f).item() == 4.f);
  CHECK((em::exp(make<double>({0.0}, {1, 1})) + 1).item() == 2.0);
  CHECK((make<float>({3}, {}) - 1).item() == 2.f);
  CHECK_EMBER_ERROR((a + 1.f).item(), em::errc::shape, "item", "(3)");
  // empty tensors evaluate to empty tensors
  em::tensor<float> z = em::exp(em::zeros<float>({0, 3})) + 1.f;
  CHECK(z.shape() == em::shape{0, 3});
}
