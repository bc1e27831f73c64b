// Autograd benchmarks against libtorch 1.13, one thread each (issue: autograd):
//   O1  1,000 eager adds of two 16-element tensors, no grad        target <= 0.15x libtorch
//   O2  t = t * c + c, 1,000 times on 16 elements that require grad,
//       then sum(t).backward()                                      target <= 0.25x libtorch
//   F1  forward + backward of sum(gelu_tanh(a * x + b)), 4M elements,
//       x requires grad                                             target <= 0.5x libtorch,
//                                                                   lower peak memory
//   T1  one SGD step of a 784-256-10 ReLU MLP, batch 64, cross-entropy
//       (functional layers and a hand-written SGD update on both sides
//       until ember has nn modules and optimizers)                 target <= 0.7x libtorch
// Ratios are ember / libtorch in the same run (min and median over interleaved repetitions).
//   meson setup build-bench -Dbenchmarks=true && ninja -C build-bench bench/autograd
//   ./build-bench/bench/autograd
#include "harness.hpp"

#include <ember/ember.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

#if EMBER_BENCH_HAVE_TORCH
#include <ATen/Parallel.h>
#include <torch/torch.h>
#endif

namespace em = ember;

namespace {

bool close(double a, double b, double tol) { return std::abs(a - b) <= tol * (1 + std::abs(b)); }

void o1(bool& ok) {
  bench::suite s("O1 1000 eager adds of 16 floats (no grad)", {.reps = 15, .warmup = 3});
  auto a = em::randn<float>({16}), b = em::randn<float>({16});
  s.add("ember: tensor c = a + b", [&] {
    for (int i = 0; i < 1000; ++i) {
      em::tensor<float> c = a + b;
      bench::keep(c.data());
    }
  });
#if EMBER_BENCH_HAVE_TORCH
  auto ta = torch::randn({16}), tb = torch::randn({16});
  s.add("torch: auto c = a + b", [&] {
    for (int i = 0; i < 1000; ++i) {
      auto c = ta + tb;
      bench::keep(c.data_ptr<float>());
    }
  });
#endif
  s.run();
  s.print("torch: auto c = a + b");
  (void)ok;
}

void o2(bool& ok) {
  bench::suite s("O2 t = t*c + c x1000 (16 elements, requires grad) + backward",
                 {.reps = 15, .warmup = 2});
  std::vector<float> init(16), cv(16);
  for (int i = 0; i < 16; ++i) {
    init[static_cast<std::size_t>(i)] = 0.01f * static_cast<float>(i);
    cv[static_cast<std::size_t>(i)] = 0.999f;
  }
  float ember_g = 0, torch_g = 0;
  s.add("ember", [&] {
    auto x = em::from_vector<float>(init, {16}).requires_grad_();
    auto c = em::from_vector<float>(cv, {16});
    em::tensor<float> t = x;
    for (int i = 0; i < 1000; ++i) t = t * c + c;
    em::sum(t).backward();
    ember_g = x.grad().at({3});
  });
#if EMBER_BENCH_HAVE_TORCH
  s.add("torch", [&] {
    auto x = torch::from_blob(init.data(), {16}).clone().requires_grad_();
    auto c = torch::from_blob(cv.data(), {16}).clone();
    auto t = x;
    for (int i = 0; i < 1000; ++i) t = t * c + c;
    t.sum().backward();
    torch_g = x.grad()[3].item<float>();
  });
#endif
  s.run();
  s.print("torch");
  const double want = std::pow(0.999, 1000);
  ok &= close(ember_g, want, 1e-4);
#if EMBER_BENCH_HAVE_TORCH
  ok &= close(torch_g, want, 1e-4);
#endif
}

void f1(bool& ok) {
  const std::int64_t n = 1 << 22;
  bench::suite s("F1 sum(gelu_tanh(a*x + b)) forward+backward, 4M floats", {.reps = 11, .warmup = 2});
  em::manual_seed(1);
  auto x = em::randn<float>({n}).requires_grad_();
  auto a = em::randn<float>({n}), b = em::randn<float>({n});
  double ember_peak = 0;
  s.add("ember", [&] {
    x.set_grad({});
    em::reset_peak_memory_stats();
    const double base = static_cast<double>(em::memory_stats().in_use);
    auto loss = em::sum(em::gelu_tanh(a * x + b));
    loss.backward();
    ember_peak = static_cast<double>(em::memory_stats().peak) - base;
    bench::keep(x.grad().data());
  });
#if EMBER_BENCH_HAVE_TORCH
  auto tx = torch::from_blob(x.data(), {n}).clone().requires_grad_();
  auto ta = torch::from_blob(a.data(), {n}).clone(), tb = torch::from_blob(b.data(), {n}).clone();
  s.add("torch", [&] {
    tx.mutable_grad() = torch::Tensor();
    auto loss = torch::gelu(ta * tx + tb, "tanh").sum();
    loss.backward();
    bench::keep(tx.grad().data_ptr<float>());
  });
#endif
  s.run();
  s.print("torch");
  std::printf("  ember peak memory during forward+backward: %.1f MiB (x: %.1f MiB); libtorch keeps "
              "a*x+b and the gelu input for backward: >= %.1f MiB beyond its gradient\n",
              ember_peak / 1048576.0, n * 4 / 1048576.0, 2 * n * 4 / 1048576.0);
#if EMBER_BENCH_HAVE_TORCH
  double worst = 0;
  for (std::int64_t i = 0; i < n; i += 4099)
    worst = std::max(worst, std::abs(double(x.grad().data()[i]) - tx.grad()[i].item<float>()));
  std::printf("  max |ember - torch| gradient difference (sampled): %.2e\n", worst);
  ok &= worst < 1e-4;
#endif
}

void t1(bool& ok) {
  bench::suite s("T1 SGD step, 784-256-10 ReLU MLP, batch 64, cross-entropy", {.reps = 15, .warmup = 3});
  em::manual_seed(7);
  const float lr = 0.01f;
  auto w1 = (em::randn<float>({256, 784}) * 0.03f).eval().requires_grad_();
  auto b1 = em::zeros<float>({256}).requires_grad_();
  auto w2 = (em::randn<float>({10, 256}) * 0.06f).eval().requires_grad_();
  auto b2 = em::zeros<float>({10}).requires_grad_();
  const auto x = em::rand<float>({64, 784});
  std::vector<std::int64_t> labels(64);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int64_t>(i * 7 % 10);
  const auto y = em::from_vector<std::int64_t>(labels, {64});
#if EMBER_BENCH_HAVE_TORCH
  auto copy = [](const em::tensor<float>& t) {
    std::vector<std::int64_t> sz(t.shape().begin(), t.shape().end());
    return torch::from_blob(const_cast<float*>(t.data()), sz).clone();
  };
  auto tw1 = copy(w1).requires_grad_(), tb1 = copy(b1).requires_grad_();
  auto tw2 = copy(w2).requires_grad_(), tb2 = copy(b2).requires_grad_();
  const auto tx = copy(x);
  const auto ty = torch::from_blob(labels.data(), {64}, torch::kInt64).clone();
#endif
  float ember_loss = 0, torch_loss = 0;
  s.add("ember", [&] {
    namespace F = em::nn::functional;
    const auto h = em::relu(F::linear(x, w1, b1));
    const auto loss = F::cross_entropy(F::linear(h, w2, b2), y);
    loss.backward();
    {
      em::no_grad_guard ng;
      for (auto* p : {&w1, &b1, &w2, &b2}) {
        *p -= lr * p->grad();
        p->set_grad({});
      }
    }
    ember_loss = loss.item();
  });
#if EMBER_BENCH_HAVE_TORCH
  s.add("torch", [&] {
    namespace TF = torch::nn::functional;
    const auto h = torch::relu(TF::linear(tx, tw1, tb1));
    const auto loss = TF::cross_entropy(TF::linear(h, tw2, tb2), ty);
    loss.backward();
    {
      torch::NoGradGuard ng;
      for (auto* p : {&tw1, &tb1, &tw2, &tb2}) {
        *p -= lr * p->grad();
        p->mutable_grad() = torch::Tensor();
      }
    }
    torch_loss = loss.item<float>();
  });
#endif
  s.run();
  s.print("torch");
#if EMBER_BENCH_HAVE_TORCH
  // both ran the same number of steps from the same weights: the losses agree
  std::printf("  loss after the runs: ember %.6f, torch %.6f\n", ember_loss, torch_loss);
  ok &= close(ember_loss, torch_loss, 1e-3);
#endif
  (void)ember_loss;
}

}  // namespace

int main() {
  em::set_num_threads(1);
#if EMBER_BENCH_HAVE_TORCH
  at::set_num_threads(1);
#endif
  bool ok = true;
  o1(ok);
  o2(ok);
  f1(ok);
  t1(ok);
  std::printf("%s\n", ok ? "results agree" : "RESULTS DIFFER");
  return ok ? 0 : 1;
}
