// Convolution and pooling benchmarks (ops/conv.hpp, ops/pool.hpp) against libtorch 1.13, both
// on one thread, float32, with interleaved repetitions (bench/harness.hpp):
//   C1  conv2d 32x64x56x56, 3x3, pad 1, 64 out (a ResNet stage-1 convolution; im2col + GEMM)
//   C2  conv2d 32x256x14x14, 1x1, 64 out (the direct-GEMM path)
//   C3  conv2d 1x3x224x224, 7x7, stride 2, pad 3, 64 out (a ResNet stem; batch 1)
//   P1  max_pool2d 32x64x112x112, 3x3, stride 2, pad 1
//   P2  avg_pool2d 32x64x56x56, 2x2
//   P3  adaptive_avg_pool2d 32x512x7x7 -> 1
// Ratios are ember / libtorch (> 1: ember is slower).
//
//   ./conv              # all suites
//   ./conv C1 P1        # only the named suites
//   BENCH_REPS=11 ./conv
#include "harness.hpp"

#include <ember/core/parallel.hpp>
#include <ember/core/random.hpp>
#include <ember/ops/conv.hpp>
#include <ember/ops/factory.hpp>
#include <ember/ops/pool.hpp>

#include <cstdio>
#include <cstdlib>
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
/// A libtorch tensor sharing an ember tensor's (contiguous float) data.
at::Tensor torch_view(const em::tensor<float>& t) {
  std::vector<std::int64_t> sizes(t.shape().begin(), t.shape().end());
  return at::from_blob(t.data(), sizes, at::kFloat);
}
#endif

struct conv_case {
  const char* name;
  const char* title;
  em::shape x, w;
  std::int64_t stride, padding;
  int reps;
};

void run_conv(const conv_case& c) {
  em::generator g(1);
  const auto x = em::randn<float>(c.x, g), w = em::randn<float>(c.w, g), b = em::randn<float>({c.w[0]}, g);
  bench::suite s(c.title, {.reps = c.reps, .warmup = 1});
  s.add("ember F::conv2d", [&] {
    auto y = F::conv2d(x, w, {.bias = b, .stride = c.stride, .padding = c.padding});
    bench::keep(y.data());
  });
#if EMBER_BENCH_HAVE_TORCH
  const at::Tensor tx = torch_view(x), tw = torch_view(w), tb = torch_view(b);
  s.add("libtorch at::conv2d", [&] {
    auto y = at::conv2d(tx, tw, tb, c.stride, c.padding);
    bench::keep(y.data_ptr());
  });
#endif
  s.run();
  s.print("libtorch at::conv2d");
}

}  // namespace

int main(int argc, char** argv) {
  em::set_num_threads(1);
#if EMBER_BENCH_HAVE_TORCH
  // as bench/expr.cpp: let libtorch use its AVX-512 kernels where ember uses AVX-512
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    setenv("ATEN_CPU_CAPABILITY", "avx512", 0);
  at::set_num_threads(1);
  std::printf("conv/pool benchmarks: float32, 1 thread; libtorch %d thread(s)\n", at::get_num_threads());
#else
  std::printf("conv/pool benchmarks: float32, 1 thread; libtorch not built in\n");
#endif
  const std::vector<conv_case> convs = {
      {"C1", "C1 conv2d 32x64x56x56, 3x3 pad 1, 64 out", {32, 64, 56, 56}, {64, 64, 3, 3}, 1, 1, 5},
      {"C2", "C2 conv2d 32x256x14x14, 1x1, 64 out", {32, 256, 14, 14}, {64, 256, 1, 1}, 1, 0, 9},
      {"C3", "C3 conv2d 1x3x224x224, 7x7 stride 2 pad 3, 64 out", {1, 3, 224, 224}, {64, 3, 7, 7}, 2, 3, 9},
  };
  for (const auto& c : convs)
    if (wanted(argc, argv, c.name)) run_conv(c);

  em::generator g(2);
  if (wanted(argc, argv, "P1")) {
    const auto x = em::randn<float>({32, 64, 112, 112}, g);
    bench::suite s("P1 max_pool2d 32x64x112x112, 3x3 stride 2 pad 1", {.reps = 9, .warmup = 1});
    s.add("ember F::max_pool2d", [&] {
      auto y = F::max_pool2d(x, {.kernel = 3, .stride = 2, .padding = 1});
      bench::keep(y.data());
    });
    s.add("ember max_pool2d_with_indices", [&] {
      auto [y, i] = F::max_pool2d_with_indices(x, {.kernel = 3, .stride = 2, .padding = 1});
      bench::keep(y.data());
      bench::keep(i.data());
    });
#if EMBER_BENCH_HAVE_TORCH
    const at::Tensor tx = torch_view(x);
    s.add("libtorch at::max_pool2d", [&] {
      auto y = at::max_pool2d(tx, 3, 2, 1);
      bench::keep(y.data_ptr());
    });
#endif
    s.run();
    s.print("libtorch at::max_pool2d");
  }
  if (wanted(argc, argv, "P2")) {
    const auto x = em::randn<float>({32, 64, 56, 56}, g);
    bench::suite s("P2 avg_pool2d 32x64x56x56, 2x2", {.reps = 9, .warmup = 1});
    s.add("ember F::avg_pool2d", [&] {
      auto y = F::avg_pool2d(x, {.kernel = 2});
      bench::keep(y.data());
    });
#if EMBER_BENCH_HAVE_TORCH
    const at::Tensor tx = torch_view(x);
    s.add("libtorch at::avg_pool2d", [&] {
      auto y = at::avg_pool2d(tx, 2);
      bench::keep(y.data_ptr());
    });
#endif
    s.run();
    s.print("libtorch at::avg_pool2d");
  }
  if (wanted(argc, argv, "P3")) {
    const auto x = em::randn<float>({32, 512, 7, 7}, g);
    bench::suite s("P3 adaptive_avg_pool2d 32x512x7x7 -> 1", {.reps = 15, .warmup = 2, .iters = 10});
    s.add("ember F::adaptive_avg_pool2d", [&] {
      auto y = F::adaptive_avg_pool2d(x, {.output_size = 1});
      bench::keep(y.data());
    });
#if EMBER_BENCH_HAVE_TORCH
    const at::Tensor tx = torch_view(x);
    s.add("libtorch at::adaptive_avg_pool2d", [&] {
      auto y = at::adaptive_avg_pool2d(tx, {1, 1});
      bench::keep(y.data_ptr());
    });
#endif
    s.run();
    s.print("libtorch at::adaptive_avg_pool2d");
  }
}
