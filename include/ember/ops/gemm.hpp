// GEMM: C = alpha * A·B + beta * C on raw strided buffers (the kernel under matmul, conv, linear
// and attention). Interface fixed; the implementation is replaced by the blocked kernel.
#pragma once

#include <cstdint>

namespace ember::detail {

/// C[m×n] = alpha * A[m×k] · B[k×n] + beta * C. Every operand has a row stride and a column
/// stride in elements (a transposed operand is just swapped strides). beta == 0 ignores C's
/// contents (NaN in C does not propagate).
template <class T>
void gemm(std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
          const T* a, std::int64_t a_rs, std::int64_t a_cs,
          const T* b, std::int64_t b_rs, std::int64_t b_cs,
          T beta, T* c, std::int64_t c_rs, std::int64_t c_cs) {
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      T acc = 0;
      for (std::int64_t p = 0; p < k; ++p) acc += a[i * a_rs + p * a_cs] * b[p * b_rs + j * b_cs];
      T& cij = c[i * c_rs + j * c_cs];
      cij = beta == T(0) ? alpha * acc : alpha * acc + beta * cij;
    }
  }
}

}  // namespace ember::detail
