// reduce_lr_on_plateau: PyTorch 1.13's ReduceLROnPlateau, which lowers the lrs when a metric
// (a validation loss, an accuracy) stops improving; stepped with the metric.
#pragma once

#include <ember/optim/lr_scheduler.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace ember::optim {

/// Whether the watched metric should go down (a loss) or up (an accuracy).
enum class plateau_mode { min, max };
/// How much better counts as better: relative to the best value, or absolute.
enum class plateau_threshold { rel, abs };

struct reduce_lr_on_plateau_options {
  plateau_mode mode = plateau_mode::min;
  double factor = 0.1;  // new lr = lr * factor, in [0, 1)
  std::int64_t patience = 10;  // bad epochs tolerated before reducing
  double threshold = 1e-4;
  plateau_threshold threshold_mode = plateau_threshold::rel;
  std::int64_t cooldown = 0;  // epochs after a reduction in which bad epochs are not counted
  per_group min_lr = 0.0;
  double eps = 1e-8;  // reductions smaller than eps are skipped
};

/// Multiplies the lrs by factor once the metric has not improved for more than `patience`
/// steps (improved: below best * (1 - threshold) in min/rel mode, best - threshold in min/abs,
/// mirrored for max):
///   em::optim::reduce_lr_on_plateau sched(opt, {.factor = 0.5, .patience = 3});
///   sched.step(validation_loss);
class reduce_lr_on_plateau {
 public:
  template <class Opt>
    requires(!std::is_same_v<std::remove_cv_t<Opt>, reduce_lr_on_plateau>)
  explicit reduce_lr_on_plateau(Opt& opt, const reduce_lr_on_plateau_options& o = {})
      : opt_(detail::make_optimizer_ref(opt)), o_(o) {
    detail::raise_if(problem(o_));
    min_lrs_ = o_.min_lr.values.size() == 1 ? std::vector<double>(groups(), o_.min_lr.values[0])
                                            : o_.min_lr.values;
    reset();
    last_lr_ = current_lrs();
  }

  /// One epoch's metric: counts a bad epoch or a new best, then reduces the lrs when the bad
  /// epochs exceed patience (outside the cooldown).
  void step(double metric) {
    ember::detail::check(groups() == min_lrs_.size(), errc::value,
                         "reduce_lr_on_plateau: the optimizer has ", groups(),
                         " parameter groups, the scheduler was made for ", min_lrs_.size());
    ++last_epoch_;
    if (is_better(metric, best_)) {
      best_ = metric;
      num_bad_epochs_ = 0;
    } else {
      ++num_bad_epochs_;
    }
    if (in_cooldown()) {
      --cooldown_counter_;
      num_bad_epochs_ = 0;  // bad epochs in the cooldown are ignored
    }
    if (num_bad_epochs_ > o_.patience) {
      for (std::size_t g = 0; g < groups(); ++g) {
        const double old_lr = opt_.lr(opt_.opt, g);
        const double new_lr = std::max(old_lr * o_.factor, min_lrs_[g]);
        if (old_lr - new_lr > o_.eps) opt_.lr(opt_.opt, g) = new_lr;
      }
      cooldown_counter_ = o_.cooldown;
      num_bad_epochs_ = 0;
    }
    last_lr_ = current_lrs();
  }
  /// The metric as a one-element tensor (a loss): sched.step(loss).
  template <class T>
  void step(const tensor<T>& metric) {
    step(static_cast<double>(metric.item()));
  }

  const std::vector<double>& get_last_lr() const noexcept { return last_lr_; }
  std::int64_t last_epoch() const noexcept { return last_epoch_; }
  double best() const noexcept { return best_; }
  std::int64_t num_bad_epochs() const noexcept { return num_bad_epochs_; }
  bool in_cooldown() const noexcept { return cooldown_counter_ > 0; }
  const reduce_lr_on_plateau_options& options() const noexcept { return o_; }

  /// The counters, the best metric and the options:  sched.state_dict().get<double>("best");
  ember::state_dict state_dict() const {
    ember::state_dict sd;
    sd.metadata()["ember.scheduler"] = "reduce_lr_on_plateau";
    detail::save_value(sd, "mode", static_cast<std::int64_t>(o_.mode));
    detail::save_value(sd, "factor", o_.factor);
    detail::save_value(sd, "patience", o_.patience);
    detail::save_value(sd, "threshold", o_.threshold);
    detail::save_value(sd, "threshold_mode", static_cast<std::int64_t>(o_.threshold_mode));
    detail::save_value(sd, "cooldown", o_.cooldown);
    detail::save_value(sd, "min_lrs", min_lrs_);
    detail::save_value(sd, "eps", o_.eps);
    detail::save_value(sd, "best", best_);
    detail::save_value(sd, "num_bad_epochs", num_bad_epochs_);
    detail::save_value(sd, "cooldown_counter", cooldown_counter_);
    detail::save_value(sd, "last_epoch", last_epoch_);
    detail::save_value(sd, "last_lr", last_lr_);
    return sd;
  }
  /// Restores a state_dict (checked; all problems in one ember::error, nothing changes then).
  void load_state_dict(const ember::state_dict& sd) {
    detail::scheduler_reader r(sd, "reduce_lr_on_plateau.load_state_dict");
    reduce_lr_on_plateau_options o = o_;
    std::int64_t mode = static_cast<std::int64_t>(o.mode);
    std::int64_t tmode = static_cast<std::int64_t>(o.threshold_mode);
    std::vector<double> min_lrs = min_lrs_, last = last_lr_;
    double best = best_;
    std::int64_t bad = num_bad_epochs_, cool = cooldown_counter_, epoch = last_epoch_;
    r.read("mode", mode);
    r.read("factor", o.factor);
    r.read("patience", o.patience);
    r.read("threshold", o.threshold);
    r.read("threshold_mode", tmode);
    r.read("cooldown", o.cooldown);
    r.read_groups("min_lrs", min_lrs, groups());
    r.read("eps", o.eps);
    r.read("best", best);
    r.read("num_bad_epochs", bad);
    r.read("cooldown_counter", cool);
    r.read("last_epoch", epoch);
    r.read_groups("last_lr", last, groups());
    if (mode != 0 && mode != 1) r.problems().add("'mode' must be 0 (min) or 1 (max), got ", mode);
    if (tmode != 0 && tmode != 1)
      r.problems().add("'threshold_mode' must be 0 (rel) or 1 (abs), got ", tmode);
    o.mode = mode == 1 ? plateau_mode::max : plateau_mode::min;
    o.threshold_mode = tmode == 1 ? plateau_threshold::abs : plateau_threshold::rel;
    o.min_lr = min_lrs;
    if (auto p = problem(o); !p.empty()) r.problems().add(p);
    r.finish("reduce_lr_on_plateau");
    o_ = o;
    min_lrs_ = std::move(min_lrs);
    best_ = best;
    num_bad_epochs_ = bad;
    cooldown_counter_ = cool;
    last_epoch_ = epoch;
    last_lr_ = std::move(last);
  }

 private:
  std::string problem(const reduce_lr_on_plateau_options& o) const {
    const char* n = "reduce_lr_on_plateau: ";
    if (!(o.factor >= 0 && o.factor < 1)) return detail::message(n, "factor must be in [0, 1), got ", o.factor);
    if (o.patience < 0) return detail::message(n, "patience must be >= 0, got ", o.patience);
    if (o.cooldown < 0) return detail::message(n, "cooldown must be >= 0, got ", o.cooldown);
    if (o.min_lr.values.size() != 1 && o.min_lr.values.size() != groups())
      return detail::message(n, "expected 1 or ", groups(), " values for min_lr, got ",
                             o.min_lr.values.size());
    return {};
  }
  // PyTorch's is_better, comparison for comparison (NaN is never better).
  bool is_better(double a, double best) const {
    const bool rel = o_.threshold_mode == plateau_threshold::rel;
    if (o_.mode == plateau_mode::min) return rel ? a < best * (1. - o_.threshold) : a < best - o_.threshold;
    return rel ? a > best * (o_.threshold + 1.) : a > best + o_.threshold;
  }
  void reset() {
    best_ = o_.mode == plateau_mode::min ? std::numeric_limits<double>::infinity()
                                         : -std::numeric_limits<double>::infinity();
    cooldown_counter_ = 0;
    num_bad_epochs_ = 0;
  }
  std::size_t groups() const { return opt_.groups(opt_.opt); }
  std::vector<double> current_lrs() const {
    std::vector<double> v(groups());
    for (std::size_t g = 0; g < v.size(); ++g) v[g] = opt_.lr(opt_.opt, g);
    return v;
  }

  detail::optimizer_ref opt_;
  reduce_lr_on_plateau_options o_;
  std::vector<double> min_lrs_;
  double best_ = 0;
  std::int64_t num_bad_epochs_ = 0, cooldown_counter_ = 0, last_epoch_ = 0;
  std::vector<double> last_lr_;
};

}  // namespace ember::optim
