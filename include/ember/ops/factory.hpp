// Tensor creation: empty zeros ones full arange linspace eye rand randn randint from_vector
// from_blob and the *_like variants. Random factories draw from a generator (Note [Generator]).
#pragma once

#include <ember/core/random.hpp>
#include <ember/tensor.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <vector>

namespace ember {

namespace detail {
template <class T, class Gen>
tensor<T> fill_on(const shape& s, device dev, Gen&& gen) {
  tensor<T> cpu_t = make_tensor<T>(s, cpu);
  T* p = cpu_t.data();
  gen(p, s.numel());
  return cpu_t.to(dev);
}
}  // namespace detail

/// Uninitialized contiguous tensor.   auto t = em::empty<float>({2, 3});
template <class T = float>
tensor<T> empty(const shape& s, device dev = cpu) {
  return detail::make_tensor<T>(s, dev);
}

/// Tensor filled with `value`.   auto t = em::full<float>({2}, 3.f);
template <class T = float, class S>
  requires std::is_arithmetic_v<S> || is_element_v<S>
tensor<T> full(const shape& s, S value, device dev = cpu) {
  return detail::fill_on<T>(s, dev, [v = convert<T>(value)](T* p, std::int64_t n) {
    std::fill_n(p, n, v);
  });
}

template <class T = float>
tensor<T> zeros(const shape& s, device dev = cpu) {
  return full<T>(s, 0, dev);
}
template <class T = float>
tensor<T> ones(const shape& s, device dev = cpu) {
  return full<T>(s, 1, dev);
}

/// Values start, start+step, ... < end (PyTorch's arange: size = ceil((end - start) / step)).
template <class T = std::int64_t, class S1, class S2, class S3 = int>
  requires std::is_arithmetic_v<S1> && std::is_arithmetic_v<S2> && std::is_arithmetic_v<S3>
tensor<T> arange(S1 start, S2 end, S3 step = 1, device dev = cpu) {
  const double a = static_cast<double>(start), b = static_cast<double>(end),
               st = static_cast<double>(step);
  detail::check(st != 0 && std::isfinite(a) && std::isfinite(b) && std::isfinite(st),
                errc::value, "arange: invalid range start=", a, " end=", b, " step=", st);
  detail::check((b - a) / st >= 0 || a == b, errc::value, "arange: step ", st,
                " has the wrong sign for start=", a, " end=", b);
  const auto n = static_cast<std::int64_t>(std::ceil((b - a) / st));
  return detail::fill_on<T>({n < 0 ? 0 : n}, dev, [&](T* p, std::int64_t m) {
    for (std::int64_t i = 0; i < m; ++i) {
      if constexpr (std::is_integral_v<T> && std::is_integral_v<S1> && std::is_integral_v<S3>)
        p[i] = static_cast<T>(static_cast<std::int64_t>(start) + i * static_cast<std::int64_t>(step));
      else
        p[i] = convert<T>(a + static_cast<double>(i) * st);
    }
  });
}
/// Values 0, 1, ..., end-1.
template <class T = std::int64_t, class S>
  requires std::is_arithmetic_v<S>
tensor<T> arange(S end, device dev = cpu) {
  return arange<T>(S{0}, end, 1, dev);
}

/// `steps` evenly spaced values from start to end inclusive (PyTorch's rounding: the second
/// half is computed from the end, so both endpoints are exact).
template <class T = float>
tensor<T> linspace(double start, double end, std::int64_t steps, device dev = cpu) {
  detail::check(steps >= 0, errc::value, "linspace: number of steps must be >= 0, got ", steps);
  return detail::fill_on<T>({steps}, dev, [&](T* p, std::int64_t n) {
    if (n == 1) {
      p[0] = convert<T>(start);
      return;
    }
    const double step = (end - start) / static_cast<double>(n - 1);
    const std::int64_t halfway = n / 2;
    for (std::int64_t i = 0; i < n; ++i)
      p[i] = convert<T>(i < halfway ? start + step * static_cast<double>(i)
                                    : end - step * static_cast<double>(n - 1 - i));
  });
}

/// n x m matrix with ones on the diagonal (m defaults to n).
template <class T = float>
tensor<T> eye(std::int64_t n, std::int64_t m = -1, device dev = cpu) {
  if (m == -1) m = n;
  detail::check(n >= 0 && m >= 0, errc::value, "eye: n and m must be >= 0, got n=", n, " m=", m);
  return detail::fill_on<T>({n, m}, dev, [&](T* p, std::int64_t count) {
    std::fill_n(p, count, T{});
    for (std::int64_t i = 0; i < std::min(n, m); ++i) p[i * m + i] = convert<T>(1);
  });
}

/// Uniform in [0, 1) (floating T).
template <class T = float>
tensor<T> rand(const shape& s, generator& g, device dev = cpu) {
  static_assert(is_floating_v<T>, "ember::rand: T must be a floating-point type");
  return detail::fill_on<T>(s, dev, [&](T* p, std::int64_t n) {
    using R = std::conditional_t<std::is_same_v<T, double>, double, float>;
    detail::fill_uniform<R>(g, n, [p](std::int64_t i, auto v) { p[i] = convert<T>(v); });
  });
}
template <class T = float>
tensor<T> rand(const shape& s, device dev = cpu) {
  return rand<T>(s, default_generator(), dev);
}

/// Standard normal (floating T).
template <class T = float>
tensor<T> randn(const shape& s, generator& g, device dev = cpu) {
  static_assert(is_floating_v<T>, "ember::randn: T must be a floating-point type");
  return detail::fill_on<T>(s, dev, [&](T* p, std::int64_t n) {
    using R = std::conditional_t<std::is_same_v<T, double>, double, float>;
    detail::fill_normal<R>(g, n, [p](std::int64_t i, double v) {
      p[i] = convert<T>(static_cast<R>(v));
    });
  });
}
template <class T = float>
tensor<T> randn(const shape& s, device dev = cpu) {
  return randn<T>(s, default_generator(), dev);
}

/// Integers uniform in [lo, hi).
template <class T = std::int64_t>
tensor<T> randint(std::int64_t lo, std::int64_t hi, const shape& s, generator& g,
                  device dev = cpu) {
  detail::check(lo < hi, errc::value, "randint: expects lo < hi, got lo=", lo, " hi=", hi);
  return detail::fill_on<T>(s, dev, [&](T* p, std::int64_t n) {
    detail::fill_randint(g, lo, hi, n, [p](std::int64_t i, std::int64_t v) { p[i] = convert<T>(v); });
  });
}
template <class T = std::int64_t>
tensor<T> randint(std::int64_t lo, std::int64_t hi, const shape& s, device dev = cpu) {
  return randint<T>(lo, hi, s, default_generator(), dev);
}

/// A tensor owning a copy of `values`, with shape `s` (default: 1-D). Sizes must match.
template <class T = float>
tensor<T> from_vector(const std::vector<T>& values, const shape& s, device dev = cpu) {
  check_shape(s, "from_vector");
  detail::check(static_cast<std::int64_t>(values.size()) == s.numel(), errc::shape,
                "from_vector: ", values.size(), " values do not fill shape ", s, " (",
                s.numel(), " elements)");
  return detail::fill_on<T>(s, dev, [&](T* p, std::int64_t n) { std::copy_n(values.begin(), n, p); });
}
template <class T = float>
tensor<T> from_vector(const std::vector<T>& values, device dev = cpu) {
  return from_vector<T>(values, {static_cast<std::int64_t>(values.size())}, dev);
}

/// A non-owning view of user memory (contiguous, or with explicit strides). The memory must
/// outlive every tensor viewing it; `deleter` (optional) runs when the last view dies.
template <class T = float>
tensor<T> from_blob(T* data, const shape& s, std::function<void(void*)> deleter = {},
                    device dev = cpu) {
  return from_blob<T>(data, s, contiguous_strides(s), std::move(deleter), dev);
}
template <class T = float>
tensor<T> from_blob(T* data, const shape& s, const shape& strides,
                    std::function<void(void*)> deleter = {}, device dev = cpu) {
  check_shape(s, "from_blob");
  detail::check(s.size() == strides.size(), errc::shape, "from_blob: shape ", s, " and strides ",
                strides, " differ in rank");
  const auto [lo, hi] = detail::extent_range(s, strides);
  detail::check(lo >= 0, errc::value, "from_blob: negative strides ", strides, " are not supported");
  detail::check(data != nullptr || s.numel() == 0, errc::value,
                "from_blob: null pointer for shape ", s);
  auto p = detail::make_pooled<detail::tensor_impl>();
  p->storage = detail::make_pooled<detail::storage_impl>(
      data, static_cast<std::size_t>(hi + 1) * sizeof(T), dev, std::move(deleter));
  p->sizes = s;
  p->strides = strides;
  p->type = dtype_of<T>;
  return tensor<T>(std::move(p));
}

// ---- *_like: same shape and device ------------------------------------------------------------
template <class T>
tensor<T> empty_like(const tensor<T>& t) { return empty<T>(t.shape(), t.device()); }
template <class T>
tensor<T> zeros_like(const tensor<T>& t) { return zeros<T>(t.shape(), t.device()); }
template <class T>
tensor<T> ones_like(const tensor<T>& t) { return ones<T>(t.shape(), t.device()); }
template <class T, class S>
tensor<T> full_like(const tensor<T>& t, S value) { return full<T>(t.shape(), value, t.device()); }
template <class T>
tensor<T> rand_like(const tensor<T>& t) { return rand<T>(t.shape(), t.device()); }
template <class T>
tensor<T> randn_like(const tensor<T>& t) { return randn<T>(t.shape(), t.device()); }

}  // namespace ember
