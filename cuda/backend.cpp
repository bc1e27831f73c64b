// The CUDA backend's host side: device memory (a caching allocator over cudaMalloc per GPU),
// copies between the CPU and GPUs (pinned staging for large host copies), cuBLAS matrix
// products, and the registration of all of it, and of cuda/kernels.cu's kernels, into ember's
// hooks and kernel registry (dispatch/registry.hpp) when this library is linked.
//
// Note [One stream]: every kernel, copy and cuBLAS call of a GPU goes to its legacy default
// stream, so work on a GPU runs in the order it was issued. That is what makes the caching
// allocator stream-ordered: a block freed by the host (its tensor died) while a kernel reading
// it is still queued can be handed to the next allocation at once, because whatever uses it
// next is queued behind that kernel.
#include "jit.hpp"
#include "kernels.hpp"

#include <ember/cuda.hpp>

#include <ember/core/allocator.hpp>
#include <ember/core/device.hpp>
#include <ember/core/error.hpp>
#include <ember/core/storage.hpp>
#include <ember/dispatch/registry.hpp>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

namespace ember::cuda_backend {
namespace {

constexpr int max_devices = 8;

void check_cuda(cudaError_t e, const char* call) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error so later calls report their own
  ember::detail::fail(errc::device, "CUDA call ", call, " failed: ", cudaGetErrorName(e), " (",
                      cudaGetErrorString(e), ")");
}

void check_cublas(cublasStatus_t s, const char* call) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  ember::detail::fail(errc::device, "cuBLAS call ", call, " failed: ", cublasGetStatusName(s),
                      " (", cublasGetStatusString(s), ")");
}

/// Makes GPU `index` current for the scope (the runtime's current device is per thread).
class device_guard {
 public:
  explicit device_guard(int index) noexcept {
    if (cudaGetDevice(&prev_) != cudaSuccess) {
      (void)cudaGetLastError();
      prev_ = -1;
    }
    if (prev_ != index) {
      if (cudaSetDevice(index) != cudaSuccess) (void)cudaGetLastError();
    } else {
      prev_ = -1;
    }
  }
  ~device_guard() {
    if (prev_ >= 0 && cudaSetDevice(prev_) != cudaSuccess) (void)cudaGetLastError();
  }
  device_guard(const device_guard&) = delete;
  device_guard& operator=(const device_guard&) = delete;

 private:
  int prev_ = -1;
};

/// The number of GPUs the runtime sees (0 without a driver or device), at most max_devices.
int gpu_count() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      (void)cudaGetLastError();
      c = 0;
    }
    return std::min(c, max_devices);
  }();
  return n;
}

struct device_state {
  std::once_flag once;
  int sm_count = 1;
  cublasHandle_t blas = nullptr;
};

device_state& state(int index) {
  static std::array<device_state, max_devices> states;
  device_state& s = states[static_cast<std::size_t>(index)];
  std::call_once(s.once, [&] {
    device_guard g(index);
    int sms = 1;
    check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, index),
               "cudaDeviceGetAttribute(MultiProcessorCount)");
    s.sm_count = sms;
  });
  return s;
}

// ---- memory ----------------------------------------------------------------------------------

template <int D>
struct cuda_memory_source {
  static void* allocate(std::size_t bytes) noexcept {
    device_guard g(D);
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      (void)cudaGetLastError();  // out of memory: the caching allocator empties its cache and retries
      return nullptr;
    }
    return p;
  }
  static void deallocate(void* p, std::size_t) noexcept {
    device_guard g(D);
    if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
  }
};

std::size_t cache_limit_from_env() {
  if (const char* s = std::getenv("EMBER_CUDA_CACHE_LIMIT")) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (end != s) return static_cast<std::size_t>(v);
  }
  return SIZE_MAX;  // as PyTorch: keep every freed block until empty_cache()
}

template <std::size_t... D>
std::array<allocator*, max_devices> make_allocators(std::index_sequence<D...>) {
  return {(static_cast<int>(D) < gpu_count()
               ? static_cast<allocator*>(new ember::detail::caching_allocator<
                                         cuda_memory_source<static_cast<int>(D)>>(
                     cache_limit_from_env()))
               : nullptr)...};
}

/// The allocator of GPU `index`, or nullptr (the hook behind em::cuda::is_available and
/// allocator_for). Never destroyed: tensors with static storage duration free into it at exit.
allocator* gpu_allocator(int index) {
  static const auto* all =
      new std::array<allocator*, max_devices>(make_allocators(std::make_index_sequence<max_devices>{}));
  if (index < 0 || index >= max_devices) return nullptr;
  return (*all)[static_cast<std::size_t>(index)];
}

void gpu_synchronize(int index) {
  device_guard g(index);
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

// ---- copies ----------------------------------------------------------------------------------

// Note [Pinned staging]: a copy between pageable host memory and a GPU goes through the
// driver's own small staging buffer; large copies here go through two 4 MiB pinned buffers
// instead, alternating, so the CPU's memcpy into one overlaps the DMA of the other.
constexpr std::size_t staging_chunk = std::size_t{4} << 20;
constexpr std::size_t staging_min = std::size_t{1} << 20;

struct staging {
  std::mutex mu;
  void* buf[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  bool ready = false;
};

staging& staging_buffers() {
  static auto* s = new staging;  // never destroyed (copies may run during static destruction)
  return *s;
}

bool staging_init(staging& s) {
  if (s.ready) return true;
  for (int i = 0; i < 2; ++i) {
    if (cudaHostAlloc(&s.buf[i], staging_chunk, cudaHostAllocPortable) != cudaSuccess ||
        cudaEventCreateWithFlags(&s.done[i], cudaEventDisableTiming) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;  // no pinned memory: plain copies
    }
  }
  s.ready = true;
  return true;
}

void copy_to_gpu_staged(void* dst, const void* src, std::size_t n, staging& s) {
  for (std::size_t off = 0, i = 0; off < n; off += staging_chunk, i ^= 1) {
    const std::size_t len = std::min(staging_chunk, n - off);
    check_cuda(cudaEventSynchronize(s.done[i]), "cudaEventSynchronize");  // buffer i is free
    std::memcpy(s.buf[i], static_cast<const char*>(src) + off, len);
    check_cuda(cudaMemcpyAsync(static_cast<char*>(dst) + off, s.buf[i], len,
                               cudaMemcpyHostToDevice, nullptr),
               "cudaMemcpyAsync(host to device)");
    check_cuda(cudaEventRecord(s.done[i], nullptr), "cudaEventRecord");
  }
  check_cuda(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize");
}

void copy_from_gpu_staged(void* dst, const void* src, std::size_t n, staging& s) {
  // queue chunk i+1's DMA before copying chunk i out of its buffer
  const std::size_t chunks = (n + staging_chunk - 1) / staging_chunk;
  auto issue = [&](std::size_t c) {
    const std::size_t off = c * staging_chunk, len = std::min(staging_chunk, n - off);
    check_cuda(cudaMemcpyAsync(s.buf[c & 1], static_cast<const char*>(src) + off, len,
                               cudaMemcpyDeviceToHost, nullptr),
               "cudaMemcpyAsync(device to host)");
    check_cuda(cudaEventRecord(s.done[c & 1], nullptr), "cudaEventRecord");
  };
  issue(0);
  for (std::size_t c = 0; c < chunks; ++c) {
    if (c + 1 < chunks) issue(c + 1);
    check_cuda(cudaEventSynchronize(s.done[c & 1]), "cudaEventSynchronize");
    const std::size_t off = c * staging_chunk, len = std::min(staging_chunk, n - off);
    std::memcpy(static_cast<char*>(dst) + off, s.buf[c & 1], len);
  }
}

void copy_bytes(void* dst, device dst_dev, const void* src, device src_dev, std::size_t n) {
  if (dst_dev.is_cuda() && src_dev.is_cuda()) {
    if (dst_dev.index == src_dev.index) {
      device_guard g(dst_dev.index);
      check_cuda(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, nullptr),
                 "cudaMemcpyAsync(device to device)");
    } else {
      check_cuda(cudaMemcpyPeer(dst, dst_dev.index, src, src_dev.index, n), "cudaMemcpyPeer");
    }
    return;
  }
  const bool to_gpu = dst_dev.is_cuda();
  device_guard g(to_gpu ? dst_dev.index : src_dev.index);
  if (n >= staging_min) {
    staging& s = staging_buffers();
    std::lock_guard lock(s.mu);
    if (staging_init(s)) {
      if (to_gpu) copy_to_gpu_staged(dst, src, n, s);
      else copy_from_gpu_staged(dst, src, n, s);
      return;
    }
  }
  // synchronous: the host buffer may be reused or freed as soon as we return
  check_cuda(cudaMemcpy(dst, src, n, to_gpu ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost),
             to_gpu ? "cudaMemcpy(host to device)" : "cudaMemcpy(device to host)");
}

// ---- kernels ---------------------------------------------------------------------------------

void run_fused(const dispatch::elementwise_program& p, device d) {
  if (!p.finished) {  // both paths run finished programs (Note [Operand forms])
    dispatch::elementwise_program q = p;
    dispatch::finish(q);
    return run_fused(q, d);
  }
  device_guard g(d.index);
  const int sms = state(d.index).sm_count;
  if (jit_launch(p, d.index, sms, nullptr)) return;  // Note [Kernel JIT]
  check_cuda(launch_fused(p, sms, nullptr), "fused elementwise kernel launch");
}

void run_reduce(const dispatch::reduce_problem& r, device d) {
  device_guard g(d.index);
  const int sms = state(d.index).sm_count;
  const std::size_t bytes = reduce_scratch_bytes(r, sms);
  allocator& a = allocator_for(d);
  void* scratch = bytes ? a.allocate(bytes) : nullptr;
  const cudaError_t e = launch_reduce(r, scratch, sms, nullptr);
  if (scratch) a.deallocate(scratch, bytes);  // stream-ordered (Note [One stream])
  check_cuda(e, "reduction kernel launch");
}

void run_dropout(const dispatch::dropout_problem& p, device d) {
  device_guard g(d.index);
  check_cuda(launch_dropout(p, state(d.index).sm_count, nullptr), "dropout kernel launch");
}

void run_index(const dispatch::index_problem& p, device d) {
  device_guard g(d.index);
  check_cuda(launch_index(p, state(d.index).sm_count, nullptr), "index kernel launch");
}

cublasHandle_t blas_handle(int index) {
  device_state& s = state(index);
  static std::mutex mu;
  std::lock_guard lock(mu);
  if (!s.blas) {
    check_cublas(cublasCreate(&s.blas), "cublasCreate");
    // strict fp32 (no TF32), as torch.backends.cuda.matmul.allow_tf32 = False
    check_cublas(cublasSetMathMode(s.blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  return s.blas;
}

int as_int(std::int64_t v, const char* what) {
  ember::detail::check(v >= 0 && v <= INT_MAX, errc::not_implemented, "matmul on cuda: ", what,
                       " = ", v, " exceeds cuBLAS's 32-bit sizes");
  return static_cast<int>(v);
}

// Note [Device GEMM]: ember's matrices are row-major views; cuBLAS's are column-major. The
// row-major C = A . B is the column-major C^T = B^T . A^T, so cuBLAS multiplies B by A with
// m and n swapped. A row-major operand (unit column stride) is cuBLAS's untransposed matrix
// with ld = its row stride; a column-major one (a transposed view, unit row stride) is
// cuBLAS's transposed matrix with ld = its column stride. No operand is copied.
void run_gemm(const dispatch::gemm_problem& p, device d) {
  if (p.m == 0 || p.n == 0 || p.batch == 0) return;
  device_guard g(d.index);
  cublasHandle_t h = blas_handle(d.index);
  const bool b_rows = p.b_cs == 1, a_rows = p.a_cs == 1;
  const cublasOperation_t op_b = b_rows ? CUBLAS_OP_N : CUBLAS_OP_T;
  const cublasOperation_t op_a = a_rows ? CUBLAS_OP_N : CUBLAS_OP_T;
  // leading dims: at least the stored matrix's row count (and 1), as cuBLAS checks
  const std::int64_t ldb = std::max<std::int64_t>({b_rows ? p.b_rs : p.b_cs, b_rows ? p.n : p.k, 1});
  const std::int64_t lda = std::max<std::int64_t>({a_rows ? p.a_rs : p.a_cs, a_rows ? p.k : p.m, 1});
  const int m = as_int(p.m, "m"), n = as_int(p.n, "n"), k = as_int(p.k, "k");
  const int ib = as_int(ldb, "ldb"), ia = as_int(lda, "lda"), ic = as_int(std::max(p.c_rs, p.n), "ldc");
  const int batch = as_int(p.batch, "batch");
  if (p.dtype == dispatch::code::f32) {
    const float alpha = static_cast<float>(p.alpha), beta = static_cast<float>(p.beta);
    check_cublas(cublasSgemmStridedBatched(h, op_b, op_a, n, m, k, &alpha,
                                           static_cast<const float*>(p.b), ib, p.stride_b,
                                           static_cast<const float*>(p.a), ia, p.stride_a, &beta,
                                           static_cast<float*>(p.c), ic, p.stride_c, batch),
                 "cublasSgemmStridedBatched");
  } else {
    const double alpha = p.alpha, beta = p.beta;
    check_cublas(cublasDgemmStridedBatched(h, op_b, op_a, n, m, k, &alpha,
                                           static_cast<const double*>(p.b), ib, p.stride_b,
                                           static_cast<const double*>(p.a), ia, p.stride_a, &beta,
                                           static_cast<double*>(p.c), ic, p.stride_c, batch),
                 "cublasDgemmStridedBatched");
  }
}

// ---- registration ----------------------------------------------------------------------------

struct registrar {
  registrar() {
    auto& hooks = ember::detail::cuda_allocators();
    hooks.get = &gpu_allocator;
    hooks.synchronize = &gpu_synchronize;
    ember::detail::device_copy_hook() = &copy_bytes;
    for (dtype t : {dtype::f32, dtype::f64, dtype::i32, dtype::i64, dtype::u8, dtype::boolean,
                    dtype::i8, dtype::i16}) {
      dispatch::register_kernel<op::fused>(device_type::cuda, t, &run_fused);
      dispatch::register_kernel<op::embedding>(device_type::cuda, t, &run_index);
    }
    for (dtype t : {dtype::f32, dtype::f64, dtype::i32, dtype::i64})
      dispatch::register_kernel<op::sum>(device_type::cuda, t, &run_reduce);
    for (dtype t : {dtype::f32, dtype::f64}) {
      dispatch::register_kernel<op::matmul>(device_type::cuda, t, &run_gemm);
      dispatch::register_kernel<op::dropout>(device_type::cuda, t, &run_dropout);
    }
  }
};

const registrar registered;

}  // namespace

/// Referenced by programs that must keep this library's registration when linking it
/// statically (the linker drops unreferenced archive members): `ember_cuda_linked()`.
int linked() noexcept { return gpu_count(); }

}  // namespace ember::cuda_backend
