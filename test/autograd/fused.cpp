// Tests of include/ember/autograd/fused.hpp (Note [Fused backward]): every elementwise function
// passes a float64 finite-difference gradcheck (and gradgradcheck), broadcasting sums back,
// one node per materialized expression, shared leaves, and no stored intermediates.
#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

namespace em = ember;
namespace ag = ember::autograd;
using tv = std::vector<em::tensor<double>>;

namespace {

em::tensor<double> rnd(em::shape s, double lo, double hi) {
  return (em::rand<double>(s) * (hi - lo) + lo).eval().requires_grad_();
}

// each checked function returns several outputs so one gradcheck covers many formulas
bool check_both(auto f, const tv& in) {
  return ag::gradcheck(f, in, {.raise = true}) && ag::gradgradcheck(f, in, {.raise = true});
}

}  // namespace

TEST_CASE("unary functions: gradcheck and gradgradcheck", "[autograd][fused]") {
  em::manual_seed(3);
  const auto x = rnd({2, 3}, 0.2, 1.7);  // positive: log, sqrt, rsqrt, pow defined
  const auto z = rnd({5}, -2.0, 2.0);
  CHECK(check_both([](const tv& in) {
    const auto& a = in[0];
    return tv{em::neg(a), em::exp(a), em::expm1(a), em::log(a), em::log1p(a), em::log2(a),
              em::sqrt(a), em::rsqrt(a), em::square(a), em::reciprocal(a)};
  }, {x}));
  CHECK(check_both([](const tv& in) {
    const auto& a = in[0];
    return tv{em::sin(a), em::cos(a), em::tanh(a), em::sigmoid(a), em::gelu(a),
              em::gelu_tanh(a), em::silu(a), em::softplus(a), em::erf(a), em::abs(a)};
  }, {z}));
  // softplus above its threshold, relu/leaky_relu/elu away from 0
  const auto w = em::from_vector<double>({-3.1, -0.4, 0.6, 2.2, 25.3}, {5}).requires_grad_();
  CHECK(check_both([](const tv& in) {
    const auto& a = in[0];
    return tv{em::relu(a), em::leaky_relu(a, 0.2), em::elu(a, 1.5), em::softplus(a),
              em::clamp(a, -1.0, 1.0), em::sign(a) * a, em::floor(a) + em::ceil(a) + em::round(a)};
  }, {w}));
}

TEST_CASE("binary functions with broadcasting and scalars", "[autograd][fused]") {
  em::manual_seed(4);
  const auto a = rnd({2, 1, 3}, 0.5, 2.0);
  const auto b = rnd({4, 1}, 0.5, 2.0);
  const auto c = rnd({}, -1.0, 1.0);
  CHECK(check_both([](const tv& in) {
    const auto& x = in[0];
    const auto& y = in[1];
    const auto& s = in[2];
    return tv{x + y, x - y, x * y, x / y, em::pow(x, y), em::pow(x, 2.5), em::pow(1.5, y),
              em::maximum(x, y * s), em::minimum(x, y), x * s - 2.0 / y + 0.5};
  }, {a, b, c}));
}

TEST_CASE("where, clamp, cast and comparisons", "[autograd][fused]") {
  em::manual_seed(5);
  const auto a = rnd({3, 4}, -1.0, 1.0);
  const auto b = rnd({4}, -1.0, 1.0);
  CHECK(check_both([](const tv& in) {
    const auto& x = in[0];
    const auto& y = in[1];
    return tv{em::where(x > y, x * x, y), em::where(x < 0.0, 0.0, x),
              em::clamp(x * 3.0, -0.5, 0.5) * y,
              em::cast<double>(x * 2.0) + y};
  }, {a, b}));
}

TEST_CASE("maximum/minimum ties split the gradient; relu at 0 passes none", "[autograd][fused]") {
  auto x = em::from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  auto y = em::from_vector<double>({1, 5, 0}, {3}).requires_grad_();
  em::sum(em::maximum(x, y)).backward();
  CHECK(x.grad().at({0}) == 0.5);
  CHECK(y.grad().at({0}) == 0.5);
  CHECK(x.grad().at({1}) == 0.0);
  CHECK(y.grad().at({1}) == 1.0);
  auto r = em::from_vector<double>({-1, 0, 2}, {3}).requires_grad_();
  em::sum(em::relu(r)).backward();
  CHECK(r.grad().at({0}) == 0.0);
  CHECK(r.grad().at({1}) == 0.0);
  CHECK(r.grad().at({2}) == 1.0);
}

TEST_CASE("one node per materialized expression; leaves share gradients", "[autograd][fused]") {
  auto x = em::randn<float>({8}).requires_grad_();
  auto w = em::randn<float>({8}).requires_grad_();
  auto b = em::randn<float>({1}).requires_grad_();
  em::tensor<float> y = em::tanh(x * w + b) * 2.f;
  auto fn = y.grad_fn();
  REQUIRE(fn);
  CHECK(y.grad_fn_name() == "mul_backward");
  CHECK(fn->next.size() == 3);  // the three leaves, no intermediate nodes
  for (const auto& e : fn->next) CHECK(e.fn->name() == "accumulate_grad");
  // x used four times: one gradient, 3x^2 + 2x + 1
  auto v = em::from_vector<double>({0.5, -2}, {2}).requires_grad_();
  em::sum(v * v * v + v * v + v).backward();
  CHECK(v.grad().at({0}) == Approx(3 * 0.25 + 1 + 1));
  CHECK(v.grad().at({1}) == Approx(3 * 4 - 4 + 1));
  // a broadcast leaf gets its gradient summed to its own shape
  CHECK(ag::gradcheck([](const tv& in) { return em::sum(em::sin(in[0] * in[1]), 0); },
                      {em::randn<double>({5, 3}).requires_grad_(),
                       em::randn<double>({3}).requires_grad_()},
                      {.raise = true}));
}

TEST_CASE("a chain of ten elementwise ops stores no intermediates", "[autograd][fused][memory]") {
  const std::int64_t n = 1 << 20;  // 4 MiB of float
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
  auto x = (em::rand<float>({n}) + 0.5f).eval().requires_grad_();
  em::reset_peak_memory_stats();
  const std::size_t base = em::memory_stats().in_use;
  {
    auto loss = em::sum(em::sqrt(em::exp(-x * 0.1f) + em::sigmoid(x) * 2.f - em::tanh(x) +
                                 em::square(x) * 0.5f + 1.f));
    loss.backward();
  }
  const std::size_t peak = em::memory_stats().peak - base;
  // forward: nothing materialized; backward: the gradient, plus one buffer while the five
  // uses of x are summed into it (plus tiny scalars).
  // PyTorch stores each of the ~10 intermediates: about 10 x 4 MiB.
  CHECK(peak < 3 * bytes);
  REQUIRE(x.grad().defined());
  const float xv = x.at({7});
  const double e = std::exp(-0.1 * xv), s = 1 / (1 + std::exp(-xv)), t = std::tanh(xv);
  const double inner = e + 2 * s - t + 0.5 * xv * xv + 1;
  const double d = (-0.1 * e + 2 * s * (1 - s) - (1 - t * t) + xv) / (2 * std::sqrt(inner));
  CHECK(x.grad().at({7}) == Approx(d).epsilon(1e-5));
}

TEST_CASE("float32 gradients match float64 ones", "[autograd][fused]") {
  auto x64 = em::randn<double>({64}).requires_grad_();
  auto x32 = x64.detach().to<float>().requires_grad_();
  em::sum(em::gelu_tanh(x64 * 1.3 + 0.2)).backward();
  em::sum(em::gelu_tanh(x32 * 1.3f + 0.2f)).backward();
  for (std::int64_t i = 0; i < 64; ++i)
    CHECK(x32.grad().at({i}) == Approx(x64.grad().at({i})).epsilon(1e-5).margin(1e-6));
}
