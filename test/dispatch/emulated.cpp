// Tests of include/ember/dispatch/ (program.hpp, lower.hpp, raw.hpp, registry.hpp): the device
// path of the elementwise engine and reductions, without a GPU.
//  - Lowering: expressions lowered to programs and run by the host build of the interpreter
//    (the code the CUDA kernel runs) equal the SIMD evaluator, for every op, dtype mix,
//    broadcast and view.
//  - An emulated device: a backend registered for cuda:0 whose memory is host memory and whose
//    kernels are the host interpreter and reduction loop. Tensors moved there take the whole
//    device path (allocation, copies, fill_/copy_, evaluate/assign, reductions, autograd's
//    gradient sums, indexing); the results must equal the CPU's. Mixed devices must be errors.
#include "support/emulated_device.hpp"

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace em = ember;
namespace dp = ember::dispatch;

namespace {

template <class T>
em::tensor<T> random_tensor(em::shape s, std::uint32_t seed, double lo = -3, double hi = 3) {
  em::tensor<T> t = em::zeros<T>(s);
  std::mt19937 g(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  T* p = t.data();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(u(g));
  return t;
}

// runs e through lowering and the host interpreter into a new CPU tensor
template <class E>
auto via_program(const E& e) {
  using T = typename E::value_type;
  em::tensor<T> out = em::zeros<T>(e.shape());
  const dp::elementwise_program p = dp::lower(out.data(), out.strides(), out.shape(), e);
  dp::run_on_host(p);
  return out;
}

template <class E>
auto ev(const E& e) {
  return em::detail::materialize(e);
}

template <class T>
bool close(const em::tensor<T>& a, const em::tensor<T>& b, double rtol) {
  REQUIRE(a.shape() == b.shape());
  const em::tensor<T> ac = a.contiguous(), bc = b.contiguous();
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    const double x = static_cast<double>(ac.data()[i]), y = static_cast<double>(bc.data()[i]);
    if (std::isnan(x) && std::isnan(y)) continue;
    if (x == y) continue;
    if (!(std::abs(x - y) <= rtol * std::max(1.0, std::abs(y)))) {
      UNSCOPED_INFO("element " << i << ": " << x << " vs " << y);
      return false;
    }
  }
  return true;
}

template <class T>
bool same(const em::tensor<T>& a, const em::tensor<T>& b) {
  return close(a, b, 0);
}

}  // namespace

TEST_CASE("lowered programs equal the SIMD evaluator: unary ops", "[dispatch]") {
  const auto x = random_tensor<float>({7, 33}, 1);
  const auto xp = random_tensor<float>({7, 33}, 2, 0.01, 5);  // positive (log, sqrt)
  const auto xd = random_tensor<double>({5, 9}, 3);
  // float ops from the C library against xsimd's: a few ulp apart
  const double rf = 2e-6, rd = 1e-13;
  CHECK(close(via_program(-x), ev(-x), 0));
  CHECK(close(via_program(em::abs(x)), ev(em::abs(x)), 0));
  CHECK(close(via_program(em::exp(x)), ev(em::exp(x)), rf));
  CHECK(close(via_program(em::expm1(x)), ev(em::expm1(x)), rf));
  CHECK(close(via_program(em::log(xp)), ev(em::log(xp)), rf));
  CHECK(close(via_program(em::log1p(xp)), ev(em::log1p(xp)), rf));
  CHECK(close(via_program(em::log2(xp)), ev(em::log2(xp)), rf));
  CHECK(close(via_program(em::sqrt(xp)), ev(em::sqrt(xp)), 0));
  CHECK(close(via_program(em::rsqrt(xp)), ev(em::rsqrt(xp)), rf));
  CHECK(close(via_program(em::square(x)), ev(em::square(x)), 0));
  CHECK(close(via_program(em::sin(x)), ev(em::sin(x)), rf));
  CHECK(close(via_program(em::cos(x)), ev(em::cos(x)), rf));
  CHECK(close(via_program(em::tanh(x)), ev(em::tanh(x)), rf));
  CHECK(close(via_program(em::sigmoid(x)), ev(em::sigmoid(x)), rf));
  CHECK(close(via_program(em::relu(x)), ev(em::relu(x)), 0));
  CHECK(close(via_program(em::gelu(x)), ev(em::gelu(x)), rf));
  CHECK(close(via_program(em::silu(x)), ev(em::silu(x)), rf));
  CHECK(close(via_program(em::softplus(x)), ev(em::softplus(x)), rf));
  CHECK(close(via_program(em::sign(x)), ev(em::sign(x)), 0));
  CHECK(close(via_program(em::floor(x)), ev(em::floor(x)), 0));
  CHECK(close(via_program(em::ceil(x)), ev(em::ceil(x)), 0));
  CHECK(close(via_program(em::round(x * 2.f)), ev(em::round(x * 2.f)), 0));
  CHECK(close(via_program(em::reciprocal(xp)), ev(em::reciprocal(xp)), 0));
  CHECK(close(via_program(em::erf(x)), ev(em::erf(x)), rf));
  CHECK(close(via_program(em::tanh(xd) * em::exp(xd)), ev(em::tanh(xd) * em::exp(xd)), rd));
  CHECK(close(via_program(em::gelu(xd)), ev(em::gelu(xd)), rd));
  // the mathematics directly: round is half to even, relu keeps NaN, sign(NaN) == 0
  const auto h = em::from_vector<float>({0.5f, 1.5f, 2.5f, -0.5f, std::nanf(""), -2.f}, {6});
  const auto r = via_program(em::round(h));
  CHECK(r.data()[0] == 0.f);
  CHECK(r.data()[1] == 2.f);
  CHECK(r.data()[2] == 2.f);
  CHECK(std::isnan(via_program(em::relu(h)).data()[4]));
  CHECK(via_program(em::sign(h)).data()[4] == 0.f);
}

TEST_CASE("lowered programs equal the SIMD evaluator: binary, ternary, casts, views",
          "[dispatch]") {
  const auto a = random_tensor<float>({4, 1, 6}, 4);
  const auto b = random_tensor<float>({5, 1}, 5);  // broadcasts to [4, 5, 6]
  const auto bp = random_tensor<float>({5, 1}, 6, 0.5, 2);
  CHECK(close(via_program(a + b), ev(a + b), 0));
  CHECK(close(via_program(a - b * 2.f), ev(a - b * 2.f), 0));
  CHECK(close(via_program(a / bp), ev(a / bp), 0));
  CHECK(close(via_program(em::pow(em::abs(a), bp)), ev(em::pow(em::abs(a), bp)), 2e-6));
  CHECK(close(via_program(em::maximum(a, b)), ev(em::maximum(a, b)), 0));
  CHECK(close(via_program(em::minimum(a, b)), ev(em::minimum(a, b)), 0));
  CHECK(close(via_program(em::where(a > b, a, b * 3.f)), ev(em::where(a > b, a, b * 3.f)), 0));
  CHECK(close(via_program(em::clamp(a, -1.f, 0.5f)), ev(em::clamp(a, -1.f, 0.5f)), 0));
  CHECK(close(via_program(em::leaky_relu(a, 0.1f)), ev(em::leaky_relu(a, 0.1f)), 0));
  CHECK(close(via_program(em::elu(a, 1.5f)), ev(em::elu(a, 1.5f)), 2e-6));
  for (auto pred : {via_program(a == b), via_program(a != a), via_program(a < b),
                    via_program(a <= b), via_program(a >= b)})
    CHECK(pred.dtype() == em::dtype::boolean);
  CHECK(same(via_program(a < b), ev(a < b)));
  CHECK(same(via_program(a >= b), ev(a >= b)));
  CHECK(same(via_program(((a > 0.f) && (b < 0.f))),
                  ev(((a > 0.f) && (b < 0.f)))));
  // casts: float -> int truncates, double -> float rounds, bool -> 0/1
  const auto d = random_tensor<double>({3, 4}, 7, -100, 100);
  CHECK(same(via_program(em::cast<std::int64_t>(d)), ev(em::cast<std::int64_t>(d))));
  CHECK(close(via_program(em::cast<float>(d) * 3.f), ev(em::cast<float>(d) * 3.f), 0));
  CHECK(close(via_program(em::cast<float>(a > 0.f) + a), ev(em::cast<float>(a > 0.f) + a), 0));
  // integer arithmetic keeps C++'s semantics (truncating division), also inside float programs
  const auto i = em::from_vector<std::int64_t>({-7, 7, 9, -9, 100}, {5});
  const auto j = em::from_vector<std::int64_t>({2, 2, -4, 4, 7}, {5});
  CHECK(same(via_program(i / j), ev(i / j)));
  CHECK(same(via_program(i * j - i), ev(i * j - i)));
  CHECK(close(via_program(em::cast<double>(i / j) * 0.5), ev(em::cast<double>(i / j) * 0.5), 0));
  // views: a transposed, a sliced and an expanded operand
  const auto m = random_tensor<float>({6, 8}, 8);
  const auto mt = m.transpose(0, 1);
  const auto ms = m.slice(1, 1, 7, 2);
  CHECK(close(via_program(mt * 2.f + 1.f), ev(mt * 2.f + 1.f), 0));
  CHECK(close(via_program(em::exp(ms) - ms), ev(em::exp(ms) - ms), 2e-6));
  // one tensor used three times is one leaf
  const auto p = dp::lower(m.data(), m.strides(), m.shape(), m * m + m);
  CHECK(p.n_leaves == 1);
  CHECK(p.flat);
  CHECK(p.ctype == dp::compute::f32);
  const auto pb = dp::lower(m.data(), m.strides(), m.shape(), m + m.slice(0, 0, 1));
  CHECK(pb.n_leaves == 2);
  CHECK_FALSE(pb.flat);
}

TEST_CASE("finish: fused operands and dispatch keys compute what the plain program does",
          "[dispatch]") {
  // E1 = 1.5 x - 0.5 y + 0.25 lowered: 9 instructions of depth 3; finished: 6, depth 2
  // (Note [Operand forms])
  const auto x = random_tensor<float>({1000}, 41), y = random_tensor<float>({1000}, 42);
  em::tensor<float> out = em::zeros<float>({1000});
  dp::elementwise_program p = dp::lower(out.data(), out.strides(), out.shape(), 1.5f * x - 0.5f * y + 0.25f);
  CHECK(p.n_code == 9);
  CHECK(dp::program_depth(p) == 3);
  dp::finish(p);
  CHECK(p.n_code == 6);
  CHECK(dp::program_depth(p) == 2);
  // Random postfix programs (every op form, depth up to 14, 5 leaves, flat and strided)
  // against a plain stack evaluator written here with the same op functions: the rewrite and
  // the one-switch dispatch must not change a single bit.
  constexpr int n = 37;
  std::vector<std::vector<float>> leaves(5, std::vector<float>(n));
  std::mt19937 g(7);
  std::uniform_real_distribution<float> u(-2, 2);
  for (auto& l : leaves)
    for (float& e : l) e = u(g);
  const std::uint16_t bins[] = {dp::opc::add, dp::opc::sub, dp::opc::mul, dp::opc::div,
                                dp::opc::maximum, dp::opc::lt, dp::opc::pow, dp::opc::leaky_relu,
                                dp::opc::elu};
  const std::uint16_t uns[] = {dp::opc::neg, dp::opc::exp, dp::opc::tanh, dp::opc::relu};
  const auto ref_unary = [](std::uint16_t o, float v) {
    switch (o) {
      case dp::opc::neg: return dp::detail::unary<dp::opc::neg>(v);
      case dp::opc::exp: return dp::detail::unary<dp::opc::exp>(v);
      case dp::opc::tanh: return dp::detail::unary<dp::opc::tanh>(v);
      default: return dp::detail::unary<dp::opc::relu>(v);
    }
  };
  const auto ref_binary = [](std::uint16_t o, float a, float b) {
    switch (o) {
      case dp::opc::add: return dp::detail::binary<dp::opc::add>(a, b);
      case dp::opc::sub: return dp::detail::binary<dp::opc::sub>(a, b);
      case dp::opc::mul: return dp::detail::binary<dp::opc::mul>(a, b);
      case dp::opc::div: return dp::detail::binary<dp::opc::div>(a, b);
      case dp::opc::maximum: return dp::detail::binary<dp::opc::maximum>(a, b);
      case dp::opc::lt: return dp::detail::binary<dp::opc::lt>(a, b);
      case dp::opc::pow: return dp::detail::binary<dp::opc::pow>(a, b);
      case dp::opc::leaky_relu: return dp::detail::binary<dp::opc::leaky_relu>(a, b);
      default: return dp::detail::binary<dp::opc::elu>(a, b);
    }
  };
  std::vector<float> got(n);
  int tested = 0, wrong = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    dp::elementwise_program q;
    q.rank = 1;
    q.n_leaves = 5;
    q.flat = trial % 2 == 0;  // strided programs take the per-element path
    q.numel = n;
    q.shape[0] = n;
    q.out = got.data();
    q.out_stride[0] = 1;
    for (int k = 0; k < 5; ++k) {
      q.leaves[k].data = leaves[k].data();
      q.leaves[k].stride[0] = 1;
      q.leaves[k].dtype = dp::code::f32;
    }
    int depth = 0, pc = 0;
    const int len = 1 + static_cast<int>(g() % 30);
    for (int i = 0; pc < dp::max_code - 4; ++i) {
      if (i >= len && depth == 1) break;
      const unsigned r = g() % 10;
      dp::instr in{};
      if ((depth < 2 || r < 4) && depth < 14 && i < len) {
        if (g() % 2) {
          in.op = dp::opc::leaf;
          in.leaf = static_cast<std::uint8_t>(g() % 5);
        } else {
          in.op = dp::opc::scalar;
          in.value = u(g);
        }
        ++depth;
      } else if (r == 9 && depth >= 3) {
        in.op = g() % 2 ? dp::opc::where : dp::opc::clamp;
        depth -= 2;
      } else if (depth >= 2 && r >= 6) {
        in.op = bins[g() % 9];
        --depth;
      } else {
        in.op = uns[g() % 4];
      }
      q.code[pc++] = in;
    }
    if (depth != 1) continue;
    q.n_code = pc;
    dp::run_on_host(q);
    ++tested;
    for (int i = 0; i < n; ++i) {
      float st[dp::max_stack];
      int sp = 0;
      for (int c = 0; c < pc; ++c) {
        const dp::instr& in = q.code[c];
        if (in.op == dp::opc::leaf) {
          st[sp++] = leaves[in.leaf][static_cast<std::size_t>(i)];
        } else if (in.op == dp::opc::scalar) {
          st[sp++] = static_cast<float>(in.value);
        } else if (in.op == dp::opc::where) {
          sp -= 2;
          st[sp - 1] = st[sp - 1] != 0 ? st[sp] : st[sp + 1];
        } else if (in.op == dp::opc::clamp) {
          sp -= 2;
          const float v = st[sp - 1], lo = st[sp], hi = st[sp + 1];
          st[sp - 1] = v < lo ? lo : (v > hi ? hi : v);
        } else if (in.op < 40) {
          st[sp - 1] = ref_unary(in.op, st[sp - 1]);
        } else {
          --sp;
          st[sp - 1] = ref_binary(in.op, st[sp - 1], st[sp]);
        }
      }
      const float want = st[0], have = got[static_cast<std::size_t>(i)];
      if (!(want == have || (std::isnan(want) && std::isnan(have)))) {
        UNSCOPED_INFO("trial " << trial << ", element " << i << ": got " << have << ", want " << want);
        ++wrong;
        break;
      }
    }
  }
  CHECK(tested > 2000);
  CHECK(wrong == 0);
}

TEST_CASE("lowering rejects what the kernel cannot run", "[dispatch]") {
  const auto x = random_tensor<float>({3}, 9);
  // an expression with more leaves than a program holds
  std::vector<em::tensor<float>> ts;
  for (int k = 0; k < dp::max_leaves + 1; ++k) ts.push_back(random_tensor<float>({3}, 10 + k));
  auto e = ts[0] + ts[1] + ts[2] + ts[3] + ts[4] + ts[5] + ts[6] + ts[7] + ts[8] + ts[9] +
           ts[10] + ts[11] + ts[12];
  em::tensor<float> out = em::zeros<float>({3});
  CHECK_THROWS_WITH(dp::lower(out.data(), out.strides(), out.shape(), e),
                    Catch::Contains("more than 12 tensor operands"));
  // integers through transcendental functions are not lowered
  const auto i = em::from_vector<std::int64_t>({1, 2}, {2});
  em::tensor<std::int64_t> io = em::zeros<std::int64_t>({2});
  CHECK_NOTHROW(dp::lower(io.data(), io.strides(), io.shape(), i * i + i));
  (void)x;
}

TEST_CASE("an emulated device runs tensors through the dispatch layer", "[dispatch]") {
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  REQUIRE(em::cuda::is_available());
  CHECK(em::cuda::device_count() == 1);

  const auto a = random_tensor<float>({4, 5}, 20);
  const auto b = random_tensor<float>({5}, 21);
  const auto ag = a.to(gpu), bg = b.to(gpu);
  CHECK(ag.device() == gpu);

  SECTION("elementwise expressions, assignment and in-place updates") {
    const em::tensor<float> c = em::tanh(ag) * bg + 1.f;
    CHECK(c.device() == gpu);
    CHECK(close(c.to(em::cpu), ev(em::tanh(a) * b + 1.f), 2e-6));
    em::tensor<float> d = ag.clone();
    d += bg;
    d.slice(0, 0, 2) *= 2.f;
    em::tensor<float> dc = a.clone();
    dc += b;
    dc.slice(0, 0, 2) *= 2.f;
    CHECK(close(d.to(em::cpu), dc, 0));
    // aliasing: the transpose of itself
    em::tensor<float> sq = random_tensor<float>({3, 3}, 22);
    em::tensor<float> sqg = sq.to(gpu);
    sqg.copy_(sqg.transpose(0, 1) + 0.f);
    sq.copy_(sq.transpose(0, 1) + 0.f);
    CHECK(close(sqg.to(em::cpu), sq, 0));
  }
  SECTION("fill_, copy_ with conversion and broadcast, item") {
    em::tensor<double> z = em::zeros<double>({2, 3}).to(gpu);
    z.fill_(2.5);
    CHECK(z.to(em::cpu).data()[5] == 2.5);
    z.copy_(bg.slice(0, 0, 3));  // float -> double, [3] broadcast to [2, 3]
    CHECK(z.to(em::cpu).data()[4] == static_cast<double>(b.data()[1]));
    CHECK(ag.sum().item() == Approx(static_cast<double>(a.sum().item())).epsilon(1e-6));
    const em::tensor<std::int64_t> li = ag.to<std::int64_t>();
    CHECK(li.device() == gpu);
    CHECK(li.to(em::cpu).data()[3] == static_cast<std::int64_t>(a.data()[3]));
  }
  SECTION("reductions") {
    CHECK(close(em::sum(ag, {0}).to(em::cpu), em::sum(a, {0}), 1e-6));
    CHECK(close(em::sum(ag, {1}, true).to(em::cpu), em::sum(a, {1}, true), 1e-6));
    CHECK(close(em::mean(ag).to(em::cpu), em::mean(a), 1e-6));
    CHECK(close(em::amax(ag, {1}).to(em::cpu), em::amax(a, {1}), 0));
    CHECK(close(em::amin(ag.transpose(0, 1), {1}).to(em::cpu), em::amin(a.transpose(0, 1), {1}), 0));
    CHECK(close(em::prod(ag, {0}).to(em::cpu), em::prod(a, {0}), 1e-6));
    CHECK(close(em::sum(em::exp(ag) * bg, {0, 1}).to(em::cpu), em::sum(em::exp(a) * b, {0, 1}), 1e-6));
    // an empty reduced dim gives the identity
    const auto e = em::zeros<float>({0, 3}).to(gpu);
    CHECK(close(em::sum(e, {0}).to(em::cpu), em::zeros<float>({3}), 0));
  }
  SECTION("mixing devices is an error naming both") {
    CHECK_THROWS_WITH(ev(ag + a), Catch::Contains("cpu") && Catch::Contains("cuda:0"));
    em::tensor<float> ac = a.clone();
    CHECK_THROWS_WITH(ac.copy_(ag), Catch::Contains("cuda:0") && Catch::Contains("cpu"));
  }
}

TEST_CASE("reductions: argmax/argmin keep the first index and count NaN as the extreme",
          "[dispatch]") {
  // the host build of the reduction the CUDA kernel splits across threads
  const float v[] = {1.f, 3.f, 3.f, -2.f, std::nanf(""), 3.f};
  dp::reduce_problem r;
  r.in = v;
  std::int64_t idx = -1;
  r.out = &idx;
  r.dtype = dp::code::f32;
  r.rank = 1;
  r.shape[0] = 4;
  r.in_stride[0] = 1;
  r.reduced[0] = true;
  r.outputs = 1;
  r.count = 4;
  r.kind = dp::reduce_kind::argmax;
  dp::reduce_on_host<float>(r);
  CHECK(idx == 1);
  r.kind = dp::reduce_kind::argmin;
  dp::reduce_on_host<float>(r);
  CHECK(idx == 3);
  r.shape[0] = 6;
  r.count = 6;
  r.kind = dp::reduce_kind::argmax;
  dp::reduce_on_host<float>(r);
  CHECK(idx == 4);
  // any split of the range combines to the same answer
  using P = dp::reduce_partial<double>;
  const P lo = dp::reduce_range<float>(r, 0, 0, 3, 1), hi = dp::reduce_range<float>(r, 0, 3, 6, 1);
  CHECK(dp::reduce_combine(dp::reduce_kind::argmax, hi, lo).i == 4);
  const P ev = dp::reduce_range<float>(r, 0, 0, 6, 2), od = dp::reduce_range<float>(r, 0, 1, 6, 2);
  CHECK(dp::reduce_combine(dp::reduce_kind::argmax, od, ev).i == 4);
  r.shape[0] = 4;
  r.count = 4;
  const P e2 = dp::reduce_range<float>(r, 0, 0, 4, 2), o2 = dp::reduce_range<float>(r, 0, 1, 4, 2);
  CHECK(dp::reduce_combine(dp::reduce_kind::argmax, o2, e2).i == 1);
}

TEST_CASE("an emulated device: matrix products, softmax, argmax, cross_entropy", "[dispatch]") {
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  namespace F = em::nn::functional;
  const auto a = random_tensor<float>({6, 5}, 30);
  const auto b = random_tensor<float>({5, 4}, 31);
  const auto ag = a.to(gpu), bg = b.to(gpu);
  // 2-D, transposed operands (column-major for the GEMM), a step-sliced one (copied first)
  CHECK(close(em::matmul(ag, bg).to(em::cpu), em::matmul(a, b), 1e-6));
  CHECK(close(em::matmul(bg.t(), ag.t()).to(em::cpu), em::matmul(b.t(), a.t()), 1e-6));
  const auto wide = random_tensor<float>({5, 8}, 32);
  CHECK(close(em::matmul(ag, wide.to(gpu).slice(1, 0, 8, 2)).to(em::cpu),
              em::matmul(a, wide.slice(1, 0, 8, 2)), 1e-6));
  // batched (one strided batched GEMM), broadcast batch (stride 0), 4-D (one GEMM per matrix)
  const auto x3 = random_tensor<double>({3, 4, 5}, 33), y3 = random_tensor<double>({3, 5, 2}, 34);
  CHECK(close(em::bmm(x3.to(gpu), y3.to(gpu)).to(em::cpu), em::bmm(x3, y3), 1e-12));
  const auto y2 = random_tensor<double>({5, 2}, 35);
  CHECK(close(em::matmul(x3.to(gpu), y2.to(gpu)).to(em::cpu), em::matmul(x3, y2), 1e-12));
  const auto x4 = random_tensor<double>({2, 3, 4, 5}, 36), y4 = random_tensor<double>({3, 5, 2}, 37);
  CHECK(close(em::matmul(x4.to(gpu), y4.to(gpu)).to(em::cpu), em::matmul(x4, y4), 1e-12));
  const auto v = random_tensor<double>({5}, 38);
  CHECK(close(em::matmul(x3.to(gpu), v.to(gpu)).to(em::cpu), em::matmul(x3, v), 1e-12));
  // linear with a bias, addmm
  const auto w = random_tensor<float>({3, 5}, 39), bias = random_tensor<float>({3}, 40);
  CHECK(close(F::linear(ag, w.to(gpu), bias.to(gpu)).to(em::cpu), F::linear(a, w, bias), 1e-6));
  CHECK(close(em::addmm(bias.to(gpu), ag, w.to(gpu).t()).to(em::cpu), em::addmm(bias, a, w.t()), 1e-6));
  // softmax family, argmax
  CHECK(close(em::softmax(ag, 1).to(em::cpu), em::softmax(a, 1), 1e-6));
  CHECK(close(em::log_softmax(ag, 0).to(em::cpu), em::log_softmax(a, 0), 1e-6));
  CHECK(close(em::logsumexp(ag, 1).to(em::cpu), em::logsumexp(a, 1), 1e-6));
  CHECK(same(em::argmax(ag, 1).to(em::cpu), em::argmax(a, 1)));
  CHECK(same(em::argmin(ag, 0, true).to(em::cpu), em::argmin(a, 0, true)));
  CHECK(em::argmax(ag).item() == em::argmax(a).item());
  // cross_entropy with class weights, an ignored target and label smoothing (mean reduction)
  const auto t = em::from_vector<std::int64_t>({0, 4, 2, -100, 1, 3}, {6});
  const auto cw = random_tensor<float>({5}, 41, 0.5, 2);
  const F::cross_entropy_options<float> o{.weight = cw, .label_smoothing = 0.1};
  const F::cross_entropy_options<float> og{.weight = cw.to(gpu), .label_smoothing = 0.1};
  CHECK(close(F::cross_entropy(ag, t.to(gpu), og).to(em::cpu), F::cross_entropy(a, t, o), 1e-6));
  CHECK(close(F::cross_entropy(ag, t.to(gpu), {.reduction = em::nn::reduction::none}).to(em::cpu),
              F::cross_entropy(a, t, {.reduction = em::nn::reduction::none}), 1e-6));
  // a bad target is found on the device too; mixed devices are errors
  const auto bad = em::from_vector<std::int64_t>({0, 5, 0, 0, 0, 0}, {6});
  CHECK_THROWS_WITH(F::cross_entropy(ag, bad.to(gpu)), Catch::Contains("out of bounds"));
  CHECK_THROWS_WITH(F::cross_entropy(ag, t), Catch::Contains("cuda:0") && Catch::Contains("cpu"));
  CHECK_THROWS_WITH(em::matmul(ag, b), Catch::Contains("cuda:0") && Catch::Contains("cpu"));
}

TEST_CASE("an emulated device: an MLP trains as on the CPU", "[dispatch]") {
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  namespace F = em::nn::functional;
  em::manual_seed(7);
  em::nn::sequential cpu_net(em::nn::linear(12, 16), em::nn::relu(), em::nn::linear(16, 4));
  em::manual_seed(7);
  em::nn::sequential gpu_net(em::nn::linear(12, 16), em::nn::relu(), em::nn::linear(16, 4));
  gpu_net.to(gpu);
  for (const auto& p : gpu_net.parameters()) CHECK(p.device() == gpu);
  em::optim::adam cpu_opt(cpu_net.parameters(), {.lr = 0.01});
  em::optim::adam gpu_opt(gpu_net.parameters(), {.lr = 0.01});
  const auto x = random_tensor<float>({8, 12}, 50);
  const auto t = em::from_vector<std::int64_t>({0, 1, 2, 3, 3, 2, 1, 0}, {8});
  const auto xg = x.to(gpu);
  const auto tg = t.to(gpu);
  float cpu_loss = 0, gpu_loss = 0;
  for (int step = 0; step < 5; ++step) {
    cpu_opt.zero_grad();
    gpu_opt.zero_grad();
    auto lc = F::cross_entropy(cpu_net(x), t);
    auto lg = F::cross_entropy(gpu_net(xg), tg);
    lc.backward();
    lg.backward();
    cpu_opt.step();
    gpu_opt.step();
    cpu_loss = lc.item();
    gpu_loss = lg.item();
    CHECK(gpu_loss == Approx(cpu_loss).epsilon(1e-5));
  }
  const auto pc = cpu_net.parameters(), pg = gpu_net.parameters();
  REQUIRE(pc.size() == pg.size());
  for (std::size_t i = 0; i < pc.size(); ++i) {
    CHECK(pg[i].device() == gpu);
    CHECK(close(em::tensor<float>(pg[i]).to(em::cpu), em::tensor<float>(pc[i]), 1e-5));
  }
  gpu_net.to(em::cpu);
  CHECK(gpu_net.parameters()[0].device() == em::cpu);
}

TEST_CASE("an emulated device: float64 gradcheck through device ops", "[dispatch]") {
  // the function moves its CPU inputs to the device, runs device ops and moves the result
  // back: to(device) is differentiable, so the finite differences check the device backward
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  auto x = random_tensor<double>({3, 4}, 60).requires_grad_();
  auto y = random_tensor<double>({4, 2}, 61).requires_grad_();
  auto b = random_tensor<double>({4}, 62).requires_grad_();
  const em::autograd::gradcheck_options o{.quiet = false};
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    const auto xg = in[0].to(gpu), bg = in[2].to(gpu);
    return em::sum(em::tanh(xg) * bg + em::exp(xg * 0.5) / (1.0 + em::square(bg))).to(em::cpu);
  }, {x, y, b}, o));
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    return em::matmul(em::sigmoid(in[0].to(gpu)), in[1].to(gpu)).to(em::cpu);
  }, {x, y, b}, o));
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    const auto xg = in[0].to(gpu);
    return em::tensor<double>(em::amax(xg, em::shape{1}) + em::mean(xg, em::shape{0}).sum() +
                              em::log_softmax(xg, 1).select(1, 2)).to(em::cpu);
  }, {x, y, b}, o));
}

TEST_CASE("an emulated device: layer_norm and group_norm match the CPU, with gradients",
          "[dispatch]") {
  // Note [Device row norms]: device statistics, the CPU's backward formulas; the CPU's forward
  // is checked against PyTorch's in the nn tests
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  namespace F = em::nn::functional;
  for (int affine = 0; affine < 4; ++affine) {  // weight and bias: neither, w, b, both
    INFO("affine " << affine);
    auto x = random_tensor<double>({2, 6, 3, 4}, 110).requires_grad_();
    auto w = random_tensor<double>({3, 4}, 111).requires_grad_();
    auto b = random_tensor<double>({3, 4}, 112).requires_grad_();
    auto wc = random_tensor<double>({6}, 113).requires_grad_();
    auto bc = random_tensor<double>({6}, 114).requires_grad_();
    const bool use_w = affine & 1, use_b = affine & 2;
    auto on = [&](const em::tensor<double>& t, bool use, em::device d) {
      return use ? em::tensor<double>(t.detach().to(d).requires_grad_()) : em::tensor<double>{};
    };
    const auto xg = x.detach().to(gpu).requires_grad_();
    const auto wl = use_w ? w : em::tensor<double>{}, bl = use_b ? b : em::tensor<double>{};
    const auto wg = on(w, use_w, gpu), bg = on(b, use_b, gpu);
    const auto y = F::layer_norm(x, {.normalized_shape = {3, 4}, .weight = wl, .bias = bl});
    const auto yg = F::layer_norm(xg, {.normalized_shape = {3, 4}, .weight = wg, .bias = bg});
    CHECK(close(yg.detach().to(em::cpu), y.detach(), 1e-12));
    const auto gy = random_tensor<double>(y.shape(), 115);
    em::sum(y * gy).backward();
    em::sum(yg * gy.to(gpu)).backward();
    CHECK(close(xg.grad().to(em::cpu), x.grad(), 1e-10));
    if (use_w) CHECK(close(wg.grad().to(em::cpu), w.grad(), 1e-10));
    if (use_b) CHECK(close(bg.grad().to(em::cpu), b.grad(), 1e-10));
    // group_norm, 3 groups of 2 channels
    x.grad().zero_();
    const auto xg2 = x.detach().to(gpu).requires_grad_();
    const auto wcl = use_w ? wc : em::tensor<double>{}, bcl = use_b ? bc : em::tensor<double>{};
    const auto wcg = on(wc, use_w, gpu), bcg = on(bc, use_b, gpu);
    const auto z = F::group_norm(x, 3, {.weight = wcl, .bias = bcl});
    const auto zg = F::group_norm(xg2, 3, {.weight = wcg, .bias = bcg});
    CHECK(close(zg.detach().to(em::cpu), z.detach(), 1e-12));
    em::sum(z * gy).backward();
    em::sum(zg * gy.to(gpu)).backward();
    CHECK(close(xg2.grad().to(em::cpu), x.grad(), 1e-10));
    if (use_w) CHECK(close(wcg.grad().to(em::cpu), wc.grad(), 1e-10));
    if (use_b) CHECK(close(bcg.grad().to(em::cpu), bc.grad(), 1e-10));
  }
  // float: the module form, on the device
  em::nn::layer_norm ln(em::shape{4});
  ln.to(gpu);
  const auto xf = random_tensor<float>({5, 4}, 116);
  em::nn::layer_norm ln_cpu(em::shape{4});
  CHECK(close(ln(xf.to(gpu)).to(em::cpu), ln_cpu(xf), 1e-6));
  // float64 gradcheck through the device path (finite differences of the device forward)
  auto xs = random_tensor<double>({3, 5}, 117).requires_grad_();
  auto ws = random_tensor<double>({5}, 118).requires_grad_();
  const em::autograd::gradcheck_options o{.quiet = false};
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    return F::layer_norm(in[0].to(gpu), {.normalized_shape = {5}, .weight = in[1].to(gpu)})
        .to(em::cpu);
  }, {xs, ws}, o));
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    return F::group_norm(in[0].to(gpu).view({3, 5, 1}), 5).to(em::cpu);
  }, {xs, ws}, o));
}

TEST_CASE("an emulated device: losses and every optimizer's step match the CPU", "[dispatch]") {
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  namespace F = em::nn::functional;
  const auto x = random_tensor<float>({5, 3}, 70), y = random_tensor<float>({5, 3}, 71);
  const auto p = random_tensor<float>({5, 3}, 72, 0, 1);
  const auto xg = x.to(gpu), yg = y.to(gpu), pg = p.to(gpu);
  CHECK(close(F::mse_loss(xg, yg).to(em::cpu), F::mse_loss(x, y), 1e-6));
  CHECK(close(F::l1_loss(xg, yg).to(em::cpu), F::l1_loss(x, y), 1e-6));
  CHECK(close(F::smooth_l1_loss(xg, yg).to(em::cpu), F::smooth_l1_loss(x, y), 1e-6));
  CHECK(close(F::binary_cross_entropy_with_logits(xg, pg).to(em::cpu),
              F::binary_cross_entropy_with_logits(x, p), 1e-6));
  const auto t = em::from_vector<std::int64_t>({0, 2, 1, 1, 0}, {5});
  CHECK(close(F::nll_loss(em::log_softmax(xg, 1), t.to(gpu)).to(em::cpu),
              F::nll_loss(em::log_softmax(x, 1), t), 1e-6));
  // three steps of each optimizer on the same parameters and gradients
  auto run = [&](auto make_opt) {
    auto wc = random_tensor<double>({4, 3}, 73).requires_grad_();
    auto wg = wc.detach().to(gpu).requires_grad_();
    auto oc = make_opt(std::vector<em::tensor<double>>{wc});
    auto og = make_opt(std::vector<em::tensor<double>>{wg});
    for (int s = 0; s < 3; ++s) {
      oc.zero_grad();
      og.zero_grad();
      em::sum(em::square(wc) * em::sin(wc)).backward();
      em::sum(em::square(wg) * em::sin(wg)).backward();
      oc.step();
      og.step();
    }
    return close(wg.detach().to(em::cpu), wc.detach(), 1e-12);
  };
  using V = std::vector<em::tensor<double>>;
  CHECK(run([](V ps) { return em::optim::sgd(ps, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true}); }));
  CHECK(run([](V ps) { return em::optim::adam(ps, {.lr = 0.1, .amsgrad = true}); }));
  CHECK(run([](V ps) { return em::optim::adamw(ps, {.lr = 0.1}); }));
  CHECK(run([](V ps) { return em::optim::rmsprop(ps, {.lr = 0.01, .momentum = 0.5, .centered = true}); }));
  CHECK(run([](V ps) { return em::optim::adagrad(ps, {.lr = 0.1, .lr_decay = 0.01}); }));
}

TEST_CASE("an emulated device: conv2d, max_pool2d, batch_norm, dropout match the CPU",
          "[dispatch]") {
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  namespace F = em::nn::functional;
  // conv2d forward and all three gradients: strides, padding, dilation, groups
  struct conv_case { em::shape x, w; F::conv2d_options<double> o; };
  const std::vector<conv_case> cases = {
      {{2, 3, 7, 6}, {4, 3, 3, 3}, {.stride = 1, .padding = 1}},
      {{1, 4, 9, 8}, {6, 2, 3, 2}, {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}, .groups = 2}},
      {{3, 2, 5, 5}, {2, 2, 1, 1}, {}},
  };
  for (const auto& cs : cases) {
    INFO("conv x " << cs.x << " w " << cs.w);
    auto x = random_tensor<double>(cs.x, 80).requires_grad_();
    auto w = random_tensor<double>(cs.w, 81).requires_grad_();
    auto b = random_tensor<double>({cs.w[0]}, 82).requires_grad_();
    auto o = cs.o;
    o.bias = b;
    const auto y = F::conv2d(x, w, o);
    auto og = cs.o;
    auto xg = x.detach().to(gpu).requires_grad_(), wg = w.detach().to(gpu).requires_grad_(),
         bg = b.detach().to(gpu).requires_grad_();
    og.bias = bg;
    const auto yg = F::conv2d(xg, wg, og);
    CHECK(close(yg.detach().to(em::cpu), y.detach(), 1e-12));
    const auto gy = random_tensor<double>(y.shape(), 83);
    em::sum(y * gy).backward();
    em::sum(yg * gy.to(gpu)).backward();
    CHECK(close(xg.grad().to(em::cpu), x.grad(), 1e-12));
    CHECK(close(wg.grad().to(em::cpu), w.grad(), 1e-12));
    CHECK(close(bg.grad().to(em::cpu), b.grad(), 1e-12));
  }
  // max_pool2d: values, PyTorch's indices, gradients (ties and overlapping windows included)
  for (const F::max_pool2d_options& o :
       {F::max_pool2d_options{.kernel = 2}, F::max_pool2d_options{.kernel = 3, .stride = 2, .padding = 1},
        F::max_pool2d_options{.kernel = 3, .stride = 2, .ceil_mode = true},
        F::max_pool2d_options{.kernel = 2, .stride = 1, .dilation = 2}}) {
    auto x = random_tensor<float>({2, 3, 7, 7}, 84).requires_grad_();
    {  // a tie inside a window
      em::no_grad_guard ng;
      x.slice(3, 1, 2).copy_(x.slice(3, 0, 1));
    }
    auto xg = x.detach().to(gpu).requires_grad_();
    const auto [v, i] = F::max_pool2d_with_indices(x, o);
    const auto [vg, ig] = F::max_pool2d_with_indices(xg, o);
    CHECK(close(vg.to(em::cpu), v, 0));
    CHECK(same(ig.to(em::cpu), i));
    const auto y = F::max_pool2d(x, o), yg = F::max_pool2d(xg, o);
    const auto gy = random_tensor<float>(y.shape(), 85);
    em::sum(y * gy).backward();
    em::sum(yg * gy.to(gpu)).backward();
    CHECK(close(xg.grad().to(em::cpu), x.grad(), 1e-6));
  }
  // batch_norm: training (batch statistics, running stats) and eval, with gradients
  {
    auto x = random_tensor<double>({4, 3, 5, 2}, 86).requires_grad_();
    auto w = random_tensor<double>({3}, 87).requires_grad_(), b = random_tensor<double>({3}, 88).requires_grad_();
    auto rm = random_tensor<double>({3}, 89), rv = random_tensor<double>({3}, 90, 0.5, 2);
    auto xg = x.detach().to(gpu).requires_grad_(), wg = w.detach().to(gpu).requires_grad_(),
         bgr = b.detach().to(gpu).requires_grad_();
    auto rmg = rm.to(gpu), rvg = rv.to(gpu);
    for (bool training : {true, false}) {
      const auto y = F::batch_norm(x, rm, rv, {.weight = w, .bias = b, .training = training});
      const auto yg = F::batch_norm(xg, rmg, rvg, {.weight = wg, .bias = bgr, .training = training});
      CHECK(close(yg.detach().to(em::cpu), y.detach(), 1e-12));
      CHECK(close(rmg.to(em::cpu), rm, 1e-12));
      CHECK(close(rvg.to(em::cpu), rv, 1e-12));
      const auto gy = random_tensor<double>(y.shape(), 91);
      em::sum(y * gy).backward();
      em::sum(yg * gy.to(gpu)).backward();
      CHECK(close(xg.grad().to(em::cpu), x.grad(), 1e-10));
      CHECK(close(wg.grad().to(em::cpu), w.grad(), 1e-10));
      CHECK(close(bgr.grad().to(em::cpu), b.grad(), 1e-10));
    }
  }
  // dropout: the same seed drops the same elements as on the CPU
  {
    const auto x = random_tensor<float>({1001}, 92);
    em::manual_seed(5);
    const auto y = F::dropout(x, 0.3);
    em::manual_seed(5);
    const auto yg = F::dropout(x.to(gpu), 0.3);
    CHECK(yg.device() == gpu);
    CHECK(close(yg.to(em::cpu), y, 0));
    // and the generator advanced by the same amount
    const auto after_gpu = em::rand<float>({4});
    em::manual_seed(5);
    (void)F::dropout(x, 0.3);
    CHECK(close(after_gpu, em::rand<float>({4}), 0));
  }
}

TEST_CASE("an emulated device: the flagship CNN trains as on the CPU", "[dispatch]") {
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  namespace F = em::nn::functional;
  namespace nn = em::nn;
  struct cnn : nn::module<cnn> {
    BOOST_HANA_DEFINE_STRUCT(cnn, (nn::conv2d, conv1), (nn::batch_norm2d, bn1), (nn::conv2d, conv2),
                             (nn::batch_norm2d, bn2), (nn::dropout, drop), (nn::linear, fc));
    cnn()
        : conv1({.in = 1, .out = 4, .kernel = 3, .padding = 1}), bn1(4),
          conv2({.in = 4, .out = 6, .kernel = 3, .padding = 1}), bn2(6), drop(0.25), fc(24, 10) {}
    em::tensor<float> forward(const em::tensor<float>& x) {
      auto h = F::max_pool2d(em::relu(bn1(conv1(x.view({-1, 1, 8, 8})))), {.kernel = 2});
      h = F::max_pool2d(em::relu(bn2(conv2(h))), {.kernel = 2});
      return fc(drop(h.flatten(1)));
    }
  };
  em::manual_seed(11);
  cnn a;
  em::manual_seed(11);
  cnn b;
  b.to(gpu);
  em::optim::sgd oa(a.parameters(), {.lr = 0.05, .momentum = 0.9});
  em::optim::sgd ob(b.parameters(), {.lr = 0.05, .momentum = 0.9});
  const auto x = random_tensor<float>({16, 64}, 93, 0, 1);
  const auto t = em::from_vector<std::int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}, {16});
  const auto xg = x.to(gpu);
  const auto tg = t.to(gpu);
  for (int step = 0; step < 3; ++step) {
    em::manual_seed(100 + step);  // the same dropout masks
    oa.zero_grad();
    auto la = F::cross_entropy(a(x), t);
    la.backward();
    oa.step();
    em::manual_seed(100 + step);
    ob.zero_grad();
    auto lb = F::cross_entropy(b(xg), tg);
    lb.backward();
    ob.step();
    CHECK(lb.item() == Approx(la.item()).epsilon(1e-4));
  }
  const auto sa = a.state_dict(), sb = b.state_dict();
  a.eval();
  b.eval();
  CHECK(close(b(xg).detach().to(em::cpu), a(x).detach(), 1e-4));
}

TEST_CASE("an emulated device: average and adaptive pooling match the CPU", "[dispatch]") {
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  namespace F = em::nn::functional;
  for (const F::avg_pool2d_options& o :
       {F::avg_pool2d_options{.kernel = 2}, F::avg_pool2d_options{.kernel = 3, .stride = 2, .padding = 1},
        F::avg_pool2d_options{.kernel = 3, .stride = 2, .padding = 1, .count_include_pad = false},
        F::avg_pool2d_options{.kernel = 2, .stride = 1, .divisor_override = 3}}) {
    auto x = random_tensor<double>({2, 3, 7, 6}, 120).requires_grad_();
    auto xg = x.detach().to(gpu).requires_grad_();
    const auto y = F::avg_pool2d(x, o), yg = F::avg_pool2d(xg, o);
    CHECK(close(yg.detach().to(em::cpu), y.detach(), 1e-12));
    const auto gy = random_tensor<double>(y.shape(), 121);
    em::sum(y * gy).backward();
    em::sum(yg * gy.to(gpu)).backward();
    CHECK(close(xg.grad().to(em::cpu), x.grad(), 1e-12));
  }
  auto x = random_tensor<double>({2, 3, 6, 4}, 122).requires_grad_();
  auto xg = x.detach().to(gpu).requires_grad_();
  for (const em::size2 out : {em::size2{1}, em::size2{3, 2}}) {
    const auto y = F::adaptive_avg_pool2d(x, {.output_size = out});
    const auto yg = F::adaptive_avg_pool2d(xg, {.output_size = out});
    CHECK(close(yg.detach().to(em::cpu), y.detach(), 1e-12));
    em::sum(y).backward();
    em::sum(yg).backward();
    CHECK(close(xg.grad().to(em::cpu), x.grad(), 1e-12));
    CHECK(close(F::adaptive_max_pool2d(xg.detach(), {.output_size = out}).to(em::cpu),
                F::adaptive_max_pool2d(x.detach(), {.output_size = out}), 0));
  }
}

TEST_CASE("an emulated device: cat and stack match the CPU, with gradients", "[dispatch]") {
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  auto a = random_tensor<double>({2, 3, 4}, 110).requires_grad_();
  auto b = random_tensor<double>({2, 1, 4}, 111).requires_grad_();
  auto ag = a.detach().to(gpu).requires_grad_(), bg = b.detach().to(gpu).requires_grad_();
  const auto y = em::cat({a, b, a.transpose(0, 2).transpose(0, 2)}, 1);
  const auto yg = em::cat({ag, bg, ag.transpose(0, 2).transpose(0, 2)}, 1);
  CHECK(yg.device() == gpu);
  CHECK(close(yg.detach().to(em::cpu), y.detach(), 0));
  const auto gy = random_tensor<double>(y.shape(), 112);
  em::sum(y * gy).backward();
  em::sum(yg * gy.to(gpu)).backward();
  CHECK(close(ag.grad().to(em::cpu), a.grad(), 1e-15));
  CHECK(close(bg.grad().to(em::cpu), b.grad(), 1e-15));
  const em::tensor<double> a2 = a.detach() * 2.0;
  const auto s = em::stack({a.detach(), a2}, 1);
  const em::tensor<double> ag2 = ag.detach() * 2.0;
  CHECK(close(em::stack({ag.detach(), ag2}, 1).to(em::cpu), s, 0));
  CHECK_THROWS_WITH(em::cat({ag.detach(), a.detach()}, 0),
                    Catch::Contains("cuda:0") && Catch::Contains("cpu"));
}

TEST_CASE("an emulated device: ops without a device path are errors, never host reads",
          "[dispatch]") {
  // the emulated device's memory faults on host access (Note [Guarded device memory]): each
  // of these must stop at its device check with an ember::error naming the device
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  namespace F = em::nn::functional;
  const auto x = random_tensor<float>({2, 3, 4, 4}, 100).to(gpu);
  const auto v = random_tensor<float>({6}, 101).to(gpu);
  auto err = [](auto&& f) {
    try {
      f();
    } catch (const em::error& e) {
      return std::string(e.what()).find("cuda:0") != std::string::npos;
    }
    return false;
  };
  // (indexing and attention have device paths now: their own test cases below)
  CHECK(err([&] { return em::cumsum(v, 0); }));
  CHECK(err([&] { return em::sort(v); }));
  CHECK(err([&] { return em::topk(v, 2); }));
  CHECK(err([&] { return em::tril(x); }));
  CHECK(err([&] { return em::pad(x, {1, 1}, 0.f); }));
  CHECK(err([&] { return F::avg_pool2d(x, {.kernel = 3, .ceil_mode = true}); }));
  CHECK(err([&] { return F::adaptive_avg_pool2d(x, {.output_size = 3}); }));
  CHECK(err([&] { return F::conv_transpose2d(x, random_tensor<float>({3, 2, 2, 2}, 102).to(gpu)); }));
  // printing copies to the CPU first
  std::ostringstream os;
  os << v;
  CHECK(os.str().find("device=cuda:0") != std::string::npos);
}
TEST_CASE("an emulated device: indexing matches the CPU, with gradients", "[dispatch]") {
  // Note [Device indexing]: gather, index_select, embedding, scatter, scatter_add, index_add
  // run as index problems on the device; masked_fill as a fused where; masked_select and
  // one_hot through the host (data-dependent sizes)
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  const auto cpu = em::cpu;
  std::mt19937 g(71);
  const auto ints = [&g](em::shape s, std::int64_t hi) {
    std::vector<std::int64_t> v(static_cast<std::size_t>(s.numel()));
    for (auto& e : v) e = static_cast<std::int64_t>(g() % static_cast<std::uint32_t>(hi));
    return em::from_vector<std::int64_t>(v, s);
  };
  const auto x = random_tensor<float>({5, 7, 3}, 70);
  const auto xg = x.to(gpu);
  const auto i3 = em::from_vector<std::int64_t>({2, 0, 1, 2}, {4});
  for (std::int64_t d : {0, 1, 2, -1}) {
    INFO("dim " << d);
    CHECK(same(em::index_select(xg, d, i3.to(gpu)).to(cpu), em::index_select(x, d, i3)));
    CHECK(same(em::index_select(xg.transpose(0, 2), d, i3.to(gpu)).to(cpu),
               em::index_select(x.transpose(0, 2), d, i3)));
  }
  const auto i3_32 = i3.to<std::int32_t>();
  CHECK(same(em::index_select(xg, 1, i3_32.to(gpu)).to(cpu), em::index_select(x, 1, i3_32)));
  // gather and scatter_add (duplicates accumulate), on a view too
  const auto gi = ints({5, 4, 3}, 7);
  CHECK(same(em::gather(xg, 1, gi.to(gpu)).to(cpu), em::gather(x, 1, gi)));
  const auto gi6 = ints({5, 4, 3}, 6);
  CHECK(same(em::gather(xg.slice(1, 1, 7), 1, gi6.to(gpu)).to(cpu), em::gather(x.slice(1, 1, 7), 1, gi6)));
  const auto src = random_tensor<float>({5, 4, 3}, 72);
  CHECK(close(em::scatter_add(xg, 1, gi.to(gpu), src.to(gpu)).to(cpu), em::scatter_add(x, 1, gi, src), 1e-6));
  em::tensor<double> acc = em::zeros<double>({4}).to(gpu);
  em::scatter_add_(acc, 0, em::from_vector<std::int64_t>({1, 1, 3, 1}, {4}).to(gpu),
                   em::from_vector<double>({1, 2, 4, 8}, {4}).to(gpu));
  CHECK(same(acc.to(cpu), em::from_vector<double>({0, 11, 0, 4}, {4})));
  // scatter with distinct indices (duplicates race on a GPU), of int64 and bool data
  const auto perm = em::from_vector<std::int64_t>({3, 1, 5, 0}, {4});
  const auto li = em::from_vector<std::int64_t>({10, 20, 30, 40}, {4});
  CHECK(same(em::scatter(em::zeros<std::int64_t>({6}).to(gpu), 0, perm.to(gpu), li.to(gpu)).to(cpu),
             em::from_vector<std::int64_t>({40, 20, 0, 10, 0, 30}, {6})));
  const auto bits = em::from_vector<bool>({true, false, true, true}, {4});
  CHECK(same(em::scatter(em::zeros<bool>({6}).to(gpu), 0, perm.to(gpu), bits.to(gpu)).to(cpu),
             em::scatter(em::zeros<bool>({6}), 0, perm, bits)));
  CHECK(same(em::gather(li.to(gpu), 0, em::from_vector<std::int64_t>({3, 1}, {2}).to(gpu)).to(cpu),
             em::from_vector<std::int64_t>({40, 20}, {2})));
  // index_add with alpha, along dim 1
  const auto ia = em::from_vector<std::int64_t>({6, 0, 6}, {3});
  const auto s3 = random_tensor<float>({5, 3, 3}, 73);
  CHECK(close(em::index_add(xg, 1, ia.to(gpu), s3.to(gpu), 2.5).to(cpu), em::index_add(x, 1, ia, s3, 2.5), 1e-6));
  // embedding (padding_idx only changes the backward)
  const auto table = random_tensor<float>({10, 4}, 74);
  const auto ids = ints({3, 5}, 10);
  namespace F = em::nn::functional;
  CHECK(same(em::embedding(ids.to(gpu), table.to(gpu)).to(cpu), em::embedding(ids, table)));
  // masked ops and one_hot
  const auto m = em::tensor<bool>(x > 0.5f);
  CHECK(same(em::masked_fill(xg, m.to(gpu), -1.f).to(cpu), em::masked_fill(x, m, -1.f)));
  em::tensor<float> xf = xg.clone();
  em::masked_fill_(xf, m.select(0, 1).to(gpu), 7.f);  // broadcast mask
  CHECK(same(xf.to(cpu), em::masked_fill(x, m.select(0, 1), 7.f)));
  CHECK(same(em::masked_select(xg, m.to(gpu)).to(cpu), em::masked_select(x, m)));
  CHECK(em::masked_select(xg, m.to(gpu)).device() == gpu);
  CHECK(same(em::one_hot(ids.to(gpu), 10).to(cpu), em::one_hot(ids, 10)));
  // bad indices are errors before anything is written; devices may not mix
  const auto bad = em::from_vector<std::int64_t>({0, 7}, {2});
  const auto before = xg.to(cpu);
  CHECK_THROWS_WITH(em::index_select(xg, 1, bad.to(gpu)),
                    Catch::Contains("index 7 is out of range for dimension 1 of size 7") &&
                        Catch::Contains("cuda:0"));
  CHECK_THROWS_WITH(em::index_add_(xg, 1, em::from_vector<std::int64_t>({-1, 0, 1}, {3}).to(gpu), s3.to(gpu)),
                    Catch::Contains("index -1 is out of range"));
  CHECK(same(xg.to(cpu), before));
  CHECK_THROWS_WITH(em::gather(xg, 1, gi), Catch::Contains("cuda:0") && Catch::Contains("cpu"));
  CHECK_THROWS_WITH(em::embedding(ids, table.to(gpu)), Catch::Contains("cuda:0") && Catch::Contains("cpu"));
  CHECK_THROWS_WITH(em::scatter_add(em::zeros<std::int16_t>({6}).to(gpu), 0, perm.to(gpu),
                                    em::ones<std::int16_t>({4}).to(gpu)),
                    Catch::Contains("no accumulating kernel for i16"));
  // gradients through the device ops: f64 gradchecks, and embedding's padding row
  const em::autograd::gradcheck_options o{.quiet = false};
  auto xd = random_tensor<double>({4, 5}, 75).requires_grad_();
  auto sd = random_tensor<double>({4, 3}, 76).requires_grad_();
  const auto gi2 = ints({4, 3}, 5), si = em::from_vector<std::int64_t>({4, 0, 4}, {3});
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    const auto a = in[0].to(gpu);
    return em::tensor<double>(em::gather(a, 1, gi2.to(gpu)) * 2.0 +
                              em::index_select(a, 1, si.to(gpu))).to(cpu);
  }, {xd, sd}, o));
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    return em::tensor<double>(em::scatter_add(in[0].to(gpu), 1, gi2.to(gpu), in[1].to(gpu)) +
                              em::index_add(in[0].to(gpu), 1, si.to(gpu), in[1].to(gpu), 0.5)).to(cpu);
  }, {xd, sd}, o));
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    const auto a = in[0].to(gpu);
    return em::masked_select(a, em::tensor<bool>(a > 0.0)).to(cpu);
  }, {xd, sd}, o));
  auto w = random_tensor<double>({10, 4}, 77).requires_grad_();
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    return em::embedding(ids.to(gpu), in[0].to(gpu)).to(cpu);
  }, {w}, o));
  // padding_idx: that row gets no gradient (by design, not the derivative): against the CPU
  const auto wg = w.detach().to(gpu).requires_grad_();
  em::sum(F::embedding(ids.to(gpu), wg, {.padding_idx = 3})).backward();
  const auto wc = w.detach().requires_grad_();
  em::sum(F::embedding(ids, wc, {.padding_idx = 3})).backward();
  CHECK(same(wg.grad().to(cpu), wc.grad()));
}

TEST_CASE("an emulated device: scaled_dot_product_attention matches the CPU, with gradients",
          "[dispatch]") {
  // Note [Device attention]: batched GEMMs, a fused mask, the device softmax and dropout
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  namespace F = em::nn::functional;
  const auto q = random_tensor<float>({2, 3, 5, 4}, 90), k = random_tensor<float>({3, 6, 4}, 91),
             v = random_tensor<float>({2, 1, 6, 3}, 92);
  const auto qg = q.to(gpu), kg = k.to(gpu), vg = v.to(gpu);
  CHECK(close(F::scaled_dot_product_attention(qg, kg, vg).to(em::cpu),
              F::scaled_dot_product_attention(q, k, v), 1e-5));
  CHECK(close(F::scaled_dot_product_attention(qg, kg, vg, {.is_causal = true, .scale = 0.3}).to(em::cpu),
              F::scaled_dot_product_attention(q, k, v, {.is_causal = true, .scale = 0.3}), 1e-5));
  const em::tensor<bool> keep = random_tensor<float>({5, 6}, 93) > -2.f;
  CHECK(close(F::scaled_dot_product_attention(qg, kg, vg, keep.to(gpu)).to(em::cpu),
              F::scaled_dot_product_attention(q, k, v, keep), 1e-5));
  const auto add = random_tensor<float>({3, 1, 6}, 94);
  CHECK(close(F::scaled_dot_product_attention(qg, kg, vg, add.to(gpu)).to(em::cpu),
              F::scaled_dot_product_attention(q, k, v, add), 1e-5));
  // dropout: the CPU's Philox counters, so a seeded run drops the same weights
  em::manual_seed(5);
  const auto dc = F::scaled_dot_product_attention(q, k, v, {.dropout_p = 0.4});
  em::manual_seed(5);
  const auto dg = F::scaled_dot_product_attention(qg, kg, vg, {.dropout_p = 0.4});
  CHECK(close(dg.to(em::cpu), dc, 1e-5));
  CHECK_THROWS_WITH(F::scaled_dot_product_attention(qg, k, vg), Catch::Contains("cuda:0") && Catch::Contains("cpu"));
  // gradients: the backward of ember ops on the device; a f64 gradcheck with a float mask
  auto qd = random_tensor<double>({2, 3, 2}, 95).requires_grad_();
  auto kd = random_tensor<double>({2, 4, 2}, 96).requires_grad_();
  auto vd = random_tensor<double>({4, 3}, 97).requires_grad_();
  auto md = random_tensor<double>({3, 4}, 98).requires_grad_();
  const em::autograd::gradcheck_options o{.quiet = false};
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    return F::scaled_dot_product_attention(in[0].to(gpu), in[1].to(gpu), in[2].to(gpu),
                                           in[3].to(gpu)).to(em::cpu);
  }, {qd, kd, vd, md}, o));
  CHECK(em::autograd::gradcheck([&](const std::vector<em::tensor<double>>& in) {
    return F::scaled_dot_product_attention(in[0].to(gpu), in[1].to(gpu), in[2].to(gpu),
                                           {.is_causal = true}).to(em::cpu);
  }, {qd, kd, vd}, o));
}
