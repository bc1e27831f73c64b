// Learning-rate schedulers with PyTorch 1.13's semantics: the lr_scheduler base (last_epoch,
// base_lrs, get_last_lr, state_dict) and the epoch-indexed families step_lr, multi_step_lr,
// exponential_lr and cosine_annealing_lr. one_cycle_lr and reduce_lr_on_plateau have their own.
//
// Note [Scheduler access]: a scheduler reads and writes the lr of every parameter group of any
// optimizer (type-erased: optimizer_ref, a pointer to it and a few functions), so schedulers are
// plain classes: `em::optim::step_lr sched(opt, {.step_size = 10});`. The optimizer must outlive
// the scheduler, as in PyTorch. Each step recomputes the lrs from the current group lrs
// (PyTorch's chainable forms, float operation for float operation), so lr changes made by others
// between steps carry through exactly as in PyTorch.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/error.hpp>
#include <ember/ops/factory.hpp>
#include <ember/optim/optimizer.hpp>
#include <ember/state_dict.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <sstream>
#include <numbers>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::optim {

/// One value for every parameter group (`.max_lr = 0.1`) or one per group
/// (`.max_lr = {0.1, 0.01}`), as PyTorch's "float or list" arguments.
struct per_group {
  std::vector<double> values;
  per_group() = default;
  per_group(double v) : values{v} {}  // NOLINT: implicit, a scalar for all groups
  per_group(std::initializer_list<double> v) : values(v) {}
  per_group(std::vector<double> v) : values(std::move(v)) {}  // NOLINT
  bool empty() const noexcept { return values.empty(); }
};

namespace detail {

/// Note [Scheduler access]: the parameter groups of some optimizer.
struct optimizer_ref {
  void* opt = nullptr;
  const char* name = "";
  std::size_t (*groups)(void*) = nullptr;
  double& (*lr)(void*, std::size_t) = nullptr;
  std::optional<double>& (*initial_lr)(void*, std::size_t) = nullptr;
  /// sgd/rmsprop momentum or adam/adamw beta1 (nullptr: the optimizer has neither)
  double& (*momentum)(void*, std::size_t) = nullptr;
  bool momentum_is_beta1 = false;
};

template <class Opt>
concept scheduled_optimizer = requires(Opt& o) {
  { o.param_groups().size() } -> std::convertible_to<std::size_t>;
  { o.param_groups()[0].options.lr } -> std::convertible_to<double>;
  o.param_groups()[0].initial_lr;
  Opt::name;
};

template <class Opt>
optimizer_ref make_optimizer_ref(Opt& o) {
  static_assert(scheduled_optimizer<Opt>,
                "ember: a scheduler drives an optimizer (em::optim::sgd, adam, adamw, rmsprop, "
                "adagrad, or one with param_groups() whose options have an lr): pass the optimizer");
  optimizer_ref r;
  if constexpr (scheduled_optimizer<Opt>) {  // else only the static_assert speaks
    r.opt = &o;
    r.name = Opt::name;
    r.groups = [](void* p) -> std::size_t { return static_cast<Opt*>(p)->param_groups().size(); };
    r.lr = [](void* p, std::size_t g) -> double& {
      return static_cast<Opt*>(p)->param_groups()[g].options.lr;
    };
    r.initial_lr = [](void* p, std::size_t g) -> std::optional<double>& {
      return static_cast<Opt*>(p)->param_groups()[g].initial_lr;
    };
    using options = std::remove_cvref_t<decltype(o.param_groups()[0].options)>;
    if constexpr (requires(options& x) { x.betas[0]; }) {
      r.momentum = [](void* p, std::size_t g) -> double& {
        return static_cast<Opt*>(p)->param_groups()[g].options.betas[0];
      };
      r.momentum_is_beta1 = true;
    } else if constexpr (requires(options& x) { x.momentum; }) {
      r.momentum = [](void* p, std::size_t g) -> double& {
        return static_cast<Opt*>(p)->param_groups()[g].options.momentum;
      };
    }
  }
  return r;
}

/// Reads a scheduler's state_dict entries, collecting every problem (load_problems) and the
/// keys not read (reported as unexpected by finish()).
class scheduler_reader {
 public:
  scheduler_reader(const ember::state_dict& sd, std::string who)
      : sd_(sd), who_(std::move(who)), used_(sd.size(), false) {}

  template <class V>
  void read(std::string_view key, V& out) {
    const any_tensor* t = take(key);
    if (!t) return;
    if constexpr (std::is_same_v<V, bool>) {
      if (t->dtype() == dtype::boolean && t->dim() == 0) out = t->get<bool>().item();
      else bad(key, "a 0-d bool tensor", *t);
    } else if constexpr (std::is_same_v<V, double>) {
      if (const auto v = scalar_real(*t)) out = *v;
      else bad(key, "a 0-d real tensor", *t);
    } else if constexpr (std::is_same_v<V, std::int64_t>) {
      if (t->dim() == 0 && (t->dtype() == dtype::i64 || t->dtype() == dtype::i32))
        out = element_values<std::int64_t>(*t).front();
      else bad(key, "a 0-d integer tensor", *t);
    } else if constexpr (std::is_same_v<V, std::vector<double>>) {
      if (t->dim() == 1 && t->dtype() != dtype::boolean) out = element_values<double>(*t);
      else bad(key, "a 1-d real tensor", *t);
    } else {
      static_assert(std::is_same_v<V, std::vector<std::int64_t>>);
      if (t->dim() == 1 && (t->dtype() == dtype::i64 || t->dtype() == dtype::i32))
        out = element_values<std::int64_t>(*t);
      else bad(key, "a 1-d integer tensor", *t);
    }
  }
  /// Reads a per-group list and checks its length.
  void read_groups(std::string_view key, std::vector<double>& out, std::size_t groups) {
    std::vector<double> v = out;
    read(key, v);
    if (v.size() != groups) pr_.add("'", key, "' has ", v.size(), " values, the optimizer ", groups, " groups");
    else out = std::move(v);
  }
  load_problems& problems() noexcept { return pr_; }
  /// Reports unexpected keys and a saved type other than `name`, then throws if anything failed.
  void finish(const char* name) {
    if (auto it = sd_.metadata().find("ember.scheduler");
        it != sd_.metadata().end() && it->second != name)
      pr_.add("it was saved by a ", it->second, " scheduler");
    std::size_t i = 0;
    for (const auto& [key, t] : sd_)
      if (!used_[i++]) pr_.add("unexpected key '", key, "'");
    pr_.raise_if_any(who_);
  }

 private:
  const any_tensor* take(std::string_view key) {
    std::size_t i = 0;
    for (const auto& [k, t] : sd_) {
      if (k == key) {
        used_[i] = true;
        return &t;
      }
      ++i;
    }
    pr_.add("missing key '", key, "'");
    return nullptr;
  }
  void bad(std::string_view key, const char* want, const any_tensor& t) {
    pr_.add("'", key, "' must be ", want, ", got ", describe(t));
  }
  const ember::state_dict& sd_;
  std::string who_;
  std::vector<bool> used_;
  load_problems pr_;
};

/// Writes scheduler values: double/bool/int64 0-d, vectors 1-d.
template <class V>
void save_value(ember::state_dict& sd, const std::string& key, const V& v) {
  if constexpr (std::is_same_v<V, bool> || std::is_same_v<V, double> ||
                std::is_same_v<V, std::int64_t>) {
    sd.insert(key, ember::full<V>({}, v));
  } else {
    using E = typename V::value_type;
    sd.insert(key, ember::from_vector<E>(v, {static_cast<std::int64_t>(v.size())}));
  }
}

/// The parts streamed into one string (an option problem; "" means none).
template <class... Parts>
std::string message(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
inline void raise_if(const std::string& problem) {
  if (!problem.empty()) ember::detail::raise(errc::value, problem);
}

/// Python's a % b for b > 0 (never negative).
inline std::int64_t floor_mod(std::int64_t a, std::int64_t b) {
  const std::int64_t r = a % b;
  return r < 0 ? r + b : r;
}

}  // namespace detail

/// The base of the epoch-indexed schedulers (PyTorch's _LRScheduler): base_lrs (each group's
/// 'initial_lr'), last_epoch, get_last_lr, and state_dict / load_state_dict. Derived classes
/// compute the next lrs in get_lr(); step() advances last_epoch and writes them into the groups.
class lr_scheduler {
 public:
  virtual ~lr_scheduler() = default;

  /// Advances one epoch (or batch) and sets every group's lr:  opt.step(); sched.step();
  void step() {
    check_groups();
    check_next_step();
    ++step_count_;
    ++last_epoch_;
    const std::vector<double> lrs = get_lr();
    for (std::size_t g = 0; g < lrs.size(); ++g) opt_.lr(opt_.opt, g) = lrs[g];
    last_lr_ = current_lrs();
  }
  /// The lrs the last step set, one per group:  double lr = sched.get_last_lr()[0];
  const std::vector<double>& get_last_lr() const noexcept { return last_lr_; }
  /// The index of the last epoch stepped to (0 right after construction).
  std::int64_t last_epoch() const noexcept { return last_epoch_; }
  /// The lr each group started from.
  const std::vector<double>& base_lrs() const noexcept { return base_lrs_; }

  /// The scheduler's state (not the optimizer's): last_epoch, step_count, base_lrs, last_lr and
  /// the options:  auto sd = sched.state_dict();  sd.get<std::int64_t>("last_epoch");
  ember::state_dict state_dict() const {
    ember::state_dict sd;
    sd.metadata()["ember.scheduler"] = name_;
    detail::save_value(sd, "last_epoch", last_epoch_);
    detail::save_value(sd, "step_count", step_count_);
    detail::save_value(sd, "base_lrs", base_lrs_);
    detail::save_value(sd, "last_lr", last_lr_);
    save_options(sd);
    return sd;
  }
  /// Restores a state_dict (checked: keys, kinds, group counts; all problems in one
  /// ember::error, and nothing changes on error). The group lrs are the optimizer's state.
  void load_state_dict(const ember::state_dict& sd) {
    detail::scheduler_reader r(sd, std::string(name_) + ".load_state_dict");
    std::int64_t last_epoch = last_epoch_, step_count = step_count_;
    std::vector<double> base = base_lrs_, last = last_lr_;
    r.read("last_epoch", last_epoch);
    r.read("step_count", step_count);
    r.read_groups("base_lrs", base, base_lrs_.size());
    r.read_groups("last_lr", last, base_lrs_.size());
    auto apply = load_options(r);
    r.finish(name_);
    last_epoch_ = last_epoch;
    step_count_ = step_count;
    base_lrs_ = std::move(base);
    last_lr_ = std::move(last);
    apply();
  }

 protected:
  template <class Opt>
  lr_scheduler(Opt& opt, std::int64_t last_epoch, const char* name)
      : opt_(detail::make_optimizer_ref(opt)), name_(name), last_epoch_(last_epoch) {
    ember::detail::check(last_epoch >= -1, errc::value, name,
                         ": last_epoch must be -1 (a new schedule) or an epoch index >= 0, got ",
                         last_epoch);
  }
  lr_scheduler(const lr_scheduler&) = default;
  lr_scheduler& operator=(const lr_scheduler&) = default;

  /// PyTorch's base __init__ tail, called by each constructor once its options are set: records
  /// 'initial_lr' in the groups (a new schedule) or requires it (resuming at last_epoch), then
  /// steps once to epoch last_epoch + 1.
  void initial_step() {
    const std::size_t n = num_groups();
    base_lrs_.resize(n);
    for (std::size_t g = 0; g < n; ++g) {
      std::optional<double>& init = opt_.initial_lr(opt_.opt, g);
      if (last_epoch_ == -1) {
        if (!init) init = opt_.lr(opt_.opt, g);
      } else {
        ember::detail::check(init.has_value(), errc::value, name_, ": resuming at last_epoch ",
                             last_epoch_, " needs the initial_lr of group ", g,
                             " (set by the scheduler that ran before, saved in the optimizer's "
                             "state_dict)");
      }
      base_lrs_[g] = *init;
    }
    step_count_ = 0;
    step();
  }

  /// The next lrs, one per group; last_epoch has already advanced.
  virtual std::vector<double> get_lr() = 0;
  /// Throws when the step to last_epoch + 1 is not allowed (before anything changes).
  virtual void check_next_step() const {}
  virtual void save_options(ember::state_dict& sd) const = 0;
  /// Reads the options (problems into r) and returns how to apply them once all checks pass.
  virtual std::function<void()> load_options(detail::scheduler_reader& r) = 0;

  std::size_t num_groups() const { return opt_.groups(opt_.opt); }
  double group_lr(std::size_t g) const { return opt_.lr(opt_.opt, g); }
  std::vector<double> current_lrs() const {
    std::vector<double> v(num_groups());
    for (std::size_t g = 0; g < v.size(); ++g) v[g] = group_lr(g);
    return v;
  }
  void check_groups() const {
    ember::detail::check(base_lrs_.empty() || num_groups() == base_lrs_.size(), errc::value, name_,
                         ": the optimizer has ", num_groups(), " parameter groups, the scheduler was"
                         " made for ", base_lrs_.size());
  }

  detail::optimizer_ref opt_;
  const char* name_;
  std::int64_t last_epoch_;
  std::int64_t step_count_ = 0;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
};

struct step_lr_options {
  std::int64_t step_size = 0;  // required: the period of the decay, >= 1
  double gamma = 0.1;
  std::int64_t last_epoch = -1;
};

/// Multiplies each group's lr by gamma every step_size epochs:
///   em::optim::step_lr sched(opt, {.step_size = 30, .gamma = 0.1});  // 0.1 for epochs 0..29, ...
class step_lr : public lr_scheduler {
 public:
  template <class Opt>
  step_lr(Opt& opt, const step_lr_options& o) : lr_scheduler(opt, o.last_epoch, "step_lr"), o_(o) {
    detail::raise_if(problem(o_));
    initial_step();
  }
  const step_lr_options& options() const noexcept { return o_; }

 protected:
  std::vector<double> get_lr() override {
    std::vector<double> lrs = current_lrs();
    if (last_epoch_ == 0 || last_epoch_ % o_.step_size != 0) return lrs;
    for (double& lr : lrs) lr *= o_.gamma;
    return lrs;
  }
  void save_options(ember::state_dict& sd) const override {
    detail::save_value(sd, "step_size", o_.step_size);
    detail::save_value(sd, "gamma", o_.gamma);
  }
  std::function<void()> load_options(detail::scheduler_reader& r) override {
    step_lr_options o = o_;
    r.read("step_size", o.step_size);
    r.read("gamma", o.gamma);
    if (auto p = problem(o); !p.empty()) r.problems().add(p);
    return [this, o] { o_ = o; };
  }

 private:
  static std::string problem(const step_lr_options& o) {
    if (o.step_size < 1) return detail::message("step_lr: step_size must be >= 1, got ", o.step_size);
    if (!(o.gamma > 0)) return detail::message("step_lr: gamma must be > 0, got ", o.gamma);
    return {};
  }
  step_lr_options o_;
};

struct multi_step_lr_options {
  std::vector<std::int64_t> milestones = {};  // epochs (any order; a repeated one decays twice)
  double gamma = 0.1;
  std::int64_t last_epoch = -1;
};

/// Multiplies each group's lr by gamma at every milestone epoch:
///   em::optim::multi_step_lr sched(opt, {.milestones = {30, 80}, .gamma = 0.1});
class multi_step_lr : public lr_scheduler {
 public:
  template <class Opt>
  multi_step_lr(Opt& opt, multi_step_lr_options o)
      : lr_scheduler(opt, o.last_epoch, "multi_step_lr"), o_(std::move(o)) {
    detail::raise_if(problem(o_));
    std::sort(o_.milestones.begin(), o_.milestones.end());
    initial_step();
  }
  const multi_step_lr_options& options() const noexcept { return o_; }

 protected:
  std::vector<double> get_lr() override {
    std::vector<double> lrs = current_lrs();
    const auto n = std::count(o_.milestones.begin(), o_.milestones.end(), last_epoch_);
    if (n == 0) return lrs;
    const double factor = std::pow(o_.gamma, static_cast<double>(n));
    for (double& lr : lrs) lr *= factor;
    return lrs;
  }
  void save_options(ember::state_dict& sd) const override {
    detail::save_value(sd, "milestones", o_.milestones);
    detail::save_value(sd, "gamma", o_.gamma);
  }
  std::function<void()> load_options(detail::scheduler_reader& r) override {
    multi_step_lr_options o = o_;
    r.read("milestones", o.milestones);
    r.read("gamma", o.gamma);
    if (auto p = problem(o); !p.empty()) r.problems().add(p);
    std::sort(o.milestones.begin(), o.milestones.end());
    return [this, o] { o_ = o; };
  }

 private:
  static std::string problem(const multi_step_lr_options& o) {
    if (!(o.gamma > 0)) return detail::message("multi_step_lr: gamma must be > 0, got ", o.gamma);
    for (std::int64_t m : o.milestones)
      if (m < 0) return detail::message("multi_step_lr: milestones must be >= 0, got ", m);
    return {};
  }
  multi_step_lr_options o_;
};

struct exponential_lr_options {
  double gamma = 0;  // required: the factor per epoch, > 0
  std::int64_t last_epoch = -1;
};

/// Multiplies each group's lr by gamma every epoch:
///   em::optim::exponential_lr sched(opt, {.gamma = 0.95});
class exponential_lr : public lr_scheduler {
 public:
  template <class Opt>
  exponential_lr(Opt& opt, const exponential_lr_options& o)
      : lr_scheduler(opt, o.last_epoch, "exponential_lr"), o_(o) {
    detail::raise_if(problem(o_));
    initial_step();
  }
  const exponential_lr_options& options() const noexcept { return o_; }

 protected:
  std::vector<double> get_lr() override {
    std::vector<double> lrs = current_lrs();
    if (last_epoch_ == 0) return lrs;
    for (double& lr : lrs) lr *= o_.gamma;
    return lrs;
  }
  void save_options(ember::state_dict& sd) const override { detail::save_value(sd, "gamma", o_.gamma); }
  std::function<void()> load_options(detail::scheduler_reader& r) override {
    exponential_lr_options o = o_;
    r.read("gamma", o.gamma);
    if (auto p = problem(o); !p.empty()) r.problems().add(p);
    return [this, o] { o_ = o; };
  }

 private:
  static std::string problem(const exponential_lr_options& o) {
    if (!(o.gamma > 0)) return detail::message("exponential_lr: gamma must be > 0, got ", o.gamma);
    return {};
  }
  exponential_lr_options o_;
};

struct cosine_annealing_lr_options {
  std::int64_t t_max = 0;  // required: half the period, in epochs, >= 1
  double eta_min = 0;
  std::int64_t last_epoch = -1;
};

/// Cosine annealing from each group's initial lr down to eta_min over t_max epochs, then back
/// up (SGDR without restarts), in PyTorch's recursive form:
///   em::optim::cosine_annealing_lr sched(opt, {.t_max = 100, .eta_min = 1e-5});
class cosine_annealing_lr : public lr_scheduler {
 public:
  template <class Opt>
  cosine_annealing_lr(Opt& opt, const cosine_annealing_lr_options& o)
      : lr_scheduler(opt, o.last_epoch, "cosine_annealing_lr"), o_(o) {
    detail::raise_if(problem(o_));
    initial_step();
  }
  const cosine_annealing_lr_options& options() const noexcept { return o_; }

 protected:
  // PyTorch 1.13's get_lr, branch for branch: the closed form when resuming (the first step
  // after constructing with last_epoch > 0), the cosine's upturn at (2k + 1) t_max, else the
  // ratio of consecutive cosines applied to the current lr.
  std::vector<double> get_lr() override {
    constexpr double pi = std::numbers::pi;
    const double e = static_cast<double>(last_epoch_), t = static_cast<double>(o_.t_max);
    std::vector<double> lrs = current_lrs();
    if (last_epoch_ == 0) return lrs;
    for (std::size_t g = 0; g < lrs.size(); ++g) {
      if (step_count_ == 1 && last_epoch_ > 0)
        lrs[g] = o_.eta_min + (base_lrs_[g] - o_.eta_min) * (1 + std::cos(e * pi / t)) / 2;
      else if (detail::floor_mod(last_epoch_ - 1 - o_.t_max, 2 * o_.t_max) == 0)
        lrs[g] = lrs[g] + (base_lrs_[g] - o_.eta_min) * (1 - std::cos(pi / t)) / 2;
      else
        lrs[g] = (1 + std::cos(pi * e / t)) / (1 + std::cos(pi * (e - 1) / t)) *
                     (lrs[g] - o_.eta_min) + o_.eta_min;
    }
    return lrs;
  }
  void save_options(ember::state_dict& sd) const override {
    detail::save_value(sd, "t_max", o_.t_max);
    detail::save_value(sd, "eta_min", o_.eta_min);
  }
  std::function<void()> load_options(detail::scheduler_reader& r) override {
    cosine_annealing_lr_options o = o_;
    r.read("t_max", o.t_max);
    r.read("eta_min", o.eta_min);
    if (auto p = problem(o); !p.empty()) r.problems().add(p);
    return [this, o] { o_ = o; };
  }

 private:
  static std::string problem(const cosine_annealing_lr_options& o) {
    if (o.t_max < 1) return detail::message("cosine_annealing_lr: t_max must be >= 1, got ", o.t_max);
    return {};
  }
  cosine_annealing_lr_options o_;
};

}  // namespace ember::optim
