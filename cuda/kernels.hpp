// The interface between cuda/kernels.cu (compiled by nvcc) and cuda/backend.cpp (compiled by
// the host compiler with the ember headers): plain functions over the POD problems of
// include/ember/dispatch/program.hpp. Every launcher returns the CUDA error of its launch.
#pragma once

#include <ember/dispatch/program.hpp>

#include <cuda_runtime_api.h>

#include <cstddef>

namespace ember::cuda_backend {

/// One fused elementwise kernel for the whole program (Note [Elementwise program]).
cudaError_t launch_fused(const dispatch::elementwise_program& p, int sm_count, cudaStream_t s);

/// Scratch bytes launch_reduce needs for r (0 when one pass does it).
std::size_t reduce_scratch_bytes(const dispatch::reduce_problem& r, int sm_count);

/// A reduction: one thread per output when the reduced count is small, one block per output
/// otherwise, and two passes (partials in `scratch`) when few outputs reduce many elements.
cudaError_t launch_reduce(const dispatch::reduce_problem& r, void* scratch, int sm_count,
                          cudaStream_t s);

/// Dropout (Note [Device dropout]): one thread per Philox block of four elements.
cudaError_t launch_dropout(const dispatch::dropout_problem& p, int sm_count, cudaStream_t s);

/// The gather/scatter family (Note [Device indexing]): one thread per element of p's
/// iteration shape. cudaErrorInvalidValue for dtypes index_element has no type for.
cudaError_t launch_index(const dispatch::index_problem& p, int sm_count, cudaStream_t s);

}  // namespace ember::cuda_backend
