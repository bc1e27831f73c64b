// nn::init: in-place parameter initializers with PyTorch's formulas (fans, gains, bounds):
// uniform_, normal_, constant_, zeros_, ones_, xavier_*, kaiming_*, calculate_gain.
#pragma once

#include <ember/autograd/meta.hpp>
#include <ember/core/error.hpp>
#include <ember/core/random.hpp>
#include <ember/eval/assign.hpp>
#include <ember/expr/operators.hpp>
#include <ember/ops/factory.hpp>
#include <ember/tensor.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

namespace ember::detail {
/// Whether nn::init's fillers are switched off on this thread (init::skip_guard).
inline bool& init_skipped() noexcept {
  thread_local bool skipped = false;
  return skipped;
}
}  // namespace ember::detail

namespace ember::nn::init {

/// Which fan kaiming_* scales by.
enum class fan_mode { fan_in, fan_out };

/// The nonlinearities calculate_gain knows (PyTorch's names).
enum class nonlinearity { linear, conv1d, conv2d, sigmoid, tanh, relu, leaky_relu, selu };

/// PyTorch's recommended gain: relu sqrt(2), tanh 5/3, leaky_relu sqrt(2 / (1 + slope^2)),
/// selu 3/4, identity-like ones 1. `param` is leaky_relu's negative slope (default 0.01).
inline double calculate_gain(nonlinearity f, std::optional<double> param = std::nullopt) {
  switch (f) {
    case nonlinearity::tanh: return 5.0 / 3.0;
    case nonlinearity::relu: return std::sqrt(2.0);
    case nonlinearity::leaky_relu: {
      const double s = param.value_or(0.01);
      return std::sqrt(2.0 / (1.0 + s * s));
    }
    case nonlinearity::selu: return 3.0 / 4.0;
    default: return 1.0;
  }
}

/// (fan_in, fan_out) of a weight: size(1) and size(0) times the receptive field (the product
/// of the dims after the first two). Needs at least 2 dims.
template <class T>
std::pair<std::int64_t, std::int64_t> calculate_fan_in_and_fan_out(const tensor<T>& t) {
  ember::detail::check(t.dim() >= 2, errc::shape,
                       "init: fan in and fan out need a tensor of at least 2 dims, got shape ",
                       t.shape());
  std::int64_t receptive = 1;
  for (std::int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

namespace detail {
template <class T>
void check_float(const tensor<T>& t, const char* op) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "ember::nn::init: initializers fill float or double tensors");
  ember::detail::check(t.defined(), errc::value, "init::", op, ": undefined tensor");
}
}  // namespace detail

/// While one is alive (on this thread), the fillers below leave their tensor as it is and draw
/// no random numbers: modules built under it skip their initialization (their parameters hold
/// whatever memory they got), for a state that is loaded right after. See nn::skip_init.
class skip_guard {
 public:
  skip_guard() noexcept : prev_(ember::detail::init_skipped()) { ember::detail::init_skipped() = true; }
  ~skip_guard() { ember::detail::init_skipped() = prev_; }
  skip_guard(const skip_guard&) = delete;
  skip_guard& operator=(const skip_guard&) = delete;

 private:
  bool prev_;
};

/// Fills t with U(a, b) from `gen` (the global generator by default):
///   em::nn::init::uniform_(w, -0.1, 0.1);
template <class T>
const tensor<T>& uniform_(const tensor<T>& t, double a = 0.0, double b = 1.0, generator& gen = default_generator()) {
  detail::check_float(t, "uniform_");
  if (ember::detail::init_skipped()) return t;
  ember::detail::check(a <= b, errc::value, "init::uniform_: a = ", a, " > b = ", b);
  no_grad_guard ng;
  tensor<T> h = t;  // a handle: writes reach t's storage (t may be a view, e.g. w.select(0, i))
  h.copy_(ember::detail::evaluate_raw(rand<T>(t.shape(), gen) * static_cast<T>(b - a) + static_cast<T>(a))
              .to(t.device()));
  return t;
}

/// Fills t with N(mean, std^2).
template <class T>
const tensor<T>& normal_(const tensor<T>& t, double mean = 0.0, double std = 1.0,
                   generator& gen = default_generator()) {
  detail::check_float(t, "normal_");
  if (ember::detail::init_skipped()) return t;
  ember::detail::check(std >= 0, errc::value, "init::normal_: std must be >= 0, got ", std);
  no_grad_guard ng;
  tensor<T> h = t;
  h.copy_(ember::detail::evaluate_raw(randn<T>(t.shape(), gen) * static_cast<T>(std) + static_cast<T>(mean))
              .to(t.device()));
  return t;
}

template <class T>
const tensor<T>& constant_(const tensor<T>& t, double value) {
  detail::check_float(t, "constant_");
  if (ember::detail::init_skipped()) return t;
  no_grad_guard ng;
  tensor<T> h = t;
  h.fill_(static_cast<T>(value));
  return t;
}
template <class T>
const tensor<T>& zeros_(const tensor<T>& t) {
  return constant_(t, 0.0);
}
template <class T>
const tensor<T>& ones_(const tensor<T>& t) {
  return constant_(t, 1.0);
}

/// Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).
template <class T>
const tensor<T>& xavier_uniform_(const tensor<T>& t, double gain = 1.0, generator& gen = default_generator()) {
  detail::check_float(t, "xavier_uniform_");
  const auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  return uniform_(t, -bound, bound, gen);
}
/// Glorot normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).
template <class T>
const tensor<T>& xavier_normal_(const tensor<T>& t, double gain = 1.0, generator& gen = default_generator()) {
  detail::check_float(t, "xavier_normal_");
  const auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  return normal_(t, 0.0, gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out)), gen);
}

/// Options of kaiming_uniform_/kaiming_normal_ (PyTorch's defaults: a = 0, fan_in, leaky_relu).
struct kaiming_options {
  double a = 0.0;  ///< the negative slope of the rectifier after this layer
  fan_mode mode = fan_mode::fan_in;
  init::nonlinearity nonlinearity = init::nonlinearity::leaky_relu;
};

namespace detail {
template <class T>
double kaiming_std(const tensor<T>& t, const kaiming_options& o) {
  const auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  const std::int64_t fan = o.mode == fan_mode::fan_in ? fan_in : fan_out;
  ember::detail::check(fan > 0, errc::shape, "init::kaiming: zero fan for shape ", t.shape());
  return calculate_gain(o.nonlinearity, o.a) / std::sqrt(static_cast<double>(fan));
}
}  // namespace detail

/// He uniform: U(-b, b), b = gain * sqrt(3 / fan). Linear and conv layers use a = sqrt(5),
/// which gives b = 1 / sqrt(fan_in):  em::nn::init::kaiming_uniform_(w, {.a = std::sqrt(5.0)});
template <class T>
const tensor<T>& kaiming_uniform_(const tensor<T>& t, const kaiming_options& o = {},
                            generator& gen = default_generator()) {
  detail::check_float(t, "kaiming_uniform_");
  if (t.numel() == 0) return t;  // PyTorch warns and does nothing
  const double bound = std::sqrt(3.0) * detail::kaiming_std(t, o);
  return uniform_(t, -bound, bound, gen);
}
/// He normal: N(0, std^2), std = gain / sqrt(fan).
template <class T>
const tensor<T>& kaiming_normal_(const tensor<T>& t, const kaiming_options& o = {},
                           generator& gen = default_generator()) {
  detail::check_float(t, "kaiming_normal_");
  if (t.numel() == 0) return t;
  return normal_(t, 0.0, detail::kaiming_std(t, o), gen);
}

}  // namespace ember::nn::init

namespace ember::nn {

/// Constructs a module without initializing its parameters (PyTorch's
/// torch.nn.utils.skip_init): no random numbers are drawn and the parameters are left as
/// allocated, for a state_dict loaded next:
///   auto fc = em::nn::skip_init<em::nn::linear>(4096, 4096);  fc.load_state_dict(sd);
template <class M, class... Args>
M skip_init(Args&&... args) {
  init::skip_guard g;
  return M(std::forward<Args>(args)...);
}

}  // namespace ember::nn
