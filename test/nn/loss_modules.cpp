// Tests of include/ember/nn/loss_modules.hpp: every loss module returns exactly its functional
// form (a module is a wrapper; the functional values are checked against PyTorch in
// test/nn/loss.cpp and test/oracle), its state_dict keys and printout are torch.nn's, its
// weights are buffers that load_state_dict changes, a backward step reaches the input, and bad
// options are refused when the module is built.
#include "support/errors.hpp"

#include <ember/nn/loss_modules.hpp>
#include <ember/ops/factory.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace em = ember;
namespace nn = ember::nn;
namespace F = ember::nn::functional;
using ember_test::error_of;
using red = nn::reduction;
using keys = std::vector<std::string>;

namespace {

/// Same shape and bitwise-equal values (the module runs the functional form's very arithmetic).
template <class T>
bool same(const em::tensor<T>& a, const em::tensor<T>& b) {
  if (a.shape() != b.shape()) return false;
  const auto ca = a.contiguous(), cb = b.contiguous();
  for (std::int64_t i = 0; i < ca.numel(); ++i)
    if (!(ca.data()[i] == cb.data()[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("loss modules return exactly their functional forms", "[nn][loss]") {
  em::manual_seed(5);
  const em::tensor<double> x = em::rand<double>({3, 4}) * 4.0 - 2.0;
  const em::tensor<double> y = em::rand<double>({3, 4}) * 4.0 - 2.0;
  const em::tensor<double> probs = em::rand<double>({3, 4});
  const auto w = em::from_vector<double>({0.5, 1.0, 2.0, 0.25}, {4});
  const auto target = em::from_vector<std::int64_t>({3, 0, 2}, {3});

  CHECK(same(nn::basic_mse_loss<double>()(x, y), F::mse_loss(x, y)));
  CHECK(same(nn::basic_mse_loss<double>({.reduction = red::none})(x, y),
             F::mse_loss(x, y, {.reduction = red::none})));
  CHECK(same(nn::basic_l1_loss<double>({.reduction = red::sum})(x, y),
             F::l1_loss(x, y, {.reduction = red::sum})));
  CHECK(same(nn::basic_smooth_l1_loss<double>({.reduction = red::none, .beta = 0.5})(x, y),
             F::smooth_l1_loss(x, y, {.reduction = red::none, .beta = 0.5})));
  CHECK(same(nn::basic_huber_loss<double>({.delta = 0.8})(x, y),
             F::huber_loss(x, y, {.delta = 0.8})));

  CHECK(same(nn::basic_bce_with_logits_loss<double>()(x, probs),
             F::binary_cross_entropy_with_logits(x, probs)));
  CHECK(same(nn::basic_bce_with_logits_loss<double>(
                 {.weight = w, .pos_weight = w * 3.0, .reduction = red::none})(x, probs),
             F::binary_cross_entropy_with_logits(
                 x, probs, {.weight = w, .pos_weight = w * 3.0, .reduction = red::none})));

  CHECK(same(nn::basic_nll_loss<double>()(x, target), F::nll_loss(x, target)));
  CHECK(same(nn::basic_nll_loss<double>({.weight = w, .ignore_index = 2})(x, target),
             F::nll_loss(x, target, {.weight = w, .ignore_index = 2})));

  CHECK(same(nn::basic_cross_entropy_loss<double>()(x, target), F::cross_entropy(x, target)));
  const F::cross_entropy_options<double> ce{
      .weight = w, .reduction = red::sum, .ignore_index = 0, .label_smoothing = 0.1};
  nn::basic_cross_entropy_loss<double> ce_loss(ce);
  CHECK(same(ce_loss(x, target), F::cross_entropy(x, target, ce)));
  CHECK(same(ce_loss(x, probs), F::cross_entropy(x, probs, ce)));  // probability targets
}

TEST_CASE("loss modules: state_dict keys and printouts are torch.nn's", "[nn][loss]") {
  // From /usr/bin/python3 (torch 1.13) with w = torch.ones(3):
  //   print(repr(m), list(m.state_dict().keys()), list(m.parameters()))
  // for m in MSELoss(), L1Loss(), SmoothL1Loss(beta=0.5), HuberLoss(delta=2.0),
  // BCEWithLogitsLoss([weight=w][, pos_weight=w]), NLLLoss([weight=w]),
  // CrossEntropyLoss([weight=w, label_smoothing=0.1]): the printout never shows the options,
  // a weight is a key exactly when given, and there are no parameters.
  const auto w = em::ones<float>({3});
  CHECK(nn::mse_loss().repr() == "MSELoss()");
  CHECK(nn::l1_loss({.reduction = red::none}).repr() == "L1Loss()");
  CHECK(nn::smooth_l1_loss({.beta = 0.5}).repr() == "SmoothL1Loss()");
  CHECK(nn::huber_loss({.delta = 2.0}).repr() == "HuberLoss()");
  CHECK(nn::huber_loss().state_dict().keys() == keys{});

  nn::bce_with_logits_loss bce, bce_w({.weight = w}), bce_pw({.pos_weight = w});
  // torch: BCEWithLogitsLoss(weight=w, pos_weight=w) has both keys, even for one tensor
  nn::bce_with_logits_loss bce_both({.weight = w, .pos_weight = w});
  CHECK(bce.repr() == "BCEWithLogitsLoss()");
  CHECK(bce_both.repr() == "BCEWithLogitsLoss()");
  CHECK(bce.state_dict().keys() == keys{});
  CHECK(bce_w.state_dict().keys() == keys{"weight"});
  CHECK(bce_pw.state_dict().keys() == keys{"pos_weight"});
  CHECK(bce_both.state_dict().keys() == keys{"weight", "pos_weight"});
  CHECK(bce_both.parameters().empty());

  nn::nll_loss nll, nll_w({.weight = w, .ignore_index = 1});
  CHECK(nll.repr() == "NLLLoss()");
  CHECK(nll_w.repr() == "NLLLoss()");
  CHECK(nll.state_dict().keys() == keys{});
  CHECK(nll_w.state_dict().keys() == keys{"weight"});

  nn::cross_entropy_loss ce, ce_w({.weight = w, .label_smoothing = 0.1});
  CHECK(ce.repr() == "CrossEntropyLoss()");
  CHECK(ce_w.repr() == "CrossEntropyLoss()");
  CHECK(ce.state_dict().keys() == keys{});
  CHECK(ce_w.state_dict().keys() == keys{"weight"});
  CHECK(ce_w.parameters().empty());
}

TEST_CASE("loss weights are buffers: forward uses what load_state_dict loads", "[nn][loss]") {
  const auto w1 = em::from_vector<double>({0.5, 2.0, 1.0}, {3}).requires_grad_();
  nn::basic_cross_entropy_loss<double> a({.weight = w1}),
      b({.weight = em::ones<double>({3}), .label_smoothing = 0.2});
  CHECK(!a.weight.requires_grad());  // a buffer gets no gradient
  CHECK(!a.options.weight.defined());  // one copy of the weight: the buffer
  CHECK(a.named_buffers().size() == 1);

  const auto x = em::from_vector<double>({0.1, -0.4, 1.2, 2.0, 0.3, -1.0}, {2, 3});
  const auto t = em::from_vector<std::int64_t>({2, 1}, {2});
  b.load_state_dict(a.state_dict());
  CHECK(same(b(x, t), F::cross_entropy(x, t, {.weight = w1, .label_smoothing = 0.2})));

  // torch: CrossEntropyLoss().load_state_dict({'weight': ...}) fails on the unexpected key
  nn::basic_cross_entropy_loss<double> plain;
  CHECK(error_of([&] { plain.load_state_dict(a.state_dict()); }) == em::errc::value);
}

TEST_CASE("a training step through a loss module reaches the input's gradient", "[nn][loss]") {
  // double, as the other cases: the float alias runs the same template (and a float forward
  // would add ~20 s of -O1 compile time to this TU for no new code path)
  nn::basic_cross_entropy_loss<double> crit({.weight = em::from_vector<double>({1.0, 2.0, 0.5}, {3})});
  const auto t = em::from_vector<std::int64_t>({0, 2, 1, 1}, {4});
  const auto logits =
      em::from_vector<double>({0.2, -0.1, 0.4, 1.0, 0.0, -1.0, 0.3, 0.3, 0.3, -2.0, 1.0, 0.0},
                              {4, 3})
          .requires_grad_();
  const em::tensor<double> loss = crit(logits, t);
  loss.backward();
  const em::tensor<double> g = logits.grad();
  REQUIRE(g.defined());
  CHECK(g.shape() == logits.shape());
  CHECK(!crit.weight.grad().defined());

  const em::tensor<double> stepped = logits.detach() - g * 0.5;  // one SGD step on the logits
  CHECK(crit(stepped, t).item() < loss.item());
}

TEST_CASE("loss module options are checked when the module is built", "[nn][loss]") {
  CHECK(error_of([] { nn::smooth_l1_loss({.beta = -1.0}); }) == em::errc::value);
  CHECK(error_of([] { nn::huber_loss({.delta = 0.0}); }) == em::errc::value);
  CHECK(error_of([] { nn::cross_entropy_loss({.label_smoothing = 1.5}); }) == em::errc::value);
  CHECK(error_of([] { nn::cross_entropy_loss({.weight = em::ones<float>({2, 3})}); }) ==
        em::errc::shape);
  CHECK(error_of([] { nn::nll_loss({.weight = em::ones<float>({2, 3})}); }) == em::errc::shape);
}
