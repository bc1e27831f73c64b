// <ember/cuda.hpp>: what a program linking the CUDA backend (libember_cuda, built from cuda/
// when nvcc is found) may call beyond <ember/ember.hpp>. GPU tensors need no more than
// linking the library (its registration runs when it loads); this header is for builds that
// link with --as-needed (Meson's default), which drop a library nothing references.
#pragma once

namespace ember::cuda_backend {

/// The number of GPUs the backend sees (0 without a driver or GPU). Calling it references
/// libember_cuda, so the linker keeps it (and its registration) in the program.
int linked() noexcept;

}  // namespace ember::cuda_backend
