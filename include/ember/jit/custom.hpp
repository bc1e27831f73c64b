// Custom ops in graphs: a process-wide registry of kernels by name. A traced custom autograd
// function (autograd::function with a static `name`) is recorded as op::custom and registered
// here; a program that loads such a graph registers the same function before running it.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/error.hpp>

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace ember::jit {

/// A custom op's kernel: input tensors in, output tensors out.
using custom_kernel = std::function<std::vector<any_tensor>(const std::vector<any_tensor>&)>;

namespace detail {
struct custom_registry {
  std::mutex mutex;
  std::map<std::string, custom_kernel> kernels;
};
inline custom_registry& registry() {
  static custom_registry r;
  return r;
}

template <class Fn, class... Args, std::size_t... I>
std::vector<any_tensor> call_function(const std::vector<any_tensor>& in, std::index_sequence<I...>) {
  ::ember::detail::check(in.size() == sizeof...(Args), errc::value, "jit: custom op ", Fn::name,
                         " takes ", sizeof...(Args), " inputs, got ", in.size());
  return {any_tensor(Fn::apply(in[I].template get<typename Args::value_type>()...))};
}
}  // namespace detail

/// Registers (or replaces) the kernel run for op::custom nodes named `name`.
inline void register_op(const std::string& name, custom_kernel kernel) {
  auto& r = detail::registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.kernels[name] = std::move(kernel);
}

/// Registers a custom autograd function (with `static constexpr const char* name`) whose
/// forward takes tensors of the given types:  em::jit::register_function<cube, em::tensor<float>>();
template <class Fn, class... Args>
void register_function() {
  static_assert(requires { Fn::name; }, "jit::register_function: the function needs a "
                "`static constexpr const char* name = \"...\";` to be found in graphs");
  register_op(Fn::name, [](const std::vector<any_tensor>& in) {
    return detail::call_function<Fn, Args...>(in, std::index_sequence_for<Args...>{});
  });
}

/// Is a kernel registered under `name`?
inline bool has_op(const std::string& name) {
  auto& r = detail::registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.kernels.count(name) != 0;
}

/// Runs the custom op `name` (an ember::error when it is not registered in this program).
inline std::vector<any_tensor> run_custom(const std::string& name, const std::vector<any_tensor>& in) {
  custom_kernel k;
  {
    auto& r = detail::registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.kernels.find(name);
    ::ember::detail::check(it != r.kernels.end(), errc::value, "jit: custom op \"", name,
                           "\" is not registered in this program; register it with "
                           "em::jit::register_function<F, em::tensor<T>...>() (or "
                           "em::jit::register_op) before running the graph");
    k = it->second;
  }
  return k(in);
}

}  // namespace ember::jit
