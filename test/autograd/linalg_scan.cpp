// Gradients of the matrix products (include/ember/ops/matmul.hpp), softmax/log_softmax
// (ops/softmax.hpp) and the scans (ops/scan.hpp: cumsum, cumprod, tril/triu, topk/sort values):
// finite-difference gradchecks in float64 for every shape case, float32 values from the math,
// saved-tensor version checks and grad_fn names. Second derivatives are in the test cases tagged
// [double] (run alone with `[double]`, or leave them out with `~[double]`).
#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <vector>

namespace em = ember;
namespace F = ember::nn::functional;
using t64 = em::tensor<double>;
using inputs = std::vector<t64>;
/// One std::function type, so gradcheck is instantiated once for the whole file.
using fn = std::function<t64(const inputs&)>;

namespace {

t64 leaf(const em::shape& s) { return em::randn<double>(s).requires_grad_(); }
t64 constant(const em::shape& s) { return em::randn<double>(s); }

const em::autograd::gradcheck_options opts{.eps = 1e-6, .atol = 1e-5, .rtol = 1e-3, .raise = true};

void gradcheck(const fn& f, const inputs& in) {
  CHECK_NOTHROW(em::autograd::gradcheck(f, in, opts));
}
void gradgradcheck(const fn& f, const inputs& in) {
  CHECK_NOTHROW(em::autograd::gradgradcheck(f, in, opts));
}

t64 from(std::vector<double> v, const em::shape& s) {
  return em::from_vector<double>(v, s).requires_grad_();
}

}  // namespace

TEST_CASE("matmul gradients in every torch.matmul shape case", "[autograd][matmul]") {
  em::manual_seed(1);
  const fn mat = [](const inputs& x) { return em::matmul(x[0], x[1]); };
  SECTION("1-D x 1-D (dot, 0-d result)") { gradcheck(mat, {leaf({3}), leaf({3})}); }
  SECTION("1-D x 2-D") { gradcheck(mat, {leaf({3}), leaf({3, 4})}); }
  SECTION("2-D x 1-D") { gradcheck(mat, {leaf({2, 3}), leaf({3})}); }
  SECTION("2-D x 2-D") { gradcheck(mat, {leaf({2, 3}), leaf({3, 4})}); }
  SECTION("batched x matrix (batch folded into rows)") {
    gradcheck(mat, {leaf({2, 2, 3}), leaf({3, 4})});
  }
  SECTION("matrix x batched") { gradcheck(mat, {leaf({2, 3}), leaf({2, 3, 4})}); }
  SECTION("batched x 1-D and 1-D x batched") {
    gradcheck(mat, {leaf({2, 3, 4}), leaf({4})});
    gradcheck(mat, {leaf({4}), leaf({2, 4, 3})});
  }
  SECTION("batch dims broadcast both ways") {
    gradcheck(mat, {leaf({2, 1, 2, 3}), leaf({3, 3, 2})});
    gradcheck(mat, {leaf({1, 2, 3}), leaf({2, 1, 3, 2})});
  }
  SECTION("transposed and step-sliced (non-contiguous) operands") {
    gradcheck([](const inputs& x) { return em::matmul(x[0].t(), x[1].transpose(0, 1)); },
              {leaf({3, 2}), leaf({4, 3})});
    gradcheck(
        [](const inputs& x) { return em::matmul(x[0].slice(2, 0, 6, 2), x[1].transpose(1, 2)); },
        {leaf({2, 2, 6}), leaf({2, 4, 3})});
  }
  SECTION("only one operand requires grad") {
    gradcheck(mat, {leaf({2, 2, 3}), constant({3, 4})});
    gradcheck(mat, {constant({2, 3}), leaf({2, 3, 4})});
  }
}

TEST_CASE("mm, bmm, mv, dot, addmm, baddbmm and linear gradients", "[autograd][matmul]") {
  em::manual_seed(2);
  SECTION("mm, also on transposed operands") {
    gradcheck([](const inputs& x) { return em::mm(x[0], x[1]); }, {leaf({2, 3}), leaf({3, 4})});
    gradcheck([](const inputs& x) { return em::mm(x[0].t(), x[1].t()); },
              {leaf({3, 2}), leaf({4, 3})});
  }
  SECTION("bmm") {
    gradcheck([](const inputs& x) { return em::bmm(x[0], x[1].transpose(1, 2)); },
              {leaf({2, 2, 3}), leaf({2, 4, 3})});
  }
  SECTION("mv and dot") {
    gradcheck([](const inputs& x) { return em::mv(x[0], x[1]); }, {leaf({2, 3}), leaf({3})});
    gradcheck([](const inputs& x) { return em::dot(x[0], x[1]); }, {leaf({4}), leaf({4})});
  }
  SECTION("addmm with broadcast bias, beta and alpha") {
    gradcheck([](const inputs& x) { return em::addmm(x[0], x[1], x[2]); },
              {leaf({2, 4}), leaf({2, 3}), leaf({3, 4})});
    gradcheck([](const inputs& x) { return em::addmm(x[0], x[1], x[2], 0.5, -2.0); },
              {leaf({4}), leaf({2, 3}), leaf({3, 4})});
    gradcheck([](const inputs& x) { return em::addmm(x[0], x[1], x[2], 0.0, 1.5); },
              {leaf({2, 1}), leaf({2, 3}), leaf({3, 4})});
  }
  SECTION("baddbmm with broadcast bias") {
    gradcheck([](const inputs& x) { return em::baddbmm(x[0], x[1], x[2], 2.0, 0.5); },
              {leaf({2, 4}), leaf({2, 2, 3}), leaf({2, 3, 4})});
  }
  SECTION("linear with and without bias, 1-D, 2-D and 3-D inputs") {
    const fn lin = [](const inputs& x) { return F::linear(x[0], x[1]); };
    const fn lin_b = [](const inputs& x) { return F::linear(x[0], x[1], x[2]); };
    gradcheck(lin, {leaf({2, 3}), leaf({4, 3})});
    gradcheck(lin, {leaf({3}), leaf({4, 3})});
    gradcheck(lin_b, {leaf({2, 2, 3}), leaf({4, 3}), leaf({4})});
    gradcheck(lin_b, {leaf({3}), leaf({4, 3}), leaf({4})});
    gradcheck([](const inputs& x) { return F::linear(x[0].transpose(0, 1), x[1], x[2]); },
              {leaf({3, 2, 3}), leaf({4, 3}), leaf({2, 1, 4})});
  }
}

TEST_CASE("softmax and log_softmax gradients over every dim", "[autograd][softmax]") {
  em::manual_seed(3);
  SECTION("dims 0, 1, -1 of a (2,3,4) tensor") {
    for (const std::int64_t d : {0, 1, -1}) {
      CAPTURE(d);
      gradcheck([d](const inputs& x) { return em::softmax(x[0], d); }, {leaf({2, 3, 4})});
      gradcheck([d](const inputs& x) { return em::log_softmax(x[0], d); }, {leaf({2, 3, 4})});
    }
  }
  SECTION("non-contiguous input, 1-D and 0-d") {
    gradcheck([](const inputs& x) { return em::softmax(x[0].t(), 1); }, {leaf({4, 3})});
    gradcheck([](const inputs& x) { return F::log_softmax(x[0].t(), 0); }, {leaf({4, 3})});
    gradcheck([](const inputs& x) { return em::softmax(x[0], 0); }, {leaf({5})});
    gradcheck([](const inputs& x) { return em::log_softmax(x[0], 0); }, {leaf({})});
  }
}

TEST_CASE("cumsum and cumprod gradients, zeros included", "[autograd][scan]") {
  em::manual_seed(4);
  SECTION("dims 0, 1, -1") {
    for (const std::int64_t d : {0, 1, -1}) {
      CAPTURE(d);
      gradcheck([d](const inputs& x) { return em::cumsum(x[0], d); }, {leaf({3, 4})});
      gradcheck([d](const inputs& x) { return em::cumprod(x[0], d); }, {leaf({3, 4})});
    }
  }
  const fn cumprod_last = [](const inputs& x) { return em::cumprod(x[0], -1); };
  const fn cumprod_first = [](const inputs& x) { return em::cumprod(x[0], 0); };
  SECTION("one zero, two zeros, zeros first and last, all zeros") {
    gradcheck(cumprod_last, {from({0.5, 1.5, 0.0, -1.2, 0.7}, {5})});
    gradcheck(cumprod_last, {from({0.5, 0.0, 1.3, 0.0, 0.7, 1.1}, {6})});
    gradcheck(cumprod_last, {from({0.0, 1.5, -0.8, 0.0}, {4})});
    gradcheck(cumprod_last, {from({0.0, 0.0, 0.0}, {3})});
    // along dim 0 (strided columns), each column with its own zeros
    gradcheck(cumprod_first, {from({0.5, 0.0, 1.2, 0.0, 1.1, 0.9, 0.8, 0.0, 0.0, 1.4, 1.3, 0.7},
                                   {4, 3})});
  }
  SECTION("0-d and non-contiguous inputs") {
    gradcheck([](const inputs& x) { return em::cumsum(x[0], 0); }, {leaf({})});
    gradcheck([](const inputs& x) { return em::cumprod(x[0], 0); }, {leaf({})});
    gradcheck([](const inputs& x) { return em::cumsum(x[0].t(), 1); }, {leaf({4, 3})});
    gradcheck([](const inputs& x) { return em::cumprod(x[0].t(), 0); }, {leaf({4, 3})});
  }
}

TEST_CASE("tril, triu and topk/sort values gradients", "[autograd][scan]") {
  em::manual_seed(5);
  SECTION("diagonals 0, 1, -1, batched") {
    for (const std::int64_t k : {0, 1, -1}) {
      CAPTURE(k);
      gradcheck([k](const inputs& x) { return em::tril(x[0], k); }, {leaf({3, 4})});
      gradcheck([k](const inputs& x) { return em::triu(x[0], k); }, {leaf({2, 3, 3})});
    }
  }
  SECTION("in place on a non-leaf") {
    gradcheck([](const inputs& x) { return em::tril_(x[0].clone(), -1); }, {leaf({3, 3})});
    gradcheck([](const inputs& x) { return em::triu_(x[0].clone(), 1); }, {leaf({3, 4})});
  }
  SECTION("topk values along either dim, largest and smallest") {
    gradcheck([](const inputs& x) { return em::topk(x[0], 2, 1).values; }, {leaf({3, 5})});
    gradcheck([](const inputs& x) { return em::topk(x[0], 2, 0, false).values; }, {leaf({4, 3})});
    gradcheck([](const inputs& x) { return em::topk(x[0], 1, 0).values; }, {leaf({})});
  }
  SECTION("sort values") {
    gradcheck([](const inputs& x) { return em::sort(x[0], 1).values; }, {leaf({3, 4})});
    gradcheck([](const inputs& x) { return em::sort(x[0], 0, true).values; }, {leaf({4, 2})});
  }
}

TEST_CASE("float32 gradients match the math", "[autograd][matmul][softmax][scan]") {
  em::manual_seed(6);
  SECTION("d/dA sum(A @ B) = ones @ B^T and d/dB = A^T @ ones, with a broadcast gradient") {
    auto a = em::randn<float>({2, 3}).requires_grad_();
    auto b = em::randn<float>({3, 4}).requires_grad_();
    const auto c = em::matmul(a, b);
    c.backward(em::ones<float>({}).expand({2, 4}));  // stride-0 gradient
    for (std::int64_t i = 0; i < 2; ++i)
      for (std::int64_t k = 0; k < 3; ++k) {
        float row = 0, col = 0;
        for (std::int64_t j = 0; j < 4; ++j) row += b.at({k, j});
        for (std::int64_t r = 0; r < 2; ++r) col += a.at({r, k});
        CHECK(a.grad().at({i, k}) == Approx(row).epsilon(1e-5));
        for (std::int64_t j = 0; j < 4; ++j)
          CHECK(b.grad().at({k, j}) == Approx(col).epsilon(1e-5));
      }
  }
  SECTION("softmax: grad = y * (g - sum(g * y))") {
    auto x = em::from_vector<float>({0.5f, -1.f, 2.f}, {3}).requires_grad_();
    const auto y = em::softmax(x, 0);
    y.backward(em::from_vector<float>({1.f, 0.f, 0.f}, {3}));
    for (std::int64_t j = 0; j < 3; ++j) {
      const float want = (j == 0 ? y.at({0}) : 0.f) - y.at({0}) * y.at({j});
      CHECK(x.grad().at({j}) == Approx(want).margin(1e-6));
    }
  }
  SECTION("cumprod with zeros, as PyTorch") {
    auto one = em::from_vector<float>({2.f, 3.f, 0.f, 4.f}, {4}).requires_grad_();
    em::cumprod(one, 0).backward(em::ones<float>({4}));
    const std::vector<float> want1{4.f, 2.f, 30.f, 0.f};
    for (std::int64_t i = 0; i < 4; ++i) CHECK(one.grad().at({i}) == want1[i]);
    auto two = em::from_vector<float>({2.f, 0.f, 3.f, 0.f, 5.f}, {5}).requires_grad_();
    em::cumprod(two, 0).backward(em::ones<float>({5}));
    const std::vector<float> want2{1.f, 8.f, 0.f, 0.f, 0.f};
    for (std::int64_t i = 0; i < 5; ++i) CHECK(two.grad().at({i}) == want2[i]);
  }
  SECTION("cumsum: reverse running sums of the gradient") {
    auto x = em::randn<float>({2, 3}).requires_grad_();
    em::cumsum(x, 1).backward(em::from_vector<float>({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}));
    const std::vector<float> want{6.f, 5.f, 3.f, 15.f, 11.f, 6.f};
    for (std::int64_t i = 0; i < 6; ++i) CHECK(x.grad().at({i / 3, i % 3}) == want[i]);
  }
}

TEST_CASE("saved tensors modified in place make backward throw", "[autograd][matmul][softmax]") {
  em::manual_seed(7);
  auto expect_autograd_error = [](const em::tensor<float>& out) {
    bool thrown = false;
    try {
      out.backward(em::ones_like(out));
    } catch (const em::error& e) {
      thrown = true;
      CHECK(e.category() == em::errc::autograd);
    }
    CHECK(thrown);
  };
  SECTION("an input of mm") {
    auto a = em::randn<float>({2, 3}).requires_grad_();
    auto b = em::randn<float>({3, 4}).requires_grad_();
    const auto c = em::mm(a, b);
    {
      em::no_grad_guard ng;
      b.fill_(1.f);
    }
    expect_autograd_error(c);
  }
  SECTION("the saved output of softmax") {
    auto x = em::randn<float>({2, 3}).requires_grad_();
    auto y = em::softmax(x, 1);
    {
      em::no_grad_guard ng;
      y.fill_(0.f);
    }
    expect_autograd_error(y);
  }
  SECTION("the input of cumprod") {
    auto x = em::randn<float>({4}).requires_grad_();
    const auto y = em::cumprod(x, 0);
    {
      em::no_grad_guard ng;
      x.zero_();
    }
    expect_autograd_error(y);
  }
  SECTION("an operand that does not need saving may change") {
    auto a = em::randn<float>({2, 3}).requires_grad_();
    auto b = em::randn<float>({3, 4});  // only a requires grad: a is not saved
    const auto c = em::matmul(a, b);
    {
      em::no_grad_guard ng;
      a.fill_(1.f);
    }
    CHECK_NOTHROW(c.backward(em::ones_like(c)));
  }
}

TEST_CASE("grad_fn names of the recorded ops", "[autograd][matmul][softmax][scan]") {
  auto a = em::randn<float>({2, 3}).requires_grad_();
  auto b = em::randn<float>({3, 3}).requires_grad_();
  auto v = em::randn<float>({3}).requires_grad_();
  auto s = em::randn<float>({2, 3, 3}).requires_grad_();
  CHECK(em::matmul(a, b).grad_fn_name() == "matmul_backward");
  CHECK(em::mm(a, b).grad_fn_name() == "mm_backward");
  CHECK(em::bmm(s, s).grad_fn_name() == "bmm_backward");
  CHECK(em::mv(a, v).grad_fn_name() == "mv_backward");
  CHECK(em::dot(v, v).grad_fn_name() == "dot_backward");
  CHECK(em::addmm(v, a, b).grad_fn_name() == "addmm_backward");
  CHECK(em::baddbmm(v, s, s).grad_fn_name() == "baddbmm_backward");
  CHECK(F::linear(a, b).grad_fn_name() == "linear_backward");
  CHECK(F::linear(a, b, v).grad_fn_name() == "linear_backward");
  CHECK(em::softmax(a, 1).grad_fn_name() == "softmax_backward");
  CHECK(em::log_softmax(a, 0).grad_fn_name() == "log_softmax_backward");
  CHECK(em::cumsum(a, 1).grad_fn_name() == "cumsum_backward");
  CHECK(em::cumprod(a, 0).grad_fn_name() == "cumprod_backward");
  CHECK(em::tril(b).grad_fn_name() == "tril_backward");
  CHECK(em::triu(b, 1).grad_fn_name() == "triu_backward");
  CHECK(em::topk(a, 2, 1).values.grad_fn_name() == "topk_backward");
  CHECK(em::sort(a, 1).values.grad_fn_name() == "sort_backward");
  auto c = b.clone();
  em::tril_(c);
  CHECK(c.grad_fn_name() == "tril_backward");
  CHECK_FALSE(em::topk(a, 2, 1).indices.requires_grad());
  SECTION("nothing is recorded without requires_grad or under no_grad_guard") {
    CHECK(em::matmul(a.detach(), b.detach()).is_leaf());
    CHECK_FALSE(em::softmax(a.detach(), 1).requires_grad());
    em::no_grad_guard ng;
    CHECK_FALSE(em::matmul(a, b).requires_grad());
    CHECK_FALSE(em::cumprod(a, 1).requires_grad());
    CHECK(em::topk(a, 1, 1).values.grad_fn_name().empty());
  }
}

TEST_CASE("second derivatives of the products, softmax and scans", "[autograd][double]") {
  em::manual_seed(8);
  const fn mat = [](const inputs& x) { return em::matmul(x[0], x[1]); };
  SECTION("mm") {
    gradgradcheck([](const inputs& x) { return em::mm(x[0], x[1].t()); },
                  {leaf({2, 3}), leaf({4, 3})});
  }
  SECTION("matmul: 1-D, batched with broadcast") {
    gradgradcheck(mat, {leaf({3}), leaf({3})});
    gradgradcheck(mat, {leaf({2, 3}), leaf({3})});
    gradgradcheck(mat, {leaf({2, 2, 3}), leaf({3, 2})});
    gradgradcheck(mat, {leaf({2, 1, 2, 3}), leaf({2, 3, 2})});
  }
  SECTION("bmm and linear") {
    gradgradcheck([](const inputs& x) { return em::bmm(x[0], x[1]); },
                  {leaf({2, 2, 3}), leaf({2, 3, 2})});
    gradgradcheck([](const inputs& x) { return F::linear(x[0], x[1], x[2]); },
                  {leaf({2, 2, 3}), leaf({2, 3}), leaf({2})});
  }
  SECTION("softmax and log_softmax") {
    for (const std::int64_t d : {0, -1}) {
      CAPTURE(d);
      gradgradcheck([d](const inputs& x) { return em::softmax(x[0], d); }, {leaf({3, 4})});
      gradgradcheck([d](const inputs& x) { return em::log_softmax(x[0], d); }, {leaf({3, 4})});
    }
  }
  SECTION("cumsum, tril, topk values") {
    gradgradcheck([](const inputs& x) { return em::cumsum(x[0], 1); }, {leaf({2, 3})});
    gradgradcheck([](const inputs& x) { return em::tril(x[0], 0); }, {leaf({3, 3})});
    gradgradcheck([](const inputs& x) { return em::topk(x[0], 2, 1).values; }, {leaf({2, 4})});
  }
  SECTION("cumprod: without zeros; with a zero it is refused (not implemented)") {
    const fn f = [](const inputs& x) { return em::cumprod(x[0], -1); };
    gradgradcheck(f, {leaf({2, 4})});
    bool thrown = false;
    try {
      em::autograd::gradgradcheck(f, {from({0.5, 0.0, 1.5}, {3})}, opts);
    } catch (const em::error& e) {
      thrown = true;
      CHECK(e.category() == em::errc::not_implemented);
    }
    CHECK(thrown);
  }
}
