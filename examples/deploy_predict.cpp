// Deployment, program B: loads a whole-model file written by deploy_train (or any jit::save)
// and predicts the digits test set. It contains no model code: the graph and weights come from
// the file.
//   deploy_predict model.ember [digits.csv.gz]
#include <ember/ember.hpp>

#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

namespace em = ember;

#ifndef EMBER_EXAMPLES_DATA
#define EMBER_EXAMPLES_DATA "examples/data"
#endif

int main(int argc, char** argv) {
  const std::string model_path = argc > 1 ? argv[1] : "model.ember";
  const std::string data = argc > 2 ? argv[2] : EMBER_EXAMPLES_DATA "/digits.csv.gz";
  try {
    auto model = em::jit::load(model_path);
    const auto table = em::data::read_csv<float>(data);
    const em::tensor<float> x = table.slice(1, 0, 64).slice(0, 1500) / 16.f;
    const em::tensor<std::int64_t> y = table.select(1, 64).slice(0, 1500).to<std::int64_t>();
    em::no_grad_guard ng;
    const em::tensor<float> logits = model({x});
    const auto pred = em::argmax(logits, 1);
    const auto right = em::sum((pred == y).eval().to<std::int64_t>()).item();
    std::printf("%s: %lld of %lld test digits right (accuracy %.4f)\n", model_path.c_str(),
                static_cast<long long>(right), static_cast<long long>(y.numel()),
                static_cast<double>(right) / static_cast<double>(y.numel()));
    return right * 10 >= y.numel() * 9 ? 0 : 1;
  } catch (const em::error& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }
}
