// Tests of the lr schedulers (include/ember/optim/lr_scheduler.hpp, one_cycle_lr.hpp,
// reduce_lr_on_plateau.hpp) against torch.optim.lr_scheduler 1.13
// (test/data/optim_extra/lr_scheduler.safetensors, from test/tools/gen_optim_extra.py): the lr
// (and momentum) sequences of every case, resumption from state_dicts mid-schedule, SGD with
// StepLR on a quadratic, and errors.
#include "support/errors.hpp"
#include "support/safetensors.hpp"

#include <ember/ember.hpp>
#include <ember/optim/lr_scheduler.hpp>
#include <ember/optim/one_cycle_lr.hpp>
#include <ember/optim/reduce_lr_on_plateau.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace em = ember;
namespace et = ember_test;
namespace eo = ember::optim;
using et::error_of;
using et::message_of;
using et::json::value;

namespace {

const et::st_file& oracle() {
  static const et::st_file f = et::read_safetensors(et::test_data("optim_extra/lr_scheduler.safetensors"));
  return f;
}

bool close(double got, double want) { return std::abs(got - want) <= 1e-12 * (1 + std::abs(want)); }

/// A scheduler of either family behind one interface.
struct any_scheduler {
  std::unique_ptr<eo::lr_scheduler> epoch;
  std::unique_ptr<eo::reduce_lr_on_plateau> plateau;
  void step(double metric) {
    if (epoch) epoch->step();
    else plateau->step(metric);
  }
  const std::vector<double>& get_last_lr() const { return epoch ? epoch->get_last_lr() : plateau->get_last_lr(); }
  em::state_dict state_dict() const { return epoch ? epoch->state_dict() : plateau->state_dict(); }
  void load_state_dict(const em::state_dict& sd) {
    if (epoch) epoch->load_state_dict(sd);
    else plateau->load_state_dict(sd);
  }
};

eo::per_group per_group_of(const value& v) {
  if (!v.is_array()) return v.as_double();
  std::vector<double> out;
  for (const auto& x : v.arr) out.push_back(x.as_double());
  return out;
}

template <class Opt>
any_scheduler make_scheduler(const std::string& kind, const value& o, Opt& opt) {
  auto num = [&](const char* k, double d) { return o.find(k) ? o.at(k).as_double() : d; };
  auto integer = [&](const char* k, std::int64_t d) { return o.find(k) ? o.at(k).as_int() : d; };
  auto flag = [&](const char* k, bool d) { return o.find(k) ? o.at(k).as_bool() : d; };
  auto optional_int = [&](const char* k) {
    return o.find(k) ? std::optional<std::int64_t>(o.at(k).as_int()) : std::nullopt;
  };
  auto groups = [&](const char* k, double d) { return o.find(k) ? per_group_of(o.at(k)) : eo::per_group(d); };
  const std::int64_t last_epoch = integer("last_epoch", -1);
  any_scheduler s;
  if (kind == "step_lr") {
    s.epoch = std::make_unique<eo::step_lr>(
        opt, eo::step_lr_options{.step_size = integer("step_size", 0), .gamma = num("gamma", 0.1),
                                 .last_epoch = last_epoch});
  } else if (kind == "multi_step_lr") {
    s.epoch = std::make_unique<eo::multi_step_lr>(
        opt, eo::multi_step_lr_options{.milestones = o.at("milestones").as_int_list(),
                                       .gamma = num("gamma", 0.1), .last_epoch = last_epoch});
  } else if (kind == "exponential_lr") {
    s.epoch = std::make_unique<eo::exponential_lr>(
        opt, eo::exponential_lr_options{.gamma = num("gamma", 0), .last_epoch = last_epoch});
  } else if (kind == "cosine_annealing_lr") {
    s.epoch = std::make_unique<eo::cosine_annealing_lr>(
        opt, eo::cosine_annealing_lr_options{.t_max = integer("t_max", 0), .eta_min = num("eta_min", 0),
                                             .last_epoch = last_epoch});
  } else if (kind == "one_cycle_lr") {
    const bool linear = o.find("anneal_strategy") && o.at("anneal_strategy").as_string() == "linear";
    s.epoch = std::make_unique<eo::one_cycle_lr>(
        opt, eo::one_cycle_lr_options{
                 .max_lr = per_group_of(o.at("max_lr")), .total_steps = optional_int("total_steps"),
                 .epochs = optional_int("epochs"), .steps_per_epoch = optional_int("steps_per_epoch"),
                 .pct_start = num("pct_start", 0.3),
                 .anneal_strategy = linear ? eo::anneal::linear : eo::anneal::cos,
                 .cycle_momentum = flag("cycle_momentum", true),
                 .base_momentum = groups("base_momentum", 0.85),
                 .max_momentum = groups("max_momentum", 0.95), .div_factor = num("div_factor", 25),
                 .final_div_factor = num("final_div_factor", 1e4),
                 .three_phase = flag("three_phase", false), .last_epoch = last_epoch});
  } else {
    REQUIRE(kind == "reduce_lr_on_plateau");
    const bool max = o.find("mode") && o.at("mode").as_string() == "max";
    const bool abs = o.find("threshold_mode") && o.at("threshold_mode").as_string() == "abs";
    s.plateau = std::make_unique<eo::reduce_lr_on_plateau>(
        opt, eo::reduce_lr_on_plateau_options{
                 .mode = max ? eo::plateau_mode::max : eo::plateau_mode::min,
                 .factor = num("factor", 0.1), .patience = integer("patience", 10),
                 .threshold = num("threshold", 1e-4),
                 .threshold_mode = abs ? eo::plateau_threshold::abs : eo::plateau_threshold::rel,
                 .cooldown = integer("cooldown", 0), .min_lr = groups("min_lr", 0.0),
                 .eps = num("eps", 1e-8)});
  }
  return s;
}

/// The momentum a one_cycle case cycles: sgd/rmsprop momentum or adam's beta1.
template <class Opt>
double momentum_of(const Opt& opt, std::size_t g) {
  const auto& o = opt.param_groups()[g].options;
  if constexpr (requires { o.betas; }) return o.betas[0];
  else if constexpr (requires { o.momentum; }) return o.momentum;
  else return NAN;
}

/// One oracle case with optimizer Opt: the lrs (and momenta) after construction and after each
/// step; then the same schedule resumed halfway from both state_dicts into a fresh optimizer
/// and scheduler.
template <class Opt>
void run_case(const std::string& key, const value& c, std::function<Opt()> make_opt) {
  const auto lr = oracle().get<double>(key + ".lr");
  const bool has_momentum = oracle().contains(key + ".momentum");
  const auto mom = has_momentum ? oracle().get<double>(key + ".momentum") : em::tensor<double>();
  const auto metrics = oracle().contains(key + ".metrics") ? oracle().get<double>(key + ".metrics")
                                                           : em::tensor<double>();
  const auto steps = c.at("steps").as_int();
  const std::string kind = c.at("scheduler").as_string();
  const value& options = c.at("options");
  auto metric = [&](std::int64_t k) { return metrics.defined() ? metrics.at({k}) : 0.0; };
  auto check_row = [&](const Opt& opt, const any_scheduler& s, std::int64_t k) {
    INFO("after step " << k);
    for (std::size_t g = 0; g < 2; ++g) {
      const auto gi = static_cast<std::int64_t>(g);
      CHECK(close(opt.param_groups()[g].options.lr, lr.at({k, gi})));
      CHECK(close(s.get_last_lr().at(g), lr.at({k, gi})));
      if (has_momentum) CHECK(close(momentum_of(opt, g), mom.at({k, gi})));
    }
  };
  auto set_initial = [&](Opt& opt) {
    if (c.at("initial_lrs").is_null()) return;
    for (std::size_t g = 0; g < 2; ++g)
      opt.param_groups()[g].initial_lr = c.at("initial_lrs").arr.at(g).as_double();
  };

  Opt opt = make_opt();
  set_initial(opt);
  any_scheduler s = make_scheduler(kind, options, opt);
  check_row(opt, s, 0);
  const std::int64_t half = steps / 2;
  em::state_dict opt_sd, sched_sd;
  for (std::int64_t k = 0; k < steps; ++k) {
    s.step(metric(k));
    check_row(opt, s, k + 1);
    if (k + 1 == half) {
      opt_sd = opt.state_dict();
      sched_sd = s.state_dict();
    }
  }
  INFO("resumed after step " << half);
  Opt fresh = make_opt();
  set_initial(fresh);
  any_scheduler t = make_scheduler(kind, options, fresh);
  fresh.load_state_dict(opt_sd);
  t.load_state_dict(sched_sd);
  check_row(fresh, t, half);
  for (std::int64_t k = half; k < steps; ++k) {
    t.step(metric(k));
    check_row(fresh, t, k + 1);
  }
}

std::vector<em::tensor<double>> two_params() { return {em::zeros<double>({2}), em::zeros<double>({2})}; }

template <class Opt, class O>
std::function<Opt()> maker(const value& c, std::function<O(double lr)> options) {
  return [&c, options] {
    auto p = two_params();
    const auto& lrs = c.at("lrs").arr;
    using T = typename Opt::value_type;
    return Opt(std::vector<eo::param_group<T, O>>{{.params = {p[0]}, .options = options(lrs.at(0).as_double())},
                                                  {.params = {p[1]}, .options = options(lrs.at(1).as_double())}},
               options(lrs.at(0).as_double()));
  };
}

}  // namespace

TEST_CASE("lr schedulers follow torch.optim.lr_scheduler, and resume from state_dicts",
          "[optim][lr_scheduler][oracle]") {
  int cases = 0;
  for (const auto& [name, json] : oracle().metadata) {
    if (name.rfind("case.", 0) != 0) continue;
    const std::string key = name.substr(5);
    INFO("scheduler case " << key << ": " << json);
    const value c = et::json::parse(json);
    const std::string optimizer = c.at("optimizer").as_string();
    const value& oo = c.at("optimizer_options");
    const double momentum = oo.find("momentum") ? oo.at("momentum").as_double() : 0.0;
    if (optimizer == "sgd")
      run_case<eo::sgd<double>>(key, c, maker<eo::sgd<double>, eo::sgd_options>(c, [=](double lr) {
        return eo::sgd_options{.lr = lr, .momentum = momentum};
      }));
    else if (optimizer == "adam")
      run_case<eo::adam<double>>(key, c, maker<eo::adam<double>, eo::adam_options>(c, [](double lr) {
        return eo::adam_options{.lr = lr};
      }));
    else if (optimizer == "adagrad")
      run_case<eo::adagrad<double>>(key, c, maker<eo::adagrad<double>, eo::adagrad_options>(c, [](double lr) {
        return eo::adagrad_options{.lr = lr};
      }));
    else
      run_case<eo::rmsprop<double>>(key, c, maker<eo::rmsprop<double>, eo::rmsprop_options>(c, [=](double lr) {
        return eo::rmsprop_options{.lr = lr, .momentum = momentum};
      }));
    ++cases;
  }
  CHECK(cases == 21);
}

TEST_CASE("SGD with momentum and step_lr follows PyTorch's trajectory", "[optim][lr_scheduler][oracle]") {
  std::vector<em::tensor<double>> w, c, t;
  for (int i = 0; i < 2; ++i) {
    const std::string s = std::to_string(i);
    w.push_back(oracle().get<double>("traj.w" + s + ".init").requires_grad_());
    c.push_back(oracle().get<double>("traj.c" + s));
    t.push_back(oracle().get<double>("traj.t" + s));
  }
  eo::sgd<double> opt({{.params = {w[0]}, .options = eo::sgd_options{.lr = 0.1, .momentum = 0.9}},
                       {.params = {w[1]}, .options = eo::sgd_options{.lr = 0.05, .momentum = 0.9}}},
                      {.lr = 0.1, .momentum = 0.9});
  eo::step_lr sched(opt, {.step_size = 3, .gamma = 0.5});
  for (std::int64_t k = 1; k <= 12; ++k) {
    for (int i = 0; i < 2; ++i) w[i].set_grad(em::tensor<double>((c[i] * 2.0) * (w[i].detach() - t[i])));
    opt.step();
    sched.step();
    for (int i = 0; i < 2; ++i) {
      INFO("step " << k << ", parameter " << i);
      const auto want = oracle().get<double>("traj.w" + std::to_string(i));
      for (std::int64_t j = 0; j < w[i].numel(); ++j) CHECK(close(w[i].at({j}), want.at({k, j})));
    }
  }
  CHECK(sched.last_epoch() == 12);
  CHECK(sched.get_last_lr() == std::vector<double>{0.1 * 0.5 * 0.5 * 0.5 * 0.5, 0.05 * 0.5 * 0.5 * 0.5 * 0.5});
}

TEST_CASE("lr schedulers: the API works for every optimizer type", "[optim][lr_scheduler]") {
  auto w = em::zeros<float>({3}).requires_grad_();
  em::optim::adam opt({w}, {.lr = 1e-3});
  em::optim::step_lr sched(opt, {.step_size = 10, .gamma = 0.1});  // the API contract's line
  for (int k = 0; k < 10; ++k) sched.step();
  CHECK(sched.last_epoch() == 10);
  CHECK(sched.get_last_lr().size() == 1);
  CHECK(sched.get_last_lr()[0] == Approx(1e-4).epsilon(1e-12));
  CHECK(opt.param_groups()[0].initial_lr == 1e-3);
  CHECK(sched.base_lrs() == std::vector<double>{1e-3});
  em::optim::lr_scheduler& base = sched;  // usable through the base class
  base.step();
  CHECK(sched.last_epoch() == 11);
  // a second scheduler on the same optimizer starts from the recorded initial lr (PyTorch)
  em::optim::cosine_annealing_lr cos(opt, {.t_max = 5});
  CHECK(cos.base_lrs() == std::vector<double>{1e-3});
  em::optim::adagrad<float> ada({w}, {});
  em::optim::one_cycle_lr oc(ada, {.max_lr = 0.5, .total_steps = 4, .cycle_momentum = false});
  CHECK(oc.get_last_lr()[0] == Approx(0.02));
  em::optim::rmsprop<float> rms({w}, {});
  em::optim::reduce_lr_on_plateau plateau(rms, {.patience = 0});
  plateau.step(em::full<float>({}, 1.f));
  plateau.step(2.0);
  CHECK(plateau.get_last_lr()[0] == Approx(1e-3));
  CHECK(plateau.best() == 1.0);
}

TEST_CASE("lr schedulers: bad options and misuse are clear errors", "[optim][lr_scheduler][errors]") {
  auto w = em::zeros<double>({2}).requires_grad_();
  em::optim::sgd<double> opt({w}, {.lr = 0.1, .momentum = 0.9});
  auto msg = [](auto f) { return message_of(f); };
  CHECK(error_of([&] { eo::step_lr s(opt, {}); }) == em::errc::value);
  CHECK(msg([&] { eo::step_lr s(opt, {.step_size = 0}); }).find("step_size must be >= 1, got 0") != std::string::npos);
  CHECK(msg([&] { eo::step_lr s(opt, {.step_size = 2, .gamma = -0.5}); }).find("gamma must be > 0, got -0.5") != std::string::npos);
  CHECK(msg([&] { eo::exponential_lr s(opt, {}); }).find("gamma must be > 0, got 0") != std::string::npos);
  CHECK(msg([&] { eo::multi_step_lr s(opt, {.milestones = {3, -1}}); }).find("got -1") != std::string::npos);
  CHECK(msg([&] { eo::cosine_annealing_lr s(opt, {.t_max = 0}); }).find("t_max must be >= 1, got 0") != std::string::npos);
  CHECK(msg([&] { eo::one_cycle_lr s(opt, {.max_lr = 0.1, .total_steps = 0}); }).find("total_steps must be >= 1, got 0") != std::string::npos);
  CHECK(msg([&] { eo::one_cycle_lr s(opt, {.max_lr = 0.1}); }).find("set total_steps, or epochs and steps_per_epoch") != std::string::npos);
  CHECK(msg([&] { eo::one_cycle_lr s(opt, {.max_lr = 0.1, .epochs = 2, .steps_per_epoch = -3}); }).find("steps_per_epoch must be >= 1, got -3") != std::string::npos);
  CHECK(msg([&] { eo::one_cycle_lr s(opt, {.total_steps = 10}); }).find("max_lr is required") != std::string::npos);
  CHECK(msg([&] { eo::one_cycle_lr s(opt, {.max_lr = {0.1, 0.2}, .total_steps = 10}); }).find("expected 1 or 1 values for max_lr, got 2") != std::string::npos);
  CHECK(msg([&] { eo::one_cycle_lr s(opt, {.max_lr = 0.1, .total_steps = 10, .pct_start = 1.5}); }).find("pct_start must be in [0, 1], got 1.5") != std::string::npos);
  CHECK(msg([&] { eo::one_cycle_lr s(opt, {.max_lr = 0.1, .total_steps = 10, .pct_start = 0.1}); }).find("phase 0 of the schedule has no steps") != std::string::npos);
  em::optim::adagrad<double> ada({w}, {});
  CHECK(msg([&] { eo::one_cycle_lr s(ada, {.max_lr = 0.1, .total_steps = 10}); }).find("cycle_momentum needs an optimizer with momentum or betas") != std::string::npos);
  CHECK(msg([&] { eo::reduce_lr_on_plateau s(opt, {.factor = 1.0}); }).find("factor must be in [0, 1), got 1") != std::string::npos);
  CHECK(msg([&] { eo::reduce_lr_on_plateau s(opt, {.min_lr = {0.1, 0.2}}); }).find("expected 1 or 1 values for min_lr, got 2") != std::string::npos);
  // resuming at last_epoch needs the groups' initial_lr (saved in the optimizer's state_dict)
  CHECK(msg([&] { eo::step_lr s(opt, {.step_size = 2, .last_epoch = 3}); }).find("needs the initial_lr of group 0") != std::string::npos);
  CHECK(msg([&] { eo::step_lr s(opt, {.step_size = 2, .last_epoch = -2}); }).find("got -2") != std::string::npos);

  // one_cycle: total_steps steps after construction are allowed, the next is an error that
  // changes nothing
  em::optim::sgd<double> o2({w}, {.lr = 0.1, .momentum = 0.9});
  eo::one_cycle_lr oc(o2, {.max_lr = 1.0, .total_steps = 5});
  for (int k = 0; k < 5; ++k) oc.step();
  const double lr = o2.param_groups()[0].options.lr;
  CHECK(msg([&] { oc.step(); }).find("tried to step 7 times; total_steps is 5") != std::string::npos);
  CHECK(oc.last_epoch() == 5);
  CHECK(o2.param_groups()[0].options.lr == lr);

  // load_state_dict: all problems at once, nothing changed
  eo::step_lr s(opt, {.step_size = 2});
  s.step();
  em::state_dict bad = s.state_dict();
  bad.insert("base_lrs", em::zeros<double>({3}));
  bad.insert("gamma", em::full<bool>({}, true));
  bad.insert("extra", em::zeros<double>({}));
  bad.erase("step_size");
  const std::string m = message_of([&] { s.load_state_dict(bad); });
  INFO(m);
  CHECK(m.find("[ember.value] step_lr.load_state_dict: cannot load the state_dict (4 problems)") != std::string::npos);
  CHECK(m.find("'base_lrs' has 3 values, the optimizer 1 groups") != std::string::npos);
  CHECK(m.find("'gamma' must be a 0-d real tensor, got a () bool tensor") != std::string::npos);
  CHECK(m.find("missing key 'step_size'") != std::string::npos);
  CHECK(m.find("unexpected key 'extra'") != std::string::npos);
  CHECK(s.last_epoch() == 1);
  eo::exponential_lr e(opt, {.gamma = 0.5});
  CHECK(message_of([&] { e.load_state_dict(s.state_dict()); }).find("it was saved by a step_lr scheduler") != std::string::npos);
}
