// Tests of include/ember/autograd/{meta,engine,function,gradcheck}.hpp and the autograd parts of
// tensor.hpp: leaves and .grad() accumulation, retain_graph, autograd::grad, grad mode guards,
// views, in-place rules and version counters, graph lifetime, custom functions, gradcheck.
// Expected values come from calculus (derivatives written out by hand).
#include "support/errors.hpp"

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <any>
#include <memory>
#include <thread>
#include <string>
#include <vector>

namespace em = ember;
using ember_test::error_of;
using ember_test::message_of;
namespace ag = ember::autograd;

namespace {

std::vector<double> vals(const em::tensor<double>& t) {
  std::vector<double> v;
  const auto c = t.contiguous();
  for (std::int64_t i = 0; i < c.numel(); ++i) v.push_back(c.data()[i]);
  return v;
}

em::tensor<double> vec(std::vector<double> v) {
  const auto n = static_cast<std::int64_t>(v.size());
  return em::from_vector<double>(v, {n});
}

}  // namespace

TEST_CASE("leaves accumulate gradients; non-leaves record grad_fn", "[autograd]") {
  auto x = vec({1, 2, 3}).requires_grad_();
  CHECK(x.requires_grad());
  CHECK(x.is_leaf());
  CHECK_FALSE(x.grad().defined());
  auto y = em::sum(x * x);
  CHECK_FALSE(y.is_leaf());
  CHECK(y.requires_grad());
  CHECK(y.grad_fn_name() == "sum_backward");
  y.backward();
  CHECK(vals(x.grad()) == std::vector<double>{2, 4, 6});
  em::sum(3.0 * x).backward();  // accumulates
  CHECK(vals(x.grad()) == std::vector<double>{5, 7, 9});
  x.set_grad({});
  CHECK_FALSE(x.grad().defined());
  // tensors that do not require grad are leaves without history
  auto c = vec({1, 2});
  CHECK(c.is_leaf());
  CHECK_FALSE(em::tensor<double>(c * 2.0).requires_grad());
}

TEST_CASE("retain_graph allows a second backward; without it, a clear error", "[autograd]") {
  auto x = vec({0.5, -1}).requires_grad_();
  auto y = em::sum(em::exp(x) * x);
  y.backward(em::tensor<double>(), {.retain_graph = true});
  y.backward();
  for (std::size_t i = 0; i < 2; ++i) {
    const double xi = vals(x)[i];
    CHECK(vals(x.grad())[i] == Approx(2 * (std::exp(xi) + xi * std::exp(xi))));
  }
  CHECK(error_of([&] { y.backward(); }) == em::errc::autograd);
  CHECK(message_of([&] { y.backward(); }).find("second time") != std::string::npos);
}

TEST_CASE("backward argument checks", "[autograd]") {
  auto x = vec({1, 2, 3}).requires_grad_();
  em::tensor<double> y = x * 2.0;
  CHECK(error_of([&] { y.backward(); }) == em::errc::autograd);  // not one element
  CHECK(error_of([&] { y.backward(vec({1, 1})); }) == em::errc::shape);
  CHECK(error_of([&] { vec({1}).backward(); }) == em::errc::autograd);  // no grad
  CHECK(error_of([] { em::arange<std::int64_t>(0, 3).requires_grad_(); }) == em::errc::dtype);
  CHECK(error_of([&] { y.requires_grad_(false); }) == em::errc::autograd);
  y.backward(vec({1, 0, 2}));
  CHECK(vals(x.grad()) == std::vector<double>{2, 0, 4});
}

TEST_CASE("autograd::grad returns gradients without touching .grad()", "[autograd]") {
  auto x = vec({1, 2}).requires_grad_();
  auto w = vec({3, 4}).requires_grad_();
  auto unused = vec({5}).requires_grad_();
  auto y = em::sum(x * w);
  auto g = ag::grad({y}, {x, w}, {}, {.retain_graph = true});
  REQUIRE(g.size() == 2);
  CHECK(vals(g[0]) == std::vector<double>{3, 4});
  CHECK(vals(g[1]) == std::vector<double>{1, 2});
  CHECK_FALSE(x.grad().defined());
  CHECK(error_of([&] { ag::grad({y}, {unused}, {}, {.retain_graph = true}); }) ==
        em::errc::autograd);
  auto gu = ag::grad({y}, {unused}, {}, {.retain_graph = true, .allow_unused = true});
  CHECK_FALSE(gu[0].defined());
  // gradient with respect to a non-leaf
  em::tensor<double> h = x * 2.0;
  auto z = em::sum(h * h);
  auto gh = ag::grad({z}, {h});
  CHECK(vals(gh[0]) == std::vector<double>{4, 8});
}

TEST_CASE("create_graph: second derivatives through autograd::grad", "[autograd]") {
  auto x = vec({0.3, -0.7, 1.1}).requires_grad_();
  auto y = em::sum(em::tanh(x) * x);
  auto g = ag::grad({y}, {x}, {}, {.create_graph = true});
  REQUIRE(g[0].requires_grad());
  em::sum(g[0]).backward();
  for (std::size_t i = 0; i < 3; ++i) {
    const double t = std::tanh(vals(x)[i]), s = 1 - t * t, xi = vals(x)[i];
    // d/dx (tanh x + x sech^2 x) = 2 sech^2 x - 2 x tanh x sech^2 x
    CHECK(vals(x.grad())[i] == Approx(2 * s - 2 * xi * t * s).epsilon(1e-12));
  }
}

TEST_CASE("no_grad_guard and enable_grad_guard are scoped and per thread", "[autograd]") {
  auto x = vec({1, 2}).requires_grad_();
  {
    em::no_grad_guard ng;
    CHECK_FALSE(em::is_grad_enabled());
    em::tensor<double> y = x * 2.0;
    CHECK_FALSE(y.requires_grad());
    {
      em::enable_grad_guard eg;
      em::tensor<double> z = x * 2.0;
      CHECK(z.requires_grad());
    }
    CHECK_FALSE(em::is_grad_enabled());
  }
  CHECK(em::is_grad_enabled());
  bool other = false;
  {
    em::no_grad_guard ng;
    std::thread t([&] { other = em::is_grad_enabled(); });
    t.join();
  }
  CHECK(other);
}

TEST_CASE("detach cuts the graph; retain_grad keeps a non-leaf's gradient", "[autograd]") {
  auto x = vec({1, 2}).requires_grad_();
  em::tensor<double> h = x * 3.0;
  h.retain_grad();
  auto d = h.detach();
  CHECK_FALSE(d.requires_grad());
  auto y = em::sum(h * h + d);
  y.backward();
  CHECK(vals(h.grad()) == std::vector<double>{6, 12});
  CHECK(vals(x.grad()) == std::vector<double>{18, 36});
}

TEST_CASE("views are differentiable", "[autograd][views]") {
  auto x = em::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
  auto w = em::from_vector<double>({1, 10, 100}, {3});
  auto y = em::sum(x.t().slice(0, 1, 3) * x.t().slice(0, 0, 2));  // mixes columns
  CHECK(x.t().grad_fn_name() == "transpose_backward");
  y.backward();
  // d/dx sum(x[:,1]*x[:,0] + x[:,2]*x[:,1])
  CHECK(vals(x.grad()) == std::vector<double>{2, 4, 2, 5, 10, 5});
  const auto f = [&](const std::vector<em::tensor<double>>& in) {
    const auto& a = in[0];
    return em::sum(a.permute({1, 0}).reshape({3, 2}).select(0, 1) * 2.0) +
           em::sum(a.unsqueeze(0).expand({4, 2, 3}) * w) + em::sum(a.view({6}).slice(0, 0, 6, 2)) +
           em::sum(a.flatten().narrow(0, 1, 3) * a.squeeze().transpose(0, 1).flatten().narrow(0, 2, 3));
  };
  CHECK(ag::gradcheck(f, {x}, {.raise = true}));
  CHECK(error_of([&] { x.as_strided({2}, {1}, 0); }) == em::errc::not_implemented);
}

TEST_CASE("in-place rules: leaves refuse, non-leaves rebase, saved tensors are checked",
          "[autograd][inplace]") {
  auto x = vec({1, 2, 3}).requires_grad_();
  CHECK(error_of([&] { x += 1.0; }) == em::errc::autograd);
  CHECK(error_of([&] { x.fill_(0.0); }) == em::errc::autograd);
  CHECK(error_of([&] { x.copy_(vec({0, 0, 0})); }) == em::errc::autograd);
  {
    em::no_grad_guard ng;  // as optimizers do
    x -= 0.0;
  }
  // h *= h on a non-leaf: gradient of (2x)^2 through the in-place op
  em::tensor<double> h = x * 2.0;
  h *= h;
  CHECK(h.grad_fn_name() == "mul_backward");
  em::sum(h).backward();
  CHECK(vals(x.grad()) == std::vector<double>{8, 16, 24});
  // writing an expression into a tensor that did not require grad gives it history
  auto buf = em::zeros<double>({3});
  buf.copy_(x * 3.0);
  CHECK(buf.requires_grad());
  x.set_grad({});
  em::sum(buf).backward();
  CHECK(vals(x.grad()) == std::vector<double>{3, 3, 3});
  // a saved tensor modified in place before backward: an error naming the op
  em::tensor<double> s = x * 1.0;
  auto y = em::sum(em::exp(s));
  s.fill_(0.0);
  CHECK(error_of([&] { y.backward(); }) == em::errc::autograd);
  CHECK(message_of([&] { y.backward(); }).find("in-place") != std::string::npos);
  // writes into a view of a tensor that requires grad are refused
  em::tensor<double> base = x * 1.0;
  CHECK(error_of([&] { base.slice(0, 0, 2) += 1.0; }) == em::errc::autograd);
}

TEST_CASE("the graph is freed with its outputs", "[autograd][lifetime]") {
  auto x = vec({1, 2}).requires_grad_();
  std::weak_ptr<ag::node> fn;
  {
    em::tensor<double> y = em::exp(x) * 2.0;
    fn = y.grad_fn();
    CHECK_FALSE(fn.expired());
  }
  CHECK(fn.expired());
  // retain_grad registers a weak reference only: no cycle between tensor and node
  {
    em::tensor<double> h = x * 2.0;
    h.retain_grad();
    fn = h.grad_fn();
  }
  CHECK(fn.expired());
  // nodes that save their output keep it without its history (no output -> node -> output
  // cycle), with or without a backward run
  const auto m = em::from_vector<double>({1, 2, 3, 4}, {2, 2}).requires_grad_();
  const auto freed = [&](auto make, bool run_backward) {
    std::weak_ptr<ag::node> w;
    {
      em::tensor<double> y = make();
      w = y.grad_fn();
      if (run_backward) em::sum(y).backward({}, {.retain_graph = true});
    }
    return w.expired();
  };
  for (const bool run : {false, true}) {
    CHECK(freed([&] { return em::prod(m, {1}); }, run));
    CHECK(freed([&] { return em::amax(m, {0}); }, run));
    CHECK(freed([&] { return em::softmax(m, 1); }, run));
    CHECK(freed([&] { return em::log_softmax(m, 0); }, run));
    CHECK(freed([&] { return em::cumprod(m, 1); }, run));
  }
}

namespace {
struct cube : em::autograd::function<cube> {
  static constexpr const char* name = "cube";
  static em::tensor<double> forward(em::autograd::context& ctx, const em::tensor<double>& x,
                                    double scale) {
    ctx.save_for_backward({x});
    ctx.saved_data["scale"] = scale;
    return scale * x * x * x;
  }
  static std::vector<em::tensor<double>> backward(em::autograd::context& ctx,
                                                  const std::vector<em::tensor<double>>& g) {
    auto x = ctx.saved<double>()[0];
    const double scale = std::any_cast<double>(ctx.saved_data["scale"]);
    CHECK(ctx.needs_input_grad(0));
    return {3.0 * scale * x * x * g[0]};
  }
};
struct wrong : em::autograd::function<wrong> {
  static em::tensor<double> forward(em::autograd::context&, const em::tensor<double>& x) {
    return x * x;
  }
  static std::vector<em::tensor<double>> backward(em::autograd::context&,
                                                  const std::vector<em::tensor<double>>& g) {
    return {g[0] * 3.0};  // wrong on purpose
  }
};
struct two_grads : em::autograd::function<two_grads> {
  static em::tensor<double> forward(em::autograd::context&, const em::tensor<double>& x) {
    return x * 1.0;
  }
  static std::vector<em::tensor<double>> backward(em::autograd::context&,
                                                  const std::vector<em::tensor<double>>& g) {
    return {g[0], g[0]};
  }
};
}  // namespace

TEST_CASE("custom functions: forward, backward, saved tensors and data", "[autograd][function]") {
  auto x = vec({1, -2}).requires_grad_();
  auto y = cube::apply(x, 2.0);
  CHECK(y.grad_fn_name() == "cube_backward");
  CHECK(vals(y) == std::vector<double>{2, -16});
  em::sum(y).backward();
  CHECK(vals(x.grad()) == std::vector<double>{6, 24});
  CHECK(ag::gradcheck([](const std::vector<em::tensor<double>>& in) {
    return em::sum(cube::apply(in[0], 0.5) * in[0]);
  }, {x}, {.raise = true}));
  // wrong backward: gradcheck reports the worst element
  CHECK_FALSE(ag::gradcheck([](const std::vector<em::tensor<double>>& in) {
    return wrong::apply(in[0]);
  }, {x}, {.quiet = true}));
  const auto msg = message_of([&] {
    ag::gradcheck([](const std::vector<em::tensor<double>>& in) { return wrong::apply(in[0]); },
                  {x}, {.raise = true});
  });
  CHECK(msg.find("Jacobian mismatch") != std::string::npos);
  CHECK(error_of([&] { em::sum(two_grads::apply(x)).backward(); }) == em::errc::autograd);
  // saved input modified in place
  em::tensor<double> h = x * 1.0;
  auto z = em::sum(cube::apply(h, 1.0));
  h.fill_(0.0);
  CHECK(error_of([&] { z.backward(); }) == em::errc::autograd);
  // no recording when nothing requires grad
  CHECK_FALSE(cube::apply(vec({1.0}), 1.0).requires_grad());
}

TEST_CASE("reduction gradients: ties, zeros, keepdim", "[autograd][reduce]") {
  auto x = vec({1, 3, 3, 2}).requires_grad_();
  em::amax(x).backward();
  CHECK(vals(x.grad()) == std::vector<double>{0, 0.5, 0.5, 0});  // ties share evenly
  x.set_grad({});
  em::amin(x).backward();
  CHECK(vals(x.grad()) == std::vector<double>{1, 0, 0, 0});
  auto z = vec({2, 0, 3}).requires_grad_();
  em::prod(z).backward();
  CHECK(vals(z.grad()) == std::vector<double>{0, 6, 0});
  auto zz = vec({2, 0, 0}).requires_grad_();
  em::prod(zz).backward();
  CHECK(vals(zz.grad()) == std::vector<double>{0, 0, 0});
  auto m = em::from_vector<double>({1, 2, 3, 4, 5, 7}, {2, 3}).requires_grad_();
  const auto f = [](const std::vector<em::tensor<double>>& in) {
    const auto& a = in[0];
    return std::vector<em::tensor<double>>{
        em::sum(a, 1, true), em::mean(a, 0), em::prod(a, {0, 1}), em::amax(a * a, 1),
        em::var(a, 1), em::std(a), em::norm(a, 0), em::logsumexp(a, 1, true), em::mean(a),
        em::amin(a, {0}, true), a.sum(), a.mean()};
  };
  CHECK(ag::gradcheck(f, {m}, {.raise = true}));
  CHECK(ag::gradgradcheck(f, {m}, {.raise = true}));
}

TEST_CASE("dtype conversions pass gradients through", "[autograd]") {
  auto x = em::from_vector<float>({1.f, 2.f}, {2}).requires_grad_();
  auto y = em::sum(em::square(x.to<double>()));
  y.backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().dtype() == em::dtype::f32);
  CHECK(x.grad().at({1}) == 4.f);
  auto i = x.to<std::int64_t>();
  CHECK_FALSE(i.requires_grad());
}
