// Tests of the CUDA backend (cuda/, linked as libember_cuda) on a real GPU. Without one, every
// case but the first returns at once with a message, and the first checks that using a GPU
// is a clear error. Expected values come from the CPU path (itself checked against PyTorch by
// the other suites) and, in oracle/forward.cpp built into this executable, from PyTorch's
// oracle directly.
#include <ember/cuda.hpp>
#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace em = ember;

namespace {

bool have_gpu() {
  static const bool ok = [] {
    const int n = em::cuda_backend::linked();
    std::printf("ember CUDA backend: %d GPU(s) visible\n", n);
    return em::cuda::is_available();
  }();
  return ok;
}

#define EMBER_REQUIRE_GPU()                                   \
  do {                                                        \
    if (!have_gpu()) {                                        \
      WARN("no CUDA device: this CUDA test is skipped");      \
      return;                                                 \
    }                                                         \
  } while (0)

template <class T>
em::tensor<T> random_tensor(em::shape s, std::uint32_t seed, double lo = -3, double hi = 3) {
  em::tensor<T> t = em::zeros<T>(s);
  std::mt19937 g(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  T* p = t.data();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(u(g));
  return t;
}

// |got - want| <= tol * (1 + |want|) everywhere (NaN matches NaN); got may be on the GPU
template <class T>
bool close(const em::tensor<T>& got_any, const em::tensor<T>& want_in, double tol) {
  REQUIRE(got_any.shape() == want_in.shape());
  const em::tensor<T> got = got_any.to(em::cpu).contiguous(), want = want_in.contiguous();
  for (std::int64_t i = 0; i < want.numel(); ++i) {
    const double g = static_cast<double>(got.data()[i]), w = static_cast<double>(want.data()[i]);
    if (std::isnan(g) && std::isnan(w)) continue;
    if (g == w) continue;
    if (!(std::abs(g - w) <= tol * (1 + std::abs(w)))) {
      UNSCOPED_INFO("element " << i << ": got " << g << ", want " << w);
      return false;
    }
  }
  return true;
}

const em::device gpu = em::device::cuda(0);

/// Sets the JIT mode for a scope, restoring the previous one.
struct mode_scope {
  em::cuda::jit_mode old = em::cuda::get_jit_mode();
  explicit mode_scope(em::cuda::jit_mode m) { em::cuda::set_jit_mode(m); }
  ~mode_scope() { em::cuda::set_jit_mode(old); }
  mode_scope(const mode_scope&) = delete;
  mode_scope& operator=(const mode_scope&) = delete;
};

}  // namespace

TEST_CASE("cuda: without a GPU, using one is a clear error", "[cuda]") {
  if (have_gpu()) {
    CHECK(em::cuda::device_count() >= 1);
    return;
  }
  CHECK(em::cuda::device_count() == 0);
  const auto a = em::ones<float>({2});
  CHECK_THROWS_WITH(a.to(gpu), Catch::Contains("cuda:0") && Catch::Contains("not available"));
  CHECK_THROWS_WITH(em::cuda::synchronize(), Catch::Contains("no GPU"));
}

TEST_CASE("cuda: memory, copies and memory_stats", "[cuda]") {
  EMBER_REQUIRE_GPU();
  const auto before = em::memory_stats(gpu);
  // small (plain cudaMemcpy) and large (pinned staging, several chunks, an odd tail) copies
  for (std::int64_t n : {std::int64_t{1}, std::int64_t{1000}, std::int64_t{3} << 20}) {
    const auto a = random_tensor<float>({n + 3}, 1);
    const auto g = a.to(gpu);
    CHECK(g.device() == gpu);
    CHECK(close(g, a, 0));
    CHECK(close(g.clone(), a, 0));  // device to device
  }
  {
    const auto big = em::zeros<double>({1 << 20}).to(gpu);
    CHECK(em::memory_stats(gpu).in_use >= before.in_use + (8u << 20));
  }
  CHECK(em::memory_stats(gpu).in_use == before.in_use);
  CHECK(em::memory_stats(gpu).cached > 0);
  em::empty_cache(gpu);
  CHECK(em::memory_stats(gpu).cached == 0);
  // fill_, copy_ with conversion and broadcast, item, to<U>
  em::tensor<float> z = em::zeros<float>({3, 4}).to(gpu);
  z.fill_(2.5f);
  CHECK(z.sum().item() == 30.f);
  const auto row = random_tensor<double>({4}, 2);
  z.copy_(row.to(gpu));
  CHECK(close(z, em::tensor<float>(row.to<float>().expand({3, 4})), 0));
  CHECK(close(z.to<double>().to<float>(), z.to(em::cpu), 0));
  em::cuda::synchronize();
}

TEST_CASE("cuda: fused elementwise expressions match the CPU", "[cuda]") {
  EMBER_REQUIRE_GPU();
  // both ways a program runs: the interpreter and the kernel compiled for it (Note [Kernel JIT])
  const auto mode = GENERATE(em::cuda::jit_mode::never, em::cuda::jit_mode::always);
  INFO("jit mode " << (mode == em::cuda::jit_mode::never ? "never" : "always"));
  const mode_scope scoped(mode);
  const auto a = random_tensor<float>({37, 129}, 3);
  const auto b = random_tensor<float>({129}, 4);
  const auto p = random_tensor<float>({37, 129}, 5, 0.01, 4);
  const auto ag = a.to(gpu), bg = b.to(gpu), pg = p.to(gpu);
  const double tol = 1e-5;  // CUDA's math library against xsimd's: a few ulp
  CHECK(close(em::tensor<float>(em::exp(ag) * bg - 1.f), em::tensor<float>(em::exp(a) * b - 1.f), tol));
  CHECK(close(em::tensor<float>(em::tanh(ag) + em::sigmoid(bg) * em::gelu(ag)),
              em::tensor<float>(em::tanh(a) + em::sigmoid(b) * em::gelu(a)), tol));
  CHECK(close(em::tensor<float>(em::log(pg) + em::sqrt(pg) - em::rsqrt(pg)),
              em::tensor<float>(em::log(p) + em::sqrt(p) - em::rsqrt(p)), tol));
  CHECK(close(em::tensor<float>(em::where(ag > bg, ag, em::clamp(bg, -1.f, 1.f))),
              em::tensor<float>(em::where(a > b, a, em::clamp(b, -1.f, 1.f))), 0));
  CHECK(close(em::tensor<float>(em::pow(pg, bg) + em::softplus(ag) + em::silu(ag)),
              em::tensor<float>(em::pow(p, b) + em::softplus(a) + em::silu(a)), tol));
  CHECK(close(em::tensor<float>(em::round(ag * 2.f) + em::floor(ag) + em::sign(ag)),
              em::tensor<float>(em::round(a * 2.f) + em::floor(a) + em::sign(a)), 0));
  // views, in-place, bool and integer results
  CHECK(close(em::tensor<float>(ag.t() * 2.f), em::tensor<float>(a.t() * 2.f), 0));
  em::tensor<float> c = ag.clone();
  c.slice(1, 0, 129, 3) += 1.f;
  em::tensor<float> cc = a.clone();
  cc.slice(1, 0, 129, 3) += 1.f;
  CHECK(close(c, cc, 0));
  const em::tensor<bool> m = ag > 0.f;
  CHECK(m.device() == gpu);
  CHECK(close(m, em::tensor<bool>(a > 0.f), 0));
  const em::tensor<std::int64_t> i = em::cast<std::int64_t>(ag * 10.f);
  CHECK(close(i, em::tensor<std::int64_t>(em::cast<std::int64_t>(a * 10.f)), 0));
  // large: the grid-stride loop
  const auto big = random_tensor<float>({5'000'000}, 6);
  const auto bigg = big.to(gpu);
  CHECK(close(em::tensor<float>(bigg * bigg + 1.f), em::tensor<float>(big * big + 1.f), 0));
  // mixing devices
  CHECK_THROWS_WITH(em::tensor<float>(ag + a), Catch::Contains("cuda:0") && Catch::Contains("cpu"));
}

namespace {

namespace dp = em::dispatch;

/// A program over n_leaves leaves of dtype leaf_dt (flat, or strided of shape {2, 3, 4}) whose
/// code the caller appends; pointers are placeholders (for compiling, not running).
dp::elementwise_program bare_program(dp::compute c, std::uint8_t leaf_dt, std::uint8_t out_dt,
                                     int n_leaves, bool flat) {
  dp::elementwise_program p;
  p.ctype = c;
  p.out_dtype = out_dt;
  p.flat = flat;
  p.n_leaves = n_leaves;
  p.rank = flat ? 1 : 3;
  const std::int64_t shape[] = {2, 3, 4};
  p.numel = 24;
  for (int d = 0; d < p.rank; ++d) p.shape[d] = flat ? 24 : shape[d];
  for (int k = 0; k < n_leaves; ++k) {
    p.leaves[k].dtype = leaf_dt;
    p.leaves[k].data = &p;
  }
  p.out = &p;
  return p;
}

void push_leaf(dp::elementwise_program& p, int k) {
  dp::instr in{};
  in.op = dp::opc::leaf;
  in.leaf = static_cast<std::uint8_t>(k);
  p.code[p.n_code++] = in;
}
void push_scalar(dp::elementwise_program& p, double v) {
  dp::instr in{};
  in.op = dp::opc::scalar;
  in.value = v;
  p.code[p.n_code++] = in;
}
void push_op(dp::elementwise_program& p, std::uint16_t o, std::uint8_t dt = 0) {
  dp::instr in{};
  in.op = o;
  in.dtype = dt;
  p.code[p.n_code++] = in;
}

#define EMBER_TEST_OPC(name) dp::opc::name,
const std::uint16_t all_unary[] = {EMBER_DISPATCH_UNARY(EMBER_TEST_OPC)};
const std::uint16_t all_binary[] = {EMBER_DISPATCH_BINARY(EMBER_TEST_OPC)
                                        EMBER_DISPATCH_BINARY_STACK(EMBER_TEST_OPC)};
#undef EMBER_TEST_OPC
const std::uint8_t all_dtypes[] = {dp::code::f32, dp::code::f64, dp::code::i32, dp::code::i64,
                                   dp::code::u8, dp::code::boolean, dp::code::i8, dp::code::i16};

/// Programs that together hold every op (every binary op in every operand form once
/// finished), where, clamp, casts to every dtype, loads of every dtype and stores to every
/// dtype, flat and strided, in every compute type.
std::vector<dp::elementwise_program> programs_of_every_op() {
  std::vector<dp::elementwise_program> all;
  const std::pair<dp::compute, std::uint8_t> types[] = {
      {dp::compute::f32, dp::code::f32}, {dp::compute::f64, dp::code::f64}, {dp::compute::i64, dp::code::i64}};
  for (const auto& [c, dt] : types) {
    auto u = bare_program(c, dt, dt, 1, true);
    push_leaf(u, 0);
    for (std::uint16_t o : all_unary) push_op(u, o);
    all.push_back(u);
    for (std::size_t first = 0; first < std::size(all_binary); first += 5) {
      auto b = bare_program(c, dt, dt, 2, first % 2 == 0);
      push_leaf(b, 0);
      for (std::size_t i = first; i < std::min(first + 5, std::size(all_binary)); ++i) {
        const std::uint16_t o = all_binary[i];
        push_leaf(b, 1), push_op(b, o);                                        // rhs leaf
        push_scalar(b, 0.5), push_op(b, o);                                    // rhs scalar
        push_scalar(b, 2), push_leaf(b, 1), push_op(b, o), push_op(b, dp::opc::add);  // lhs scalar
        push_leaf(b, 0), push_op(b, dp::opc::neg), push_op(b, o);              // both on the stack
      }
      all.push_back(b);
    }
    auto m = bare_program(c, dt, dt, 2, false);
    push_leaf(m, 0), push_leaf(m, 1), push_leaf(m, 0), push_op(m, dp::opc::where);
    push_leaf(m, 1), push_scalar(m, -1), push_scalar(m, 1), push_op(m, dp::opc::clamp);
    push_op(m, dp::opc::add);
    for (std::uint8_t to : all_dtypes) push_op(m, dp::opc::cast, to);
    all.push_back(m);
  }
  for (std::uint8_t out : all_dtypes) {  // leaves of every dtype, stored as `out`
    auto d = bare_program(dp::compute::f64, dp::code::f32, out, 8, out % 2 == 0);
    for (int k = 0; k < 8; ++k) {
      d.leaves[k].dtype = all_dtypes[k];
      push_leaf(d, k);
      if (k > 0) push_op(d, dp::opc::sub);
    }
    all.push_back(d);
  }
  return all;
}

}  // namespace

TEST_CASE("cuda jit: the source of every op compiles with NVRTC (no GPU needed)", "[cuda]") {
  // Note [Kernel JIT]: compiled to PTX for sm_90, which needs NVRTC but no GPU
  for (const dp::elementwise_program& p : programs_of_every_op()) {
    const std::string src = em::cuda::jit_source(p);
    INFO(src.substr(src.find("extern \"C\"")));
    std::string ptx;
    REQUIRE_NOTHROW(ptx = em::cuda::jit_ptx(p, 90));
    CHECK(ptx.find(".entry ember_fused") != std::string::npos);
  }
  CHECK(!em::cuda::jit_statistics().nvrtc.empty());
  // the source holds no value that changes between launches: one kernel serves every
  // learning rate (the constants are parameters)
  auto p = bare_program(dp::compute::f32, dp::code::f32, dp::code::f32, 1, true);
  push_leaf(p, 0), push_scalar(p, 0.125), push_op(p, dp::opc::mul);
  auto q = p;
  q.code[1].value = 0.25;
  q.leaves[0].data = &q;
  q.numel = 1000;
  CHECK(em::cuda::jit_source(p) == em::cuda::jit_source(q));
  // a program that cannot be written as a kernel is an error naming what is wrong
  auto bad = p;
  bad.leaves[0].dtype = 7;  // no such dtype: an error before NVRTC
  CHECK_THROWS_WITH(em::cuda::jit_source(bad), Catch::Contains("dtype code 7"));
}

TEST_CASE("cuda jit: compiled kernels give the interpreter's bits", "[cuda]") {
  EMBER_REQUIRE_GPU();
  // Random postfix programs (every op form once finished, depth up to 10, 5 leaves; flat and
  // strided through a transposed leaf) run by the interpreter and by their compiled kernels:
  // every op rounds the same way in both (Note [No contraction]), so the bits agree.
  constexpr std::int64_t rows = 61, cols = 67;
  std::vector<em::tensor<float>> leaves;
  for (int k = 0; k < 5; ++k) leaves.push_back(random_tensor<float>({rows, cols}, 100 + k, -2, 2).to(gpu));
  const em::tensor<float> wide = random_tensor<float>({cols, rows}, 99, -2, 2).to(gpu);
  em::tensor<float> a = em::zeros<float>({rows, cols}).to(gpu), b = em::zeros<float>({rows, cols}).to(gpu);
  std::mt19937 g(11);
  std::uniform_real_distribution<float> u(-2, 2);
  const std::uint16_t bins[] = {dp::opc::add, dp::opc::sub, dp::opc::mul, dp::opc::div, dp::opc::maximum,
                                dp::opc::lt, dp::opc::pow, dp::opc::leaky_relu, dp::opc::elu};
  const std::uint16_t uns[] = {dp::opc::neg, dp::opc::exp, dp::opc::tanh, dp::opc::relu,
                               dp::opc::gelu, dp::opc::sigmoid, dp::opc::softplus, dp::opc::log1p};
  const auto before = em::cuda::jit_statistics();
  int tested = 0, differ = 0;
  std::string first_difference;
  auto& fused = dp::kernel<em::op::fused>(gpu, em::dtype::f32, "jit test");
  for (int trial = 0; trial < 40; ++trial) {
    const bool flat = trial % 2 == 0;
    auto p = bare_program(dp::compute::f32, dp::code::f32, dp::code::f32, 5, flat);
    p.rank = 2;
    p.numel = rows * cols;
    p.shape[0] = rows, p.shape[1] = cols;
    p.out_stride[0] = cols, p.out_stride[1] = 1;
    if (flat) p.rank = 1, p.shape[0] = rows * cols, p.out_stride[0] = 1;
    for (int k = 0; k < 5; ++k) {
      p.leaves[k].data = leaves[static_cast<std::size_t>(k)].data();
      p.leaves[k].stride[0] = flat ? 1 : cols;
      p.leaves[k].stride[1] = 1;
    }
    if (!flat) {  // leaf 4: the transpose of a cols x rows tensor
      p.leaves[4].data = wide.data();
      p.leaves[4].stride[0] = 1, p.leaves[4].stride[1] = rows;
    }
    int depth = 0;
    const int len = 1 + static_cast<int>(g() % 24);
    for (int i = 0; p.n_code < dp::max_code - 4; ++i) {
      if (i >= len && depth == 1) break;
      const unsigned r = g() % 10;
      if ((depth < 2 || r < 4) && depth < 10 && i < len) {
        if (g() % 2) push_leaf(p, static_cast<int>(g() % 5));
        else push_scalar(p, u(g));
        ++depth;
      } else if (r == 9 && depth >= 3) {
        push_op(p, g() % 2 ? dp::opc::where : dp::opc::clamp);
        depth -= 2;
      } else if (depth >= 2 && r >= 6) {
        push_op(p, bins[g() % std::size(bins)]);
        --depth;
      } else {
        push_op(p, uns[g() % std::size(uns)]);
      }
    }
    if (depth != 1) continue;
    ++tested;
    {
      const mode_scope m(em::cuda::jit_mode::never);
      p.out = a.data();
      fused(p, gpu);
    }
    {
      const mode_scope m(em::cuda::jit_mode::always);
      p.out = b.data();
      fused(p, gpu);
    }
    const em::tensor<float> x = a.to(em::cpu), y = b.to(em::cpu);
    if (std::memcmp(x.data(), y.data(), sizeof(float) * rows * cols) != 0) {
      std::int64_t first = 0;
      while (x.data()[first] == y.data()[first] ||
             (std::isnan(x.data()[first]) && std::isnan(y.data()[first])))
        ++first;
      if (first < rows * cols && differ++ == 0) {
        std::ostringstream m;
        m.precision(9);
        m << "trial " << trial << " (" << (flat ? "flat" : "strided") << "), element " << first
          << ": interpreted " << x.data()[first] << ", compiled " << y.data()[first] << "\n"
          << em::cuda::jit_source(p).substr(em::cuda::jit_source(p).find("extern \"C\""));
        first_difference = m.str();
      }
    }
  }
  const auto after = em::cuda::jit_statistics();
  std::printf("jit: %d random programs, %lld compiled, %lld from the disk cache (%s), %lld failed\n",
              tested, static_cast<long long>(after.compiled - before.compiled),
              static_cast<long long>(after.disk_hits - before.disk_hits), after.cache_dir.c_str(),
              static_cast<long long>(after.failures - before.failures));
  CHECK(tested >= 25);
  {
    INFO(first_difference);
    CHECK(differ == 0);
  }
  INFO(after.last_error);
  CHECK(after.failures == before.failures);
  CHECK(after.launches - before.launches >= tested);
  CHECK(after.compiled + after.disk_hits - before.compiled - before.disk_hits >= tested / 2);
}

TEST_CASE("cuda: indexing matches the CPU", "[cuda]") {
  EMBER_REQUIRE_GPU();
  // Note [Device indexing]: the index kernels, with atomics for the accumulating ones
  std::mt19937 g(81);
  const auto ints = [&g](em::shape s, std::int64_t hi) {
    std::vector<std::int64_t> v(static_cast<std::size_t>(s.numel()));
    for (auto& e : v) e = static_cast<std::int64_t>(g() % static_cast<std::uint32_t>(hi));
    return em::from_vector<std::int64_t>(v, s);
  };
  const auto x = random_tensor<float>({300, 70, 3}, 80);
  const auto xg = x.to(gpu);
  const auto rows = ints({1000}, 300);
  CHECK(close(em::index_select(xg, 0, rows.to(gpu)), em::index_select(x, 0, rows), 0));
  CHECK(close(em::index_select(xg.transpose(0, 1), 1, rows.to(gpu)),
              em::index_select(x.transpose(0, 1), 1, rows), 0));
  const auto rows32 = rows.to<std::int32_t>();
  CHECK(close(em::index_select(xg, 0, rows32.to(gpu)), em::index_select(x, 0, rows32), 0));
  const auto gi = ints({300, 50, 3}, 70);
  CHECK(close(em::gather(xg, 1, gi.to(gpu)), em::gather(x, 1, gi), 0));
  // accumulating kernels: float atomics in any order, against the float64 sums
  const auto src = random_tensor<float>({300, 50, 3}, 82);
  const auto want = em::scatter_add(x.to<double>(), 1, gi, src.to<double>()).to<float>();
  CHECK(close(em::scatter_add(xg, 1, gi.to(gpu), src.to(gpu)), want, 1e-6));
  const auto d = random_tensor<double>({1000, 3}, 83);
  CHECK(close(em::index_add(em::zeros<double>({300, 3}).to(gpu), 0, rows.to(gpu), d.to(gpu), 0.5),
              em::index_add(em::zeros<double>({300, 3}), 0, rows, d, 0.5), 1e-12));
  const auto li = ints({1000}, 1 << 30);
  CHECK(close(em::index_add(em::zeros<std::int64_t>({300}).to(gpu), 0, rows.to(gpu), li.to(gpu)),
              em::index_add(em::zeros<std::int64_t>({300}), 0, rows, li), 0));
  // a permutation scatter (distinct indices) of int64 data
  std::vector<std::int64_t> pv(300);
  for (std::size_t i = 0; i < pv.size(); ++i) pv[i] = static_cast<std::int64_t>((i * 7) % 300);
  const auto perm = em::from_vector<std::int64_t>(pv, {300});
  const auto vals = ints({300}, 1000);
  CHECK(close(em::scatter(em::zeros<std::int64_t>({300}).to(gpu), 0, perm.to(gpu), vals.to(gpu)),
              em::scatter(em::zeros<std::int64_t>({300}), 0, perm, vals), 0));
  // embedding forward and backward (padding row), masked ops, one_hot
  namespace F = em::nn::functional;
  const auto table = random_tensor<float>({500, 64}, 84);
  const auto ids = ints({32, 20}, 500);
  CHECK(close(em::embedding(ids.to(gpu), table.to(gpu)), em::embedding(ids, table), 0));
  auto wg = table.to(gpu).requires_grad_();
  auto wc = table.clone().requires_grad_();
  em::sum(F::embedding(ids.to(gpu), wg, {.padding_idx = 7}) * 3.f).backward();
  em::sum(F::embedding(ids, wc, {.padding_idx = 7}) * 3.f).backward();
  CHECK(close(wg.grad(), wc.grad(), 1e-6));
  const auto m = em::tensor<bool>(x > 1.f);
  CHECK(close(em::masked_fill(xg, m.to(gpu), -5.f), em::masked_fill(x, m, -5.f), 0));
  CHECK(close(em::masked_select(xg, m.to(gpu)), em::masked_select(x, m), 0));
  CHECK(close(em::one_hot(ids.to(gpu), 500), em::one_hot(ids, 500), 0));
  // f64 gradcheck through the device's gather and index_add
  auto a = random_tensor<double>({6, 5}, 85).requires_grad_();
  auto b = random_tensor<double>({6, 3}, 86).requires_grad_();
  const auto gi2 = ints({6, 3}, 5), si = em::from_vector<std::int64_t>({4, 0, 4}, {3});
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    return em::tensor<double>(em::gather(in[0].to(gpu), 1, gi2.to(gpu)) * in[1].to(gpu) +
                              em::index_select(em::index_add(in[0].to(gpu), 1, si.to(gpu), in[1].to(gpu)), 1, si.to(gpu))).to(em::cpu);
  }, {a, b}));
  // bad indices: errors before any write
  const auto before = xg.to(em::cpu);
  CHECK_THROWS_WITH(em::index_add_(xg, 0, em::from_vector<std::int64_t>({0, 300}, {2}).to(gpu),
                                   random_tensor<float>({2, 70, 3}, 87).to(gpu)),
                    Catch::Contains("index 300 is out of range for dimension 0 of size 300"));
  CHECK(close(xg, before, 0));
}

TEST_CASE("cuda: scaled_dot_product_attention matches the CPU", "[cuda]") {
  EMBER_REQUIRE_GPU();
  namespace F = em::nn::functional;
  const auto q = random_tensor<float>({4, 8, 64, 32}, 110), k = random_tensor<float>({4, 8, 80, 32}, 111),
             v = random_tensor<float>({4, 8, 80, 16}, 112);
  const auto qg = q.to(gpu), kg = k.to(gpu), vg = v.to(gpu);
  CHECK(close(F::scaled_dot_product_attention(qg, kg, vg), F::scaled_dot_product_attention(q, k, v), 1e-5));
  CHECK(close(F::scaled_dot_product_attention(qg, kg, vg, {.is_causal = true}),
              F::scaled_dot_product_attention(q, k, v, {.is_causal = true}), 1e-5));
  em::manual_seed(9);
  const auto dc = F::scaled_dot_product_attention(q, k, v, {.dropout_p = 0.2});
  em::manual_seed(9);
  CHECK(close(F::scaled_dot_product_attention(qg, kg, vg, {.dropout_p = 0.2}), dc, 1e-5));
  auto qd = random_tensor<double>({2, 3, 2}, 113).requires_grad_();
  auto kd = random_tensor<double>({2, 4, 2}, 114).requires_grad_();
  auto vd = random_tensor<double>({4, 3}, 115).requires_grad_();
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    return F::scaled_dot_product_attention(in[0].to(gpu), in[1].to(gpu), in[2].to(gpu),
                                           {.is_causal = true}).to(em::cpu);
  }, {qd, kd, vd}));
}

TEST_CASE("cuda: reductions match the CPU", "[cuda]") {
  EMBER_REQUIRE_GPU();
  // one thread per output (count < 32), one block per output, and two passes (few outputs)
  for (em::shape s : {em::shape{1000, 7}, em::shape{300, 2000}, em::shape{3, 4'000'000}}) {
    const auto a = random_tensor<float>(s, 7);
    const auto ag = a.to(gpu);
    INFO("shape " << s);
    // The GPU accumulates float sums in double, so its sums are the exact sums rounded once to
    // float: it is checked against the float64 sum, not against the CPU's float accumulation
    // (whose own error, ~n * 2^-24 * sum|x|, exceeds 1e-5 at n = 2000).
    const auto a64 = a.to<double>();
    CHECK(close(em::sum(ag, 1), em::sum(a64, 1).to<float>(), 1e-6));
    CHECK(close(em::sum(ag, 0), em::sum(a64, 0).to<float>(), 1e-6));
    CHECK(close(em::amax(ag, 1), em::amax(a, 1), 0));
    CHECK(close(em::amin(ag, 0, true), em::amin(a, 0, true), 0));
    CHECK(close(em::argmax(ag, 1), em::argmax(a, 1), 0));
    CHECK(close(em::argmin(ag, 0), em::argmin(a, 0), 0));
    CHECK(close(em::mean(ag), em::mean(a64).to<float>(), 1e-6));
  }
  const auto big = random_tensor<double>({1 << 24}, 8);
  CHECK(close(em::sum(big.to(gpu)), em::sum(big), 1e-12));
  CHECK(close(em::argmax(big.to(gpu)), em::argmax(big), 0));
  // NaN wins argmax and amax, first index of equal maxima
  const auto n = em::from_vector<float>({1.f, 5.f, 5.f, std::nanf(""), 2.f}, {5});
  CHECK(em::argmax(n.to(gpu)).item() == 3);
  CHECK(std::isnan(em::amax(n.to(gpu)).item()));
  CHECK(em::argmax(n.slice(0, 0, 3).to(gpu)).item() == 1);
  CHECK(close(em::var(random_tensor<double>({50, 60}, 9).to(gpu), 1),
              em::var(random_tensor<double>({50, 60}, 9), 1), 1e-12));
  CHECK(close(em::softmax(random_tensor<float>({64, 10}, 10).to(gpu), 1),
              em::softmax(random_tensor<float>({64, 10}, 10), 1), 1e-6));
}

TEST_CASE("cuda: matrix products match the CPU", "[cuda]") {
  EMBER_REQUIRE_GPU();
  const auto a = random_tensor<float>({257, 129}, 11), b = random_tensor<float>({129, 65}, 12);
  const auto ag = a.to(gpu), bg = b.to(gpu);
  // float products in any summation order (cuBLAS's differs from the CPU's) are within
  // k * 2^-24 * (|A| |B|)_ij of the exact product (the standard bound): checked against the
  // float64 product with that bound, element by element
  const auto exact = em::matmul(a.to<double>(), b.to<double>());
  const auto abs_a = em::tensor<float>(em::abs(a)).to<double>();
  const auto abs_b = em::tensor<float>(em::abs(b)).to<double>();
  const auto bound = em::tensor<double>(em::matmul(abs_a, abs_b) * (129.0 * std::ldexp(1.0, -24)));
  const auto within = [&](const em::tensor<float>& got_any) {
    const em::tensor<double> got = got_any.to(em::cpu).to<double>().contiguous();
    const em::tensor<double> e = exact.contiguous(), b = bound.contiguous();
    for (std::int64_t i = 0; i < e.numel(); ++i)
      if (!(std::abs(got.data()[i] - e.data()[i]) <= b.data()[i])) {
        UNSCOPED_INFO("element " << i << ": got " << got.data()[i] << ", exact " << e.data()[i]
                                 << ", bound " << b.data()[i]);
        return false;
      }
    return true;
  };
  CHECK(within(em::matmul(ag, bg)));
  CHECK(within(em::matmul(bg.t(), ag.t()).t()));
  const auto x = random_tensor<double>({4, 33, 17}, 13), y = random_tensor<double>({4, 17, 9}, 14);
  CHECK(close(em::bmm(x.to(gpu), y.to(gpu)), em::bmm(x, y), 1e-12));
  const auto y2 = random_tensor<double>({17, 9}, 15);
  CHECK(close(em::matmul(x.to(gpu), y2.to(gpu)), em::matmul(x, y2), 1e-12));
  const auto x4 = random_tensor<double>({2, 3, 5, 4}, 16), y4 = random_tensor<double>({3, 4, 6}, 17);
  CHECK(close(em::matmul(x4.to(gpu), y4.to(gpu)), em::matmul(x4, y4), 1e-12));
  const auto w = random_tensor<float>({10, 129}, 18), bias = random_tensor<float>({10}, 19);
  namespace F = em::nn::functional;
  CHECK(close(F::linear(ag, w.to(gpu), bias.to(gpu)), F::linear(a, w, bias), 1e-5));
  CHECK_THROWS_WITH(em::matmul(ag, b), Catch::Contains("cuda:0") && Catch::Contains("cpu"));
}

TEST_CASE("cuda: float64 gradcheck of elementwise ops, matmul and reductions", "[cuda]") {
  EMBER_REQUIRE_GPU();
  auto x = random_tensor<double>({3, 4}, 20).requires_grad_();
  auto y = random_tensor<double>({4, 2}, 21).requires_grad_();
  auto b = random_tensor<double>({4}, 22).requires_grad_();
  CHECK(em::autograd::gradcheck([](const std::vector<em::tensor<double>>& in) {
    const auto xg = in[0].to(gpu), bg = in[2].to(gpu);
    return em::sum(em::tanh(xg) * bg + em::exp(xg * 0.5) / (1.0 + em::square(bg))).to(em::cpu);
  }, {x, y, b}));
  CHECK(em::autograd::gradcheck([](const std::vector<em::tensor<double>>& in) {
    return em::matmul(em::sigmoid(in[0].to(gpu)), in[1].to(gpu)).to(em::cpu);
  }, {x, y, b}));
  CHECK(em::autograd::gradcheck([](const std::vector<em::tensor<double>>& in) {
    const auto xg = in[0].to(gpu);
    return em::tensor<double>(em::amax(xg, em::shape{1}) + em::mean(xg, em::shape{0}).sum() +
                              em::log_softmax(xg, 1).select(1, 2)).to(em::cpu);
  }, {x, y, b}));
}

TEST_CASE("cuda: conv2d, max_pool2d, batch_norm and dropout match the CPU", "[cuda]") {
  EMBER_REQUIRE_GPU();
  namespace F = em::nn::functional;
  auto x = random_tensor<double>({2, 4, 9, 8}, 30).requires_grad_();
  auto w = random_tensor<double>({6, 2, 3, 3}, 31).requires_grad_();
  auto b = random_tensor<double>({6}, 32).requires_grad_();
  auto xg = x.detach().to(gpu).requires_grad_(), wg = w.detach().to(gpu).requires_grad_(),
       bg = b.detach().to(gpu).requires_grad_();
  const auto y = F::conv2d(x, w, {.bias = b, .stride = {2, 1}, .padding = 1, .groups = 2});
  const auto yg = F::conv2d(xg, wg, {.bias = bg, .stride = {2, 1}, .padding = 1, .groups = 2});
  CHECK(close(yg.detach(), y.detach(), 1e-12));
  const auto gy = random_tensor<double>(y.shape(), 33);
  em::sum(y * gy).backward();
  em::sum(yg * gy.to(gpu)).backward();
  CHECK(close(xg.grad(), x.grad(), 1e-12));
  CHECK(close(wg.grad(), w.grad(), 1e-12));
  CHECK(close(bg.grad(), b.grad(), 1e-12));
  const auto p = random_tensor<float>({2, 3, 7, 7}, 34);
  const auto [v, i] = F::max_pool2d_with_indices(p, {.kernel = 3, .stride = 2, .padding = 1});
  const auto [vg, ig] = F::max_pool2d_with_indices(p.to(gpu), {.kernel = 3, .stride = 2, .padding = 1});
  CHECK(close(vg, v, 0));
  CHECK(close(ig, i, 0));
  auto rm = em::zeros<float>({3}), rv = em::ones<float>({3});
  auto rmg = rm.to(gpu), rvg = rv.to(gpu);
  CHECK(close(F::batch_norm(p.to(gpu), rmg, rvg, {.training = true}), F::batch_norm(p, rm, rv, {.training = true}), 1e-5));
  CHECK(close(rmg, rm, 1e-6));
  CHECK(close(rvg, rv, 1e-6));
  em::manual_seed(9);
  const auto d = F::dropout(p, 0.4);
  em::manual_seed(9);
  CHECK(close(F::dropout(p.to(gpu), 0.4), d, 0));  // the same Philox words on the GPU
}

TEST_CASE("cuda: the digits MLP trains on the GPU as on the CPU", "[cuda]") {
  EMBER_REQUIRE_GPU();
  namespace F = em::nn::functional;
  const auto table = em::data::read_csv<float>(EMBER_EXAMPLES_DATA "/digits.csv.gz");
  const std::int64_t rows = table.size(0);
  const auto images = em::tensor<float>(table.slice(1, 0, 64) / 16.f);
  const auto labels = table.select(1, 64).to<std::int64_t>();
  const auto x_train = images.slice(0, 0, 1500), x_test = images.slice(0, 1500, rows);
  const auto y_train = labels.slice(0, 0, 1500), y_test = labels.slice(0, 1500, rows);
  auto train = [&](em::device dev) {
    em::manual_seed(3);
    em::nn::sequential net(em::nn::linear(64, 64), em::nn::relu(), em::nn::linear(64, 10));
    net.to(dev);
    em::optim::adam opt(net.parameters(), {.lr = 0.01});
    const auto xd = x_train.to(dev);
    const auto yd = y_train.to(dev);
    for (int epoch = 0; epoch < 10; ++epoch)
      for (std::int64_t s = 0; s < 1500; s += 64) {
        const std::int64_t e = std::min<std::int64_t>(s + 64, 1500);
        opt.zero_grad();
        auto loss = F::cross_entropy(net(xd.slice(0, s, e)), yd.slice(0, s, e));
        loss.backward();
        opt.step();
      }
    const auto pred = em::argmax(net(x_test.to(dev)), 1).to(em::cpu);
    std::int64_t right = 0;
    for (std::int64_t i = 0; i < pred.numel(); ++i) right += pred.data()[i] == y_test.contiguous().data()[i];
    return static_cast<double>(right) / static_cast<double>(pred.numel());
  };
  const double cpu_acc = train(em::cpu), gpu_acc = train(gpu);
  std::printf("digits MLP, 10 epochs: test accuracy cpu %.4f, cuda %.4f\n", cpu_acc, gpu_acc);
  // 10 epochs of this small MLP reach about 0.9 (0.899 on an H200, on both devices); the
  // check that matters is that the GPU trains as the CPU does
  CHECK(gpu_acc >= 0.85);
  CHECK(std::abs(gpu_acc - cpu_acc) <= 0.02);
}

TEST_CASE("cuda: the flagship CNN trains on the GPU as on the CPU", "[cuda]") {
  EMBER_REQUIRE_GPU();
  namespace F = em::nn::functional;
  namespace nn = em::nn;
  struct cnn : nn::module<cnn> {  // examples/flagship.cpp's CNN
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
  const auto table = em::data::read_csv<float>(EMBER_EXAMPLES_DATA "/digits.csv.gz");
  const std::int64_t rows = table.size(0);
  const auto images = em::tensor<float>(table.slice(1, 0, 64) / 16.f);
  const auto labels = table.select(1, 64).to<std::int64_t>();
  const auto y_test = labels.slice(0, 1500, rows).contiguous();
  auto train = [&](em::device dev) {
    em::manual_seed(4);
    cnn net;
    net.to(dev);
    em::optim::adam opt(net.parameters(), {.lr = 3e-3});
    const auto xd = images.slice(0, 0, 1500).to(dev);
    const auto yd = labels.slice(0, 0, 1500).to(dev);
    for (int epoch = 0; epoch < 10; ++epoch)
      for (std::int64_t s = 0; s < 1500; s += 64) {
        const std::int64_t e = std::min<std::int64_t>(s + 64, 1500);
        opt.zero_grad();
        auto loss = F::cross_entropy(net(xd.slice(0, s, e)), yd.slice(0, s, e));
        loss.backward();
        opt.step();
      }
    net.eval();
    const auto pred = em::argmax(net(images.slice(0, 1500, rows).to(dev)), 1).to(em::cpu);
    std::int64_t right = 0;
    for (std::int64_t i = 0; i < pred.numel(); ++i) right += pred.data()[i] == y_test.data()[i];
    return static_cast<double>(right) / static_cast<double>(pred.numel());
  };
  const double cpu_acc = train(em::cpu), gpu_acc = train(gpu);
  std::printf("digits CNN, 10 epochs: test accuracy cpu %.4f, cuda %.4f\n", cpu_acc, gpu_acc);
  CHECK(gpu_acc >= 0.93);
  CHECK(std::abs(gpu_acc - cpu_acc) <= 0.02);
}
