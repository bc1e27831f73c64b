// Configuration macros: feature detection (xsimd, exceptions), alignment, inlining.
// Every macro here is an overridable EMBER_* setting; define it before including ember.
#pragma once

#include <cstddef>

/// Buffer alignment in bytes for every storage ember allocates (cache line, AVX-512 width).
#ifndef EMBER_ALIGNMENT
#define EMBER_ALIGNMENT 64
#endif

/// EMBER_HAS_XSIMD: 1 when xsimd is available and not disabled with EMBER_NO_XSIMD.
#ifndef EMBER_HAS_XSIMD
#if !defined(EMBER_NO_XSIMD) && defined(__has_include)
#if __has_include(<xsimd/xsimd.hpp>)
#define EMBER_HAS_XSIMD 1
#else
#define EMBER_HAS_XSIMD 0
#endif
#else
#define EMBER_HAS_XSIMD 0
#endif
#endif

/// EMBER_EXCEPTIONS: 1 unless the translation unit is built with -fno-exceptions.
#ifndef EMBER_EXCEPTIONS
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define EMBER_EXCEPTIONS 1
#else
#define EMBER_EXCEPTIONS 0
#endif
#endif

/// EMBER_HOST_DEVICE: marks functions usable from CUDA kernels when compiled by nvcc.
#if defined(__CUDACC__)
#define EMBER_HOST_DEVICE __host__ __device__
#else
#define EMBER_HOST_DEVICE
#endif

// Note [Inlined packets]: an expression's packet code is a tree of small evaluator functions
// (one per node); optimized builds inline them all into the traversal's loop, so that packets
// stay in registers. GCC's inliner otherwise gives up inside large translation units: in
// bench/expr.cpp (with Eigen, xtensor and libtorch) E2's tanh node stayed a call, 21.7 ms
// against 14.2 ms for the same code in a small program. Unoptimized builds keep the calls:
// inlining each tree into every loop (unit, shared, broadcast, gather, partial) would multiply
// the -O0 test build's code.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__OPTIMIZE__)
#define EMBER_PACKET_INLINE __attribute__((always_inline))
#else
#define EMBER_PACKET_INLINE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define EMBER_ALWAYS_INLINE inline __attribute__((always_inline))
#define EMBER_LIKELY(x) __builtin_expect(!!(x), 1)
#define EMBER_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define EMBER_ALWAYS_INLINE inline
#define EMBER_LIKELY(x) (x)
#define EMBER_UNLIKELY(x) (x)
#endif

/// Bytes of freed CPU blocks the caching allocator keeps before returning memory to the OS.
/// Overridable at run time with ember::set_cache_limit or the EMBER_CPU_CACHE_LIMIT variable.
#ifndef EMBER_DEFAULT_CPU_CACHE_LIMIT
#define EMBER_DEFAULT_CPU_CACHE_LIMIT (std::size_t{4} << 30)
#endif

// Note [Deferred instantiation]: a non-template inline function is checked in full in every
// translation unit that includes it, called or not, and every template it uses is instantiated
// there (at the end of the unit). An entry point that visits every dtype (printing an
// any_tensor, loading or saving .npy/safetensors/ONNX, load_state_dict, module.to(device))
// thereby made every program that includes <ember/ember.hpp> compile the conversions, copies and
// printers of all twelve element types. Such entry points are templates with a defaulted
// parameter that is never given (`template <int = 0>`, or `template <class = void>` where no
// other overload takes an explicit type argument), so that only a program that calls one pays
// for it. Measured on a file holding only #include <ember/ember.hpp>: GCC 12 -fsyntax-only
// 15.1 -> 11.3 s; clang 14's pending instantiations 6.9 -> 3.8 s. What remains is reached from
// virtual functions (LR schedulers' load_options), which cannot be templates.

namespace ember {
inline constexpr std::size_t alignment = EMBER_ALIGNMENT;
}  // namespace ember

// EMBER_NO_AUTOGRAD: materialized expressions and reductions record no autograd node (inference
// and embedded builds; a whole program must use one setting). Compiles several times faster,
// since no backward code is instantiated per expression. requires_grad_ still works, but
// expressions over such tensors then carry no history.
#if defined(EMBER_NO_AUTOGRAD)
#define EMBER_AUTOGRAD 0
#else
#define EMBER_AUTOGRAD 1
#endif

