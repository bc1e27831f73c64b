// GEMM benchmarks: ember's packed SIMD GEMM (ops/gemm.hpp) against OpenBLAS, and Eigen and
// libtorch when built in. Every suite interleaves its competitors' repetitions
// (bench/harness.hpp) and reports GFLOP/s and ember's throughput relative to OpenBLAS in the
// same run (OpenBLAS time / ember time: > 1 means ember is faster).
//   G1  sgemm 1024 x 1024 x 1024, one thread
//   G2  sgemm 64 x 784 · 784 x 256 (an MLP layer: batch 64, 784 -> 256), one thread; also
//       the linear-layer form x · Wᵀ (B transposed) for both libraries
//   G3  dgemm 1024 x 1024 x 1024, one thread
//   G4  sgemm 1024^3 on 2 threads against ember on 1 thread (and OpenBLAS on 2)
// Run OpenBLAS with its own CPU detection, single-threaded (the program calls
// openblas_set_num_threads(1)), i.e. without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE overrides:
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./gemm            # all suites
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./gemm G1 G3      # some
//   BENCH_REPS=40 ./gemm                                           # more samples
// The program prints which OpenBLAS core kernel ran (openblas_get_corename()).
#include "harness.hpp"

#include <ember/ember.hpp>
#include <ember/ops/gemm.hpp>
#include <ember/ops/matmul.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if EMBER_BENCH_HAVE_OPENBLAS
#include <cblas.h>
#endif
#if EMBER_BENCH_HAVE_EIGEN
#include <Eigen/Core>
#endif
#if EMBER_BENCH_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace em = ember;

namespace {

template <class T>
em::tensor<T> random_matrix(std::int64_t r, std::int64_t c, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  auto t = em::empty<T>({r, c});
  for (std::int64_t i = 0; i < r * c; ++i) t.data()[i] = static_cast<T>(d(g));
  return t;
}

template <class T>
double max_rel_diff(const T* a, const T* b, std::int64_t n) {
  double m = 0;
  for (std::int64_t i = 0; i < n; ++i)
    m = std::max(m, std::abs(double(a[i]) - double(b[i])) / (1.0 + std::abs(double(b[i]))));
  return m;
}

const bench::result* find(const bench::suite& s, const std::string& name) {
  for (const auto& r : s.results())
    if (r.name == name) return &r;
  return nullptr;
}

/// GFLOP/s of every competitor (from the min and the median time).
void print_gflops(const bench::suite& s, double flops) {
  for (const auto& r : s.results())
    std::printf("  %-40s %8.1f GFLOP/s (min)  %8.1f GFLOP/s (median)\n", r.name.c_str(),
                flops / r.min(), flops / r.median());
}

/// Throughput of `subject` relative to `peer` (peer time / subject time) against a target.
void verdict(const bench::suite& s, const char* tag, const std::string& subject,
             const std::string& peer, double target) {
  const auto* a = find(s, subject);
  const auto* b = find(s, peer);
  if (!a || !b) {
    std::printf("  [%s] '%s' vs '%s': not built in, no verdict\n", tag, subject.c_str(), peer.c_str());
    return;
  }
  const double rmin = b->min() / a->min(), rmed = b->median() / a->median();
  std::printf("  [%s] throughput '%s' / '%s': best-of %.3f, median %.3f (target >= %.2f: %s)\n", tag,
              subject.c_str(), peer.c_str(), rmin, rmed, target, rmin >= target ? "MET" : "MISSED");
  std::fflush(stdout);
}

bool wanted(int argc, char** argv, const char* name) {
  if (argc <= 1) return true;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "n/a";
}

/// Runs f as if inside a pool task, where ember's parallel loops (and so its GEMM) stay on
/// the calling thread: ember on 1 thread without rebuilding the pool between samples (a new
/// pool would also mean new threads with cold scratch buffers).
template <class F>
void single_threaded(F&& f) {
  bool& flag = em::detail::thread_pool::in_task();
  const bool was = flag;
  flag = true;
  f();
  flag = was;
}

/// C = A·B, row-major, m x k times k x n (B transposed: B given as n x k, the x · Wᵀ form).
template <class T>
struct problem {
  std::int64_t m, n, k;
  bool b_trans;
  em::tensor<T> a, b;
  problem(std::int64_t m_, std::int64_t n_, std::int64_t k_, bool bt, unsigned seed)
      : m(m_), n(n_), k(k_), b_trans(bt), a(random_matrix<T>(m_, k_, seed)),
        b(bt ? random_matrix<T>(n_, k_, seed + 1) : random_matrix<T>(k_, n_, seed + 1)) {}
  double flops() const { return 2.0 * double(m) * double(n) * double(k); }

  void ember(em::tensor<T>& c) const {
    em::detail::gemm<T>(m, n, k, T(1), a.data(), k, 1, b.data(), b_trans ? 1 : n, b_trans ? k : 1,
                        T(0), c.data(), n, 1);
  }
#if EMBER_BENCH_HAVE_OPENBLAS
  void blas(em::tensor<T>& c) const {
    const auto tb = b_trans ? CblasTrans : CblasNoTrans;
    const int M = int(m), N = int(n), K = int(k), ldb = int(b_trans ? k : n);
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, M, N, K, 1.f, a.data(), K, b.data(), ldb, 0.f,
                  c.data(), N);
    else
      cblas_dgemm(CblasRowMajor, CblasNoTrans, tb, M, N, K, 1.0, a.data(), K, b.data(), ldb, 0.0,
                  c.data(), N);
  }
#endif
};

/// Adds ember, OpenBLAS, Eigen and libtorch (those built in) to a suite, with their outputs,
/// and checks after the run that every output matches ember's.
template <class T>
struct competitors {
  const problem<T>& p;
  em::tensor<T> c_ember, c_blas, c_eigen, c_torch, c_matmul;
#if EMBER_BENCH_HAVE_EIGEN
  using emat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const emat> ea, eb;
  Eigen::Map<emat> ec;
#endif
#if EMBER_BENCH_HAVE_TORCH
  torch::Tensor ta, tb, tc;
#endif
  explicit competitors(const problem<T>& pr)
      : p(pr), c_ember(em::empty<T>({pr.m, pr.n})), c_blas(em::empty<T>({pr.m, pr.n})),
        c_eigen(em::empty<T>({pr.m, pr.n})), c_torch(em::empty<T>({pr.m, pr.n}))
#if EMBER_BENCH_HAVE_EIGEN
        ,
        ea(pr.a.data(), pr.m, pr.k),
        eb(pr.b.data(), pr.b_trans ? pr.n : pr.k, pr.b_trans ? pr.k : pr.n),
        ec(c_eigen.data(), pr.m, pr.n)
#endif
  {
#if EMBER_BENCH_HAVE_TORCH
    const auto opt = torch::TensorOptions().dtype(std::is_same_v<T, float> ? torch::kFloat32 : torch::kFloat64);
    ta = torch::from_blob(p.a.data(), {p.m, p.k}, opt);
    tb = torch::from_blob(p.b.data(), {p.b.size(0), p.b.size(1)}, opt);
    tc = torch::from_blob(c_torch.data(), {p.m, p.n}, opt);
#endif
  }

  void add(bench::suite& s, bool threaded_variants = false) {
    s.add("ember", [this] {
      single_threaded([&] { p.ember(c_ember); });
      bench::keep(c_ember.data());
    });
    if (threaded_variants) {
      s.add("ember 2 threads", [this] {
        p.ember(c_ember);
        bench::keep(c_ember.data());
      });
    } else {
      s.add(p.b_trans ? "ember F::linear (with allocation)" : "ember em::mm (with allocation)", [this] {
        single_threaded([&] {
          c_matmul = p.b_trans ? em::nn::functional::linear(p.a, p.b) : em::mm(p.a, p.b);
        });
        bench::keep(c_matmul.data());
      });
    }
#if EMBER_BENCH_HAVE_OPENBLAS
    s.add("OpenBLAS", [this] {
      p.blas(c_blas);
      bench::keep(c_blas.data());
    });
    if (threaded_variants) {
      s.add("OpenBLAS 2 threads", [this] {
        openblas_set_num_threads(2);
        p.blas(c_blas);
        openblas_set_num_threads(1);
        bench::keep(c_blas.data());
      });
    }
#endif
#if EMBER_BENCH_HAVE_EIGEN
    if (!threaded_variants) {
      s.add("Eigen", [this] {
        if (p.b_trans) ec.noalias() = ea * eb.transpose();
        else ec.noalias() = ea * eb;
        bench::keep(c_eigen.data());
      });
    }
#endif
#if EMBER_BENCH_HAVE_TORCH
    if (!threaded_variants) {
      s.add("libtorch", [this] {
        at::mm_out(tc, ta, p.b_trans ? tb.t() : tb);
        bench::keep(c_torch.data());
      });
    }
#endif
  }

  void check(bool threaded_variants = false) const {
    const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-11;
    auto one = [&](const char* what, const em::tensor<T>& c) {
      const double d = max_rel_diff(c.data(), c_ember.data(), p.m * p.n);
      std::printf("  check %-32s max rel diff vs ember %.2e %s\n", what, d, d <= tol ? "ok" : "MISMATCH");
    };
#if EMBER_BENCH_HAVE_OPENBLAS
    one("OpenBLAS", c_blas);
#endif
#if EMBER_BENCH_HAVE_EIGEN
    if (!threaded_variants) one("Eigen", c_eigen);
#endif
#if EMBER_BENCH_HAVE_TORCH
    if (!threaded_variants) one("libtorch", c_torch);
#endif
    if (!threaded_variants) one("ember mm/linear", c_matmul);
  }
};

template <class T>
void run_suite(const char* tag, const char* title, const problem<T>& p, bench::options opt,
               double target, bool threaded = false) {
  competitors<T> c(p);
  bench::suite s(title, opt);
  c.add(s, threaded);
  s.run();
  s.print("ember");
  print_gflops(s, p.flops());
  c.check(threaded);
  if (threaded) {
    verdict(s, tag, "ember 2 threads", "ember", target);
  } else {
    verdict(s, tag, "ember", "OpenBLAS", target);
  }
}

}  // namespace

int main(int argc, char** argv) {
  em::set_num_threads(2);  // G4 uses both; the single-thread cases run ember inline
#if EMBER_BENCH_HAVE_OPENBLAS
  openblas_set_num_threads(1);
#endif
#if EMBER_BENCH_HAVE_TORCH
  at::set_num_threads(1);
#endif
  std::printf("GEMM benchmarks (row-major C = A·B; best-of-N and median of interleaved samples)\n");
  std::printf("  CPU: %s, %u hardware threads\n", cpu_model().c_str(), std::thread::hardware_concurrency());
  using blk_f = em::detail::gemm_blocking<float>;
  using blk_d = em::detail::gemm_blocking<double>;
#if EMBER_HAS_XSIMD
  std::printf("  ember: xsimd %d.%d.%d arch %s; f32 tile %dx%d kc %lld mc %lld nc %lld; f64 tile %dx%d kc %lld mc %lld\n",
              XSIMD_VERSION_MAJOR, XSIMD_VERSION_MINOR, XSIMD_VERSION_PATCH, xsimd::default_arch::name(),
              blk_f::mr, blk_f::nr, (long long)blk_f::kc, (long long)blk_f::mc, (long long)blk_f::nc,
              blk_d::mr, blk_d::nr, (long long)blk_d::kc, (long long)blk_d::mc);
#else
  std::printf("  ember: no xsimd (scalar fallback kernel %dx%d)\n", blk_f::mr, blk_f::nr);
#endif
#if EMBER_BENCH_HAVE_OPENBLAS
  const char* ct = std::getenv("OPENBLAS_CORETYPE");
  const char* l2 = std::getenv("OPENBLAS_L2_SIZE");
  std::printf("  %s: core kernel %s, 1 thread; OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s\n",
              OPENBLAS_VERSION, openblas_get_corename(), ct ? ct : "(unset)", l2 ? l2 : "(unset)");
#else
  std::printf("  OpenBLAS: not built in (no ratios)\n");
#endif
#if EMBER_BENCH_HAVE_EIGEN
  std::printf("  Eigen %d.%d.%d: %s\n", EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION,
              Eigen::SimdInstructionSetsInUse());
#endif
#if EMBER_BENCH_HAVE_TORCH
  std::printf("  libtorch %s, %d thread(s)\n", TORCH_VERSION, at::get_num_threads());
#endif

  if (wanted(argc, argv, "G1")) {
    problem<float> p(1024, 1024, 1024, false, 1);
    run_suite<float>("G1", "G1 sgemm 1024x1024x1024, 1 thread", p, {.reps = 15, .warmup = 2}, 0.90);
  }
  if (wanted(argc, argv, "G2")) {
    problem<float> p(64, 256, 784, false, 3);
    run_suite<float>("G2", "G2 sgemm 64x784 · 784x256 (MLP layer), 1 thread", p,
                     {.reps = 25, .warmup = 3, .iters = 20}, 0.90);
    problem<float> q(64, 256, 784, true, 5);
    run_suite<float>("G2t", "G2t the same as x · Wᵀ (W 256x784 row-major, B transposed), 1 thread", q,
                     {.reps = 25, .warmup = 3, .iters = 20}, 0.90);
  }
  if (wanted(argc, argv, "G3")) {
    problem<double> p(1024, 1024, 1024, false, 7);
    run_suite<double>("G3", "G3 dgemm 1024x1024x1024, 1 thread", p, {.reps = 11, .warmup = 2}, 0.85);
  }
  if (wanted(argc, argv, "G4")) {
    problem<float> p(1024, 1024, 1024, false, 9);
    run_suite<float>("G4", "G4 sgemm 1024^3: ember 2 threads vs ember 1 thread", p,
                     {.reps = 15, .warmup = 2}, 1.8, true);
  }
  return 0;
}
