// Gradient clipping, as torch.nn.utils: clip_grad_norm_ (scale all gradients so their joint
// p-norm is at most max_norm) and clip_grad_value_ (clamp each gradient element).
#pragma once

#include <ember/autograd/meta.hpp>
#include <ember/core/error.hpp>
#include <ember/eval/assign.hpp>
#include <ember/eval/reduce.hpp>
#include <ember/expr/operators.hpp>
#include <ember/ops/factory.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <ranges>
#include <type_traits>
#include <vector>

namespace ember::nn::utils {
namespace detail {

template <class R>
concept tensor_range = std::ranges::input_range<R> &&
    requires { typename std::remove_cvref_t<std::ranges::range_value_t<R>>::value_type; } &&
    std::is_same_v<std::remove_cvref_t<std::ranges::range_value_t<R>>,
                   tensor<typename std::remove_cvref_t<std::ranges::range_value_t<R>>::value_type>>;

template <class R>
using range_elem_t = typename std::remove_cvref_t<std::ranges::range_value_t<R>>::value_type;

/// The p-norm of one gradient as torch.norm(g, p): max |x| (inf), min |x| (-inf), the count of
/// non-zeros (0), sum |x| (1), sqrt(sum x^2) (2), else (sum |x|^p)^(1/p).
template <class T>
T grad_norm(const tensor<T>& g, double p) {
  // under no_grad: unrecorded reductions, which instantiate no backward (compile time)
  auto all = [&](auto op, const auto& e) {
    using Op = decltype(op);
    return ember::detail::reduce_raw<Op>(e, std::vector<bool>(g.shape().size(), true), false).item();
  };
  using ember::detail::max_op;
  using ember::detail::min_op;
  using ember::detail::sum_op;
  if (p == std::numeric_limits<double>::infinity()) return all(max_op{}, ember::abs(g));
  if (p == -std::numeric_limits<double>::infinity()) return all(min_op{}, ember::abs(g));
  if (p == 0) return all(sum_op{}, ember::cast<T>(g != T(0)));
  if (p == 1) return all(sum_op{}, ember::abs(g));
  if (p == 2) return std::sqrt(all(sum_op{}, ember::square(g)));
  const T s = all(sum_op{}, ember::pow(ember::abs(g), static_cast<T>(p)));
  return std::pow(s, static_cast<T>(1.0 / p));
}

template <class T, class R>
std::vector<tensor<T>> grads_of(R&& params) {
  std::vector<tensor<T>> grads;
  for (const tensor<T>& p : params)
    if (tensor<T> g = p.grad(); g.defined()) grads.push_back(std::move(g));
  return grads;
}

template <class T>
tensor<T> clip_norm(const std::vector<tensor<T>>& grads, double max_norm, double norm_type,
                    bool error_if_nonfinite) {
  no_grad_guard ng;
  if (grads.empty()) return ember::zeros<T>({});
  // as PyTorch: the norm of the per-gradient norms, with one gradient too (for p = inf,
  // torch.max of the norms: the same value)
  std::vector<T> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) norms.push_back(grad_norm(g, norm_type));
  const T total = grad_norm(
      ember::from_vector<T>(norms, {static_cast<std::int64_t>(norms.size())}), norm_type);
  ember::detail::check(!error_if_nonfinite || std::isfinite(total), errc::value,
                       "clip_grad_norm_: the total norm of order ", norm_type, " of ", grads.size(),
                       " gradients is ", total, ", so it cannot be clipped; pass "
                       "error_if_nonfinite = false to scale them by it anyway");
  // PyTorch: max_norm / (total + 1e-6) is (total + 1e-6).reciprocal() * max_norm, in T
  const T coef = std::min(T(1) / (total + static_cast<T>(1e-6)) * static_cast<T>(max_norm), T(1));
  for (const auto& g : grads) ember::detail::assign_raw(g, g * coef, "clip_grad_norm_");
  return ember::full<T>({}, total);
}

template <class T>
void clip_value(const std::vector<tensor<T>>& grads, double clip_value) {
  no_grad_guard ng;
  const T c = static_cast<T>(clip_value);
  for (const auto& g : grads) ember::detail::assign_raw(g, ember::clamp(g, -c, c), "clip_grad_value_");
}

}  // namespace detail

/// Scales the gradients of `params` in place so that their joint norm_type-norm (all gradients
/// as one vector) is at most max_norm, exactly as torch.nn.utils.clip_grad_norm_ 1.13: each
/// gradient times min(max_norm / (total + 1e-6), 1). Parameters without a gradient are skipped;
/// norm_type may be infinity. Returns the total norm before clipping (a 0-d tensor).
///   loss.backward();  em::nn::utils::clip_grad_norm_(net.parameters(), 1.0);  opt.step();
template <detail::tensor_range R>
tensor<detail::range_elem_t<R>> clip_grad_norm_(R&& params, double max_norm, double norm_type = 2.0,
                                                 bool error_if_nonfinite = false) {
  using T = detail::range_elem_t<R>;
  return detail::clip_norm<T>(detail::grads_of<T>(params), max_norm, norm_type, error_if_nonfinite);
}
template <class T>
tensor<T> clip_grad_norm_(std::initializer_list<tensor<T>> params, double max_norm,
                          double norm_type = 2.0, bool error_if_nonfinite = false) {
  return detail::clip_norm<T>(detail::grads_of<T>(params), max_norm, norm_type, error_if_nonfinite);
}
/// One parameter: em::nn::utils::clip_grad_norm_(w, 1.0).
template <class T>
tensor<T> clip_grad_norm_(const tensor<T>& param, double max_norm, double norm_type = 2.0,
                          bool error_if_nonfinite = false) {
  return clip_grad_norm_({param}, max_norm, norm_type, error_if_nonfinite);
}

/// Clamps every gradient element of `params` to [-clip_value, clip_value] in place (NaN stays
/// NaN); parameters without a gradient are skipped:
///   em::nn::utils::clip_grad_value_(net.parameters(), 0.5);
template <detail::tensor_range R>
void clip_grad_value_(R&& params, double clip_value) {
  detail::clip_value(detail::grads_of<detail::range_elem_t<R>>(params), clip_value);
}
template <class T>
void clip_grad_value_(std::initializer_list<tensor<T>> params, double clip_value) {
  detail::clip_value(detail::grads_of<T>(params), clip_value);
}
template <class T>
void clip_grad_value_(const tensor<T>& param, double clip_value) {
  clip_grad_value_({param}, clip_value);
}

}  // namespace ember::nn::utils
