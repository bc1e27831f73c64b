// GPU benchmarks of the CUDA backend (built with -Dbenchmarks=true when libember_cuda is built;
// run by cuda/check_on_gpu.sh next to bench/cuda_torch.py, which times PyTorch eager on the
// same GPU). Every time is a median of synchronized repetitions, in ms.
//   G1  fused E1 (out = 1.5 x - 0.5 y + 0.25) on 64M floats, against a device-to-device copy
//       of 64M floats in the same run (the bandwidth the fused kernel should reach: >= 80%):
//       its compiled kernel (Note [Kernel JIT]), the interpreter, and the first launch (compile)
//   G2  sgemm 8192^3 (cuBLAS through em::matmul)
//   G3  one training step of a 784-256-10 MLP at batch 64 (forward, cross_entropy, backward,
//       Adam step)
// Output: one line per measurement, "name value" (ms, or GB/s), read by the check script.
#include <ember/cuda.hpp>
#include <ember/ember.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

namespace em = ember;
namespace F = em::nn::functional;

namespace {

double median_ms(int reps, const std::function<void()>& body) {
  body();  // warm-up (kernel loading, cuBLAS heuristics, allocator caches)
  em::cuda::synchronize();
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    em::cuda::synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main() {
  if (em::cuda_backend::linked() == 0 || !em::cuda::is_available()) {
    std::printf("no CUDA device: nothing to measure\n");
    return 0;
  }
  const em::device gpu = em::device::cuda(0);
  {  // G1
    const std::int64_t n = 64 << 20;
    const auto x = em::full<float>({n}, 1.f).to(gpu), y = em::full<float>({n}, 2.f).to(gpu);
    em::tensor<float> out = em::zeros<float>({n}).to(gpu);
    const double copy = median_ms(30, [&] { out.copy_(x); });  // cudaMemcpyAsync D2D
    const auto run_e1 = [&] { out.copy_(1.5f * x - 0.5f * y + 0.25f); };
    // E1's first launch compiles its kernel, or loads it from the disk cache (Note [Kernel JIT])
    const auto stats0 = em::cuda::jit_statistics();
    const auto t0 = std::chrono::steady_clock::now();
    run_e1();
    em::cuda::synchronize();
    const double first = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const auto stats1 = em::cuda::jit_statistics();
    const double e1 = median_ms(30, run_e1);
    em::cuda::set_jit_mode(em::cuda::jit_mode::never);  // the interpreter, for comparison
    const double e1_interp = median_ms(30, run_e1);
    em::cuda::set_jit_mode(em::cuda::jit_mode::automatic);
    const double copy_gbs = 2.0 * 4 * n / copy / 1e6, e1_gbs = 3.0 * 4 * n / e1 / 1e6;
    std::printf("G1_copy_ms %.4f\nG1_copy_GBs %.1f\nG1_e1_ms %.4f\nG1_e1_GBs %.1f\n", copy,
                copy_gbs, e1, e1_gbs);
    std::printf("G1_fraction_of_copy_bandwidth %.3f\n", e1_gbs / copy_gbs);
    std::printf("G1_interpreter_ms %.4f\nG1_interpreter_fraction %.3f\n", e1_interp,
                3.0 * 4 * n / e1_interp / 1e6 / copy_gbs);
    std::printf("G1_first_launch_ms %.1f (compiled %lld, from disk %lld; %s)\n", first,
                static_cast<long long>(stats1.compiled - stats0.compiled),
                static_cast<long long>(stats1.disk_hits - stats0.disk_hits),
                stats1.failures > stats0.failures ? stats1.last_error.c_str() : "ok");
    const float v = out.slice(0, 12345, 12346).item();
    if (v != 1.5f * 1.f - 0.5f * 2.f + 0.25f) std::printf("G1 WRONG VALUE %g\n", v);
  }
  {  // G2
    const std::int64_t n = 8192;
    const auto a = em::randn<float>({n, n}).to(gpu), b = em::randn<float>({n, n}).to(gpu);
    em::tensor<float> c;
    const double ms = median_ms(10, [&] { c = em::matmul(a, b); });
    std::printf("G2_sgemm_ms %.3f\nG2_sgemm_TFLOPs %.1f\n", ms, 2.0 * n * n * n / ms / 1e9);
  }
  {  // G3
    em::manual_seed(0);
    em::nn::sequential net(em::nn::linear(784, 256), em::nn::relu(), em::nn::linear(256, 10));
    net.to(gpu);
    em::optim::adam opt(net.parameters(), {.lr = 1e-3});
    const auto x = em::randn<float>({64, 784}).to(gpu);
    const auto t = em::randint(0, 10, {64}).to(gpu);
    const double ms = median_ms(200, [&] {
      opt.zero_grad();
      auto loss = F::cross_entropy(net(x), t);
      loss.backward();
      opt.step();
    });
    std::printf("G3_mlp_step_ms %.4f\n", ms);
  }
  return 0;
}
