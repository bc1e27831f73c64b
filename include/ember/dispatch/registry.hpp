// The kernel registry: kernels of non-CPU devices keyed by (op, device type, dtype). The CUDA
// backend (cuda/, a library built by nvcc) fills it when it is linked; header code looks kernels
// up here, so a program compiled with plain g++ runs GPU tensors through it. CPU kernels are the
// header-only code itself (called directly: a lookup per op would cost more than most ops).
#pragma once

#include <ember/core/device.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/dispatch/program.hpp>
#include <ember/expr/op.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace ember::dispatch {

// Note [Kernel registry]: one slot per (op, device type, dtype), an atomic function pointer,
// so a lookup is an index and a load (no lock, no map). Each op has one signature, fixed by the
// op and named by its slot type below (kernel_sig<op::...>); a backend registers with that
// signature and callers look it up with it. The registry outlives static destruction (never
// destroyed), as the allocators do.
inline constexpr std::size_t op_slots = 256;
inline constexpr std::size_t device_slots = 2;
inline constexpr std::size_t dtype_slots = 10;

using erased_fn = void (*)();

namespace detail {
inline std::atomic<erased_fn>* slots() {
  static auto* s = new std::array<std::atomic<erased_fn>, op_slots * device_slots * dtype_slots>{};
  return s->data();
}
inline std::atomic<erased_fn>& slot(op o, device_type d, dtype t) {
  const auto oi = static_cast<std::size_t>(o), di = static_cast<std::size_t>(d),
             ti = static_cast<std::size_t>(t);
  ember::detail::check(oi < op_slots && di < device_slots && ti < dtype_slots, errc::internal,
                       "dispatch: no registry slot for op ", name(o));
  return slots()[(oi * device_slots + di) * dtype_slots + ti];
}
}  // namespace detail

// ---- the signatures (one per op that a device backend provides) ------------------------------

/// Kernel signatures by op; a backend's kernel for op `O` has type `kernel_sig<O>::type`.
template <op O>
struct kernel_sig;

/// op::fused: an elementwise program (dispatch/program.hpp) on a device, registered under
/// every output dtype it writes.
template <>
struct kernel_sig<op::fused> {
  using type = void(const elementwise_program&, device);
};

/// op::sum: a reduction (dispatch/program.hpp's reduce_problem: sum, prod, max, min, argmax,
/// argmin), registered under each input dtype.
template <>
struct kernel_sig<op::sum> {
  using type = void(const reduce_problem&, device);
};

/// op::matmul: a strided batched GEMM (dispatch/program.hpp's gemm_problem), registered under
/// f32 and f64.
template <>
struct kernel_sig<op::matmul> {
  using type = void(const gemm_problem&, device);
};

/// op::dropout: dropout of a contiguous tensor (dispatch/program.hpp's dropout_problem),
/// registered under f32 and f64.
template <>
struct kernel_sig<op::dropout> {
  using type = void(const dropout_problem&, device);
};

/// op::embedding: the gather/scatter family (dispatch/program.hpp's index_problem, Note
/// [Device indexing]), registered under each data dtype it moves.
template <>
struct kernel_sig<op::embedding> {
  using type = void(const index_problem&, device);
};

/// Registers `fn` for (O, device type, dtype); a later registration replaces an earlier one.
template <op O>
void register_kernel(device_type d, dtype t, typename kernel_sig<O>::type* fn) {
  detail::slot(O, d, t).store(reinterpret_cast<erased_fn>(fn), std::memory_order_release);
}

/// The kernel for (O, device type, dtype), or nullptr.
template <op O>
typename kernel_sig<O>::type* find_kernel(device_type d, dtype t) {
  return reinterpret_cast<typename kernel_sig<O>::type*>(
      detail::slot(O, d, t).load(std::memory_order_acquire));
}

/// The kernel for (O, the device's type, dtype); an error naming the op, device and dtype when
/// no backend provides it.
template <op O>
typename kernel_sig<O>::type& kernel(device dev, dtype t, const char* what) {
  auto* fn = find_kernel<O>(dev.type, t);
  ember::detail::check(fn != nullptr, errc::not_implemented, what, ": no kernel for ", name(O),
                       " on ", dev, " with dtype ", t,
                       dev.is_cpu() ? "" : " (is the CUDA backend, ember_cuda, linked?)");
  return *fn;
}

}  // namespace ember::dispatch
