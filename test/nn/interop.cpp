// PyTorch interop of the nn frontend: the digits MLP trained by PyTorch
// (test/data/models/mlp_digits.{pt,safetensors}, copied from the shared oracle) loads into the
// same architecture built with ember's layers, through io::load_pt and through load, and its
// logits on the stored test inputs match torch's within 1e-5 * (1 + |want|), with exactly the
// stored predictions and accuracy. Then a state_dict round trip through a file.
#include "support/errors.hpp"
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

namespace em = ember;
namespace nn = ember::nn;

namespace {
std::string data(const std::string& rel) { return std::string(EMBER_TEST_DATA) + "/" + rel; }
}  // namespace

TEST_CASE("the PyTorch-trained digits MLP predicts as torch after load_pt and load", "[nn][io]") {
  const auto expected = ember_test::read_safetensors(data("models/mlp_digits_expected.safetensors"));
  const auto inputs = expected.get<float>("inputs");
  const auto want = expected.get<float>("logits");
  const auto want_pred = expected.get<std::int64_t>("predictions");
  const auto labels = expected.get<std::int64_t>("labels");
  REQUIRE(inputs.shape() == em::shape{297, 64});

  for (const bool from_pt : {true, false}) {
    INFO((from_pt ? "load_pt(mlp_digits.pt)" : "load(mlp_digits.safetensors)"));
    const em::state_dict sd = from_pt ? em::io::load_pt(data("models/mlp_digits.pt"))
                                      : em::load(data("models/mlp_digits.safetensors"));
    // .pt keeps the OrderedDict's order; a safetensors file has none (this one is sorted by name)
    auto keys = sd.keys();
    if (!from_pt) std::sort(keys.begin(), keys.end());
    CHECK(keys == (from_pt ? std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}
                           : std::vector<std::string>{"0.bias", "0.weight", "2.bias", "2.weight"}));
    nn::sequential model(nn::linear(64, 32), nn::relu(), nn::linear(32, 10));
    model.load_state_dict(sd);  // strict: the keys are exactly torch.nn.Sequential's
    model.eval();
    em::no_grad_guard ng;
    const em::tensor<float> logits = model(inputs);
    double worst = 0;
    for (std::int64_t i = 0; i < 297; ++i)
      for (std::int64_t j = 0; j < 10; ++j) {
        const double g = logits.at({i, j}), w = want.at({i, j});
        worst = std::max(worst, std::abs(g - w) / (1 + std::abs(w)));
      }
    CHECK(worst < 1e-5);
    const auto pred = em::argmax(logits, 1);
    std::int64_t same = 0, correct = 0;
    for (std::int64_t i = 0; i < 297; ++i) {
      same += pred.at({i}) == want_pred.at({i});
      correct += pred.at({i}) == labels.at({i});
    }
    CHECK(same == 297);
    CHECK(correct == expected.get<std::int64_t>("num_correct").item());
    CHECK(static_cast<double>(correct) / 297.0 == expected.get<double>("accuracy").item());
  }
}

TEST_CASE("a module's state_dict survives a save/load round trip bit for bit", "[nn][io]") {
  em::manual_seed(5);
  nn::sequential a(nn::conv2d({.in = 1, .out = 4, .kernel = 3}), nn::batch_norm2d(4), nn::flatten(),
                   nn::linear(144, 10));
  (void)a(em::randn<float>({2, 1, 8, 8}));  // moves the running statistics off their defaults
  const std::string path = "ember_test_interop.safetensors";
  em::save(a.state_dict(), path);
  nn::sequential b(nn::conv2d({.in = 1, .out = 4, .kernel = 3}), nn::batch_norm2d(4), nn::flatten(),
                   nn::linear(144, 10));
  b.load_state_dict(em::load(path));
  std::remove(path.c_str());
  const auto sa = a.state_dict(), sb = b.state_dict();
  REQUIRE(sa.keys() == sb.keys());
  for (const auto& [name, t] : sa) {
    INFO(name);
    const auto& u = sb.at(name);
    REQUIRE(u.dtype() == t.dtype());
    REQUIRE(u.shape() == t.shape());
    if (t.dtype() == em::dtype::i64) {
      CHECK(u.get<std::int64_t>().item() == t.get<std::int64_t>().item());
    } else {
      CHECK(em::amax(em::abs(u.get<float>() - t.get<float>())).item() == 0.f);
    }
  }
  a.eval();
  b.eval();
  em::no_grad_guard ng;
  const auto x = em::randn<float>({3, 1, 8, 8});
  CHECK(em::amax(em::abs(a(x) - b(x))).item() == 0.f);
}

TEST_CASE("optimizer and scheduler state saved to a file resume training bit for bit", "[nn][io]") {
  em::manual_seed(11);
  const auto x = em::randn<float>({16, 6});
  const auto y = em::randint<std::int64_t>(0, 3, {16});
  nn::linear a(6, 3);
  em::optim::adam opt_a(a.parameters(), {.lr = 1e-2, .amsgrad = true});
  em::optim::step_lr sched_a(opt_a, {.step_size = 2, .gamma = 0.5});
  auto step = [&](nn::linear& m, auto& opt, auto& sched) {
    opt.zero_grad();
    nn::functional::cross_entropy(m(x), y).backward();
    opt.step();
    sched.step();
  };
  for (int i = 0; i < 3; ++i) step(a, opt_a, sched_a);

  const std::string model_path = "ember_test_resume_model.safetensors";
  const std::string opt_path = "ember_test_resume_opt.safetensors";
  const std::string sched_path = "ember_test_resume_sched.safetensors";
  em::save(a.state_dict(), model_path);
  em::save(opt_a.state_dict(), opt_path);
  em::save(sched_a.state_dict(), sched_path);

  nn::linear b(6, 3);
  em::optim::adam opt_b(b.parameters(), {.lr = 1e-2, .amsgrad = true});
  em::optim::step_lr sched_b(opt_b, {.step_size = 2, .gamma = 0.5});
  b.load_state_dict(em::load(model_path));
  opt_b.load_state_dict(em::load(opt_path));
  sched_b.load_state_dict(em::load(sched_path));
  for (const auto& p : {model_path, opt_path, sched_path}) std::remove(p.c_str());

  for (int i = 0; i < 4; ++i) {
    step(a, opt_a, sched_a);
    step(b, opt_b, sched_b);
  }
  CHECK(em::amax(em::abs(a.weight - b.weight)).item() == 0.f);
  CHECK(em::amax(em::abs(a.bias - b.bias)).item() == 0.f);
  CHECK(sched_a.get_last_lr() == sched_b.get_last_lr());
}
