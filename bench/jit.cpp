// Tracing JIT benchmarks (jit/trace.hpp, interpreter.hpp): inference of a traced and optimized
// graph vs the same model in eager ember vs libtorch 1.13 eager, one thread, float32, eval mode,
// interleaved repetitions (bench/harness.hpp):
//   J1  the digits CNN of examples/deploy_train.cpp (conv-bn-relu-pool x2, linear), batch 1, 64
//   J2  a 4-layer MLP 64-256-256-256-10 with ReLU, batch 1, 64
//   J3  interpreter overhead: a chain of 64 elementwise ops on a 1-element tensor, run as an
//       unoptimized graph (one node per op) vs the same eager ops; (graph - eager) / 64 is the
//       interpreter's cost per node
// Ratios are against the named baseline (> 1: slower).
//   ./jit            # all suites
//   ./jit J1 J3      # only the named suites
#include "harness.hpp"

#include <ember/ember.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#if EMBER_BENCH_HAVE_TORCH
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#endif

namespace em = ember;
namespace F = ember::nn::functional;

namespace {

bool wanted(int argc, char** argv, const char* name) {
  if (argc <= 1) return true;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

#if EMBER_BENCH_HAVE_TORCH
at::Tensor tv(const em::tensor<float>& t) {
  std::vector<std::int64_t> sizes(t.shape().begin(), t.shape().end());
  return at::from_blob(t.data(), sizes, at::kFloat);
}
#endif

struct cnn : em::nn::module<cnn> {
  BOOST_HANA_DEFINE_STRUCT(cnn, (em::nn::conv2d, conv1), (em::nn::batch_norm2d, bn1),
                           (em::nn::conv2d, conv2), (em::nn::batch_norm2d, bn2), (em::nn::linear, fc));
  cnn()
      : conv1({.in = 1, .out = 16, .kernel = 3, .padding = 1}), bn1(16),
        conv2({.in = 16, .out = 32, .kernel = 3, .padding = 1}), bn2(32), fc(128, 10) {}
  em::tensor<float> forward(const em::tensor<float>& x) {
    auto h = F::max_pool2d(em::relu(bn1(conv1(x.view({-1, 1, 8, 8})))), {.kernel = 2});
    h = F::max_pool2d(em::relu(bn2(conv2(h))), {.kernel = 2});
    return fc(h.flatten(1));
  }
};

struct mlp4 : em::nn::module<mlp4> {
  BOOST_HANA_DEFINE_STRUCT(mlp4, (em::nn::linear, fc1), (em::nn::linear, fc2), (em::nn::linear, fc3),
                           (em::nn::linear, fc4));
  mlp4() : fc1(64, 256), fc2(256, 256), fc3(256, 256), fc4(256, 10) {}
  em::tensor<float> forward(const em::tensor<float>& x) {
    return fc4(em::relu(fc3(em::relu(fc2(em::relu(fc1(x)))))));
  }
};

void run_cnn(std::int64_t batch) {
  em::manual_seed(0);
  cnn m;
  m.train();
  for (int i = 0; i < 3; ++i) (void)m(em::randn<float>({32, 64}));  // running stats
  m.eval();
  em::no_grad_guard ng;
  auto traced = em::jit::trace(m, {em::randn<float>({1, 64})});
  const auto x = em::randn<float>({batch, 64});
  const std::string title = "J1: digits CNN inference, batch " + std::to_string(batch);
  bench::suite s(title, {.reps = 21, .warmup = 3, .iters = batch == 1 ? 50 : 5});
  s.add("ember eager", [&] { bench::keep(m(x).data()); });
  s.add("ember traced+optimized", [&] {
    em::tensor<float> y = traced({x});
    bench::keep(y.data());
  });
#if EMBER_BENCH_HAVE_TORCH
  auto w = [](const em::tensor<float>& t) { return tv(t).clone(); };
  const at::Tensor c1w = w(m.conv1.weight), c1b = w(m.conv1.bias), c2w = w(m.conv2.weight),
                   c2b = w(m.conv2.bias), fw = w(m.fc.weight), fb = w(m.fc.bias);
  const at::Tensor b1m = w(m.bn1.running_mean), b1v = w(m.bn1.running_var), b1g = w(m.bn1.weight),
                   b1b = w(m.bn1.bias), b2m = w(m.bn2.running_mean), b2v = w(m.bn2.running_var),
                   b2g = w(m.bn2.weight), b2b = w(m.bn2.bias);
  const at::Tensor tx = tv(x);
  at::NoGradGuard tng;
  s.add("libtorch eager", [&] {
    auto h = at::conv2d(tx.view({-1, 1, 8, 8}), c1w, c1b, 1, 1);
    h = at::max_pool2d(at::relu(at::batch_norm(h, b1g, b1b, b1m, b1v, false, 0.1, 1e-5, false)), 2);
    h = at::conv2d(h, c2w, c2b, 1, 1);
    h = at::max_pool2d(at::relu(at::batch_norm(h, b2g, b2b, b2m, b2v, false, 0.1, 1e-5, false)), 2);
    auto y = at::linear(h.flatten(1), fw, fb);
    bench::keep(y.data_ptr());
  });
#endif
  s.run();
  s.print("ember eager");
}

void run_mlp(std::int64_t batch) {
  em::manual_seed(0);
  mlp4 m;
  m.eval();
  em::no_grad_guard ng;
  auto traced = em::jit::trace(m, {em::randn<float>({1, 64})});
  const auto x = em::randn<float>({batch, 64});
  const std::string title = "J2: 4-layer MLP inference, batch " + std::to_string(batch);
  bench::suite s(title, {.reps = 21, .warmup = 3, .iters = batch == 1 ? 200 : 20});
  s.add("ember eager", [&] { bench::keep(m(x).data()); });
  s.add("ember traced+optimized", [&] {
    em::tensor<float> y = traced({x});
    bench::keep(y.data());
  });
#if EMBER_BENCH_HAVE_TORCH
  auto w = [](const em::tensor<float>& t) { return tv(t).clone(); };
  const at::Tensor w1 = w(m.fc1.weight), b1 = w(m.fc1.bias), w2 = w(m.fc2.weight), b2 = w(m.fc2.bias),
                   w3 = w(m.fc3.weight), b3 = w(m.fc3.bias), w4 = w(m.fc4.weight), b4 = w(m.fc4.bias);
  const at::Tensor tx = tv(x);
  at::NoGradGuard tng;
  s.add("libtorch eager", [&] {
    auto y = at::linear(at::relu(at::linear(at::relu(at::linear(at::relu(at::linear(tx, w1, b1)), w2, b2)), w3, b3)), w4, b4);
    bench::keep(y.data_ptr());
  });
#endif
  s.run();
  s.print("ember eager");
}

void run_overhead() {
  constexpr int n = 64;
  auto chain = [](const em::tensor<float>& x) {
    em::tensor<float> h = x;
    for (int i = 0; i < n / 2; ++i) {
      h = em::tanh(h);
      h = em::relu(h);
    }
    return h;
  };
  em::no_grad_guard ng;
  const auto x = em::randn<float>({1});
  auto graph = em::jit::trace(chain, {x}, {.batch_dim = -1, .optimize = false});
  auto fused = em::jit::trace(chain, {x}, {.batch_dim = -1});
  bench::suite s("J3: 64 elementwise ops on a 1-element tensor (interpreter overhead per node)",
                 {.reps = 21, .warmup = 3, .iters = 100});
  s.add("ember eager (64 ops)", [&] { bench::keep(chain(x).data()); });
  s.add("graph, 64 nodes", [&] {
    em::tensor<float> y = graph({x});
    bench::keep(y.data());
  });
  s.add("graph, fused (1 node)", [&] {
    em::tensor<float> y = fused({x});
    bench::keep(y.data());
  });
  s.run();
  s.print("ember eager (64 ops)");
  std::printf("interpreter cost per node: (graph - eager) / %d, from the medians above\n\n", n);
}

}  // namespace

int main(int argc, char** argv) {
  em::set_num_threads(1);
#if EMBER_BENCH_HAVE_TORCH
  at::set_num_threads(1);
#endif
  if (wanted(argc, argv, "J1")) {
    run_cnn(1);
    run_cnn(64);
  }
  if (wanted(argc, argv, "J2")) {
    run_mlp(1);
    run_mlp(64);
  }
  if (wanted(argc, argv, "J3")) run_overhead();
  return 0;
}
