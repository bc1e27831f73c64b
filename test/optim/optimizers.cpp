// Tests of include/ember/optim/: the trajectories of torch.optim (test/data/oracle/optim, 5
// steps of every option set, float64 within 1e-10 and float32 within 1e-5 relative), adagrad
// against its formula, parameter groups, zero_grad, closures, and bad options.
#include "support/errors.hpp"
#include "support/safetensors.hpp"

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace em = ember;
using ember_test::error_of;
namespace et = ember_test;
namespace F = ember::nn::functional;
using et::json::value;

namespace {

template <class T>
constexpr double tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;

/// Worst |got - want| / (1 + |want|) over the elements (infinity on a shape mismatch).
template <class T>
double rel_err(const em::tensor<T>& got, const em::tensor<T>& want) {
  if (!got.defined() || !(got.shape() == want.shape())) return INFINITY;
  const auto g = got.contiguous(), w = want.contiguous();
  double worst = 0;
  for (std::int64_t i = 0; i < w.numel(); ++i) {
    const double wi = w.data()[i];
    worst = std::max(worst, std::abs(static_cast<double>(g.data()[i]) - wi) / (1 + std::abs(wi)));
  }
  return worst;
}

/// The optimizer of an oracle file, from its resolved hyperparameters.
template <class T>
struct any_optimizer {
  std::function<void()> step, zero_grad;
  std::function<em::tensor<T>(int param, const std::string& key)> state;
};

template <class T, class Opt>
any_optimizer<T> wrap(std::shared_ptr<Opt> opt) {
  any_optimizer<T> a;
  a.step = [opt] { opt->step(); };
  a.zero_grad = [opt] { opt->zero_grad(); };
  a.state = [opt](int i, const std::string& key) -> em::tensor<T> {
    const auto& st = opt->param_groups()[0].state[static_cast<std::size_t>(i)];
    if (!st) return {};
    if constexpr (requires { st->exp_avg; }) {
      if (key == "exp_avg") return st->exp_avg;
      if (key == "exp_avg_sq") return st->exp_avg_sq;
      if (key == "max_exp_avg_sq") return st->max_exp_avg_sq;
    } else if constexpr (requires { st->square_avg; }) {
      if (key == "square_avg") return st->square_avg;
      if (key == "momentum_buffer") return st->momentum_buffer;
      if (key == "grad_avg") return st->grad_avg;
    } else if constexpr (requires { st->momentum_buffer; }) {
      if (key == "momentum_buffer") return st->momentum_buffer;
    }
    return {};
  };
  return a;
}

template <class T>
any_optimizer<T> make_optimizer(const std::string& kind, const value& h, std::vector<em::tensor<T>> params) {
  auto num = [&](const char* k) { return h.at(k).as_double(); };
  if (kind == "torch.optim.SGD")
    return wrap<T>(std::make_shared<em::optim::sgd<T>>(
        params, em::optim::sgd_options{.lr = num("lr"), .momentum = num("momentum"),
                                       .dampening = num("dampening"), .weight_decay = num("weight_decay"),
                                       .nesterov = h.at("nesterov").as_bool(),
                                       .maximize = h.at("maximize").as_bool()}));
  if (kind == "torch.optim.Adam" || kind == "torch.optim.AdamW") {
    const auto& b = h.at("betas").arr;
    const std::array<double, 2> betas{b.at(0).as_double(), b.at(1).as_double()};
    if (kind == "torch.optim.Adam")
      return wrap<T>(std::make_shared<em::optim::adam<T>>(
          params, em::optim::adam_options{.lr = num("lr"), .betas = betas, .eps = num("eps"),
                                          .weight_decay = num("weight_decay"),
                                          .amsgrad = h.at("amsgrad").as_bool(),
                                          .maximize = h.at("maximize").as_bool()}));
    return wrap<T>(std::make_shared<em::optim::adamw<T>>(
        params, em::optim::adamw_options{.lr = num("lr"), .betas = betas, .eps = num("eps"),
                                         .weight_decay = num("weight_decay"),
                                         .amsgrad = h.at("amsgrad").as_bool(),
                                         .maximize = h.at("maximize").as_bool()}));
  }
  REQUIRE(kind == "torch.optim.RMSprop");
  return wrap<T>(std::make_shared<em::optim::rmsprop<T>>(
      params, em::optim::rmsprop_options{.lr = num("lr"), .alpha = num("alpha"), .eps = num("eps"),
                                         .weight_decay = num("weight_decay"), .momentum = num("momentum"),
                                         .centered = h.at("centered").as_bool(),
                                         .maximize = h.at("maximize").as_bool()}));
}

template <class T>
void run_trajectory(const std::string& name) {
  const std::string dir = std::is_same_v<T, float> ? "oracle/optim/f32/" : "oracle/optim/";
  const et::st_file f = et::read_safetensors(et::test_data(dir + name + ".safetensors"));
  INFO("optimizer oracle " << name << (std::is_same_v<T, float> ? " f32" : " f64"));
  const value h = et::json::parse(f.meta("hyperparameters"));
  const int steps = std::stoi(f.meta("steps"));
  std::vector<std::string> keys;
  {
    std::string s = f.meta("state_keys");
    for (std::size_t p = 0; !s.empty() && s != "-";) {
      const std::size_t q = s.find(',', p);
      keys.push_back(s.substr(p, q == std::string::npos ? q : q - p));
      if (q == std::string::npos) break;
      p = q + 1;
    }
  }
  const auto X = f.get<T>("problem.X"), Y = f.get<T>("problem.Y");
  auto w = f.get<T>("weight.param.0").clone().requires_grad_();
  auto b = f.get<T>("bias.param.0").clone().requires_grad_();
  auto opt = make_optimizer<T>(f.meta("optimizer"), h, {w, b});
  const char* names[] = {"weight", "bias"};
  for (int k = 0; k <= steps; ++k) {
    const std::string ks = std::to_string(k);
    opt.zero_grad();
    const auto loss = F::mse_loss(F::linear(X, w, b), Y);
    CHECK(rel_err(loss, f.get<T>("loss." + ks)) <= tol<T>);
    if (k == steps) break;
    loss.backward();
    CHECK(rel_err(w.grad(), f.get<T>("weight.grad." + ks)) <= tol<T>);
    CHECK(rel_err(b.grad(), f.get<T>("bias.grad." + ks)) <= tol<T>);
    opt.step();
    const std::string next = std::to_string(k + 1);
    CHECK(rel_err(w, f.get<T>("weight.param." + next)) <= tol<T>);
    CHECK(rel_err(b, f.get<T>("bias.param." + next)) <= tol<T>);
    for (int i = 0; i < 2; ++i)
      for (const auto& key : keys) {
        INFO("state " << names[i] << "." << key << " after step " << next);
        CHECK(rel_err(opt.state(i, key), f.get<T>(std::string(names[i]) + ".state." + key + "." + next)) <= tol<T>);
      }
  }
}

const std::vector<std::string> oracle_runs = {
    "sgd", "sgd_momentum", "sgd_nesterov", "sgd_weight_decay", "sgd_dampening",
    "adam", "adam_weight_decay", "adam_amsgrad", "adamw", "adamw_amsgrad",
    "rmsprop", "rmsprop_momentum", "rmsprop_centered", "rmsprop_weight_decay"};

}  // namespace

TEMPLATE_TEST_CASE("optimizers follow torch.optim's trajectories", "[optim][oracle]", double, float) {
  for (const auto& run : oracle_runs) run_trajectory<TestType>(run);
}

TEST_CASE("adagrad follows its formula; maximize ascends", "[optim]") {
  auto p = em::from_vector<double>({1.0, -2.0}, {2}).requires_grad_();
  em::optim::adagrad<double> opt({p}, {.lr = 0.5, .lr_decay = 0.1, .weight_decay = 0.2,
                               .initial_accumulator_value = 0.3});
  double x[2] = {1.0, -2.0}, sum[2] = {0.3, 0.3};
  for (int t = 1; t <= 3; ++t) {
    opt.zero_grad();
    em::sum(em::square(p)).backward();  // grad 2p
    opt.step();
    const double clr = 0.5 / (1 + (t - 1) * 0.1);
    for (int i = 0; i < 2; ++i) {
      const double d = 2 * x[i] + 0.2 * x[i];
      sum[i] += d * d;
      x[i] -= clr * d / (std::sqrt(sum[i]) + 1e-10);
    }
    CHECK(p.at({0}) == Approx(x[0]).epsilon(1e-14));
    CHECK(p.at({1}) == Approx(x[1]).epsilon(1e-14));
  }
  // maximize: the same step with the gradient negated moves uphill
  auto q = em::from_vector<double>({1.0}, {1}).requires_grad_();
  em::optim::sgd<double> up({q}, {.lr = 0.1, .maximize = true});
  em::sum(em::square(q)).backward();
  up.step();
  CHECK(q.at({0}) == Approx(1.2));
}

TEST_CASE("parameter groups, zero_grad, closures, skipped parameters", "[optim]") {
  auto a = em::from_vector<double>({1.0}, {1}).requires_grad_();
  auto b = em::from_vector<double>({1.0}, {1}).requires_grad_();
  auto c = em::from_vector<double>({1.0}, {1}).requires_grad_();
  em::optim::sgd<double> opt({{.params = {a}}, {.params = {b}, .options = em::optim::sgd_options{.lr = 1.0}}},
                     {.lr = 0.1});
  CHECK(opt.param_groups().size() == 2);
  CHECK(opt.param_groups()[1].options.lr == 1.0);
  const auto loss = opt.step([&] {
    opt.zero_grad();
    auto l = em::sum(a * 2.0 + b * 3.0);
    l.backward();
    return l;
  });
  CHECK(loss.item() == 5.0);
  CHECK(a.at({0}) == Approx(1.0 - 0.1 * 2));
  CHECK(b.at({0}) == Approx(1.0 - 1.0 * 3));
  // a parameter without a gradient is skipped; zero_grad(false) keeps zeroed buffers
  opt.add_param_group({.params = {c}});
  em::sum(a * 1.0).backward();
  opt.zero_grad(false);
  REQUIRE(a.grad().defined());
  CHECK(a.grad().at({0}) == 0.0);
  opt.step();
  CHECK(c.at({0}) == 1.0);
  CHECK(opt.param_groups()[2].state[0] == std::nullopt);
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
}

TEST_CASE("optimizers: bad options and parameters are clear errors", "[optim][errors]") {
  auto p = em::zeros<double>({2}).requires_grad_();
  CHECK(error_of([&] { em::optim::sgd o({p}, {}); }) == em::errc::value);  // lr is required
  CHECK(error_of([&] { em::optim::sgd o({p}, {.lr = 0.1, .nesterov = true}); }) == em::errc::value);
  CHECK(error_of([&] { em::optim::adam o({p}, {.lr = -1.0}); }) == em::errc::value);
  CHECK(error_of([&] { em::optim::adam o({p}, {.betas = {0.9, 1.0}}); }) == em::errc::value);
  CHECK(error_of([&] { em::optim::rmsprop o({p}, {.eps = -1.0}); }) == em::errc::value);
  CHECK(error_of([&] { em::optim::adagrad o({p}, {.lr_decay = -0.5}); }) == em::errc::value);
  CHECK(error_of([&] { em::optim::adam o({p, p}); }) == em::errc::value);
  const auto non_leaf = p * 2.0;
  CHECK(error_of([&] { em::optim::adam o({em::tensor<double>(non_leaf)}); }) == em::errc::autograd);
  CHECK(error_of([&] {
    em::optim::adam<double> o({{.params = {p}}, {.params = {p}}});
  }) == em::errc::value);
  CHECK(error_of([&] { em::optim::adam<double> o(std::vector<em::tensor<double>>{}); }) == em::errc::value);
}
