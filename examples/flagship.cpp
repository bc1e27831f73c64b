// ember's flagship example: train an MLP and a small CNN on the bundled digits data (8x8
// handwritten digits, first 1500 rows train, last 297 test, pixels / 16), report loss, accuracy
// and time per epoch (AdamW, label smoothing 0.1, the learning rate halved every 5 epochs), save
// the CNN's state_dict (safetensors), reload it into a fresh model and check that the
// predictions are identical.
//   ./build.sh example          (or: flagship [path/to/digits.csv.gz] [--device cuda])
// With --device cuda (a build with the CUDA backend, docs/cuda.md) the same code trains both
// models on the GPU: the models and each batch are moved there, nothing else changes.
#include <ember/ember.hpp>
#if EMBER_EXAMPLE_CUDA
#include <ember/cuda.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

namespace em = ember;
namespace nn = ember::nn;
namespace F = ember::nn::functional;

#ifndef EMBER_EXAMPLE_CUDA
#define EMBER_EXAMPLE_CUDA 0
#endif
#ifndef EMBER_EXAMPLES_DATA
#define EMBER_EXAMPLES_DATA "examples/data"
#endif

/// Where the models train (--device cuda: the first GPU).
em::device run_on = em::cpu;

/// 64 -> 64 -> 10 with ReLU.
struct mlp : nn::module<mlp> {
  BOOST_HANA_DEFINE_STRUCT(mlp, (nn::linear, fc1), (nn::linear, fc2));
  mlp() : fc1(64, 64), fc2(64, 10) {}
  em::tensor<float> forward(const em::tensor<float>& x) { return fc2(em::relu(fc1(x))); }
};

/// (N, 1, 8, 8) -> conv 3x3 (16) -> BN -> ReLU -> pool 2 -> conv 3x3 (32) -> BN -> ReLU ->
/// pool 2 -> flatten (128) -> dropout -> linear (10).
struct cnn : nn::module<cnn> {
  BOOST_HANA_DEFINE_STRUCT(cnn, (nn::conv2d, conv1), (nn::batch_norm2d, bn1), (nn::conv2d, conv2),
                           (nn::batch_norm2d, bn2), (nn::dropout, drop), (nn::linear, fc));
  cnn()
      : conv1({.in = 1, .out = 16, .kernel = 3, .padding = 1}), bn1(16),
        conv2({.in = 16, .out = 32, .kernel = 3, .padding = 1}), bn2(32), drop(0.25), fc(128, 10) {}
  em::tensor<float> forward(const em::tensor<float>& x) {
    auto h = F::max_pool2d(em::relu(bn1(conv1(x.view({-1, 1, 8, 8})))), {.kernel = 2});
    h = F::max_pool2d(em::relu(bn2(conv2(h))), {.kernel = 2});
    return fc(drop(h.flatten(1)));
  }
};

/// Fraction of rows whose argmax matches the label.
double accuracy(const em::tensor<float>& logits, const em::tensor<std::int64_t>& labels) {
  auto pred = em::argmax(logits, 1);
  return static_cast<double>(em::sum((pred == labels).eval().to<std::int64_t>()).item()) /
         static_cast<double>(labels.numel());
}

template <class Model>
void train(const char* name, Model& model, em::data::tensor_dataset<float, std::int64_t>& train_set,
           const em::tensor<float>& x_test, const em::tensor<std::int64_t>& y_test, int epochs, double lr) {
  std::cout << "== " << name << " (" << model.parameters().size() << " parameter tensors)\n" << model << "\n";
  model.to(run_on);
  em::optim::adamw opt(model.parameters(), {.lr = lr, .weight_decay = 1e-2});
  em::optim::step_lr sched(opt, {.step_size = 5, .gamma = 0.5});
  em::data::dataloader loader(train_set, {.batch_size = 32, .shuffle = true, .seed = 7});
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    model.train();
    double loss_sum = 0;
    std::int64_t seen = 0;
    for (auto&& [xb, yb] : loader) {
      opt.zero_grad();
      auto loss = F::cross_entropy(model(xb.to(run_on)), yb.to(run_on), {.label_smoothing = 0.1});
      loss.backward();
      opt.step();
      loss_sum += static_cast<double>(loss.item()) * static_cast<double>(yb.numel());
      seen += yb.numel();
    }
    sched.step();
    model.eval();
    em::tensor<float> logits;
    {
      em::no_grad_guard ng;
      logits = model(x_test.to(run_on)).to(em::cpu);
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("epoch %2d  loss %.4f  test accuracy %.4f  %6.1f ms\n", epoch, loss_sum / seen,
                accuracy(logits, y_test), ms);
  }
}

int main(int argc, char** argv) {
  std::string path = EMBER_EXAMPLES_DATA "/digits.csv.gz";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--device" && i + 1 < argc && std::string(argv[i + 1]) == "cuda") {
#if EMBER_EXAMPLE_CUDA
      ember::cuda_backend::linked();
#endif
      if (!em::cuda::is_available()) {
        std::cout << "--device cuda: no GPU (this build has "
                  << (EMBER_EXAMPLE_CUDA ? "the CUDA backend, but the runtime sees no GPU"
                                         : "no CUDA backend: nvcc was not found")
                  << ")\n";
        return 1;
      }
      run_on = em::device::cuda();
      ++i;
    } else {
      path = a;
    }
  }
  em::manual_seed(0);
  std::cout << "training on " << run_on << "\n";

  // 1797 rows of 64 pixels (0..16) and a label; the first 1500 train, the last 297 test
  const auto table = em::data::read_csv<float>(path);
  const auto pixels = table.slice(1, 0, 64) / 16.f;
  em::tensor<float> x = pixels;
  em::tensor<std::int64_t> y = table.select(1, 64).to<std::int64_t>();
  std::cout << "digits: " << x.size(0) << " images of 8x8 from " << path << "\n";
  em::data::tensor_dataset train_set(x.slice(0, 0, 1500), y.slice(0, 0, 1500));
  const auto x_test = x.slice(0, 1500);
  const auto y_test = y.slice(0, 1500);

  mlp m;
  train("MLP", m, train_set, x_test, y_test, 20, 3e-3);
  cnn c;
  train("CNN", c, train_set, x_test, y_test, 20, 3e-3);

  // save the CNN's parameters and buffers, reload them into a fresh model, compare predictions
  const std::string file = "digits_cnn.safetensors";
  em::save(c.state_dict(), file);
  cnn fresh;
  fresh.load_state_dict(em::load(file));
  fresh.to(run_on);
  c.eval();
  fresh.eval();
  em::no_grad_guard ng;
  const auto a = c(x_test.to(run_on)).to(em::cpu), b = fresh(x_test.to(run_on)).to(em::cpu);
  const float diff = em::amax(em::abs(a - b)).item();
  const double acc = accuracy(b, y_test);
  std::printf("saved %s (%zu tensors); reloaded model: test accuracy %.4f, max |logit difference| %g\n",
              file.c_str(), c.state_dict().size(), acc, static_cast<double>(diff));
  std::remove(file.c_str());
  if (diff != 0.f || acc < 0.95) {
    std::cout << "FAILED: the reloaded CNN must predict identically with accuracy >= 0.95\n";
    return 1;
  }
  std::cout << "ok\n";
  return 0;
}
