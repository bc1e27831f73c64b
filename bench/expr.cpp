// Expression-engine benchmarks: fused elementwise assignment (E1 E2 E3), a fused reduction
// (R1), row softmax (R2), the cost of the natural "fresh result" form (A1), and threading.
// float32, single thread unless a case says otherwise. Competitors, each in the same run with
// interleaved repetitions (bench/harness.hpp):
//   ember     fused expression templates over xsimd (this library)
//   Eigen 3.4 Eigen::ArrayXf / row-major Array, coefficient-wise expressions (lazy, fused)
//   xtensor   0.24 with XTENSOR_USE_XSIMD, xt::noalias(out) = ... (lazy, fused)
//   libtorch  1.13, one thread: its natural form (one temporary per operator) and its out= /
//             in-place form (no allocation, one pass per operator)
// Ratios are reported against Eigen (against libtorch for R2). Compile with the same flags for
// every competitor (bench/meson.build adds -O3 -march=native to this target).
//
//   ./expr                 # all suites
//   BENCH_REPS=25 ./expr   # more samples
//   ./expr E1 R2           # only the named suites (E1 E2 E3 R1 R2 R3 A1 T)
//   ATEN_CPU_CAPABILITY=avx2 ./expr   # libtorch's default kernels (else AVX-512 where available)
#define XTENSOR_USE_XSIMD 1

#include "harness.hpp"

#include <ember/ember.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#if EMBER_BENCH_HAVE_EIGEN
#include <Eigen/Core>
#endif
#if EMBER_BENCH_HAVE_XTENSOR
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xtensor.hpp>
#endif
#if EMBER_BENCH_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace em = ember;

namespace {

constexpr std::int64_t N = std::int64_t{16} << 20;  // 16M floats, 64 MiB per array
constexpr std::int64_t ROWS = 4096, COLS = 1024;    // 4M floats, 16 MiB

// ---- helpers -----------------------------------------------------------------------------------

std::vector<float> normal_values(std::size_t n, unsigned seed, float mean = 0.f, float sd = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

em::tensor<float> ember_from(const std::vector<float>& v, const em::shape& s) {
  auto t = em::empty<float>(s);
  std::memcpy(t.data(), v.data(), v.size() * sizeof(float));
  return t;
}

/// max |a - b| / (1 + |b|) over n elements (a sanity check that competitors agree).
double max_rel_diff(const float* a, const float* b, std::int64_t n) {
  double m = 0;
  for (std::int64_t i = 0; i < n; ++i)
    m = std::max(m, std::abs(double(a[i]) - double(b[i])) / (1.0 + std::abs(double(b[i]))));
  return m;
}

bool check_close(const char* what, const float* a, const float* b, std::int64_t n,
                 double tol = 1e-5) {
  const double d = max_rel_diff(a, b, n);
  std::printf("  check %-46s max rel diff %.2e %s\n", what, d, d <= tol ? "ok" : "MISMATCH");
  return d <= tol;
}

const bench::result* find(const bench::suite& s, const std::string& name) {
  for (const auto& r : s.results())
    if (r.name == name) return &r;
  return nullptr;
}

/// The peer with the lowest median among `peers` (names absent from the suite are skipped).
const bench::result* best_of(const bench::suite& s, const std::vector<std::string>& peers) {
  const bench::result* best = nullptr;
  for (const auto& p : peers)
    if (const auto* r = find(s, p); r && (!best || r->median() < best->median())) best = r;
  return best;
}

/// One summary line: subject vs the best of peers, by min and by median, against a target.
void verdict(const bench::suite& s, const char* tag, const std::string& subject,
             const std::vector<std::string>& peers, double target, bool higher_is_better = false) {
  const auto* a = find(s, subject);
  const auto* b = best_of(s, peers);
  if (!a || !b) {
    std::printf("  [%s] %s: peer not built in, no verdict\n", tag, subject.c_str());
    return;
  }
  const double rmin = a->min() / b->min(), rmed = a->median() / b->median();
  if (higher_is_better) {  // speed-up = peer time / subject time
    const double smin = 1 / rmin, smed = 1 / rmed;
    std::printf("  [%s] speed-up of '%s' over '%s': min %.2fx, median %.2fx (target >= %.2fx: %s)\n",
                tag, subject.c_str(), b->name.c_str(), smin, smed, target,
                smed >= target ? "MET" : "MISSED");
  } else {
    std::printf("  [%s] '%s' / '%s': min %.3f, median %.3f (target <= %.2f: %s)\n", tag,
                subject.c_str(), b->name.c_str(), rmin, rmed, target,
                rmed <= target ? "MET" : "MISSED");
  }
  std::fflush(stdout);
}

/// Runs body with ember's streaming stores off (Note [Streaming stores]: the diagnostic rows
/// that show what they bring).
template <class F>
void plain_stores(F&& body) {
  auto& min_bytes = em::detail::stream_store_min_bytes();
  const std::int64_t saved = min_bytes.load();
  min_bytes = std::numeric_limits<std::int64_t>::max();
  body();
  min_bytes = saved;
}

bool wanted(int argc, char** argv, const char* name) {
  if (argc <= 1) return true;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

std::string read_first_line(const char* path) {
  std::ifstream f(path);
  std::string s;
  if (!f || !std::getline(f, s)) return "n/a";
  return s;
}

#if EMBER_BENCH_HAVE_EIGEN
using EArr = Eigen::ArrayXf;
using ERowArr = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using EColArr = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using ERowVec = Eigen::Array<float, 1, Eigen::Dynamic>;
using EMap = Eigen::Map<EArr, Eigen::Aligned64>;
EArr eigen_from(const std::vector<float>& v) {
  return Eigen::Map<const EArr>(v.data(), static_cast<Eigen::Index>(v.size()));
}
#endif
#if EMBER_BENCH_HAVE_XTENSOR
template <std::size_t R>
xt::xtensor<float, R> xt_from(const std::vector<float>& v,
                              const typename xt::xtensor<float, R>::shape_type& s) {
  xt::xtensor<float, R> t(s);
  std::copy(v.begin(), v.end(), t.begin());
  return t;
}
#endif
#if EMBER_BENCH_HAVE_TORCH
torch::Tensor torch_from(const std::vector<float>& v, at::IntArrayRef s) {
  auto t = torch::empty(s);
  std::memcpy(t.data_ptr<float>(), v.data(), v.size() * sizeof(float));
  return t;
}
#endif

// ---- the inputs ---------------------------------------------------------------------------------
// Every competitor reads its own copy of the inputs and writes its own output. On this VM the
// last-level cache holds roughly 100 MiB (a hot 64 MiB sum runs at ~29 GB/s, a 128 MiB one at
// ~17 GB/s), so a competitor that re-read a buffer another had just streamed would read it from
// cache while the others read DRAM. With separate buffers, the >= 128 MiB that the other
// competitors of a round stream between two samples evict each one's data: all read cold.
struct inputs {
  std::vector<float> x = normal_values(N, 1), y = normal_values(N, 2);
  std::vector<float> X = normal_values(ROWS * COLS, 3), m = normal_values(COLS, 4, 0.f, 0.1f),
                     s = normal_values(COLS, 5, 1.f, 0.1f), g = normal_values(COLS, 6, 1.f, 0.1f),
                     b = normal_values(COLS, 7, 0.f, 0.1f);
};

// ---- E1: out = 1.5 x - 0.5 y + 0.25 ---------------------------------------------------------------
bool run_e1(const inputs& in, bool with_a1) {
  bool ok = true;
  auto x = ember_from(in.x, {N}), y = ember_from(in.y, {N});
  auto out = em::empty<float>({N});
  auto x2 = ember_from(in.x, {N}), y2 = ember_from(in.y, {N});  // for a second ember case
  bench::suite s(with_a1 ? "A1 natural (fresh result) vs preallocated, out = 1.5x - 0.5y + 0.25, 16M"
                         : "E1 out = 1.5x - 0.5y + 0.25, 16M floats",
                 {.reps = 15, .warmup = 2});
  s.add("ember out.copy_(expr)", [&] {
    out.copy_(1.5f * x - 0.5f * y + 0.25f);
    bench::keep(out.data());
  });
  auto x3 = ember_from(in.x, {N}), y3 = ember_from(in.y, {N});
  auto out3 = em::empty<float>({N});
  s.add("ember, plain stores (diag)", [&] {
    plain_stores([&] { out3.copy_(1.5f * x3 - 0.5f * y3 + 0.25f); });
    bench::keep(out3.data());
  });
  if (with_a1) {
    s.add("ember tensor<float> out = expr", [&] {
      em::tensor<float> o = 1.5f * x2 - 0.5f * y2 + 0.25f;
      bench::keep(o.data());
    });
  }
#if EMBER_BENCH_HAVE_EIGEN
  EArr ex = eigen_from(in.x), ey = eigen_from(in.y), eo(N);
  // diag: Eigen's loop over memory from ember's allocator (2 MiB-aligned, huge pages): separates
  // the code from the memory placement. Its own copies (not ember's x, y: see inputs).
  auto map_out_t = em::empty<float>({N});
  EMap mx(x2.data(), N), my(y2.data(), N), mo(map_out_t.data(), N);
  EArr ex2, ey2;  // the fresh-result Eigen case of A1
  if (with_a1) {
    ex2 = eigen_from(in.x);
    ey2 = eigen_from(in.y);
  }
  s.add("Eigen ArrayXf out = expr", [&] {
    eo = 1.5f * ex - 0.5f * ey + 0.25f;
    bench::keep(eo.data());
  });
  if (with_a1) {
    s.add("Eigen ArrayXf out = expr (fresh)", [&] {
      EArr o = 1.5f * ex2 - 0.5f * ey2 + 0.25f;
      bench::keep(o.data());
    });
  } else {
    s.add("Eigen Map over ember buffers (diag)", [&] {
      mo = 1.5f * mx - 0.5f * my + 0.25f;
      bench::keep(mo.data());
    });
  }
#endif
#if EMBER_BENCH_HAVE_XTENSOR
  xt::xtensor<float, 1> xx, xy, xo;
  if (!with_a1) {
    xx = xt_from<1>(in.x, {std::size_t(N)});
    xy = xt_from<1>(in.y, {std::size_t(N)});
    xo = xt::xtensor<float, 1>::from_shape({std::size_t(N)});
    s.add("xtensor noalias(out) = expr", [&] {
      xt::noalias(xo) = 1.5f * xx - 0.5f * xy + 0.25f;
      bench::keep(xo.data());
    });
  }
#endif
#if EMBER_BENCH_HAVE_TORCH
  auto tx = torch_from(in.x, {N}), ty = torch_from(in.y, {N}), to = torch::empty({N});
  const auto c15 = torch::scalar_tensor(1.5f);
  s.add("torch natural: auto out = expr", [&] {
    auto o = 1.5 * tx - 0.5 * ty + 0.25;
    bench::keep(o.data_ptr<float>());
  });
  if (!with_a1) {
    s.add("torch out=: mul_out, sub_, add_", [&] {
      at::mul_out(to, tx, c15);
      to.sub_(ty, 0.5).add_(0.25);
      bench::keep(to.data_ptr<float>());
    });
  }
#endif
  s.run();
#if EMBER_BENCH_HAVE_EIGEN
  ok &= check_close("E1 ember vs Eigen", out.data(), eo.data(), N);
  if (!with_a1) ok &= check_close("E1 Eigen Map vs Eigen", mo.data(), eo.data(), N);
#endif
#if EMBER_BENCH_HAVE_XTENSOR
  if (!with_a1) ok &= check_close("E1 xtensor vs ember", xo.data(), out.data(), N);
#endif
#if EMBER_BENCH_HAVE_TORCH
  if (!with_a1) ok &= check_close("E1 torch out= vs ember", to.data_ptr<float>(), out.data(), N);
#endif
  if (with_a1) {
    s.print("ember out.copy_(expr)");
    verdict(s, "A1", "ember tensor<float> out = expr", {"ember out.copy_(expr)"}, 1.2);
  } else {
    s.print("Eigen ArrayXf out = expr");
    verdict(s, "E1", "ember out.copy_(expr)", {"Eigen ArrayXf out = expr"}, 1.05);
  }
  return ok;
}

// ---- E2: tanh-GELU -----------------------------------------------------------------------------
bool run_e2(const inputs& in) {
  bool ok = true;
  auto x = ember_from(in.x, {N}), x2 = ember_from(in.x, {N});
  auto out = em::empty<float>({N}), out2 = em::empty<float>({N});
  bench::suite s("E2 out = 0.5x(1 + tanh(0.79788456(x + 0.044715x^3))), 16M floats",
                 {.reps = 15, .warmup = 2});
  s.add("ember out.copy_(expr)", [&] {
    out.copy_(0.5f * x * (1.f + em::tanh(0.79788456f * (x + 0.044715f * x * x * x))));
    bench::keep(out.data());
  });
  auto x3 = ember_from(in.x, {N});
  auto out3 = em::empty<float>({N});
  s.add("ember, plain stores (diag)", [&] {
    plain_stores([&] {
      out3.copy_(0.5f * x3 * (1.f + em::tanh(0.79788456f * (x3 + 0.044715f * x3 * x3 * x3))));
    });
    bench::keep(out3.data());
  });
  s.add("ember out.copy_(gelu_tanh(x)) (diag)", [&] {
    out2.copy_(em::gelu_tanh(x2));
    bench::keep(out2.data());
  });
#if EMBER_BENCH_HAVE_EIGEN
  EArr ex = eigen_from(in.x), eo(N);
  s.add("Eigen ArrayXf out = expr", [&] {
    eo = 0.5f * ex * (1.f + (0.79788456f * (ex + 0.044715f * ex.cube())).tanh());
    bench::keep(eo.data());
  });
#endif
#if EMBER_BENCH_HAVE_XTENSOR
  auto xx = xt_from<1>(in.x, {std::size_t(N)});
  auto xo = xt::xtensor<float, 1>::from_shape({std::size_t(N)});
  s.add("xtensor noalias(out) = expr", [&] {
    xt::noalias(xo) = 0.5f * xx * (1.f + xt::tanh(0.79788456f * (xx + 0.044715f * xx * xx * xx)));
    bench::keep(xo.data());
  });
#endif
#if EMBER_BENCH_HAVE_TORCH
  auto tx = torch_from(in.x, {N}), tx2 = torch_from(in.x, {N}), tx3 = torch_from(in.x, {N});
  auto to = torch::empty({N}), tg = torch::empty({N});
  s.add("torch natural: auto out = expr", [&] {
    auto o = 0.5 * tx * (1 + torch::tanh(0.79788456 * (tx + 0.044715 * tx.pow(3))));
    bench::keep(o.data_ptr<float>());
  });
  s.add("torch out=: mul_out + in-place chain", [&] {
    at::mul_out(to, tx2, tx2);
    to.mul_(tx2).mul_(0.044715).add_(tx2).mul_(0.79788456).tanh_().add_(1).mul_(tx2).mul_(0.5);
    bench::keep(to.data_ptr<float>());
  });
  s.add("torch gelu_out(tanh) fused (diag)", [&] {
    at::gelu_out(tg, tx3, "tanh");
    bench::keep(tg.data_ptr<float>());
  });
#endif
  s.run();
  ok &= check_close("E2 gelu_tanh(x) vs ember expr", out2.data(), out.data(), N, 1e-5);
#if EMBER_BENCH_HAVE_EIGEN
  ok &= check_close("E2 ember vs Eigen", out.data(), eo.data(), N, 1e-5);
#endif
#if EMBER_BENCH_HAVE_XTENSOR
  ok &= check_close("E2 xtensor vs ember", xo.data(), out.data(), N, 1e-5);
#endif
#if EMBER_BENCH_HAVE_TORCH
  ok &= check_close("E2 torch out= vs ember", to.data_ptr<float>(), out.data(), N, 1e-5);
  ok &= check_close("E2 torch gelu_out vs ember", tg.data_ptr<float>(), out.data(), N, 1e-5);
#endif
  s.print("Eigen ArrayXf out = expr");
  verdict(s, "E2", "ember out.copy_(expr)", {"Eigen ArrayXf out = expr"}, 1.10);
  return ok;
}

// ---- E3: (X - m) * s * g + b, row vectors broadcast over 4096 rows ---------------------------------
bool run_e3(const inputs& in) {
  bool ok = true;
  auto X = ember_from(in.X, {ROWS, COLS});
  auto m = ember_from(in.m, {COLS}), sv = ember_from(in.s, {COLS}), g = ember_from(in.g, {COLS}),
       b = ember_from(in.b, {COLS});
  auto out = em::empty<float>({ROWS, COLS});
  bench::suite s("E3 out = (X - m) * s * g + b, X 4096x1024, m s g b (1024) broadcast over rows",
                 {.reps = 21, .warmup = 3});
  s.add("ember out.copy_(expr)", [&] {
    out.copy_((X - m) * sv * g + b);
    bench::keep(out.data());
  });
  std::vector<std::string> eigen_names;
#if EMBER_BENCH_HAVE_EIGEN
  // row-major X (the layout of the others), 1xN row vectors
  ERowArr eX = Eigen::Map<const ERowArr>(in.X.data(), ROWS, COLS), eo(ROWS, COLS),
          eX2 = eX, eo2(ROWS, COLS);
  ERowVec em_ = Eigen::Map<const ERowVec>(in.m.data(), COLS),
          es = Eigen::Map<const ERowVec>(in.s.data(), COLS),
          eg = Eigen::Map<const ERowVec>(in.g.data(), COLS),
          eb = Eigen::Map<const ERowVec>(in.b.data(), COLS);
  // the same memory seen column-major (1024 x 4096): one column per row of X, colwise broadcast
  EColArr cX = Eigen::Map<const EColArr>(in.X.data(), COLS, ROWS), co(COLS, ROWS);
  EArr cm = eigen_from(in.m), cs = eigen_from(in.s), cg = eigen_from(in.g), cb = eigen_from(in.b);
  s.add("Eigen RowMajor rowwise()", [&] {
    eo = (((eX.rowwise() - em_).rowwise() * es).rowwise() * eg).rowwise() + eb;
    bench::keep(eo.data());
  });
  s.add("Eigen RowMajor loop of row()", [&] {
    for (Eigen::Index r = 0; r < ROWS; ++r) eo2.row(r) = (eX2.row(r) - em_) * es * eg + eb;
    bench::keep(eo2.data());
  });
  s.add("Eigen ColMajor colwise()", [&] {
    co = (((cX.colwise() - cm).colwise() * cs).colwise() * cg).colwise() + cb;
    bench::keep(co.data());
  });
  eigen_names = {"Eigen RowMajor rowwise()", "Eigen RowMajor loop of row()",
                 "Eigen ColMajor colwise()"};
#endif
#if EMBER_BENCH_HAVE_XTENSOR
  auto xX = xt_from<2>(in.X, {std::size_t(ROWS), std::size_t(COLS)});
  auto xm = xt_from<1>(in.m, {std::size_t(COLS)}), xs = xt_from<1>(in.s, {std::size_t(COLS)}),
       xg = xt_from<1>(in.g, {std::size_t(COLS)}), xb = xt_from<1>(in.b, {std::size_t(COLS)});
  auto xo = xt::xtensor<float, 2>::from_shape({std::size_t(ROWS), std::size_t(COLS)});
  s.add("xtensor noalias(out) = expr", [&] {
    xt::noalias(xo) = (xX - xm) * xs * xg + xb;
    bench::keep(xo.data());
  });
#endif
#if EMBER_BENCH_HAVE_TORCH
  auto tX = torch_from(in.X, {ROWS, COLS}), tm = torch_from(in.m, {COLS}),
       ts = torch_from(in.s, {COLS}), tg = torch_from(in.g, {COLS}), tb = torch_from(in.b, {COLS});
  auto to = torch::empty({ROWS, COLS}), tX2 = tX.clone();
  s.add("torch natural: auto out = expr", [&] {
    auto o = (tX - tm) * ts * tg + tb;
    bench::keep(o.data_ptr<float>());
  });
  s.add("torch out=: sub_out, mul_, mul_, add_", [&] {
    at::sub_out(to, tX2, tm);
    to.mul_(ts).mul_(tg).add_(tb);
    bench::keep(to.data_ptr<float>());
  });
#endif
  s.run();
#if EMBER_BENCH_HAVE_EIGEN
  ok &= check_close("E3 ember vs Eigen rowwise", out.data(), eo.data(), ROWS * COLS);
  ok &= check_close("E3 Eigen row loop vs rowwise", eo2.data(), eo.data(), ROWS * COLS);
  ok &= check_close("E3 Eigen colwise vs rowwise", co.data(), eo.data(), ROWS * COLS);
#endif
#if EMBER_BENCH_HAVE_XTENSOR
  ok &= check_close("E3 xtensor vs ember", xo.data(), out.data(), ROWS * COLS);
#endif
#if EMBER_BENCH_HAVE_TORCH
  ok &= check_close("E3 torch out= vs ember", to.data_ptr<float>(), out.data(), ROWS * COLS);
#endif
  const auto* best = best_of(s, eigen_names);
  s.print(best ? best->name : "");
  verdict(s, "E3", "ember out.copy_(expr)", eigen_names, 1.05);
  return ok;
}

// ---- R1: sum(x * x) ---------------------------------------------------------------------------------
bool run_r1(const inputs& in) {
  bool ok = true;
  auto x = ember_from(in.x, {N}), x2 = ember_from(in.x, {N}), x3 = ember_from(in.x, {N});
  float r_ember = 0, r_square = 0;
  double exact = 0;
  for (float v : in.x) exact += double(v) * double(v);
  bench::suite s("R1 sum(x * x), 16M floats", {.reps = 21, .warmup = 3});
  s.add("ember sum(x * x).item()", [&] {
    r_ember = em::sum(x * x).item();
    bench::keep(r_ember);
  });
  s.add("ember sum(square(x)).item() (diag)", [&] {
    r_square = em::sum(em::square(x3)).item();
    bench::keep(r_square);
  });
#if EMBER_BENCH_HAVE_EIGEN
  float r_eigen = 0, r_sq = 0, r_map = 0;
  EArr ex = eigen_from(in.x), ex2 = eigen_from(in.x);
  EMap mx(x2.data(), N);  // Eigen's loop over ember-allocated memory (its own copy)
  s.add("Eigen (x * x).sum()", [&] {
    r_eigen = (ex * ex).sum();
    bench::keep(r_eigen);
  });
  s.add("Eigen x.matrix().squaredNorm()", [&] {
    r_sq = ex2.matrix().squaredNorm();
    bench::keep(r_sq);
  });
  s.add("Eigen Map over ember buffer (diag)", [&] {
    r_map = (mx * mx).sum();
    bench::keep(r_map);
  });
#endif
#if EMBER_BENCH_HAVE_XTENSOR
  auto xx = xt_from<1>(in.x, {std::size_t(N)});
  float r_xt = 0;
  s.add("xtensor sum(x * x, immediate)()", [&] {
    r_xt = xt::sum(xx * xx, xt::evaluation_strategy::immediate)();
    bench::keep(r_xt);
  });
#endif
#if EMBER_BENCH_HAVE_TORCH
  auto tx = torch_from(in.x, {N}), tx2 = torch_from(in.x, {N}), tmp = torch::empty({N});
  float r_t = 0, r_t2 = 0;
  s.add("torch natural: (x * x).sum()", [&] {
    r_t = (tx * tx).sum().item<float>();
    bench::keep(r_t);
  });
  s.add("torch out=: mul_out(tmp), tmp.sum()", [&] {
    at::mul_out(tmp, tx2, tx2);
    r_t2 = tmp.sum().item<float>();
    bench::keep(r_t2);
  });
#endif
  s.run();
  std::printf("  check R1 exact (double) %.6e: ember %.6e (square %.6e)", exact, double(r_ember),
              double(r_square));
#if EMBER_BENCH_HAVE_EIGEN
  std::printf(", Eigen %.6e, squaredNorm %.6e", double(r_eigen), double(r_sq));
#endif
#if EMBER_BENCH_HAVE_XTENSOR
  std::printf(", xtensor %.6e", double(r_xt));
#endif
#if EMBER_BENCH_HAVE_TORCH
  std::printf(", torch %.6e", double(r_t));
#endif
  std::printf("\n");
  ok &= std::abs(r_ember - exact) / exact < 1e-4;
  s.print("Eigen (x * x).sum()");
  verdict(s, "R1", "ember sum(x * x).item()",
          {"Eigen (x * x).sum()", "Eigen x.matrix().squaredNorm()"}, 1.05);
  return ok;
}

// ---- R2: row softmax ------------------------------------------------------------------------------
bool run_r2(const inputs& in) {
  bool ok = true;
  auto X = ember_from(in.X, {ROWS, COLS});
  em::tensor<float> out;
  bench::suite s("R2 row softmax, X 4096x1024, dim 1", {.reps = 21, .warmup = 3});
  s.add("ember softmax(X, 1)", [&] {
    out = em::softmax(X, 1);
    bench::keep(out.data());
  });
#if EMBER_BENCH_HAVE_EIGEN
  ERowArr eX = Eigen::Map<const ERowArr>(in.X.data(), ROWS, COLS), eo(ROWS, COLS);
  s.add("Eigen row loop: exp(r - max), /= sum (ref)", [&] {
    for (Eigen::Index r = 0; r < ROWS; ++r) {
      const float mx = eX.row(r).maxCoeff();
      eo.row(r) = (eX.row(r) - mx).exp();
      eo.row(r) *= 1.f / eo.row(r).sum();
    }
    bench::keep(eo.data());
  });
#endif
#if EMBER_BENCH_HAVE_TORCH
  auto tX = torch_from(in.X, {ROWS, COLS}), tX2 = tX.clone(), to = torch::empty({ROWS, COLS});
  torch::Tensor tn;
  s.add("torch natural: torch::softmax(X, 1)", [&] {
    tn = torch::softmax(tX, 1);
    bench::keep(tn.data_ptr<float>());
  });
  s.add("torch out=: at::softmax_out(out, X, 1)", [&] {
    at::softmax_out(to, tX2, 1);
    bench::keep(to.data_ptr<float>());
  });
#endif
  s.run();
#if EMBER_BENCH_HAVE_EIGEN
  ok &= check_close("R2 ember vs Eigen", out.data(), eo.data(), ROWS * COLS);
#endif
#if EMBER_BENCH_HAVE_TORCH
  ok &= check_close("R2 ember vs torch", out.data(), to.data_ptr<float>(), ROWS * COLS);
  s.print("torch out=: at::softmax_out(out, X, 1)");
#else
  s.print();
#endif
  verdict(s, "R2", "ember softmax(X, 1)",
          {"torch natural: torch::softmax(X, 1)", "torch out=: at::softmax_out(out, X, 1)"}, 1.0);
  return ok;
}

// ---- R3: column sums (an outer reduction, Note [Outer reduction]) ------------------------------
bool run_r3(const inputs& in) {
  bool ok = true;
  auto X = ember_from(in.X, {ROWS, COLS});
  em::tensor<float> out;
  bench::suite s("R3 column sums sum(X, 0), X 4096x1024", {.reps = 21, .warmup = 3});
  s.add("ember sum(X, 0)", [&] {
    out = em::sum(X, 0);
    bench::keep(out.data());
  });
#if EMBER_BENCH_HAVE_EIGEN
  ERowArr eX = Eigen::Map<const ERowArr>(in.X.data(), ROWS, COLS);
  ERowVec eo(COLS);
  s.add("Eigen RowMajor colwise().sum()", [&] {
    eo = eX.colwise().sum();
    bench::keep(eo.data());
  });
#endif
#if EMBER_BENCH_HAVE_TORCH
  auto tX = torch_from(in.X, {ROWS, COLS}), tX2 = tX.clone(), to = torch::empty({COLS});
  torch::Tensor tn;
  s.add("torch natural: X.sum(0)", [&] {
    tn = tX.sum(0);
    bench::keep(tn.data_ptr<float>());
  });
  s.add("torch out=: at::sum_out(out, X, 0)", [&] {
    at::sum_out(to, tX2, 0);
    bench::keep(to.data_ptr<float>());
  });
#endif
  s.run();
#if EMBER_BENCH_HAVE_EIGEN
  ok &= check_close("R3 ember vs Eigen", out.data(), eo.data(), COLS, 1e-4);
  s.print("Eigen RowMajor colwise().sum()");
  verdict(s, "R3", "ember sum(X, 0)", {"Eigen RowMajor colwise().sum()"}, 1.05);
#else
  s.print();
#endif
  return ok;
}

// ---- threads: E2 and R2 with 2 threads vs 1 -----------------------------------------------------------
void run_threads(const inputs& in) {
  // separate inputs and outputs for the 1- and 2-thread cases (see inputs)
  em::tensor<float> x[2] = {ember_from(in.x, {N}), ember_from(in.x, {N})};
  em::tensor<float> out[2] = {em::empty<float>({N}), em::empty<float>({N})};
  em::tensor<float> X[2] = {ember_from(in.X, {ROWS, COLS}), ember_from(in.X, {ROWS, COLS})};
  em::tensor<float> sm[2];
  auto e2 = [&](int k) {
    const auto& v = x[k];
    out[k].copy_(0.5f * v * (1.f + em::tanh(0.79788456f * (v + 0.044715f * v * v * v))));
    bench::keep(out[k].data());
  };
  auto r2 = [&](int k) {
    sm[k] = em::softmax(X[k], 1);
    bench::keep(sm[k].data());
  };
  // One pool of 2 threads for the whole suite: the 1-thread samples run with the calling thread
  // marked as inside a pool task, which makes parallel_for run the whole range inline (the same
  // code path as set_num_threads(1)) while the worker stays parked. Switching with
  // set_num_threads in the timed body would instead build a new pool, and start a new thread,
  // in every sample; on a loaded 2-core VM the fresh thread often starts on the caller's core.
  em::set_num_threads(2);
  auto serial = [](auto&& body) {
    if constexpr (requires { em::detail::thread_pool::in_task(); }) {
      bool& flag = em::detail::thread_pool::in_task();
      const bool was = flag;
      flag = true;
      body();
      flag = was;
    } else {  // fallback if the pool's internals change: rebuild the pool (slower switch)
      em::set_num_threads(1);
      body();
      em::set_num_threads(2);
    }
  };
  // Beside ember, in the same suites: what two threads give on this machine to code that is not
  // ember's. libtorch's own fused kernels (gelu_out, softmax_out) at 1 and 2 threads, and the
  // memory system's ceiling: memcpy of the same bytes cut in two halves over ember's pool (glibc
  // copies these sizes with streaming stores, as ember's E2 does: Note [Streaming stores]).
  // When those scale no better than ember, the limit is the machine's, not ember's thread pool.
  auto copy_halves = [](float* dst, const float* src, std::int64_t n) {
    em::parallel_for(0, n, n / 2, [&](std::int64_t b, std::int64_t e) {
      std::memcpy(dst + b, src + b, static_cast<std::size_t>(e - b) * sizeof(float));
    });
    bench::keep(dst);
  };
  auto speedup = [](const bench::suite& s, const char* tag, const std::string& one,
                    const std::string& two) {
    const auto* a = find(s, one);
    const auto* b = find(s, two);
    if (!a || !b) return;
    std::printf("  [%s] speed-up of '%s': min %.2fx, median %.2fx\n", tag, two.c_str(),
                a->min() / b->min(), a->median() / b->median());
  };
#if EMBER_BENCH_HAVE_TORCH
  at::Tensor tx[2] = {torch_from(in.x, {N}), torch_from(in.x, {N})};
  at::Tensor tout[2] = {torch::empty({N}), torch::empty({N})};
  at::Tensor tX[2] = {torch_from(in.X, {ROWS, COLS}), torch_from(in.X, {ROWS, COLS})};
  at::Tensor tsm[2] = {torch::empty({ROWS, COLS}), torch::empty({ROWS, COLS})};
  at::set_num_threads(2);
  std::printf("  libtorch after at::set_num_threads(2): %d threads (%s)\n", at::get_num_threads(),
              at::get_parallel_info().c_str());
  at::set_num_threads(1);
#endif
  {
    bench::suite s("T E2 tanh-GELU, 16M floats: ember 2 threads vs 1", {.reps = 15, .warmup = 2});
    s.add("ember E2, 1 thread", [&] { serial([&] { e2(0); }); });
    s.add("ember E2, 2 threads", [&] { e2(1); });
    s.add("memcpy 64 MiB, 1 thread", [&] { serial([&] { copy_halves(out[0].data(), x[0].data(), N); }); });
    s.add("memcpy 64 MiB, 2 threads", [&] { copy_halves(out[1].data(), x[1].data(), N); });
#if EMBER_BENCH_HAVE_TORCH
    s.add("torch gelu_out(tanh), 1 thread", [&] {
      at::set_num_threads(1);
      at::gelu_out(tout[0], tx[0], "tanh");
      bench::keep(tout[0].data_ptr<float>());
    });
    s.add("torch gelu_out(tanh), 2 threads", [&] {
      at::set_num_threads(2);
      at::gelu_out(tout[1], tx[1], "tanh");
      bench::keep(tout[1].data_ptr<float>());
      at::set_num_threads(1);
    });
#endif
    s.run();
    s.print("ember E2, 1 thread");
    speedup(s, "T-E2 ceiling", "memcpy 64 MiB, 1 thread", "memcpy 64 MiB, 2 threads");
    speedup(s, "T-E2 peer", "torch gelu_out(tanh), 1 thread", "torch gelu_out(tanh), 2 threads");
    verdict(s, "T-E2", "ember E2, 2 threads", {"ember E2, 1 thread"}, 1.7, true);
  }
  {
    bench::suite s("T R2 softmax 4096x1024: ember 2 threads vs 1", {.reps = 21, .warmup = 3});
    s.add("ember R2, 1 thread", [&] { serial([&] { r2(0); }); });
    s.add("ember R2, 2 threads", [&] { r2(1); });
    s.add("memcpy 16 MiB, 1 thread", [&] {
      serial([&] { copy_halves(out[0].data(), X[0].data(), ROWS * COLS); });
    });
    s.add("memcpy 16 MiB, 2 threads", [&] { copy_halves(out[1].data(), X[1].data(), ROWS * COLS); });
#if EMBER_BENCH_HAVE_TORCH
    s.add("torch softmax_out, 1 thread", [&] {
      at::set_num_threads(1);
      at::softmax_out(tsm[0], tX[0], 1);
      bench::keep(tsm[0].data_ptr<float>());
    });
    s.add("torch softmax_out, 2 threads", [&] {
      at::set_num_threads(2);
      at::softmax_out(tsm[1], tX[1], 1);
      bench::keep(tsm[1].data_ptr<float>());
      at::set_num_threads(1);
    });
#endif
    s.run();
    s.print("ember R2, 1 thread");
    speedup(s, "T-R2 ceiling", "memcpy 16 MiB, 1 thread", "memcpy 16 MiB, 2 threads");
    speedup(s, "T-R2 peer", "torch softmax_out, 1 thread", "torch softmax_out, 2 threads");
    verdict(s, "T-R2", "ember R2, 2 threads", {"ember R2, 1 thread"}, 1.7, true);
  }
  em::set_num_threads(1);
}

}  // namespace

int main(int argc, char** argv) {
  em::set_num_threads(1);
#if EMBER_BENCH_HAVE_TORCH
  // libtorch ships AVX2 and AVX-512 kernels but picks AVX2 by default; on an AVX-512 machine let
  // it use the instruction set ember, Eigen and xtensor use here (-march=native). An explicit
  // ATEN_CPU_CAPABILITY in the environment wins (e.g. =avx2 for libtorch's default).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    setenv("ATEN_CPU_CAPABILITY", "avx512", 0);
  at::set_num_threads(1);
#endif
  std::printf("Expression engine benchmarks (float32; single thread unless stated)\n");
#if EMBER_HAS_XSIMD
  std::printf("  ember: xsimd %d.%d.%d, arch %s, %zu floats per packet\n", XSIMD_VERSION_MAJOR,
              XSIMD_VERSION_MINOR, XSIMD_VERSION_PATCH, xsimd::default_arch::name(),
              em::simd::width<float>);
#else
  std::printf("  ember: no xsimd (scalar fallback)\n");
#endif
#if EMBER_BENCH_HAVE_EIGEN
  std::printf("  Eigen %d.%d.%d: SIMD %s, packet of %d floats\n", EIGEN_WORLD_VERSION,
              EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, Eigen::SimdInstructionSetsInUse(),
              int(Eigen::internal::packet_traits<float>::size));
#else
  std::printf("  Eigen: not built in\n");
#endif
#if EMBER_BENCH_HAVE_XTENSOR
  std::printf("  xtensor %d.%d.%d, XTENSOR_USE_XSIMD (arch %s)\n", XTENSOR_VERSION_MAJOR,
              XTENSOR_VERSION_MINOR, XTENSOR_VERSION_PATCH, xsimd::default_arch::name());
#else
  std::printf("  xtensor: not built in\n");
#endif
#if EMBER_BENCH_HAVE_TORCH
  {
    std::string cap = "?";
    const std::string cfg = at::show_config();
    if (auto p = cfg.find("CPU capability usage:"); p != std::string::npos)
      cap = cfg.substr(p + 22, cfg.find('\n', p) - p - 22);
    std::printf("  libtorch %s, %d thread(s), CPU capability %s\n", TORCH_VERSION,
                at::get_num_threads(), cap.c_str());
  }
#else
  std::printf("  libtorch: not built in\n");
#endif
  std::printf("  ember threads %d; transparent_hugepage=%s\n", em::get_num_threads(),
              read_first_line("/sys/kernel/mm/transparent_hugepage/enabled").c_str());
  std::fflush(stdout);

  const inputs in;
  bool ok = true;
  if (wanted(argc, argv, "E1")) ok &= run_e1(in, false);
  if (wanted(argc, argv, "E2")) ok &= run_e2(in);
  if (wanted(argc, argv, "E3")) ok &= run_e3(in);
  if (wanted(argc, argv, "R1")) ok &= run_r1(in);
  if (wanted(argc, argv, "R3")) ok &= run_r3(in);
  if (wanted(argc, argv, "R2")) ok &= run_r2(in);
  if (wanted(argc, argv, "A1")) ok &= run_e1(in, true);
  if (wanted(argc, argv, "T")) run_threads(in);
  if (!ok) {
    std::fprintf(stderr, "a sanity check failed: competitors disagree (see 'check' lines)\n");
    return 1;
  }
  return 0;
}
