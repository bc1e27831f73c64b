// The run-time compiled fused kernels (Note [Kernel JIT], cuda/jit.cpp): an elementwise
// program's source, compiled by NVRTC (loaded with dlopen when first needed), cached in memory
// and on disk, and launched in place of the interpreter.
#pragma once

#include <ember/dispatch/program.hpp>

#include <cuda_runtime_api.h>

#include <string>

namespace ember::cuda_backend {

/// Launches the finished program p on GPU `device_index` (current) through its compiled
/// kernel and returns true; false, launching nothing, when the JIT mode or p's size says to
/// interpret it, or when no kernel can be had (NVRTC missing, a failed compile: recorded in
/// em::cuda::jit_statistics()). Throws ember::error (device) when the launch itself fails.
bool jit_launch(const dispatch::elementwise_program& p, int device_index, int sm_count,
                cudaStream_t s);

}  // namespace ember::cuda_backend
