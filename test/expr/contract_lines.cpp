// The expression and reduction lines of the API contract (../shared/contract/tensors.cpp),
// compiled and run, with their values checked against hand-computed results.
#include <ember/ember.hpp>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace em = ember;

TEST_CASE("contract: expression and reduction lines compile and run", "[contract][expr]") {
  em::manual_seed(42);
  em::tensor<float> a = em::randn<float>({4, 3});
  em::tensor<> b = em::zeros<float>({3});
  auto a0 = a.clone();  // reference copy of the original values

  a.copy_(a * 2.f); a.fill_(1.f); a.zero_(); a += b; a *= 0.5f; a.slice(0, 0, 2) -= 1.f;
  for (std::int64_t i = 0; i < 4; ++i)
    for (std::int64_t j = 0; j < 3; ++j) CHECK(a.at({i, j}) == (i < 2 ? -1.f : 0.f));
  a.copy_(a0);

  auto e = 0.5f * a + em::exp(-a * a) - b;
  em::tensor<float> m = e;
  auto m2 = e.eval();
  for (std::int64_t k = 0; k < 12; ++k) {
    const double x = a0.data()[k];
    CHECK(m.data()[k] == Approx(0.5 * x + std::exp(-x * x)).epsilon(1e-6));
    CHECK(m2.data()[k] == m.data()[k]);
  }
  em::tensor<float> un = em::neg(a) + em::abs(a) + em::expm1(a) + em::log(em::abs(a) + 1.f) + em::log1p(em::abs(a)) +
      em::log2(em::abs(a) + 1.f) + em::sqrt(em::abs(a)) + em::rsqrt(em::abs(a) + 1.f) + em::square(a) + em::sin(a) +
      em::cos(a) + em::tanh(a) + em::sigmoid(a) + em::relu(a) + em::gelu(a) + em::gelu_tanh(a) + em::silu(a) +
      em::softplus(a) + em::sign(a) + em::floor(a) + em::ceil(a) + em::round(a) + em::reciprocal(a + 2.f) + em::erf(a);
  for (std::int64_t k = 0; k < 12; ++k) {
    const double x = a0.data()[k], ax = std::fabs(x);
    const double sg = 1 / (1 + std::exp(-x));
    const double want = -x + ax + std::expm1(x) + std::log(ax + 1) + std::log1p(ax) + std::log2(ax + 1) +
        std::sqrt(ax) + 1 / std::sqrt(ax + 1) + x * x + std::sin(x) + std::cos(x) + std::tanh(x) + sg +
        (x < 0 ? 0 : x) + 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))) +
        0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) + x * sg +
        std::log1p(std::exp(x)) + ((x > 0) - (x < 0)) + std::floor(x) + std::ceil(x) + std::nearbyint(x) +
        1 / (x + 2) + std::erf(x);
    CHECK(un.data()[k] == Approx(want).epsilon(1e-5).margin(1e-5));
  }
  em::tensor<float> bi = (a + b) - (a * b) / (b + 1.f) + em::pow(em::abs(a), b) + em::pow(a, 2) + em::maximum(a, b) + em::minimum(a, b) + 2.0 * a;
  em::tensor<float> ot = em::clamp(a, -1.f, 1.f) + em::where(a > 0.f, a, b) + em::leaky_relu(a, 0.1f) + em::elu(a, 1.0f);
  for (std::int64_t k = 0; k < 12; ++k) {
    const double x = a0.data()[k];
    // b == 0: pow(|a|, 0) = 1; maximum + minimum = x + 0
    CHECK(bi.data()[k] == Approx(x + 1 + x * x + x + 2 * x).epsilon(1e-5).margin(1e-6));
    const double elu = x > 0 ? x : std::expm1(x);
    CHECK(ot.data()[k] == Approx(std::clamp(x, -1.0, 1.0) + (x > 0 ? x : 0) + (x > 0 ? x : 0.1 * x) + elu)
                              .epsilon(1e-5).margin(1e-6));
  }
  em::tensor<double> ca = em::cast<double>(a);
  CHECK(ca.data()[5] == static_cast<double>(a0.data()[5]));
  em::tensor<bool> mask = a > 0.f;
  em::tensor<bool> c1 = a == b, c2 = a != b, c3 = a < b, c4 = a <= b, c5 = a >= b;
  CHECK(c1.numel() + c2.numel() + c3.numel() + c4.numel() + c5.numel() == 60);
  for (std::int64_t k = 0; k < 12; ++k) {
    CHECK(mask.data()[k] == (a0.data()[k] > 0));
    CHECK(c3.data()[k] == (a0.data()[k] < 0));
    CHECK(c2.data()[k] != c1.data()[k]);
  }

  double total = 0, sq = 0;
  for (std::int64_t k = 0; k < 12; ++k) total += a0.data()[k], sq += double(a0.data()[k]) * a0.data()[k];
  CHECK(em::sum(a * a).item() == Approx(sq).epsilon(1e-6));
  CHECK(em::sum(a, 1).shape() == em::shape{4});
  CHECK(em::sum(a, {0, 1}, /*keepdim=*/true).shape() == em::shape{1, 1});
  CHECK(em::mean(a, -1).shape() == em::shape{4});
  CHECK(em::prod(a).dim() == 0);
  CHECK(em::amax(a, 0).shape() == em::shape{3});
  CHECK(em::amin(a).dim() == 0);
  CHECK(em::argmax(a, 1).dtype() == em::dtype::i64);
  CHECK(em::var(a, 0).shape() == em::shape{3});
  const double mean = total / 12;
  double ss = 0;
  for (std::int64_t k = 0; k < 12; ++k) ss += (a0.data()[k] - mean) * (a0.data()[k] - mean);
  CHECK(em::std(a).item() == Approx(std::sqrt(ss / 11)).epsilon(1e-5));
  CHECK(em::norm(a).item() == Approx(std::sqrt(sq)).epsilon(1e-6));
  CHECK(em::logsumexp(a, 1).shape() == em::shape{4});
  CHECK(a.sum().item() == Approx(total).epsilon(1e-5));
  CHECK(a.mean().item() == Approx(mean).epsilon(1e-5).margin(1e-6));
}
