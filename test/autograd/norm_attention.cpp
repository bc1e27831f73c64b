// Tests of the backward functions of include/ember/ops/{norm,dropout,attention}.hpp:
// finite-difference gradchecks (float64, full Jacobian, tiny shapes) of batch_norm (training and
// eval), layer_norm, group_norm and scaled_dot_product_attention (masks, causal, broadcast
// batches), and gradgradchecks of the create_graph path; exact dropout gradients; saved-tensor
// version checks; grad_fn names.
#include <ember/autograd/gradcheck.hpp>
#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <vector>

namespace em = ember;
namespace F = ember::nn::functional;

namespace {

using T64 = em::tensor<double>;
using inputs = std::vector<T64>;

T64 leaf(const em::shape& s) { return em::randn<double>(s).requires_grad_(); }

template <class Fn>
void check(Fn&& f, const inputs& in) {
  CHECK(em::autograd::gradcheck(f, in, {.raise = true}));
}

/// Gradients of sum(f(in) * v) for a fixed v, with or without create_graph (the create_graph
/// path recomputes the saved statistics with ember ops: both must agree).
template <class Fn>
std::vector<T64> grads(Fn&& f, const inputs& in, bool create_graph) {
  const T64 out = f(in);
  em::manual_seed(7);
  const T64 v = em::randn<double>(out.shape());
  return em::autograd::grad<double>({out}, in, {v}, {.create_graph = create_graph});
}

template <class Fn>
void check_create_graph_path(Fn&& f, const inputs& in) {
  const auto a = grads(f, in, false), b = grads(f, in, true);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].shape() == b[i].shape());
    for (std::int64_t j = 0; j < a[i].numel(); ++j)
      CHECK(a[i].contiguous().data()[j] ==
            Approx(b[i].contiguous().data()[j]).margin(1e-10).epsilon(1e-8));
  }
}

}  // namespace

TEST_CASE("batch_norm backward: gradcheck in training and eval mode", "[autograd][norm]") {
  em::manual_seed(1);
  const T64 w = leaf({3}), b = leaf({3});
  const T64 rm = em::randn<double>({3}), rv = em::rand<double>({3}) + 0.5;
  SECTION("training, 2-D, affine") {
    check([](const inputs& in) {
      return F::batch_norm(in[0], T64{}, T64{}, {.weight = in[1], .bias = in[2], .training = true});
    }, {leaf({4, 3}), w, b});
  }
  SECTION("training, 4-D, no affine; running stats are updated, not differentiated") {
    const T64 rm2 = em::zeros<double>({3}), rv2 = em::ones<double>({3});
    check([&](const inputs& in) {
      return F::batch_norm(in[0], rm2, rv2, {.training = true});
    }, {leaf({2, 3, 2, 2})});
    CHECK(rv2.data()[0] != 1.0);
  }
  SECTION("training, 3-D, weight only; weight alone requires grad") {
    check([](const inputs& in) {
      return F::batch_norm(in[0], T64{}, T64{}, {.weight = in[1], .training = true, .eps = 1e-3});
    }, {leaf({3, 3, 2}), w});
    check([](const inputs& in) {
      return F::batch_norm(in[0], T64{}, T64{}, {.weight = in[1], .bias = in[2], .training = true});
    }, {em::randn<double>({3, 3}), w, b});
  }
  SECTION("eval: an affine map of x") {
    check([&](const inputs& in) {
      return F::batch_norm(in[0], rm, rv, {.weight = in[1], .bias = in[2]});
    }, {leaf({4, 3}), w, b});
    check([&](const inputs& in) { return F::batch_norm(in[0], rm, rv); }, {leaf({2, 3, 2, 2})});
  }
}

TEST_CASE("layer_norm and group_norm backward: gradcheck", "[autograd][norm]") {
  em::manual_seed(2);
  SECTION("layer_norm over the last dim, affine") {
    check([](const inputs& in) {
      return F::layer_norm(in[0], {.normalized_shape = {4}, .weight = in[1], .bias = in[2]});
    }, {leaf({3, 4}), leaf({4}), leaf({4})});
  }
  SECTION("layer_norm over two trailing dims, with and without affine") {
    check([](const inputs& in) {
      return F::layer_norm(in[0], {.normalized_shape = {2, 3}, .weight = in[1], .bias = in[2]});
    }, {leaf({2, 2, 3}), leaf({2, 3}), leaf({2, 3})});
    check([](const inputs& in) {
      return F::layer_norm(in[0], {.normalized_shape = {2, 3}, .eps = 1e-3});
    }, {leaf({2, 2, 3})});
  }
  SECTION("group_norm, several groups, affine and not") {
    check([](const inputs& in) {
      return F::group_norm(in[0], 2, {.weight = in[1], .bias = in[2]});
    }, {leaf({2, 4, 3}), leaf({4}), leaf({4})});
    check([](const inputs& in) { return F::group_norm(in[0], 3); }, {leaf({2, 6, 2})});
    check([](const inputs& in) {
      return F::group_norm(in[0], 1, {.weight = in[1]});
    }, {leaf({2, 2, 2, 2}), leaf({2})});
  }
}

TEST_CASE("scaled_dot_product_attention backward: gradcheck", "[autograd][attention]") {
  em::manual_seed(3);
  const T64 q = leaf({2, 3, 4}), k = leaf({2, 5, 4}), v = leaf({2, 5, 3});
  SECTION("no mask, L != S") {
    check([](const inputs& in) { return F::scaled_dot_product_attention(in[0], in[1], in[2]); },
          {q, k, v});
  }
  SECTION("boolean mask, broadcast over the batch") {
    em::tensor<bool> m = em::randn<double>({3, 5}) > 0.0;
    for (std::int64_t i = 0; i < 3; ++i) m.data()[i * 5] = true;  // no fully masked row
    check([m](const inputs& in) {
      return F::scaled_dot_product_attention(in[0], in[1], in[2], m);
    }, {q, k, v});
  }
  SECTION("additive float mask gets a gradient too") {
    check([](const inputs& in) {
      return F::scaled_dot_product_attention(in[0], in[1], in[2], in[3], {.scale = 0.7});
    }, {q, k, v, leaf({1, 3, 5})});
  }
  SECTION("causal; k and v broadcast over q's batch") {
    check([](const inputs& in) {
      return F::scaled_dot_product_attention(in[0], in[1], in[2], {.is_causal = true});
    }, {q, leaf({1, 5, 4}), leaf({5, 3})});
  }
  SECTION("dropout: the same draw each evaluation (reseeded)") {
    check([](const inputs& in) {
      em::manual_seed(11);
      return F::scaled_dot_product_attention(in[0], in[1], in[2], {.dropout_p = 0.3});
    }, {q, k, v});
  }
}

TEST_CASE("the create_graph path (statistics recomputed) agrees with the saved one",
          "[autograd][norm][attention]") {
  em::manual_seed(4);
  check_create_graph_path([](const inputs& in) {
    return F::batch_norm(in[0], T64{}, T64{}, {.weight = in[1], .training = true});
  }, {leaf({4, 3, 2}), leaf({3})});
  check_create_graph_path([](const inputs& in) {
    return F::layer_norm(in[0], {.normalized_shape = {2, 3}, .weight = in[1]});
  }, {leaf({2, 2, 3}), leaf({2, 3})});
  check_create_graph_path([](const inputs& in) { return F::group_norm(in[0], 2); },
                          {leaf({2, 4, 3})});
  check_create_graph_path([](const inputs& in) {
    return F::scaled_dot_product_attention(in[0], in[1], in[2], {.is_causal = true});
  }, {leaf({2, 3, 4}), leaf({2, 5, 4}), leaf({2, 5, 3})});
  check_create_graph_path([](const inputs& in) {
    return F::scaled_dot_product_attention(in[0], in[1], in[2], in[3]);
  }, {leaf({2, 3, 4}), leaf({2, 5, 4}), leaf({2, 5, 3}), leaf({3, 5})});
}

TEST_CASE("second derivatives through the recomputed statistics: gradgradcheck",
          "[autograd][norm][attention][gradgrad]") {
  em::manual_seed(8);
  const auto gg = [](auto&& f, const inputs& in) {
    CHECK(em::autograd::gradgradcheck(f, in, {.raise = true}));
  };
  gg([](const inputs& in) {
    return F::batch_norm(in[0], T64{}, T64{}, {.weight = in[1], .bias = in[2], .training = true});
  }, {leaf({4, 2}), leaf({2}), leaf({2})});
  gg([](const inputs& in) {
    return F::group_norm(in[0], 2, {.weight = in[1]});
  }, {leaf({2, 4, 2}), leaf({4})});
  gg([](const inputs& in) {
    return F::scaled_dot_product_attention(in[0], in[1], in[2], in[3]);
  }, {leaf({3, 4}), leaf({5, 4}), leaf({5, 3}), leaf({3, 5})});
}

TEST_CASE("dropout backward: mask / (1 - p) exactly; identity when p = 0 or eval",
          "[autograd][dropout]") {
  const auto x = em::randn<float>({5, 7}).requires_grad_();
  em::manual_seed(5);
  const em::tensor<float> y = F::dropout(x, 0.3);
  CHECK(y.grad_fn_name() == "dropout_backward");
  y.backward(em::ones<float>({5, 7}));
  em::manual_seed(5);
  const auto ref = em::detail::dropout_with_mask(x.detach(), 0.3, true, em::default_generator());
  const float scale = static_cast<float>(1 / (1 - 0.3));
  for (std::int64_t i = 0; i < 35; ++i) {
    CHECK(x.grad().data()[i] == (ref.mask.data()[i] ? scale : 0.f));
    CHECK(y.data()[i] == ref.output.data()[i]);
  }
  for (const bool training : {true, false}) {
    const auto x2 = em::randn<double>({4}).requires_grad_();
    const T64 y2 = F::dropout(x2, training ? 0.0 : 0.5, training);
    CHECK(y2.impl_ptr() == x2.impl_ptr());  // the input itself, no node
    check([&](const inputs& in) { return F::dropout(in[0], training ? 0.0 : 0.5, training); },
          {x2});
  }
  const auto x1 = em::randn<double>({6}).requires_grad_();
  F::dropout(x1, 1.0).backward(em::ones<double>({6}));
  for (std::int64_t i = 0; i < 6; ++i) CHECK(x1.grad().data()[i] == 0.0);
}

TEST_CASE("norm and attention backward: names, in-place checks, no recording when not needed",
          "[autograd][norm][attention]") {
  em::manual_seed(6);
  const T64 x = leaf({2, 4, 3}), w = leaf({4});
  const T64 q = leaf({2, 3}), k = leaf({4, 3}), v = leaf({4, 2});
  CHECK(F::batch_norm(x, T64{}, T64{}, {.training = true}).grad_fn_name() == "batch_norm_backward");
  CHECK(F::layer_norm(x, {.normalized_shape = {3}}).grad_fn_name() == "layer_norm_backward");
  CHECK(F::group_norm(x, 2, {.weight = w}).grad_fn_name() == "group_norm_backward");
  CHECK(F::scaled_dot_product_attention(q, k, v).grad_fn_name() ==
        "scaled_dot_product_attention_backward");
  {
    em::no_grad_guard ng;
    CHECK(!F::layer_norm(x, {.normalized_shape = {3}}).requires_grad());
  }
  CHECK(!F::group_norm(x.detach(), 2).requires_grad());

  auto expect_autograd_error = [](const T64& y) {
    try {
      y.backward(em::ones<double>(y.shape()));
      FAIL("backward after an in-place write into a saved tensor did not throw");
    } catch (const em::error& e) {
      CHECK(e.category() == em::errc::autograd);
    }
  };
  const T64 yl = F::layer_norm(x, {.normalized_shape = {3}, .weight = leaf({3})});
  const T64 yg = F::group_norm(x, 2, {.weight = w});
  const T64 yb = F::batch_norm(x, T64{}, T64{}, {.weight = w, .training = true});
  const T64 ya = F::scaled_dot_product_attention(q, k, v);
  x.detach().fill_(1.0);  // bumps the version of x's storage
  w.detach().fill_(2.0);
  k.detach().fill_(0.5);
  expect_autograd_error(yl);
  expect_autograd_error(yg);
  expect_autograd_error(yb);
  expect_autograd_error(ya);
}
