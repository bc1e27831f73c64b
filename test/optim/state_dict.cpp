// Tests of the optimizers' state_dict / load_state_dict (include/ember/optim/optimizer.hpp):
// PyTorch's keys and values after two steps (test/data/optim_extra/optim_state_dict.safetensors,
// from test/tools/gen_optim_extra.py), bit-exact resumption for every optimizer and option set,
// copies in both directions, validation errors, and steps that allocate nothing.
#include "support/errors.hpp"
#include "support/safetensors.hpp"

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace em = ember;
namespace et = ember_test;
namespace F = ember::nn::functional;
using et::error_of;
using et::message_of;

namespace {

const et::st_file& oracle() {
  static const et::st_file f = et::read_safetensors(et::test_data("optim_extra/optim_state_dict.safetensors"));
  return f;
}

/// Same dtype, shape and bytes.
bool same_bits(const em::any_tensor& a, const em::any_tensor& b) {
  if (a.dtype() != b.dtype() || !(a.shape() == b.shape())) return false;
  return a.visit([&](const auto& ta) {
    using E = typename std::decay_t<decltype(ta)>::value_type;
    const auto ca = ta.contiguous(), cb = b.get<E>().contiguous();
    return ca.numel() == 0 || std::memcmp(ca.data(), cb.data(), ca.nbytes()) == 0;
  });
}

/// Same keys in the same order, each with the same bits.
bool same_state_dict(const em::state_dict& a, const em::state_dict& b) {
  if (a.keys() != b.keys()) return false;
  for (const auto& [key, t] : a)
    if (!same_bits(t, b.at(key))) {
      UNSCOPED_INFO("differs: " << key);
      return false;
    }
  return true;
}

em::state_dict deep_copy(const em::state_dict& sd) {
  em::state_dict out;
  for (const auto& entry : sd)  // not a structured binding: the lambda captures the key
    entry.second.visit([&](const auto& typed) { out.insert(entry.first, typed.clone()); });
  out.metadata() = sd.metadata();
  return out;
}

/// The problem of the oracle file: mse_loss(linear(X, w, b), Y); c never gets a gradient.
template <class T>
struct problem {
  em::tensor<T> X = oracle().get<double>("problem.X").template to<T>();
  em::tensor<T> Y = oracle().get<double>("problem.Y").template to<T>();
  em::tensor<T> w = oracle().get<double>("problem.w").template to<T>().requires_grad_();
  em::tensor<T> b = oracle().get<double>("problem.b").template to<T>().requires_grad_();
  em::tensor<T> c = oracle().get<double>("problem.c").template to<T>().requires_grad_();

  template <class Opt>
  void run(Opt& opt, int steps) {
    for (int k = 0; k < steps; ++k) {
      opt.zero_grad();
      F::mse_loss(F::linear(X, w, b), Y).backward();
      opt.step();
    }
  }
  /// A copy of the current parameters, as new leaves.
  problem fork() const {
    problem p;
    p.w = w.detach().clone().requires_grad_();
    p.b = b.detach().clone().requires_grad_();
    p.c = c.detach().clone().requires_grad_();
    return p;
  }
};

/// Two groups, [w] with `defaults` and [b, c] with `group1`.
template <class Opt, class O>
Opt make(problem<typename Opt::value_type>& p, const O& defaults, const O& group1) {
  using T = typename Opt::value_type;
  return Opt(std::vector<em::optim::param_group<T, O>>{{.params = {p.w}}, {.params = {p.b, p.c}, .options = group1}},
             defaults);
}

/// Train 5 steps, save, train 5 more; versus a fresh optimizer (group 1 left at the defaults)
/// on the saved parameters that loads the state_dict and trains 5 steps: the same bits. The
/// saved dict is a copy: neither run changes it. Then a step with state allocates nothing.
template <class Opt, class O>
void check_resume(const char* what, const O& defaults, const O& group1) {
  using T = typename Opt::value_type;
  INFO(what << (std::is_same_v<T, float> ? " (float)" : " (double)"));
  problem<T> a;
  Opt opt = make<Opt>(a, defaults, group1);
  a.run(opt, 5);
  const em::state_dict sd = opt.state_dict();
  const em::state_dict saved = deep_copy(sd);
  problem<T> b = a.fork();
  a.run(opt, 5);

  Opt fresh = make<Opt>(b, defaults, defaults);
  fresh.load_state_dict(sd);
  CHECK(same_state_dict(fresh.state_dict(), saved));
  b.run(fresh, 5);
  CHECK(same_bits(a.w, b.w));
  CHECK(same_bits(a.b, b.b));
  CHECK(same_bits(a.c, b.c));
  CHECK(same_state_dict(opt.state_dict(), fresh.state_dict()));
  CHECK(same_state_dict(sd, saved));

  // Note [Optimizer steps]: each update is fused, in place: no tensor is allocated
  const auto before = em::memory_stats().allocations;
  fresh.step();
  CHECK(em::memory_stats().allocations == before);
}

template <class T>
void check_all_resumes() {
  namespace o = em::optim;
  check_resume<o::sgd<T>>("sgd", o::sgd_options{.lr = 0.1}, o::sgd_options{.lr = 0.05});
  check_resume<o::sgd<T>>("sgd momentum",
                          o::sgd_options{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01},
                          o::sgd_options{.lr = 0.05, .momentum = 0.5, .nesterov = true});
  check_resume<o::sgd<T>>("sgd maximize", o::sgd_options{.lr = 0.01, .momentum = 0.3, .maximize = true},
                          o::sgd_options{.lr = 0.02, .momentum = 0.9, .weight_decay = 0.5});
  check_resume<o::adam<T>>("adam", o::adam_options{.lr = 0.01},
                           o::adam_options{.lr = 0.02, .betas = {0.8, 0.99}, .weight_decay = 0.1});
  check_resume<o::adam<T>>("adam amsgrad", o::adam_options{.lr = 0.01, .amsgrad = true},
                           o::adam_options{.lr = 0.001, .maximize = true});
  check_resume<o::adamw<T>>("adamw", o::adamw_options{.lr = 0.01}, o::adamw_options{.amsgrad = true});
  check_resume<o::rmsprop<T>>("rmsprop", o::rmsprop_options{.lr = 0.01},
                              o::rmsprop_options{.momentum = 0.9, .centered = true});
  check_resume<o::rmsprop<T>>("rmsprop centered",
                              o::rmsprop_options{.lr = 0.01, .weight_decay = 0.1, .centered = true},
                              o::rmsprop_options{.momentum = 0.5, .maximize = true});
  check_resume<o::adagrad<T>>("adagrad",
                              o::adagrad_options{.lr = 0.1, .lr_decay = 0.01, .initial_accumulator_value = 0.1},
                              o::adagrad_options{.lr = 0.05, .weight_decay = 0.1});
}

/// The options of one oracle group: its own keys, else the optimizer's (`fallback`), else
/// PyTorch's defaults (`dflt`), as torch.optim resolves a param_group.
struct json_options {
  const et::json::value& v;
  const et::json::value* fallback = nullptr;
  const et::json::value* find(const char* k) const {
    if (const auto* x = v.find(k)) return x;
    return fallback ? fallback->find(k) : nullptr;
  }
  double num(const char* k, double dflt) const { return find(k) ? find(k)->as_double() : dflt; }
  bool flag(const char* k) const { return find(k) && find(k)->as_bool(); }
  std::array<double, 2> betas() const {
    if (!find("betas")) return {0.9, 0.999};
    return {find("betas")->arr.at(0).as_double(), find("betas")->arr.at(1).as_double()};
  }
};

/// Runs 2 steps of the oracle config `key` with optimizer Opt, options built by `to_options`,
/// and compares the state_dict with PyTorch's: the same keys (PyTorch's foreach, capturable,
/// differentiable and fused flags aside) and values within 1e-12.
template <class Opt, class ToOptions>
void check_against_pytorch(const std::string& key, ToOptions to_options) {
  INFO("optimizer config " << key);
  const et::json::value cfg = et::json::parse(oracle().meta("config." + key));
  problem<double> p;
  Opt opt = make<Opt>(p, to_options(json_options{cfg.at("defaults")}),
                     to_options(json_options{cfg.at("group1"), &cfg.at("defaults")}));
  p.run(opt, 2);
  const em::state_dict sd = opt.state_dict();
  std::set<std::string> want, got;
  std::stringstream keys(oracle().meta("keys." + key));
  for (std::string k; std::getline(keys, k, ',');) want.insert(k);
  for (const auto& k : sd.keys()) got.insert(k);
  if (key == "adagrad") {
    // torch.optim.Adagrad creates every state at construction (step 0, sum = the initial
    // value); ember creates it at the first step, as the other optimizers: c has none yet
    for (const char* k : {"state.2.step", "state.2.sum"}) want.erase(k);
  }
  CHECK(got == want);
  for (const auto& k : want) {
    if (!sd.contains(k)) continue;
    INFO("key " << k);
    const em::any_tensor& t = sd.at(k);
    const et::st_tensor& ref = oracle().at(key + "." + k);
    if (ref.dtype == "F64") {
      REQUIRE(t.dtype() == em::dtype::f64);
      const auto g = t.get<double>().contiguous(), w = oracle().get<double>(key + "." + k);
      REQUIRE(g.shape() == w.shape());
      for (std::int64_t i = 0; i < w.numel(); ++i)
        CHECK(std::abs(g.data()[i] - w.data()[i]) <= 1e-12 * (1 + std::abs(w.data()[i])));
    } else if (ref.dtype == "I64") {
      REQUIRE(t.dtype() == em::dtype::i64);
      const auto g = t.get<std::int64_t>().contiguous(), w = oracle().get<std::int64_t>(key + "." + k);
      REQUIRE(g.shape() == w.shape());
      for (std::int64_t i = 0; i < w.numel(); ++i) CHECK(g.data()[i] == w.data()[i]);
    } else {
      REQUIRE(ref.dtype == "BOOL");
      REQUIRE(t.dtype() == em::dtype::boolean);
      CHECK(t.get<bool>().item() == oracle().get<bool>(key + "." + k).item());
    }
  }
}

}  // namespace

TEST_CASE("optimizer state_dicts have PyTorch's keys and values", "[optim][state_dict][oracle]") {
  namespace o = em::optim;
  auto sgd = [](json_options j) {
    return o::sgd_options{.lr = j.num("lr", -1), .momentum = j.num("momentum", 0),
                          .dampening = j.num("dampening", 0), .weight_decay = j.num("weight_decay", 0),
                          .nesterov = j.flag("nesterov"), .maximize = j.flag("maximize")};
  };
  auto adam = [](json_options j) {
    return o::adam_options{.lr = j.num("lr", 1e-3), .betas = j.betas(), .eps = j.num("eps", 1e-8),
                           .weight_decay = j.num("weight_decay", 0), .amsgrad = j.flag("amsgrad"),
                           .maximize = j.flag("maximize")};
  };
  auto adamw = [](json_options j) {
    return o::adamw_options{.lr = j.num("lr", 1e-3), .betas = j.betas(), .eps = j.num("eps", 1e-8),
                            .weight_decay = j.num("weight_decay", 1e-2), .amsgrad = j.flag("amsgrad"),
                            .maximize = j.flag("maximize")};
  };
  auto rmsprop = [](json_options j) {
    return o::rmsprop_options{.lr = j.num("lr", 1e-2), .alpha = j.num("alpha", 0.99), .eps = j.num("eps", 1e-8),
                              .weight_decay = j.num("weight_decay", 0), .momentum = j.num("momentum", 0),
                              .centered = j.flag("centered"), .maximize = j.flag("maximize")};
  };
  auto adagrad = [](json_options j) {
    return o::adagrad_options{.lr = j.num("lr", 1e-2), .lr_decay = j.num("lr_decay", 0),
                              .weight_decay = j.num("weight_decay", 0),
                              .initial_accumulator_value = j.num("initial_accumulator_value", 0),
                              .eps = j.num("eps", 1e-10), .maximize = j.flag("maximize")};
  };
  check_against_pytorch<o::sgd<double>>("sgd", sgd);
  check_against_pytorch<o::sgd<double>>("sgd_momentum", sgd);
  check_against_pytorch<o::adam<double>>("adam", adam);
  check_against_pytorch<o::adam<double>>("adam_amsgrad", adam);
  check_against_pytorch<o::adamw<double>>("adamw", adamw);
  check_against_pytorch<o::rmsprop<double>>("rmsprop", rmsprop);
  check_against_pytorch<o::rmsprop<double>>("rmsprop_centered", rmsprop);
  check_against_pytorch<o::adagrad<double>>("adagrad", adagrad);
}

TEST_CASE("optimizers resume bit for bit from a state_dict", "[optim][state_dict]") {
  check_all_resumes<double>();
  check_all_resumes<float>();
}

TEST_CASE("optimizer state_dict: keys, kinds and copies", "[optim][state_dict]") {
  auto w = em::from_vector<double>({1, 2, 3, 4}, {2, 2}).requires_grad_();
  auto b = em::from_vector<double>({0.5, -0.5}, {2}).requires_grad_();
  em::optim::adam<double> opt({w, b}, {.lr = 0.1, .amsgrad = true});
  em::sum(em::square(w) + 0.0).backward();  // b gets no gradient: no state
  opt.step();
  const em::state_dict sd = opt.state_dict();
  CHECK(sd.keys() == std::vector<std::string>{
                         "state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq", "state.0.max_exp_avg_sq",
                         "param_groups.0.lr", "param_groups.0.betas", "param_groups.0.eps",
                         "param_groups.0.weight_decay", "param_groups.0.amsgrad", "param_groups.0.maximize",
                         "param_groups.0.params"});
  CHECK(sd.metadata().at("ember.optimizer") == "adam");
  CHECK(sd.get<std::int64_t>("state.0.step").dim() == 0);
  CHECK(sd.get<std::int64_t>("state.0.step").item() == 1);
  CHECK(sd.get<double>("state.0.exp_avg").shape() == em::shape{2, 2});
  CHECK(sd.get<double>("param_groups.0.lr").item() == 0.1);
  CHECK(sd.get<bool>("param_groups.0.amsgrad").item());
  CHECK(sd.get<double>("param_groups.0.betas").shape() == em::shape{2});
  const auto ids = sd.get<std::int64_t>("param_groups.0.params");
  CHECK((ids.numel() == 2 && ids.at({0}) == 0 && ids.at({1}) == 1));
  // the dict holds copies: stepping again leaves it alone, and loading does not share with it
  const double m0 = sd.get<double>("state.0.exp_avg").at({0, 0});
  opt.step();
  CHECK(sd.get<double>("state.0.exp_avg").at({0, 0}) == m0);
  opt.load_state_dict(sd);
  CHECK_FALSE(opt.param_groups()[0].state[0]->exp_avg.is_same(sd.get<double>("state.0.exp_avg")));
  CHECK(opt.param_groups()[0].state[0]->step == 1);
  CHECK_FALSE(opt.param_groups()[0].state[1].has_value());
  // an optimizer state in another floating type loads converted; a float step count too
  em::state_dict converted = sd;
  converted.insert("state.0.exp_avg", sd.get<double>("state.0.exp_avg").to<float>());
  converted.insert("state.0.step", em::full<float>({}, 7.f));
  opt.load_state_dict(converted);
  CHECK(opt.param_groups()[0].state[0]->step == 7);
  // initial_lr (set by schedulers) is saved and loaded with the group
  opt.param_groups()[0].initial_lr = 0.25;
  const em::state_dict with_initial = opt.state_dict();
  CHECK(with_initial.get<double>("param_groups.0.initial_lr").item() == 0.25);
  opt.param_groups()[0].initial_lr.reset();
  opt.load_state_dict(with_initial);
  CHECK(opt.param_groups()[0].initial_lr == 0.25);
}

TEST_CASE("optimizer load_state_dict reports every problem at once and changes nothing",
          "[optim][state_dict][errors]") {
  auto w = em::from_vector<double>({1, 2, 3, 4}, {2, 2}).requires_grad_();
  auto b = em::from_vector<double>({0.5, -0.5}, {2}).requires_grad_();
  em::optim::sgd<double> opt({{.params = {w}}, {.params = {b}}}, {.lr = 0.1, .momentum = 0.9});
  em::sum(em::square(w) + b * 1.0).backward();
  opt.step();
  const em::state_dict good = opt.state_dict();
  const em::state_dict before = deep_copy(good);

  em::state_dict bad = good;
  bad.insert("state.0.momentum_buffer", em::zeros<double>({4}));      // wrong shape
  bad.erase("state.1.momentum_buffer");                                // missing (momentum 0.9)
  bad.insert("state.1.exp_avg", em::zeros<double>({2}));               // not an sgd buffer
  bad.insert("param_groups.1.nesterov", em::full<double>({}, 1.0));    // a bool stored as f64
  bad.erase("param_groups.0.dampening");                               // missing option
  bad.insert("param_groups.0.betas", em::zeros<double>({2}));          // unknown option
  bad.insert("param_groups.1.lr", em::full<double>({}, -1.0));         // invalid value
  bad.insert("extra", em::zeros<double>({1}));                         // not a key form
  const std::string msg = message_of([&] { opt.load_state_dict(bad); });
  INFO(msg);
  CHECK(error_of([&] { opt.load_state_dict(bad); }) == em::errc::value);
  for (const char* part : {"8 problems", "group 1: [ember.value] sgd: lr is required", "'state.0.momentum_buffer' has shape (4), its parameter (2,2)",
                           "missing key 'state.1.momentum_buffer'", "unexpected key 'state.1.exp_avg'",
                           "'param_groups.1.nesterov' must be a 0-d bool tensor",
                           "missing key 'param_groups.0.dampening'",
                           "unexpected key 'param_groups.0.betas'", "unexpected key 'extra'"})
  {
    INFO("expected in the message: " << part);
    CHECK(msg.find(part) != std::string::npos);
  }
  CHECK(same_state_dict(opt.state_dict(), before));

  // groups: count and sizes; state for a parameter no group lists; another optimizer's dict
  em::optim::sgd<double> one({w, b}, {.lr = 0.1, .momentum = 0.9});
  const std::string m2 = message_of([&] { one.load_state_dict(good); });
  INFO(m2);
  CHECK(m2.find("group 0 has 1 parameters in the state_dict, 2 in the optimizer") != std::string::npos);
  CHECK(m2.find("it has 2 parameter groups, the optimizer 1") != std::string::npos);
  CHECK(m2.find("state for parameter 0") != std::string::npos);
  em::optim::adam<double> adam({{.params = {w}}, {.params = {b}}});
  const std::string m3 = message_of([&] { adam.load_state_dict(good); });
  CHECK(m3.find("it was saved by a sgd optimizer") != std::string::npos);
  CHECK(m3.find("missing key 'param_groups.0.betas'") != std::string::npos);
}
