// one_cycle_lr: PyTorch 1.13's OneCycleLR (the 1cycle policy: lr up to max_lr then down far
// below the start, momentum or Adam's beta1 cycled the other way), stepped once per batch.
#pragma once

#include <ember/optim/lr_scheduler.hpp>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <numbers>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ember::optim {

/// How one_cycle_lr moves between two values: half a cosine, or a straight line.
enum class anneal { cos, linear };

struct one_cycle_lr_options {
  per_group max_lr = {};  // required: the peak lr, for all groups or each
  std::optional<std::int64_t> total_steps = std::nullopt;  // or epochs * steps_per_epoch
  std::optional<std::int64_t> epochs = std::nullopt;
  std::optional<std::int64_t> steps_per_epoch = std::nullopt;
  double pct_start = 0.3;  // the fraction of steps spent raising the lr
  anneal anneal_strategy = anneal::cos;
  bool cycle_momentum = true;  // sgd/rmsprop momentum, adam/adamw beta1
  per_group base_momentum = 0.85;
  per_group max_momentum = 0.95;
  double div_factor = 25;  // initial lr = max_lr / div_factor
  double final_div_factor = 1e4;  // final lr = initial lr / final_div_factor
  bool three_phase = false;
  std::int64_t last_epoch = -1;
};

/// The 1cycle policy: from max_lr / div_factor up to max_lr over pct_start of the steps, then
/// down to max_lr / div_factor / final_div_factor (three_phase: back to the start first);
/// momentum goes from max_momentum down to base_momentum and back. Step it after every batch:
///   em::optim::one_cycle_lr sched(opt, {.max_lr = 0.1, .total_steps = 1000});
/// Stepping past total_steps is an error, as in PyTorch.
class one_cycle_lr : public lr_scheduler {
 public:
  template <class Opt>
  one_cycle_lr(Opt& opt, const one_cycle_lr_options& o)
      : lr_scheduler(opt, o.last_epoch, "one_cycle_lr") {
    const std::size_t groups = num_groups();
    detail::raise_if(resolve(o, groups, cfg_));
    check_next_step();  // the first phase must not be empty: fail before touching the groups
    if (o.last_epoch == -1)
      for (std::size_t g = 0; g < groups; ++g) {
        opt_.initial_lr(opt_.opt, g) = cfg_.max_lrs[g] / cfg_.div_factor;
        if (cfg_.cycle_momentum) opt_.momentum(opt_.opt, g) = cfg_.max_momentums[g];
      }
    initial_step();
  }

  std::int64_t total_steps() const noexcept { return cfg_.total_steps; }

 protected:
  // The anneals and the phase search are PyTorch's, operation for operation.
  std::vector<double> get_lr() override {
    const double step_num = static_cast<double>(last_epoch_);
    const auto [phase, start_step] = find_phase(last_epoch_);
    const double end_step = phase_end(phase);
    const double pct = (step_num - start_step) / (end_step - start_step);
    std::vector<double> lrs(num_groups());
    for (std::size_t g = 0; g < lrs.size(); ++g) {
      const std::array<double, 3> lr_at = lr_points(g);  // initial, max, min
      lrs[g] = anneal_value(lr_at[lr_from(phase)], lr_at[lr_to(phase)], pct);
      if (cfg_.cycle_momentum) {
        const std::array<double, 2> m_at{cfg_.max_momentums[g], cfg_.base_momentums[g]};
        opt_.momentum(opt_.opt, g) = anneal_value(m_at[m_from(phase)], m_at[m_to(phase)], pct);
      }
    }
    return lrs;
  }
  void check_next_step() const override {
    const std::int64_t next = last_epoch_ + 1;
    ember::detail::check(next <= cfg_.total_steps, errc::value, "one_cycle_lr: tried to step ",
                         next + 1, " times; total_steps is ", cfg_.total_steps);
    const auto [phase, start_step] = find_phase(next);
    ember::detail::check(phase_end(phase) != start_step, errc::value, "one_cycle_lr: phase ",
                         phase, " of the schedule has no steps (pct_start ", cfg_.pct_start,
                         ", total_steps ", cfg_.total_steps, ")");
  }
  void save_options(ember::state_dict& sd) const override {
    detail::save_value(sd, "max_lrs", cfg_.max_lrs);
    detail::save_value(sd, "total_steps", cfg_.total_steps);
    detail::save_value(sd, "pct_start", cfg_.pct_start);
    detail::save_value(sd, "anneal_strategy", static_cast<std::int64_t>(cfg_.anneal_strategy));
    detail::save_value(sd, "cycle_momentum", cfg_.cycle_momentum);
    detail::save_value(sd, "base_momentums", cfg_.base_momentums);
    detail::save_value(sd, "max_momentums", cfg_.max_momentums);
    detail::save_value(sd, "div_factor", cfg_.div_factor);
    detail::save_value(sd, "final_div_factor", cfg_.final_div_factor);
    detail::save_value(sd, "three_phase", cfg_.three_phase);
  }
  std::function<void()> load_options(detail::scheduler_reader& r) override {
    config c = cfg_;
    std::int64_t strategy = static_cast<std::int64_t>(c.anneal_strategy);
    const std::size_t groups = num_groups();
    r.read_groups("max_lrs", c.max_lrs, groups);
    r.read("total_steps", c.total_steps);
    r.read("pct_start", c.pct_start);
    r.read("anneal_strategy", strategy);
    r.read("cycle_momentum", c.cycle_momentum);
    r.read_groups("base_momentums", c.base_momentums, groups);
    r.read_groups("max_momentums", c.max_momentums, groups);
    r.read("div_factor", c.div_factor);
    r.read("final_div_factor", c.final_div_factor);
    r.read("three_phase", c.three_phase);
    if (strategy != 0 && strategy != 1)
      r.problems().add("'anneal_strategy' must be 0 (cos) or 1 (linear), got ", strategy);
    c.anneal_strategy = strategy == 1 ? anneal::linear : anneal::cos;
    one_cycle_lr_options o{.max_lr = c.max_lrs, .total_steps = c.total_steps,
                           .pct_start = c.pct_start, .anneal_strategy = c.anneal_strategy,
                           .cycle_momentum = c.cycle_momentum, .base_momentum = c.base_momentums,
                           .max_momentum = c.max_momentums, .div_factor = c.div_factor,
                           .final_div_factor = c.final_div_factor, .three_phase = c.three_phase};
    if (auto p = resolve(o, groups, c); !p.empty()) r.problems().add(p);
    return [this, c] { cfg_ = c; };
  }

 private:
  struct config {
    std::vector<double> max_lrs, base_momentums, max_momentums;
    std::int64_t total_steps = 0;
    double pct_start = 0, div_factor = 0, final_div_factor = 0;
    anneal anneal_strategy = anneal::cos;
    bool cycle_momentum = false, three_phase = false;
  };

  /// Checks the options in PyTorch's order and fills c; returns the first problem ("" if none).
  std::string resolve(const one_cycle_lr_options& o, std::size_t groups, config& c) const {
    const char* n = "one_cycle_lr: ";
    if (o.total_steps) {
      if (*o.total_steps < 1) return detail::message(n, "total_steps must be >= 1, got ", *o.total_steps);
      c.total_steps = *o.total_steps;
    } else {
      if (!o.epochs || !o.steps_per_epoch)
        return detail::message(n, "set total_steps, or epochs and steps_per_epoch");
      if (*o.epochs < 1) return detail::message(n, "epochs must be >= 1, got ", *o.epochs);
      if (*o.steps_per_epoch < 1)
        return detail::message(n, "steps_per_epoch must be >= 1, got ", *o.steps_per_epoch);
      c.total_steps = *o.epochs * *o.steps_per_epoch;
    }
    if (!(o.pct_start >= 0 && o.pct_start <= 1))
      return detail::message(n, "pct_start must be in [0, 1], got ", o.pct_start);
    if (!(o.div_factor > 0)) return detail::message(n, "div_factor must be > 0, got ", o.div_factor);
    if (!(o.final_div_factor > 0))
      return detail::message(n, "final_div_factor must be > 0, got ", o.final_div_factor);
    if (o.max_lr.empty()) return detail::message(n, "max_lr is required");
    auto per = [&](const per_group& v, const char* what, std::vector<double>& out) {
      if (v.values.size() != 1 && v.values.size() != groups)
        return detail::message(n, "expected 1 or ", groups, " values for ", what, ", got ",
                               v.values.size());
      out = v.values.size() == 1 ? std::vector<double>(groups, v.values[0]) : v.values;
      return std::string();
    };
    if (auto p = per(o.max_lr, "max_lr", c.max_lrs); !p.empty()) return p;
    if (o.cycle_momentum) {
      if (!opt_.momentum)
        return detail::message(n, "cycle_momentum needs an optimizer with momentum or betas (sgd, "
                               "rmsprop, adam, adamw), got ", opt_.name,
                               "; set .cycle_momentum = false");
      if (auto p = per(o.max_momentum, "max_momentum", c.max_momentums); !p.empty()) return p;
      if (auto p = per(o.base_momentum, "base_momentum", c.base_momentums); !p.empty()) return p;
    } else {
      c.max_momentums.assign(groups, 0.0);
      c.base_momentums.assign(groups, 0.0);
    }
    c.pct_start = o.pct_start;
    c.div_factor = o.div_factor;
    c.final_div_factor = o.final_div_factor;
    c.anneal_strategy = o.anneal_strategy;
    c.cycle_momentum = o.cycle_momentum;
    c.three_phase = o.three_phase;
    return {};
  }

  // Phases as PyTorch's _schedule_phases: (end_step, start lr, end lr, start momentum). Two
  // phases: initial -> max, max -> min; three: initial -> max, max -> initial, initial -> min.
  // Momentum: max -> base, base -> max (three phases: then max -> max).
  std::size_t num_phases() const noexcept { return cfg_.three_phase ? 3 : 2; }
  double phase_end(std::size_t i) const {
    const double total = static_cast<double>(cfg_.total_steps);
    if (i == 0) return cfg_.pct_start * total - 1;
    if (cfg_.three_phase && i == 1) return 2 * cfg_.pct_start * total - 2;
    return total - 1;
  }
  // indices into lr_points: 0 initial, 1 max, 2 min
  std::size_t lr_from(std::size_t i) const noexcept {
    return i == 0 || (cfg_.three_phase && i == 2) ? 0 : 1;
  }
  std::size_t lr_to(std::size_t i) const noexcept {
    return i == 0 ? 1 : (cfg_.three_phase && i == 1 ? 0 : 2);
  }
  // indices into the momentums: 0 max_momentum, 1 base_momentum
  static std::size_t m_from(std::size_t i) noexcept { return i == 1 ? 1 : 0; }
  static std::size_t m_to(std::size_t i) noexcept { return i == 0 ? 1 : 0; }
  std::array<double, 3> lr_points(std::size_t g) const {
    const double init = cfg_.max_lrs[g] / cfg_.div_factor;
    return {init, cfg_.max_lrs[g], init / cfg_.final_div_factor};
  }
  /// The phase step_num falls in and the phase's start step.
  std::pair<std::size_t, double> find_phase(std::int64_t step_num) const {
    double start_step = 0;
    for (std::size_t i = 0; i < num_phases(); ++i) {
      if (static_cast<double>(step_num) <= phase_end(i) || i + 1 == num_phases()) return {i, start_step};
      start_step = phase_end(i);
    }
    return {num_phases() - 1, start_step};
  }
  double anneal_value(double start, double end, double pct) const {
    if (cfg_.anneal_strategy == anneal::linear) return (end - start) * pct + start;
    const double cos_out = std::cos(std::numbers::pi * pct) + 1;
    return end + (start - end) / 2.0 * cos_out;
  }

  config cfg_;
};

}  // namespace ember::optim
