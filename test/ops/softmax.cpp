// Tests of include/ember/ops/softmax.hpp: softmax and log_softmax over every dim, rows of many
// lengths (SIMD bodies and tails), masked (-inf) rows, all -inf / +inf / NaN rows (PyTorch gives
// NaN), large logits, 0-d, empty and expression inputs, against double references written here.
#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace em = ember;

namespace {

constexpr double inf_v = std::numeric_limits<double>::infinity();

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

/// PyTorch's formula in double: d = x - max(x) (NaN if the max is NaN or infinite, as
/// inf - inf), softmax = exp(d) / sum(exp(d)), log_softmax = d - log(sum(exp(d))).
std::vector<double> ref_line(const std::vector<double>& x, bool log) {
  double m = -inf_v;
  for (double v : x) if (std::isnan(v) || v > m) { m = v; if (std::isnan(v)) break; }
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  std::vector<double> out;
  for (double v : x) out.push_back(log ? (v - m) - std::log(s) : std::exp(v - m) / s);
  return out;
}

/// ref_line applied along dim d of row-major values of shape s.
std::vector<double> ref_softmax(const std::vector<double>& v, const em::shape& s, std::int64_t d,
                                bool log) {
  std::vector<double> out(v.size());
  if (s.empty()) {
    if (!v.empty()) out[0] = ref_line(v, log)[0];
    return out;
  }
  if (d < 0) d += static_cast<std::int64_t>(s.size());
  std::int64_t inner = 1;
  for (std::size_t k = static_cast<std::size_t>(d) + 1; k < s.size(); ++k) inner *= s[k];
  const std::int64_t n = s[static_cast<std::size_t>(d)];
  const std::int64_t outer = n * inner == 0 ? 0 : static_cast<std::int64_t>(v.size()) / (n * inner);
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t i = 0; i < inner; ++i) {
      std::vector<double> line;
      for (std::int64_t k = 0; k < n; ++k) line.push_back(v[static_cast<std::size_t>((o * n + k) * inner + i)]);
      const auto r = ref_line(line, log);
      for (std::int64_t k = 0; k < n; ++k) out[static_cast<std::size_t>((o * n + k) * inner + i)] = r[static_cast<std::size_t>(k)];
    }
  return out;
}

/// |got - want| <= tol * (1 + |want|); NaN and infinities must match exactly.
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
constexpr double tol_of = std::is_same_v<T, double> ? 1e-13 : 1e-6;

/// softmax and log_softmax of x along d against the double reference.
template <class T>
void check_both(const em::tensor<T>& x, std::int64_t d, double tol = tol_of<T>) {
  const auto v = host(x);
  INFO("shape " << x.shape() << " strides " << x.strides() << " dim " << d);
  check_close(em::softmax(x, d), x.shape(), ref_softmax(v, x.shape(), d, false), tol);
  check_close(em::log_softmax(x, d), x.shape(), ref_softmax(v, x.shape(), d, true), tol);
}

}  // namespace

TEMPLATE_TEST_CASE("softmax and log_softmax over every dim of a (3,4,5) tensor", "[softmax]", float, double) {
  using T = TestType;
  em::generator g(3);
  const em::tensor<T> x = em::randn<T>({3, 4, 5}, g) * T(3);
  for (std::int64_t d = -3; d < 3; ++d) check_both(x, d);
  // non-contiguous inputs: a transposed and a strided view
  const auto xt = em::randn<T>({5, 4, 3}, g).permute({2, 1, 0});
  const auto xs = em::randn<T>({3, 9, 5}, g).slice(1, 0, 9, 2);
  for (std::int64_t d = 0; d < 3; ++d) {
    check_both(xt, d);
    check_both(xs, d);
  }
  // softmax rows sum to one
  const auto s = em::softmax(x, 1);
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t k = 0; k < 5; ++k) {
      double sum = 0;
      for (std::int64_t j = 0; j < 4; ++j) sum += s.at({i, j, k});
      CHECK(std::abs(sum - 1) < 4 * std::numeric_limits<T>::epsilon());
    }
}

TEMPLATE_TEST_CASE("rows of every length: SIMD bodies and tails", "[softmax]", float, double) {
  using T = TestType;
  em::generator g(4);
  for (const std::int64_t n : {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 64, 1000}) {
    INFO("row length " << n);
    const em::tensor<T> x = em::randn<T>({3, n}, g) * T(2);
    check_both(x, -1);
    check_both(x.t(), 0);  // the same rows along a non-last dim
    check_both(em::randn<T>({n}, g), 0);
  }
  // a row of length 1 is exactly 1 (log: 0)
  const auto one = em::randn<T>({4, 1}, g);
  CHECK(host(em::softmax(one, 1)) == std::vector<double>{1, 1, 1, 1});
  CHECK(host(em::log_softmax(one, 1)) == std::vector<double>{0, 0, 0, 0});
}

TEMPLATE_TEST_CASE("masked rows: -inf entries get 0; an all -inf row gives NaN like PyTorch", "[softmax]",
                   float, double) {
  using T = TestType;
  const T inf = std::numeric_limits<T>::infinity();
  em::generator g(5);
  for (const std::int64_t n : {3, 8, 9, 33}) {
    INFO("row length " << n);
    em::tensor<T> x = em::randn<T>({4, n}, g);
    for (std::int64_t j = 0; j < n; j += 2) x.data()[j] = -inf;      // row 0: every other masked
    for (std::int64_t j = 0; j < n; ++j) x.data()[n + j] = -inf;     // row 1: all masked
    for (std::int64_t j = 1; j < n; ++j) x.data()[2 * n + j] = -inf; // row 2: one survivor
    check_both(x, 1);
    const auto s = em::softmax(x, 1);
    const auto ls = em::log_softmax(x, 1);
    for (std::int64_t j = 0; j < n; ++j) {
      if (j % 2 == 0) {
        CHECK(s.at({0, j}) == 0);
        CHECK(ls.at({0, j}) == -inf);
      }
      CHECK(std::isnan(s.at({1, j})));  // torch.softmax of an all -inf row: nan
      CHECK(std::isnan(ls.at({1, j})));
    }
    CHECK(s.at({2, 0}) == 1);
    CHECK(ls.at({2, 0}) == 0);
    check_both(x.t().contiguous(), 0);  // masked rows along a non-last dim
  }
}

TEMPLATE_TEST_CASE("+inf or NaN in a row gives a NaN row like PyTorch", "[softmax]", float, double) {
  using T = TestType;
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  for (const std::int64_t n : {2, 9, 33}) {
    auto x = em::zeros<T>({2, n});
    x.data()[1] = inf;
    x.data()[n + n - 1] = nan;
    for (double v : host(em::softmax(x, 1))) CHECK(std::isnan(v));
    for (double v : host(em::log_softmax(x, 1))) CHECK(std::isnan(v));
  }
}

TEMPLATE_TEST_CASE("large logits are stable", "[softmax]", float, double) {
  using T = TestType;
  // the oracle's f32 tolerance: 1e-5 * (1 + |want|)
  const double tol = std::is_same_v<T, double> ? 1e-13 : 1e-5;
  const auto x = em::from_vector<T>({1000, 1001, -1000, -1001, 1e4, 1e4 - 3}, {3, 2});
  const auto s = em::softmax(x, 1), ls = em::log_softmax(x, 1);
  const double e = 1 / (1 + std::exp(1.0));  // softmax([0, 1])[0]
  check_close(s, {3, 2}, {e, 1 - e, 1 - e, e, 1 / (1 + std::exp(-3.0)), 1 / (1 + std::exp(3.0))}, tol);
  check_close(ls, {3, 2}, {std::log(e), std::log1p(-e), std::log1p(-e), std::log(e),
                           -std::log1p(std::exp(-3.0)), -3 - std::log1p(std::exp(-3.0))}, tol);
  em::generator g(6);
  for (const std::int64_t n : {7, 33, 1000}) {
    INFO("row length " << n);
    const em::tensor<T> big = em::randn<T>({2, n}, g) + T(1000);
    check_both(big, 1, tol);
    check_both(em::tensor<T>(big * T(-1)), 1, tol);
  }
}

TEST_CASE("softmax of 0-d, empty and expression inputs", "[softmax]") {
  const auto s = em::full<float>({}, 3.f);
  CHECK(em::softmax(s, 0).shape() == em::shape{});
  CHECK(em::softmax(s, 0).item() == 1.f);
  CHECK(em::log_softmax(s, -1).item() == 0.f);
  CHECK(em::softmax(em::zeros<float>({0, 5}), 1).shape() == em::shape{0, 5});
  CHECK(em::softmax(em::zeros<float>({3, 0}), 1).shape() == em::shape{3, 0});
  CHECK(em::log_softmax(em::zeros<double>({0, 5}), 0).shape() == em::shape{0, 5});
  em::generator g(8);
  const auto a = em::randn<double>({4, 6}, g), b = em::randn<double>({6}, g);
  std::vector<double> ab;
  const auto va = host(a), vb = host(b);
  for (std::size_t i = 0; i < va.size(); ++i) ab.push_back(va[i] * 2 + vb[i % 6]);
  check_close(em::softmax(a * 2.0 + b, 1), {4, 6}, ref_softmax(ab, {4, 6}, 1, false), 1e-13);
  check_close(em::log_softmax(a * 2.0 + b, 0), {4, 6}, ref_softmax(ab, {4, 6}, 0, true), 1e-13);
  const auto v = em::randn<double>({5}, g);
  CHECK(host(em::softmax(v.expand({3, 5}), 1)) ==
        host(em::softmax(v.unsqueeze(0).expand({3, 5}).contiguous(), 1)));
  try {
    (void)em::softmax(a, 2);
    FAIL("expected an error");
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::index);
  }
  CHECK_THROWS_AS(em::log_softmax(a, -3), em::error);
}
