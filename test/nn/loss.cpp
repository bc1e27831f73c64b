// Tests of include/ember/nn/loss.hpp: values worked out by hand (PyTorch's values for every
// oracle case are checked in test/oracle/backward.cpp), float64 gradcheck and gradgradcheck of
// every loss and option, fused recording, and bad inputs.
#include "support/errors.hpp"

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace em = ember;
using ember_test::error_of;
namespace ag = ember::autograd;
namespace F = ember::nn::functional;
using tv = std::vector<em::tensor<double>>;
using red = em::nn::reduction;

namespace {

em::tensor<double> rnd(em::shape s, double lo, double hi) {
  return (em::rand<double>(s) * (hi - lo) + lo).eval().requires_grad_();
}

em::tensor<std::int64_t> ints(std::vector<std::int64_t> v, em::shape s) {
  return em::from_vector<std::int64_t>(v, s);
}

double item(const em::tensor<double>& t) { return t.contiguous().data()[0]; }

bool check_both(auto f, const tv& in) {
  return ag::gradcheck(f, in, {.raise = true}) && ag::gradgradcheck(f, in, {.raise = true});
}

}  // namespace

TEST_CASE("elementwise losses: values, reductions, one fused node", "[nn][loss]") {
  const auto x = em::from_vector<double>({0.5, -1.0, 3.0, 2.0}, {2, 2});
  const auto y = em::from_vector<double>({0.0, 1.0, 1.0, 2.25}, {2, 2});
  // d = 0.5, -2, 2, -0.25
  CHECK(item(F::mse_loss(x, y)) == Approx((0.25 + 4 + 4 + 0.0625) / 4));
  CHECK(item(F::mse_loss(x, y, {.reduction = red::sum})) == Approx(8.3125));
  CHECK(F::mse_loss(x, y, {.reduction = red::none}).shape() == em::shape{2, 2});
  CHECK(item(F::l1_loss(x, y)) == Approx((0.5 + 2 + 2 + 0.25) / 4));
  // smooth_l1 (beta 1): 0.125, 1.5, 1.5, 0.03125
  CHECK(item(F::smooth_l1_loss(x, y, {.reduction = red::sum})) == Approx(3.15625));
  CHECK(item(F::smooth_l1_loss(x, y, {.reduction = red::sum, .beta = 0.0})) == Approx(4.75));
  // huber (delta 2): 0.125, 2*(2-1) = 2 at |d| == delta, 2, 0.03125
  CHECK(item(F::huber_loss(x, y, {.reduction = red::sum, .delta = 2.0})) == Approx(4.15625));

  auto p = x.clone().requires_grad_();
  const auto l = F::mse_loss(p, y);
  CHECK(l.grad_fn_name() == "mean_backward");
  l.backward();
  // d/dp mean((p - y)^2) = 2 (p - y) / 4
  const auto g = p.grad().contiguous();
  CHECK(g.data()[0] == Approx(0.25));
  CHECK(g.data()[1] == Approx(-1.0));
}

TEST_CASE("elementwise losses: gradcheck and gradgradcheck", "[nn][loss][autograd]") {
  em::manual_seed(11);
  const auto x = rnd({3, 4}, -2.0, 2.0);
  const auto y = rnd({3, 4}, -2.0, 2.0);
  CHECK(check_both([](const tv& in) {
    return tv{F::mse_loss(in[0], in[1]), F::mse_loss(in[0], in[1], {.reduction = red::none}),
              F::l1_loss(in[0], in[1], {.reduction = red::sum}),
              F::smooth_l1_loss(in[0], in[1], {.beta = 0.7}),
              F::huber_loss(in[0], in[1], {.reduction = red::none, .delta = 0.8})};
  }, {x, y}));
}

TEST_CASE("binary_cross_entropy_with_logits", "[nn][loss]") {
  // value: log(1 + e^-x) for t = 1, log(1 + e^x) for t = 0; stable for large |x|
  const auto x = em::from_vector<double>({0.0, 2.0, -800.0, 800.0}, {4});
  const auto t = em::from_vector<double>({1.0, 0.0, 0.0, 1.0}, {4});
  const auto l = F::binary_cross_entropy_with_logits(x, t, {.reduction = red::none}).contiguous();
  CHECK(l.data()[0] == Approx(std::log(2.0)));
  CHECK(l.data()[1] == Approx(std::log1p(std::exp(2.0))));
  CHECK(l.data()[2] == Approx(0.0).margin(1e-300));
  CHECK(l.data()[3] == Approx(0.0).margin(1e-300));
  // the gradient is sigmoid(x) - t, also at x = 0 (a formula with |x| would give 1 - t there)
  auto z = em::zeros<double>({3}).requires_grad_();
  const auto tt = em::from_vector<double>({1.0, 0.0, 0.25}, {3});
  F::binary_cross_entropy_with_logits(z, tt, {.reduction = red::sum}).backward();
  const auto gz = z.grad().contiguous();
  CHECK(gz.data()[0] == Approx(-0.5));
  CHECK(gz.data()[1] == Approx(0.5));
  CHECK(gz.data()[2] == Approx(0.25));

  em::manual_seed(12);
  const auto xs = rnd({3, 4}, -3.0, 3.0);
  const auto ts = rnd({3, 4}, 0.0, 1.0);
  const auto pw = em::from_vector<double>({0.5, 1.0, 2.0, 3.0}, {4});
  const auto w = em::from_vector<double>({1.0, 0.5, 2.0}, {3, 1});
  CHECK(check_both([&](const tv& in) {
    return tv{F::binary_cross_entropy_with_logits(in[0], in[1]),
              F::binary_cross_entropy_with_logits(in[0], in[1], {.pos_weight = pw, .reduction = red::sum}),
              F::binary_cross_entropy_with_logits(in[0], in[1], {.weight = w, .pos_weight = pw,
                                                                 .reduction = red::none})};
  }, {xs, ts}));
}

TEST_CASE("nll_loss and cross_entropy: values by hand", "[nn][loss]") {
  const auto logits = em::from_vector<double>({1, 2, 3, 1, 1, 1}, {2, 3});
  const auto target = ints({2, 0}, {2});
  const double lse0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  const double l0 = lse0 - 3, l1 = std::log(3.0);
  CHECK(item(F::cross_entropy(logits, target)) == Approx((l0 + l1) / 2));
  CHECK(item(F::cross_entropy(logits, target, {.reduction = red::sum})) == Approx(l0 + l1));
  // class weights: mean divides by the weights of the targets
  const auto w = em::from_vector<double>({2.0, 1.0, 0.5}, {3});
  CHECK(item(F::cross_entropy(logits, target, {.weight = w})) ==
        Approx((0.5 * l0 + 2.0 * l1) / 2.5));
  // ignore_index: the ignored row counts neither in the sum nor in the count
  CHECK(item(F::cross_entropy(logits, ints({2, -100}, {2}))) == Approx(l0));
  CHECK(item(F::cross_entropy(logits, ints({7, 2}, {2}), {.ignore_index = 7})) == Approx(l1));
  // everything ignored: 0 / 0, as PyTorch
  CHECK(std::isnan(item(F::cross_entropy(logits, ints({-100, -100}, {2})))));
  // label smoothing e: (1 - e) nll + e / C * mean over rows of -sum_c logp_c
  const double e = 0.2;
  const double s0 = 3 * lse0 - 6, s1 = 3 * std::log(3.0);
  CHECK(item(F::cross_entropy(logits, target, {.label_smoothing = e})) ==
        Approx((1 - e) * (l0 + l1) / 2 + e / 3 * (s0 + s1) / 2));
  // nll_loss of log_softmax is cross_entropy; 1-D input with a 0-d target
  CHECK(item(F::nll_loss(em::log_softmax(logits, 1), target)) == Approx((l0 + l1) / 2));
  const auto row = em::from_vector<double>({1, 2, 3}, {3});
  CHECK(item(F::cross_entropy(row, ints({2}, {}))) == Approx(l0));
  // K-dim: (N, C, d) logits, (N, d) targets
  const auto k = em::from_vector<double>({1, 1, 2, 1, 3, 1}, {1, 3, 2});
  CHECK(item(F::cross_entropy(k, ints({2, 0}, {1, 2}), {.reduction = red::sum})) == Approx(l0 + l1));
  // probability targets: -sum_c t_c logp_c; one-hot targets give the index form
  const auto onehot = em::from_vector<double>({0, 0, 1, 1, 0, 0}, {2, 3});
  CHECK(item(F::cross_entropy(logits, onehot)) == Approx((l0 + l1) / 2));
}

TEST_CASE("nll_loss and cross_entropy: gradcheck and gradgradcheck", "[nn][loss][autograd]") {
  em::manual_seed(13);
  const auto x = rnd({4, 5}, -2.0, 2.0);
  const auto t = ints({1, 4, -100, 0}, {4});
  const auto w = em::from_vector<double>({1.0, 0.5, 2.0, 1.5, 0.25}, {5});
  CHECK(check_both([&](const tv& in) {
    return tv{F::cross_entropy(in[0], t), F::cross_entropy(in[0], t, {.reduction = red::none}),
              F::cross_entropy(in[0], t, {.weight = w, .reduction = red::sum}),
              F::cross_entropy(in[0], t, {.weight = w, .label_smoothing = 0.1}),
              F::cross_entropy(in[0], t, {.reduction = red::none, .label_smoothing = 0.3}),
              F::nll_loss(in[0], t, {.weight = w})};
  }, {x}));
  const auto xk = rnd({2, 3, 2}, -2.0, 2.0);
  const auto tk = ints({0, 2, 1, 1}, {2, 2});
  const auto probs = em::softmax(em::rand<double>({2, 3, 2}), 1);
  CHECK(check_both([&](const tv& in) {
    return tv{F::cross_entropy(in[0], tk, {.label_smoothing = 0.2}),
              F::cross_entropy(in[0], probs, {.weight = em::from_vector<double>({1, 2, 3}, {3})}),
              F::cross_entropy(in[0], probs, {.reduction = red::none, .label_smoothing = 0.1})};
  }, {xk}));
}

TEST_CASE("losses: bad inputs are clear errors", "[nn][loss][errors]") {
  const auto x = em::zeros<double>({2, 3});
  CHECK(error_of([&] { F::mse_loss(x, em::zeros<double>({3})); }) == em::errc::shape);
  CHECK(error_of([&] { F::smooth_l1_loss(x, x, {.beta = -1.0}); }) == em::errc::value);
  CHECK(error_of([&] { F::huber_loss(x, x, {.delta = 0.0}); }) == em::errc::value);
  CHECK(error_of([&] { F::binary_cross_entropy_with_logits(x, em::zeros<double>({2, 1})); }) ==
        em::errc::shape);
  CHECK(error_of([&] {
    F::binary_cross_entropy_with_logits(x, x, {.pos_weight = em::ones<double>({2})});
  }) == em::errc::shape);
  CHECK(error_of([&] { F::cross_entropy(x, ints({0, 3}, {2})); }) == em::errc::index);
  CHECK(error_of([&] { F::cross_entropy(x, ints({0, -1}, {2})); }) == em::errc::index);
  CHECK(error_of([&] { F::cross_entropy(x, ints({0, 1, 2}, {3})); }) == em::errc::shape);
  CHECK(error_of([&] { F::cross_entropy(x, ints({0, 1}, {2}), {.weight = em::ones<double>({2})}); }) ==
        em::errc::shape);
  CHECK(error_of([&] { F::cross_entropy(x, ints({0, 1}, {2}), {.label_smoothing = 1.5}); }) ==
        em::errc::value);
  CHECK(error_of([&] { F::cross_entropy(x, em::zeros<double>({2, 2})); }) == em::errc::shape);
  CHECK(error_of([&] { F::nll_loss(em::zeros<double>({}), ints({0}, {})); }) == em::errc::shape);
  std::string msg;
  try {
    F::cross_entropy(x, ints({0, 5}, {2}));
  } catch (const em::error& e) {
    msg = e.what();
  }
  CHECK(msg.find("target 5 is out of bounds for 3 classes") != std::string::npos);
}
