// <ember/cuda.hpp>: what a program linking the CUDA backend (libember_cuda, built from cuda/
// when nvcc is found) may call beyond <ember/ember.hpp>. GPU tensors need no more than
// linking the library (its registration runs when it loads); this header is for builds that
// link with --as-needed (Meson's default), which drop a library nothing references, and for
// the controls of the run-time compiled kernels (Note [Kernel JIT], docs/cuda.md).
#pragma once

#include <ember/dispatch/program.hpp>

#include <cstdint>
#include <string>

namespace ember::cuda_backend {

/// The number of GPUs the backend sees (0 without a driver or GPU). Calling it references
/// libember_cuda, so the linker keeps it (and its registration) in the program.
int linked() noexcept;

}  // namespace ember::cuda_backend

namespace ember::cuda {

/// When a fused elementwise expression on a GPU runs as a kernel compiled for it (NVRTC, at
/// run time) instead of through the generic interpreter kernel:
///   automatic  expressions of at least jit_min_numel elements, and any expression already
///              compiled (in this process or found in the disk cache); the default;
///   always     every expression (the first launch of each waits for its compile);
///   never      none: the interpreter only.
/// The environment variable EMBER_CUDA_JIT (auto, always, never) sets the initial mode.
enum class jit_mode { automatic, always, never };

/// Expressions this large (elements) are compiled in automatic mode.
inline constexpr std::int64_t jit_min_numel = std::int64_t{1} << 20;

/// Sets the mode for every GPU (thread-safe; launches already queued are unaffected).
void set_jit_mode(jit_mode m);
jit_mode get_jit_mode();

/// Counters of the kernel JIT since the program started.
struct jit_stats {
  std::int64_t compiled = 0;     // kernels NVRTC compiled
  std::int64_t disk_hits = 0;    // kernels loaded from the disk cache instead
  std::int64_t launches = 0;     // launches through a compiled kernel
  std::int64_t interpreted = 0;  // launches through the interpreter
  std::int64_t failures = 0;     // programs that could not be compiled (they are interpreted)
  std::string last_error;        // why the latest failure failed (NVRTC's log, or a load error)
  std::string cache_dir;         // the disk cache (empty: none); EMBER_CUDA_CACHE sets it
  std::string nvrtc;             // the NVRTC library loaded ("" until needed, or when missing)
};
jit_stats jit_statistics();

/// The CUDA source a program compiles to (Note [Kernel JIT]); p need not be finished.
std::string jit_source(const dispatch::elementwise_program& p);

/// Compiles p's source with NVRTC for compute capability `arch` (e.g. 90) into PTX, which
/// needs no GPU: the check that every op's source compiles. Throws ember::error with NVRTC's
/// log when it fails, or when NVRTC cannot be loaded.
std::string jit_ptx(const dispatch::elementwise_program& p, int arch);

}  // namespace ember::cuda
