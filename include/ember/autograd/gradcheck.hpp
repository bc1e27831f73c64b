// gradcheck / gradgradcheck: compare autograd's Jacobian with central finite differences in
// float64 (PyTorch's torch.autograd.gradcheck, full-Jacobian mode).
#pragma once

#include <ember/autograd/engine.hpp>
#include <ember/tensor.hpp>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace ember::autograd {

struct gradcheck_options {
  double eps = 1e-6;   ///< finite-difference step
  double atol = 1e-5;  ///< |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-3;
  bool raise = false;  ///< throw ember::error (category autograd) instead of returning false
  bool quiet = false;  ///< do not print the failure report to std::cerr
};

namespace detail {

/// Output(s) of a checked function as a list of tensors.
template <class R>
std::vector<tensor<double>> as_outputs(R&& r) {
  using X = std::remove_cvref_t<R>;
  if constexpr (std::is_same_v<X, std::vector<tensor<double>>>) {
    return std::forward<R>(r);
  } else if constexpr (std::is_same_v<X, tensor<double>>) {
    return {std::forward<R>(r)};
  } else {
    return {tensor<double>(r)};  // an expression: materialized (and recorded)
  }
}

inline double& element(const tensor<double>& t, std::int64_t flat) {
  std::int64_t off = 0;
  for (std::int64_t d = t.dim(); d-- > 0;) {
    const std::int64_t n = t.shape()[d];
    off += (flat % n) * t.strides()[d];
    flat /= n;
  }
  return t.data()[off];
}

inline tensor<double> dense_copy(const tensor<double>& t) {
  tensor<double> c = ember::detail::make_tensor<double>(t.shape(), t.device());
  for (std::int64_t i = 0; i < t.numel(); ++i) element(c, i) = element(t, i);
  return c;
}

template <class F>
bool check_jacobian(F&& f, const std::vector<tensor<double>>& inputs, const gradcheck_options& o,
                    const char* what) {
  // fresh leaves over copies, so the check never touches the caller's tensors or grads
  std::vector<tensor<double>> xs;
  std::vector<std::size_t> diff;  // inputs that require grad
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    check(inputs[i].defined(), errc::value, what, ": input ", i, " is undefined");
    check(inputs[i].device().is_cpu(), errc::not_implemented, what, ": inputs must be on cpu");
    tensor<double> c = dense_copy(inputs[i]);
    if (inputs[i].requires_grad()) {
      c.requires_grad_();
      diff.push_back(i);
    }
    xs.push_back(c);
  }
  check(!diff.empty(), errc::value, what, ": no input requires grad");
  auto eval = [&] { return as_outputs(f(xs)); };
  std::vector<tensor<double>> outs;
  {
    enable_grad_guard eg;
    outs = eval();
  }
  double worst = -1;
  std::string report;
  bool ok = true;
  for (std::size_t oi = 0; oi < outs.size(); ++oi) {
    const tensor<double> out = outs[oi];
    const std::int64_t m = out.numel();
    for (std::size_t k : diff) {
      const tensor<double>& x = xs[k];
      const std::int64_t n = x.numel();
      // numeric columns: d out / d x_j by central differences
      std::vector<double> num(static_cast<std::size_t>(m * n));
      for (std::int64_t j = 0; j < n; ++j) {
        double& xj = element(x, j);
        const double orig = xj;
        std::vector<tensor<double>> hi, lo;
        {
          no_grad_guard ng;
          xj = orig + o.eps;
          hi = eval();
          for (auto& t : hi) t = dense_copy(t);  // an output may be a view of an input
          xj = orig - o.eps;
          lo = eval();
          for (auto& t : lo) t = dense_copy(t);
          xj = orig;
        }
        for (std::int64_t r = 0; r < m; ++r)
          num[static_cast<std::size_t>(r * n + j)] =
              (element(hi[oi], r) - element(lo[oi], r)) / (2 * o.eps);
      }
      // analytic rows: one vector-Jacobian product per output element
      for (std::int64_t r = 0; r < m; ++r) {
        std::vector<double> row(static_cast<std::size_t>(n), 0.0);
        if (out.requires_grad()) {
          tensor<double> v = zeros_shaped<double>(out.shape(), out.device());
          element(v, r) = 1;
          enable_grad_guard eg;
          auto g = detail::grad_impl<double>({out}, {x}, {v}, {.retain_graph = true, .allow_unused = true});
          if (g[0].defined())
            for (std::int64_t j = 0; j < n; ++j) row[static_cast<std::size_t>(j)] = element(g[0], j);
        }
        for (std::int64_t j = 0; j < n; ++j) {
          const double a = row[static_cast<std::size_t>(j)];
          const double nu = num[static_cast<std::size_t>(r * n + j)];
          const double err = std::abs(a - nu);
          const bool bad = !(err <= o.atol + o.rtol * std::abs(nu));
          if (bad && err > worst) {
            worst = err;
            std::ostringstream os;
            os << what << ": Jacobian mismatch for output " << oi << " element " << r
               << " with respect to input " << k << " element " << j << ": analytic " << a
               << ", numeric " << nu << " (|diff| " << err << ", atol " << o.atol << ", rtol "
               << o.rtol << ", eps " << o.eps << ")";
            report = os.str();
          }
          ok = ok && !bad;
        }
      }
    }
  }
  if (!ok) {
    if (o.raise) fail(errc::autograd, report);
    if (!o.quiet) std::cerr << "[ember.autograd] " << report << "\n";
  }
  return ok;
}

}  // namespace detail

/// Checks the gradients of f at inputs (float64; inputs that require grad are checked):
///   bool ok = em::autograd::gradcheck([](const std::vector<em::tensor<double>>& in) {
///     return em::sum(em::tanh(in[0]) * in[1]); }, {x64, y64});
/// f returns a tensor<double>, an expression, or std::vector<tensor<double>>.
template <class F>
bool gradcheck(F&& f, const std::vector<tensor<double>>& inputs, const gradcheck_options& o = {}) {
  return detail::check_jacobian(std::forward<F>(f), inputs, o, "gradcheck");
}

/// Checks second derivatives: the gradient of f (taken with create_graph, contracted with a
/// fixed random upstream gradient) is itself gradchecked.
template <class F>
bool gradgradcheck(F&& f, const std::vector<tensor<double>>& inputs,
                   const gradcheck_options& o = {}) {
  std::vector<tensor<double>> upstream;
  {
    enable_grad_guard eg;
    std::vector<tensor<double>> probe;
    for (const auto& x : inputs) probe.push_back(detail::dense_copy(x));
    const auto outs = detail::as_outputs(f(probe));
    std::uint64_t state = 0x9E3779B97F4A7C15ull;
    for (const auto& out : outs) {
      tensor<double> v = ember::detail::make_tensor<double>(out.shape(), out.device());
      for (std::int64_t i = 0; i < v.numel(); ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        detail::element(v, i) = static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
      }
      upstream.push_back(v);
    }
  }
  std::vector<std::size_t> diff;
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].requires_grad()) diff.push_back(i);
  auto first = [&](const std::vector<tensor<double>>& xs) {
    const bool outer = is_grad_enabled();  // off while finite differences evaluate
    enable_grad_guard eg;
    const auto outs = detail::as_outputs(f(xs));
    std::vector<tensor<double>> req;
    for (std::size_t k : diff) req.push_back(xs[k]);
    std::vector<tensor<double>> live_outs, live_up;
    for (std::size_t i = 0; i < outs.size(); ++i)
      if (outs[i].requires_grad()) {
        live_outs.push_back(outs[i]);
        live_up.push_back(upstream[i]);
      }
    std::vector<tensor<double>> gs;
    if (!live_outs.empty())
      gs = detail::grad_impl<double>(live_outs, req, live_up, {.create_graph = outer, .allow_unused = true});
    std::vector<tensor<double>> result;
    for (std::size_t i = 0; i < req.size(); ++i)
      result.push_back(i < gs.size() && gs[i].defined()
                           ? gs[i]
                           : detail::zeros_shaped<double>(req[i].shape(), req[i].device()));
    return result;
  };
  return detail::check_jacobian(first, inputs, o, "gradgradcheck");
}

}  // namespace ember::autograd
