// GEMM: C = alpha * A·B + beta * C on raw strided buffers (the kernel under matmul, conv, linear
// and attention). float and double run a packed, cache-blocked, register-blocked SIMD kernel
// (ops/gemm_kernel.hpp) threaded over the pool; other element types run a plain loop.
#pragma once

#include <ember/core/config.hpp>
#include <ember/core/half.hpp>
#include <ember/core/parallel.hpp>
#include <ember/ops/gemm_kernel.hpp>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#if defined(EMBER_USE_CBLAS) && EMBER_USE_CBLAS
#include <cblas.h>
#endif

namespace ember::detail {

/// Work (m*n*k) at or below which float/double run the plain loop (packing costs more).
inline constexpr std::int64_t gemm_tiny_work = 5 * 5 * 5;
/// Multiply-adds per thread below which a GEMM is not split further.
inline constexpr std::int64_t gemm_thread_work = std::int64_t{1} << 18;

/// Splits [0, n) into ceil(n / block) nearly equal blocks whose sizes are multiples of `unit`
/// (except the last); returns the block size. Equal blocks avoid a tiny last block.
inline std::int64_t gemm_even_block(std::int64_t n, std::int64_t block, std::int64_t unit) {
  if (n <= block) return n;
  const std::int64_t count = (n + block - 1) / block;
  const std::int64_t size = (n + count - 1) / count;
  return (size + unit - 1) / unit * unit;
}

/// The plain triple loop: tiny float/double products and every other element type. Integers
/// accumulate in their own type (wrapping as PyTorch's CPU kernels do), 16-bit floats in float.
template <class T>
void gemm_naive(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                std::int64_t a_rs, std::int64_t a_cs, const T* b, std::int64_t b_rs,
                std::int64_t b_cs, T beta, T* c, std::int64_t c_rs, std::int64_t c_cs) {
  using acc_t = std::conditional_t<std::is_same_v<T, half> || std::is_same_v<T, bfloat16>, float, T>;
  const acc_t al = static_cast<acc_t>(alpha), be = static_cast<acc_t>(beta);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      acc_t acc = acc_t(0);
      for (std::int64_t p = 0; p < k; ++p)
        acc += static_cast<acc_t>(a[i * a_rs + p * a_cs]) * static_cast<acc_t>(b[p * b_rs + j * b_cs]);
      T& cij = c[i * c_rs + j * c_cs];
      cij = static_cast<T>(be == acc_t(0) ? al * acc : al * acc + be * static_cast<acc_t>(cij));
    }
}

/// C = beta * C (beta == 0 writes zeros, ignoring NaN in C).
template <class T>
void gemm_scale(std::int64_t m, std::int64_t n, T beta, T* c, std::int64_t c_rs, std::int64_t c_cs) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      T& x = c[i * c_rs + j * c_cs];
      x = beta == T(0) ? T(0) : T(beta * x);
    }
}

/// One thread's blocked GEMM over a sub-problem (Note [GEMM blocking]).
template <class T>
void gemm_blocked(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                  std::int64_t a_rs, std::int64_t a_cs, const T* b, std::int64_t b_rs,
                  std::int64_t b_cs, T beta, T* c, std::int64_t c_rs, std::int64_t c_cs) {
  using blk = gemm_blocking<T>;
  constexpr int MR = blk::mr, NR = blk::nr, W = blk::lanes;
  const std::int64_t KC = gemm_even_block(k, blk::kc, 1);
  const std::int64_t MC = gemm_even_block(m, blk::mc, MR);
  const std::int64_t NC = gemm_even_block(n, blk::nc, NR);
  thread_local gemm_scratch<T> a_buf, b_buf;
  T* ap = a_buf.get(static_cast<std::size_t>(MC * KC + gemm_pack_slack<T>));
  T* bp = b_buf.get(static_cast<std::size_t>((NC + NR) * KC));
  const auto& kernels = gemm_kernels<T>;
  for (std::int64_t jc = 0; jc < n; jc += NC) {
    const std::int64_t nc = std::min(NC, n - jc);
    for (std::int64_t pc = 0; pc < k; pc += KC) {
      const std::int64_t kc = std::min(KC, k - pc);
      const T beta_k = pc == 0 ? beta : T(1);
      gemm_pack_b(kc, nc, b + pc * b_rs + jc * b_cs, b_rs, b_cs, bp);
      for (std::int64_t ic = 0; ic < m; ic += MC) {
        const std::int64_t mc = std::min(MC, m - ic);
        gemm_pack_a(mc, kc, a + ic * a_rs + pc * a_cs, a_rs, a_cs, ap);
        for (std::int64_t jr = 0; jr < nc; jr += NR) {
          const std::int64_t nr = std::min<std::int64_t>(NR, nc - jr);
          const std::size_t nv = static_cast<std::size_t>((nr + W - 1) / W - 1);
          for (std::int64_t ir = 0; ir < mc; ir += MR) {
            const std::int64_t mr = std::min<std::int64_t>(MR, mc - ir);
            T* ct = c + (ic + ir) * c_rs + (jc + jr) * c_cs;
            kernels[static_cast<std::size_t>(mr - 1)][nv](kc, ap + ir * kc, bp + jr * kc, alpha,
                                                          beta_k, ct, c_rs, c_cs, nr);
          }
        }
      }
    }
  }
}

/// One row of C, columns [j0, j1): c = alpha * sum_p a[p] * B[p, :] + beta * c, with B's rows
/// read front to back (unit column stride) into an accumulator block that stays in L1.
template <class T>
void gemm_direct_axpy(std::int64_t j0, std::int64_t j1, std::int64_t k, T alpha, const T* a,
                      std::int64_t a_cs, const T* b, std::int64_t b_rs, T beta, T* c,
                      std::int64_t c_cs) {
  using ops = gemm_vec<T>;
  using V = typename ops::type;
  constexpr std::int64_t W = ops::lanes;
  constexpr std::int64_t JB = 8192 / sizeof(T);  // 8 KiB of accumulators
  alignas(64) T acc[JB];
  for (std::int64_t jb = j0; jb < j1; jb += JB) {
    const std::int64_t nb = std::min(JB, j1 - jb);
    const std::int64_t nv = nb / W * W;
    for (std::int64_t p = 0; p < k; ++p) {
      const T s = a[p * a_cs];
      const V vs(s);
      const T* row = b + p * b_rs + jb;
      if (p == 0) {
        for (std::int64_t j = 0; j < nv; j += W) ops::store(acc + j, vs * ops::load(row + j));
        for (std::int64_t j = nv; j < nb; ++j) acc[j] = s * row[j];
      } else {
        for (std::int64_t j = 0; j < nv; j += W)
          ops::store(acc + j, ops::fma(vs, ops::load(row + j), ops::load(acc + j)));
        for (std::int64_t j = nv; j < nb; ++j) acc[j] += s * row[j];
      }
    }
    for (std::int64_t j = 0; j < nb; ++j) {
      T& x = c[(jb + j) * c_cs];
      x = beta == T(0) ? T(alpha * acc[j]) : T(alpha * acc[j] + beta * x);
    }
  }
}

/// c = alpha * dot(a[0, k), b[0, k)) + beta * c, both with unit stride.
template <class T>
EMBER_ALWAYS_INLINE void gemm_direct_dot(std::int64_t k, T alpha, const T* a, const T* b, T beta, T& c) {
  using ops = gemm_vec<T>;
  using V = typename ops::type;
  constexpr std::int64_t W = ops::lanes;
  V s0(T(0)), s1(T(0)), s2(T(0)), s3(T(0));
  std::int64_t p = 0;
  for (; p + 4 * W <= k; p += 4 * W) {
    s0 = ops::fma(ops::load(a + p), ops::load(b + p), s0);
    s1 = ops::fma(ops::load(a + p + W), ops::load(b + p + W), s1);
    s2 = ops::fma(ops::load(a + p + 2 * W), ops::load(b + p + 2 * W), s2);
    s3 = ops::fma(ops::load(a + p + 3 * W), ops::load(b + p + 3 * W), s3);
  }
  for (; p + W <= k; p += W) s0 = ops::fma(ops::load(a + p), ops::load(b + p), s0);
  T s = ops::sum((s0 + s1) + (s2 + s3));
  for (; p < k; ++p) s += a[p] * b[p];
  c = beta == T(0) ? T(alpha * s) : T(alpha * s + beta * c);
}

/// Matrix-vector shapes without packing, each reading the matrix once with unit stride.
/// `dot`: every element of C is a dot product of a row of A and a column of B (needs
/// a_cs == 1 and b_rs == 1); otherwise m == 1 and C's row is a combination of B's rows (needs
/// b_cs == 1). Threads split C's rows and columns.
template <class T>
void gemm_direct(bool dot, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                 std::int64_t a_rs, std::int64_t a_cs, const T* b, std::int64_t b_rs,
                 std::int64_t b_cs, T beta, T* c, std::int64_t c_rs, std::int64_t c_cs) {
  constexpr std::int64_t W = gemm_vec<T>::lanes;
  // C's columns cut into as few ranges as give every thread work (long contiguous row reads)
  std::int64_t parts = 1;
  if (m * n * k >= 2 * gemm_thread_work && !thread_pool::in_task())
    parts = std::min<std::int64_t>({get_num_threads(), m * n * k / gemm_thread_work, (n + W - 1) / W});
  const std::int64_t JB = ((n + parts - 1) / parts + W - 1) / W * W;
  const std::int64_t jblocks = (n + JB - 1) / JB;
  const std::int64_t grain = std::max<std::int64_t>(1, gemm_thread_work / std::max<std::int64_t>(JB * k, 1));
  parallel_for(0, m * jblocks, grain, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t i = t / jblocks;
      const std::int64_t j0 = t % jblocks * JB, j1 = std::min(n, j0 + JB);
      if (dot) {
        for (std::int64_t j = j0; j < j1; ++j)
          gemm_direct_dot(k, alpha, a + i * a_rs, b + j * b_cs, beta, c[i * c_rs + j * c_cs]);
      } else {
        gemm_direct_axpy(j0, j1, k, alpha, a + i * a_rs, a_cs, b, b_rs, beta, c + i * c_rs, c_cs);
      }
    }
  });
}

/// Threaded blocked GEMM: C is cut into a grid of sub-blocks (multiples of the register
/// tile), one per task, each packed and computed independently. The k blocking never
/// depends on the cut, so every thread count gives bitwise the same result.
template <class T>
void gemm_parallel(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                   std::int64_t a_rs, std::int64_t a_cs, const T* b, std::int64_t b_rs,
                   std::int64_t b_cs, T beta, T* c, std::int64_t c_rs, std::int64_t c_cs) {
  using blk = gemm_blocking<T>;
  const std::int64_t work = m * n * k;
  std::int64_t threads = 1;
  if (work >= 2 * gemm_thread_work && !thread_pool::in_task())
    threads = std::min<std::int64_t>(get_num_threads(), work / gemm_thread_work);
  // choose tm x tn = threads minimizing the per-thread packed volume (rows + columns)
  std::int64_t tm = 1, tn = 1;
  if (threads > 1) {
    std::int64_t best = -1;
    for (std::int64_t cm = 1; cm <= threads; ++cm) {
      if (threads % cm) continue;
      const std::int64_t cn = threads / cm;
      if (cm > (m + blk::mr - 1) / blk::mr || cn > (n + blk::nr - 1) / blk::nr) continue;
      const std::int64_t cost = (m + cm - 1) / cm + (n + cn - 1) / cn;
      if (best < 0 || cost < best) best = cost, tm = cm, tn = cn;
    }
  }
  if (tm * tn <= 1) {
    gemm_blocked(m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs);
    return;
  }
  auto cut = [](std::int64_t len, std::int64_t parts, std::int64_t unit, std::int64_t i) {
    const std::int64_t units = (len + unit - 1) / unit;
    const std::int64_t lo = units * i / parts * unit, hi = units * (i + 1) / parts * unit;
    return std::pair<std::int64_t, std::int64_t>(std::min(lo, len), std::min(hi, len));
  };
  parallel_for(0, tm * tn, 1, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      const auto [i0, i1] = cut(m, tm, blk::mr, t / tn);
      const auto [j0, j1] = cut(n, tn, blk::nr, t % tn);
      if (i0 >= i1 || j0 >= j1) continue;
      gemm_blocked(i1 - i0, j1 - j0, k, alpha, a + i0 * a_rs, a_rs, a_cs, b + j0 * b_cs, b_rs, b_cs,
                   beta, c + i0 * c_rs + j0 * c_cs, c_rs, c_cs);
    }
  });
}

#if defined(EMBER_USE_CBLAS) && EMBER_USE_CBLAS
/// Routes to the external CBLAS when every operand has a BLAS layout (one unit stride, the
/// other a leading dimension); returns false to use ember's kernel otherwise.
template <class T>
bool gemm_cblas(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                std::int64_t a_rs, std::int64_t a_cs, const T* b, std::int64_t b_rs,
                std::int64_t b_cs, T beta, T* c, std::int64_t c_rs, std::int64_t c_cs) {
  // row-major view: an operand with rows r, cols q is "N" with ld = rs when cs == 1 (ld >= q),
  // "T" with ld = cs when rs == 1 (ld >= r)
  auto layout = [](std::int64_t r, std::int64_t q, std::int64_t rs, std::int64_t cs,
                   CBLAS_TRANSPOSE& t, std::int64_t& ld) {
    if (cs == 1 && (rs >= std::max<std::int64_t>(1, q) || r == 1)) {
      t = CblasNoTrans, ld = std::max<std::int64_t>({rs, q, 1});
      return true;
    }
    if (rs == 1 && (cs >= std::max<std::int64_t>(1, r) || q == 1)) {
      t = CblasTrans, ld = std::max<std::int64_t>({cs, r, 1});
      return true;
    }
    return false;
  };
  CBLAS_TRANSPOSE ta, tb, tc;
  std::int64_t lda, ldb, ldc;
  if (!layout(m, k, a_rs, a_cs, ta, lda) || !layout(k, n, b_rs, b_cs, tb, ldb) ||
      !layout(m, n, c_rs, c_cs, tc, ldc) || tc != CblasNoTrans)
    return false;
  constexpr std::int64_t lim = 0x7fffffff;
  if (m > lim || n > lim || k > lim || lda > lim || ldb > lim || ldc > lim) return false;
  auto i = [](std::int64_t v) { return static_cast<int>(v); };
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, i(m), i(n), i(k), alpha, a, i(lda), b, i(ldb), beta, c, i(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, i(m), i(n), i(k), alpha, a, i(lda), b, i(ldb), beta, c, i(ldc));
  return true;
}
#endif

/// C[m×n] = alpha * A[m×k] · B[k×n] + beta * C. Every operand has a row stride and a column
/// stride in elements (a transposed operand is just swapped strides). beta == 0 ignores C's
/// contents (NaN in C does not propagate). C must not overlap A or B.
template <class T>
void gemm(std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
          const T* a, std::int64_t a_rs, std::int64_t a_cs,
          const T* b, std::int64_t b_rs, std::int64_t b_cs,
          T beta, T* c, std::int64_t c_rs, std::int64_t c_cs) {
  if (m <= 0 || n <= 0) return;
  if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double>) {
    gemm_naive(m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs);
  } else {
    if (k <= 0 || alpha == T(0)) {  // as BLAS: A and B are not read
      gemm_scale(m, n, beta, c, c_rs, c_cs);
      return;
    }
    // tiny products: the fixed cost of packing (tens of ns) is most of the work
    if (m * n * k <= gemm_tiny_work)
      return gemm_naive(m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs);
    // Note [GEMM orientation]: the kernels write rows of C, so a column-major C is computed as
    // C^T = B^T A^T (same arithmetic per element). Strides along extent-1 dims are irrelevant:
    // they are set to 1 so that the layout tests below see the unit strides that matter.
    auto unit_strides = [&] {
      if (m == 1) a_rs = 1, c_rs = 1;
      if (n == 1) b_cs = 1, c_cs = 1;
      if (k == 1) a_cs = 1, b_rs = 1;
    };
    unit_strides();
    if (c_cs != 1 && c_rs == 1) {
      std::swap(m, n);
      std::swap(a, b);
      std::swap(a_rs, b_cs);
      std::swap(a_cs, b_rs);
      std::swap(c_rs, c_cs);
    }
#if defined(EMBER_USE_CBLAS) && EMBER_USE_CBLAS
    if (gemm_cblas(m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs)) return;
#endif
    // matrix-vector shapes: one pass over the matrix, no packing, in the form that reads it
    // with unit stride (packed GEMM handles the other layouts)
    if (m == 1 || n == 1) {
      const bool dot = a_cs == 1 && b_rs == 1;
      if (dot && (n == 1 || b_cs != 1))
        return gemm_direct(true, m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs);
      if (m == 1 && b_cs == 1)
        return gemm_direct(false, m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs);
      if (n == 1 && a_rs == 1)  // C^T = b^T A^T: a row times a matrix with unit column stride
        return gemm_direct(false, n, m, k, alpha, b, b_cs, b_rs, a, a_cs, a_rs, beta, c, c_cs, c_rs);
    }
    gemm_parallel(m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs);
  }
}

}  // namespace ember::detail
