// Deployment, program A: defines and trains a CNN on the digits data, traces it, and writes the
// whole model (graph + weights) to model.ember. Program B (deploy_predict.cpp) runs that file
// without this program's model class.
//   deploy_train [digits.csv.gz] [model.ember]  then  deploy_predict model.ember [digits.csv.gz]
#include <ember/ember.hpp>

#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

namespace em = ember;
namespace nn = ember::nn;
namespace F = ember::nn::functional;

#ifndef EMBER_EXAMPLES_DATA
#define EMBER_EXAMPLES_DATA "examples/data"
#endif

struct cnn : nn::module<cnn> {
  BOOST_HANA_DEFINE_STRUCT(cnn, (nn::conv2d, conv1), (nn::batch_norm2d, bn1), (nn::conv2d, conv2),
                           (nn::batch_norm2d, bn2), (nn::linear, fc));
  cnn()
      : conv1({.in = 1, .out = 16, .kernel = 3, .padding = 1}), bn1(16),
        conv2({.in = 16, .out = 32, .kernel = 3, .padding = 1}), bn2(32), fc(128, 10) {}
  em::tensor<float> forward(const em::tensor<float>& x) {
    auto h = F::max_pool2d(em::relu(bn1(conv1(x.view({-1, 1, 8, 8})))), {.kernel = 2});
    h = F::max_pool2d(em::relu(bn2(conv2(h))), {.kernel = 2});
    return fc(h.flatten(1));
  }
};

int main(int argc, char** argv) {
  const std::string data = argc > 1 ? argv[1] : EMBER_EXAMPLES_DATA "/digits.csv.gz";
  const std::string out = argc > 2 ? argv[2] : "model.ember";
  em::manual_seed(0);
  const auto table = em::data::read_csv<float>(data);
  em::tensor<float> x = table.slice(1, 0, 64) / 16.f;
  em::tensor<std::int64_t> y = table.select(1, 64).to<std::int64_t>();
  em::data::tensor_dataset train_set(x.slice(0, 0, 1500), y.slice(0, 0, 1500));

  cnn model;
  em::optim::adamw opt(model.parameters(), {.lr = 3e-3, .weight_decay = 1e-2});
  em::data::dataloader loader(train_set, {.batch_size = 32, .shuffle = true, .seed = 7});
  for (int epoch = 1; epoch <= 8; ++epoch) {
    model.train();
    for (auto&& [xb, yb] : loader) {
      opt.zero_grad();
      auto loss = F::cross_entropy(model(xb), yb);
      loss.backward();
      opt.step();
    }
  }
  model.eval();
  // one example input fixes everything but the batch size
  auto traced = em::jit::trace(model, {em::zeros<float>({1, 64})});
  std::cout << traced.graph();
  em::jit::save(traced, out);
  em::no_grad_guard ng;
  const auto logits = model(x.slice(0, 1500));
  const auto pred = em::argmax(logits, 1);
  const double acc = static_cast<double>(em::sum((pred == y.slice(0, 1500)).eval().to<std::int64_t>()).item()) / 297.0;
  std::printf("trained; eager test accuracy %.4f; wrote %s\n", acc, out.c_str());
  return 0;
}
