// Tests of the backward nodes in include/ember/ops/conv.hpp and include/ember/ops/pool.hpp:
// full-Jacobian gradchecks (float64, tiny shapes) of conv1d/conv2d/conv_transpose1d/2d and
// every pooling op over their options; max pooling ties (the first maximum gets the gradient,
// as PyTorch); grad_fn names; weight-only gradients; saved tensors modified in place.

#include <ember/autograd/gradcheck.hpp>
#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

namespace em = ember;
namespace F = ember::nn::functional;

namespace {

using tensors = std::vector<em::tensor<double>>;
constexpr em::autograd::gradcheck_options raise{.raise = true};

em::tensor<double> leaf(const em::shape& s) { return em::randn<double>(s).requires_grad_(); }

/// Row-major values of a contiguous tensor.
std::vector<double> values(const em::tensor<double>& t) {
  const em::tensor<double> c = t.contiguous();
  return std::vector<double>(c.data(), c.data() + c.numel());
}

}  // namespace

TEST_CASE("conv2d backward: gradcheck over stride, padding, dilation, groups, bias", "[autograd][conv]") {
  em::manual_seed(1);
  SECTION("bias, stride, padding, dilation") {
    auto f = [](const tensors& in) {
      return F::conv2d(in[0], in[1], {.bias = in[2], .stride = {2, 1}, .padding = {1, 2}, .dilation = {1, 2}});
    };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 3, 5, 6}), leaf({4, 3, 3, 2}), leaf({4})}, raise));
  }
  SECTION("groups, no bias, uneven stride leaves pixels unused") {
    auto f = [](const tensors& in) { return F::conv2d(in[0], in[1], {.stride = 2, .groups = 2}); };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 4, 6, 5}), leaf({2, 2, 3, 2})}, raise));
  }
  SECTION("depthwise with a channel multiplier, unbatched input") {
    auto f = [](const tensors& in) {
      return F::conv2d(in[0], in[1], {.bias = in[2], .padding = 1, .groups = 2});
    };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 4, 5}), leaf({4, 1, 3, 3}), leaf({4})}, raise));
  }
  SECTION("1x1 kernel (the direct GEMM path)") {
    auto f = [](const tensors& in) { return F::conv2d(in[0], in[1], {.bias = in[2]}); };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 3, 3, 4}), leaf({2, 3, 1, 1}), leaf({2})}, raise));
  }
  SECTION("strided (transposed) input and pooling of the result") {
    auto f = [](const tensors& in) {
      return F::avg_pool2d(F::conv2d(in[0].transpose(2, 3), in[1], {.padding = 1}), {.kernel = 2});
    };
    CHECK(em::autograd::gradcheck(f, {leaf({1, 2, 5, 4}), leaf({2, 2, 2, 3})}, raise));
  }
}

TEST_CASE("conv1d backward: gradcheck", "[autograd][conv]") {
  em::manual_seed(2);
  auto f = [](const tensors& in) {
    return F::conv1d(in[0], in[1], {.bias = in[2], .stride = 2, .padding = 1, .dilation = 2, .groups = 2});
  };
  CHECK(em::autograd::gradcheck(f, {leaf({2, 4, 7}), leaf({4, 2, 2}), leaf({4})}, raise));
  auto g = [](const tensors& in) { return F::conv1d(in[0], in[1]); };  // unbatched, no bias
  CHECK(em::autograd::gradcheck(g, {leaf({3, 6}), leaf({2, 3, 3})}, raise));
}

TEST_CASE("conv_transpose backward: gradcheck", "[autograd][conv]") {
  em::manual_seed(3);
  SECTION("conv_transpose2d: stride, padding, output_padding, groups, bias") {
    auto f = [](const tensors& in) {
      return F::conv_transpose2d(in[0], in[1],
                                 {.bias = in[2], .stride = 2, .padding = 1, .output_padding = {1, 0}, .groups = 2});
    };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 4, 3, 4}), leaf({4, 1, 3, 2}), leaf({2})}, raise));
  }
  SECTION("conv_transpose2d: output_padding not below the stride (dilation 2)") {
    auto f = [](const tensors& in) {
      return F::conv_transpose2d(in[0], in[1], {.output_padding = 1, .dilation = 2});
    };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 2, 3, 3}), leaf({2, 3, 2, 2})}, raise));
  }
  SECTION("conv_transpose1d, unbatched") {
    auto f = [](const tensors& in) {
      return F::conv_transpose1d(in[0], in[1], {.bias = in[2], .stride = 3, .padding = 1, .output_padding = 2});
    };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 4}), leaf({2, 3, 3}), leaf({3})}, raise));
  }
}

TEST_CASE("conv backward: weight-only gradients, names, saved tensors", "[autograd][conv]") {
  em::manual_seed(4);
  const em::tensor<double> x = em::randn<double>({2, 3, 5, 6});  // does not require grad
  auto f = [](const tensors& in) { return F::conv2d(in[0], in[1], {.bias = in[2], .padding = 1}); };
  CHECK(em::autograd::gradcheck(f, {x, leaf({2, 3, 3, 3}), em::randn<double>({2})}, raise));

  em::tensor<double> w = leaf({2, 3, 3, 3});
  em::tensor<double> y = F::conv2d(x, w);
  CHECK(y.grad_fn_name() == "conv2d_backward");
  y.backward(em::ones_like(y));
  CHECK_FALSE(x.grad().defined());
  REQUIRE(w.grad().defined());
  CHECK(w.grad().shape() == w.shape());

  CHECK(F::conv1d(em::randn<double>({1, 3, 5}), leaf({2, 3, 2})).grad_fn_name() == "conv1d_backward");
  CHECK(F::conv_transpose2d(leaf({1, 2, 3, 3}), em::randn<double>({2, 2, 2, 2})).grad_fn_name() ==
        "conv_transpose2d_backward");
  CHECK(F::conv_transpose1d(leaf({1, 2, 3}), em::randn<double>({2, 2, 2})).grad_fn_name() ==
        "conv_transpose1d_backward");
  {
    em::no_grad_guard ng;
    CHECK_FALSE(F::conv2d(x, w).requires_grad());
  }
  em::tensor<float> wf = em::randn<float>({2, 3, 3, 3}).requires_grad_();  // float32 too
  em::tensor<float> yf = F::max_pool2d(F::conv2d(em::randn<float>({1, 3, 5, 5}), wf), {.kernel = 2});
  yf.backward(em::ones_like(yf));
  CHECK(wf.grad().shape() == wf.shape());

  // the input is saved for the weight's gradient: changing it in place invalidates the graph
  em::tensor<double> x2 = em::randn<double>({1, 3, 4, 4});
  em::tensor<double> y2 = F::conv2d(x2, w);
  x2.fill_(1.0);
  try {
    y2.backward(em::ones_like(y2));
    FAIL("backward after an in-place change of a saved input did not throw");
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::autograd);
  }
}

TEST_CASE("max pooling backward: gradcheck", "[autograd][pool]") {
  em::manual_seed(5);
  SECTION("kernel 2") {
    auto f = [](const tensors& in) { return F::max_pool2d(in[0], {.kernel = 2}); };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 2, 5, 6})}, raise));
  }
  SECTION("stride, padding, ceil_mode, unbatched") {
    auto f = [](const tensors& in) {
      return F::max_pool2d(in[0], {.kernel = 3, .stride = 2, .padding = 1, .ceil_mode = true});
    };
    CHECK(em::autograd::gradcheck(f, {leaf({3, 6, 5})}, raise));
  }
  SECTION("dilation, overlapping windows") {
    auto f = [](const tensors& in) {
      return std::get<0>(F::max_pool2d_with_indices(in[0], {.kernel = {2, 3}, .stride = 1, .dilation = 2}));
    };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 2, 5, 6})}, raise));
  }
  SECTION("adaptive max, non-divisible sizes") {
    auto f = [](const tensors& in) { return F::adaptive_max_pool2d(in[0], {.output_size = {3, 4}}); };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 2, 5, 6})}, raise));
    auto g = [](const tensors& in) {
      return std::get<0>(F::adaptive_max_pool2d_with_indices(in[0], {.output_size = 2}));
    };
    CHECK(em::autograd::gradcheck(g, {leaf({2, 5, 5})}, raise));
  }
}

TEST_CASE("max pooling backward: the first maximum of a window gets the gradient", "[autograd][pool]") {
  // window 0 = {1, 3, 3, 2}: flat index 1; window 1 = {3, 0, 2, 3}: index 2 (row-major first)
  em::tensor<double> x =
      em::from_vector<double>({1, 3, 3, 0, 3, 2, 2, 3}, {1, 1, 2, 4}).requires_grad_();
  em::tensor<double> y = F::max_pool2d(x, {.kernel = 2});
  y.backward(em::ones_like(y));
  CHECK(values(x.grad()) == std::vector<double>{0, 1, 1, 0, 0, 0, 0, 0});

  // constant rows, overlapping windows: wide enough for the SIMD path
  em::tensor<double> c = em::ones<double>({1, 2, 19}).requires_grad_();
  em::tensor<double> yc = F::max_pool2d(c, {.kernel = 2, .stride = 1});
  yc.backward(em::ones_like(yc));
  std::vector<double> want(38, 0.0);
  for (int i = 0; i < 18; ++i) want[static_cast<std::size_t>(i)] = 1;
  CHECK(values(c.grad()) == want);

  // a maximum shared by overlapping windows gets each window's gradient
  em::tensor<double> m = em::from_vector<double>({1, 1, 1, 1, 9, 1, 1, 1, 1}, {1, 3, 3}).requires_grad_();
  em::tensor<double> ym = F::max_pool2d(m, {.kernel = 2, .stride = 1});
  ym.backward(em::ones_like(ym));
  CHECK(values(m.grad()) == std::vector<double>{0, 0, 0, 0, 4, 0, 0, 0, 0});

  // adaptive max pooling ties the same way
  em::tensor<double> a = em::from_vector<double>({5, 5, 1, 5}, {1, 2, 2}).requires_grad_();
  em::tensor<double> ya = F::adaptive_max_pool2d(a, {.output_size = 1});
  CHECK(ya.grad_fn_name() == "adaptive_max_pool2d_backward");
  ya.backward(em::ones_like(ya));
  CHECK(values(a.grad()) == std::vector<double>{1, 0, 0, 0});
}

TEST_CASE("average pooling backward: gradcheck", "[autograd][pool]") {
  em::manual_seed(6);
  const em::tensor<double> x = leaf({2, 2, 5, 6});
  SECTION("count_include_pad") {
    auto f = [](const tensors& in) { return F::avg_pool2d(in[0], {.kernel = 3, .stride = 2, .padding = 1}); };
    CHECK(em::autograd::gradcheck(f, {x}, raise));
  }
  SECTION("count_include_pad false, ceil_mode") {
    auto f = [](const tensors& in) {
      return F::avg_pool2d(in[0], {.kernel = {3, 2}, .stride = 2, .padding = 1, .count_include_pad = false,
                                   .ceil_mode = true});
    };
    CHECK(em::autograd::gradcheck(f, {x}, raise));
  }
  SECTION("divisor_override, unbatched") {
    auto f = [](const tensors& in) {
      return F::avg_pool2d(in[0], {.kernel = 2, .stride = 1, .divisor_override = 3});
    };
    CHECK(em::autograd::gradcheck(f, {leaf({2, 4, 5})}, raise));
  }
  SECTION("adaptive average, non-divisible and enlarging sizes") {
    auto f = [](const tensors& in) { return F::adaptive_avg_pool2d(in[0], {.output_size = {3, 4}}); };
    CHECK(em::autograd::gradcheck(f, {x}, raise));
    auto g = [](const tensors& in) { return F::adaptive_avg_pool2d(in[0], {.output_size = {4, 3}}); };
    CHECK(em::autograd::gradcheck(g, {leaf({2, 3, 2})}, raise));
  }
}

TEST_CASE("pooling backward: grad_fn names", "[autograd][pool]") {
  const em::tensor<double> x = leaf({1, 2, 4, 4});
  CHECK(F::max_pool2d(x, {.kernel = 2}).grad_fn_name() == "max_pool2d_backward");
  CHECK(std::get<0>(F::max_pool2d_with_indices(x, {.kernel = 2})).grad_fn_name() ==
        "max_pool2d_with_indices_backward");
  CHECK(F::avg_pool2d(x, {.kernel = 2}).grad_fn_name() == "avg_pool2d_backward");
  CHECK(F::adaptive_avg_pool2d(x, {}).grad_fn_name() == "adaptive_avg_pool2d_backward");
  CHECK(std::get<0>(F::adaptive_max_pool2d_with_indices(x, {})).grad_fn_name() ==
        "adaptive_max_pool2d_with_indices_backward");
  CHECK_FALSE(F::max_pool2d(x.detach(), {.kernel = 2}).requires_grad());
}
