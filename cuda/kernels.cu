// The CUDA kernels: the generic fused elementwise kernel (one instantiation per compute type,
// running the program of Note [Elementwise program]) and the reduction kernels. The index
// math and the per-element work are dispatch/program.hpp's, the same code the host tests run.
#include "kernels.hpp"

#include <algorithm>
#include <cstdint>

namespace ember::cuda_backend {
namespace {

using dispatch::elementwise_program;
using dispatch::reduce_problem;
using dispatch::reduce_partial;
using dispatch::reduce_acc_t;

constexpr int block_threads = 256;

// Note [Grid constant]: the program (~2.5 KB) is a __grid_constant__ parameter: every thread
// reads it in place from the constant bank (the instructions are uniform across a warp, so
// each read is one broadcast) instead of copying it to local memory. S is the register stack's
// slot count (Note [Register stack]).
// Flat programs and strided ones run in separate kernels: a kernel holding both paths needs
// the registers and code of both, and E1 ran 20% slower in it (H200, microbenchmark).
template <class C, int S>
__global__ void __launch_bounds__(block_threads) fused_flat_kernel(const __grid_constant__ elementwise_program p) {
  // Note [Wide interpretation]: a block takes `lanes * blockDim` elements at a time; thread t
  // runs the program once for elements base + j * blockDim + t (each load coalesced); the
  // last span's missing elements are masked (Note [Flat tail])
  constexpr int lanes = dispatch::flat_lanes<S>;
  const std::int64_t span = static_cast<std::int64_t>(blockDim.x) * lanes;
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * span; base < p.numel;
       base += static_cast<std::int64_t>(gridDim.x) * span)
    dispatch::run_flat<C, S>(p, base + threadIdx.x, blockDim.x);
}

template <class C, int S>
__global__ void __launch_bounds__(block_threads) fused_strided_kernel(const __grid_constant__ elementwise_program p) {
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < p.numel; i += step)
    dispatch::run_element<C, S>(p, i);
}

template <class C, int S>
void launch_fused_slots(const elementwise_program& p, unsigned grid, cudaStream_t s) {
  if (p.flat) fused_flat_kernel<C, S><<<grid, block_threads, 0, s>>>(p);
  else fused_strided_kernel<C, S><<<grid, block_threads, 0, s>>>(p);
}

template <class C>
void launch_fused_as(const elementwise_program& p, unsigned grid, cudaStream_t s) {
  // only the slot counts stack_slots<C> picks are instantiated
  switch (dispatch::stack_slots<C>(dispatch::program_depth(p))) {
    case 2:
      if constexpr (dispatch::stack_slots<C>(2) == 2) launch_fused_slots<C, 2>(p, grid, s);
      return;
    case 4:
      if constexpr (dispatch::stack_slots<C>(4) == 4) launch_fused_slots<C, 4>(p, grid, s);
      return;
    case 8:
      if constexpr (dispatch::stack_slots<C>(8) == 8) launch_fused_slots<C, 8>(p, grid, s);
      return;
    default: launch_fused_slots<C, 16>(p, grid, s); return;
  }
}

std::int64_t grid_for(std::int64_t work, int sm_count) {
  const std::int64_t blocks = (work + block_threads - 1) / block_threads;
  return std::max<std::int64_t>(1, std::min<std::int64_t>(blocks, std::int64_t(sm_count) * 32));
}

// ---- reductions ------------------------------------------------------------------------------

// few reduced elements per output: one thread walks an output's range
template <class T>
__global__ void __launch_bounds__(block_threads) reduce_thread_kernel(const __grid_constant__ reduce_problem r) {
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t o = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       o < r.outputs; o += step) {
    std::int64_t base, out_off;
    dispatch::reduce_bases(r, o, base, out_off);
    dispatch::reduce_store<T>(r, out_off, dispatch::reduce_range<T>(r, base, 0, r.count, 1));
  }
}

template <class A>
__device__ reduce_partial<A> block_combine(dispatch::reduce_kind k, reduce_partial<A> v,
                                           reduce_partial<A>* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s)
      shared[threadIdx.x] = dispatch::reduce_combine<A>(k, shared[threadIdx.x], shared[threadIdx.x + s]);
    __syncthreads();
  }
  const reduce_partial<A> out = shared[0];
  __syncthreads();
  return out;
}

// one block per (output, chunk): the block's threads stride over the chunk, then combine.
// chunks == 1 stores the result; otherwise the partial goes to scratch[o * chunks + c].
template <class T>
__global__ void __launch_bounds__(block_threads) reduce_block_kernel(const __grid_constant__ reduce_problem r,
                                                                    std::int64_t chunks,
                                                                    reduce_partial<reduce_acc_t<T>>* scratch) {
  using A = reduce_acc_t<T>;
  __shared__ reduce_partial<A> shared[block_threads];
  const std::int64_t chunk = (r.count + chunks - 1) / chunks;
  for (std::int64_t w = blockIdx.x; w < r.outputs * chunks; w += gridDim.x) {
    const std::int64_t o = w / chunks, c = w % chunks;
    std::int64_t base, out_off;
    dispatch::reduce_bases(r, o, base, out_off);
    const std::int64_t j0 = c * chunk, j1 = r.count < j0 + chunk ? r.count : j0 + chunk;
    const reduce_partial<A> mine =
        dispatch::reduce_range<T>(r, base, j0 + threadIdx.x, j1, blockDim.x);
    const reduce_partial<A> all = block_combine<A>(r.kind, mine, shared);
    if (threadIdx.x == 0) {
      if (chunks == 1) dispatch::reduce_store<T>(r, out_off, all);
      else scratch[w] = all;
    }
  }
}

// the second pass: combine each output's chunk partials in order
template <class T>
__global__ void __launch_bounds__(block_threads) reduce_finish_kernel(const __grid_constant__ reduce_problem r,
                                                                     std::int64_t chunks,
                                                                     const reduce_partial<reduce_acc_t<T>>* scratch) {
  using A = reduce_acc_t<T>;
  __shared__ reduce_partial<A> shared[block_threads];
  for (std::int64_t o = blockIdx.x; o < r.outputs; o += gridDim.x) {
    reduce_partial<A> mine{A(0), 0, false};
    for (std::int64_t c = threadIdx.x; c < chunks; c += blockDim.x)
      mine = dispatch::reduce_combine<A>(r.kind, mine, scratch[o * chunks + c]);
    const reduce_partial<A> all = block_combine<A>(r.kind, mine, shared);
    if (threadIdx.x == 0) {
      std::int64_t base, out_off;
      dispatch::reduce_bases(r, o, base, out_off);
      dispatch::reduce_store<T>(r, out_off, all);
    }
  }
}

// how many chunks each output's range is cut into (1: a single pass)
std::int64_t reduce_chunks(const reduce_problem& r, int sm_count) {
  const std::int64_t want_blocks = std::int64_t(sm_count) * 4;
  if (r.outputs >= want_blocks || r.count < 8 * block_threads) return 1;
  const std::int64_t by_blocks = (want_blocks + r.outputs - 1) / r.outputs;
  const std::int64_t by_work = r.count / (4 * block_threads);  // >= 4 elements per thread
  return std::max<std::int64_t>(1, std::min(by_blocks, by_work));
}

template <class T>
cudaError_t reduce_typed(const reduce_problem& r, void* scratch, int sm_count, cudaStream_t s) {
  using A = reduce_acc_t<T>;
  if (r.count < 32) {
    reduce_thread_kernel<T><<<grid_for(r.outputs, sm_count), block_threads, 0, s>>>(r);
    return cudaGetLastError();
  }
  const std::int64_t chunks = reduce_chunks(r, sm_count);
  auto* partials = static_cast<reduce_partial<A>*>(scratch);
  const std::int64_t blocks = std::min<std::int64_t>(r.outputs * chunks, std::int64_t(sm_count) * 32);
  reduce_block_kernel<T><<<blocks, block_threads, 0, s>>>(r, chunks, partials);
  if (chunks > 1) {
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    const std::int64_t fin = std::min<std::int64_t>(r.outputs, std::int64_t(sm_count) * 32);
    reduce_finish_kernel<T><<<fin, block_threads, 0, s>>>(r, chunks, partials);
  }
  return cudaGetLastError();
}

template <class T>
__global__ void __launch_bounds__(block_threads) dropout_kernel(const __grid_constant__ dispatch::dropout_problem p) {
  const std::int64_t blocks = (p.n + 3) / 4;
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t b = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       b < blocks; b += step)
    dispatch::dropout_block<T>(p, b);
}

template <class T, class I>
__global__ void __launch_bounds__(block_threads) index_kernel(const __grid_constant__ dispatch::index_problem p) {
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < p.numel; i += step)
    dispatch::index_element<T, I>(p, i);
}

}  // namespace

cudaError_t launch_index(const dispatch::index_problem& p, int sm_count, cudaStream_t s) {
  if (p.numel == 0) return cudaSuccess;
  const auto grid = static_cast<unsigned>(grid_for(p.numel, sm_count));
  const bool known = dispatch::visit_index_types(p, [&](auto t, auto ix) {
    index_kernel<decltype(t), decltype(ix)><<<grid, block_threads, 0, s>>>(p);
  });
  return known ? cudaGetLastError() : cudaErrorInvalidValue;
}

cudaError_t launch_dropout(const dispatch::dropout_problem& p, int sm_count, cudaStream_t s) {
  if (p.n == 0) return cudaSuccess;
  const auto grid = static_cast<unsigned>(grid_for((p.n + 3) / 4, sm_count));
  if (p.dtype == dispatch::code::f64) dropout_kernel<double><<<grid, block_threads, 0, s>>>(p);
  else dropout_kernel<float><<<grid, block_threads, 0, s>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_fused(const elementwise_program& p, int sm_count, cudaStream_t s) {
  if (p.numel == 0) return cudaSuccess;
  if (!p.finished) {  // the interpreter needs the dispatch keys (Note [One dispatch])
    elementwise_program q = p;
    dispatch::finish(q);
    return launch_fused(q, sm_count, s);
  }
  // a flat program's thread takes dispatch::wide elements per grid step (Note [Wide interpretation])
  const auto grid = static_cast<unsigned>(
      grid_for(p.flat ? (p.numel + dispatch::wide - 1) / dispatch::wide : p.numel, sm_count));
  switch (p.ctype) {
    case dispatch::compute::f32: launch_fused_as<float>(p, grid, s); break;
    case dispatch::compute::f64: launch_fused_as<double>(p, grid, s); break;
    case dispatch::compute::i64: launch_fused_as<std::int64_t>(p, grid, s); break;
  }
  return cudaGetLastError();
}

std::size_t reduce_scratch_bytes(const reduce_problem& r, int sm_count) {
  if (r.count < 32) return 0;
  const std::int64_t chunks = reduce_chunks(r, sm_count);
  if (chunks == 1) return 0;
  const bool is_float = r.dtype == dispatch::code::f32 || r.dtype == dispatch::code::f64;
  const std::size_t each = is_float ? sizeof(reduce_partial<double>) : sizeof(reduce_partial<std::int64_t>);
  return static_cast<std::size_t>(r.outputs * chunks) * each;
}

cudaError_t launch_reduce(const reduce_problem& r, void* scratch, int sm_count, cudaStream_t s) {
  if (r.outputs == 0) return cudaSuccess;
  switch (r.dtype) {
    case dispatch::code::f32: return reduce_typed<float>(r, scratch, sm_count, s);
    case dispatch::code::f64: return reduce_typed<double>(r, scratch, sm_count, s);
    case dispatch::code::i64: return reduce_typed<std::int64_t>(r, scratch, sm_count, s);
    case dispatch::code::i32: return reduce_typed<std::int32_t>(r, scratch, sm_count, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace ember::cuda_backend
