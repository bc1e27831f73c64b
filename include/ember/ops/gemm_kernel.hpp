// The pieces under detail::gemm for float and double: register/cache blocking constants, the
// register-blocked micro-kernel (xsimd FMA, or scalar without xsimd) and the panel packing.
// The driver that loops over cache blocks and threads is ops/gemm.hpp.
#pragma once

#include <ember/core/config.hpp>
#include <ember/simd/batch.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

namespace ember::detail {

/// The few vector operations the GEMM kernels use: xsimd batches, or T itself (one lane)
/// when xsimd is absent.
template <class T>
struct gemm_vec {
#if EMBER_HAS_XSIMD
  using type = simd::batch<T>;
  static constexpr int lanes = static_cast<int>(simd::width<T>);
  static EMBER_ALWAYS_INLINE type load(const T* p) noexcept { return type::load_unaligned(p); }
  static EMBER_ALWAYS_INLINE type load_aligned(const T* p) noexcept { return type::load_aligned(p); }
  static EMBER_ALWAYS_INLINE void store(T* p, const type& v) noexcept { v.store_unaligned(p); }
  /// x * y + z, fused where the target has FMA. xsimd 8 has no AVX-512 fma kernel and falls
  /// back to a multiply and an add in separate functions, which GCC contracts into one FMA but
  /// clang does not (it contracts only within one expression): with clang the product and sum
  /// are written as one expression on the underlying vector registers.
  static EMBER_ALWAYS_INLINE type fma(const type& x, const type& y, const type& z) noexcept {
#if defined(__clang__)
    using reg = typename type::register_type;
    return type(static_cast<reg>(x) * static_cast<reg>(y) + static_cast<reg>(z));
#else
    return xsimd::fma(x, y, z);
#endif
  }
  /// Sum of the lanes (through memory: xsimd::hadd on AVX-512 doubles trips GCC 12's
  /// -Wmaybe-uninitialized inside its own intrinsics header).
  static EMBER_ALWAYS_INLINE T sum(const type& v) noexcept {
    alignas(64) T tmp[lanes];
    v.store_aligned(tmp);
    T s = T(0);
    for (int i = 0; i < lanes; ++i) s += tmp[i];
    return s;
  }
#else
  using type = T;
  static constexpr int lanes = 1;
  static EMBER_ALWAYS_INLINE type load(const T* p) noexcept { return *p; }
  static EMBER_ALWAYS_INLINE type load_aligned(const T* p) noexcept { return *p; }
  static EMBER_ALWAYS_INLINE void store(T* p, const type& v) noexcept { *p = v; }
  static EMBER_ALWAYS_INLINE type fma(const type& x, const type& y, const type& z) noexcept {
    return x * y + z;
  }
  static EMBER_ALWAYS_INLINE T sum(const type& v) noexcept { return v; }
#endif
};

/// Note [GEMM blocking]: the micro-kernel keeps an MR x NR tile of C in registers: NV vectors
/// along a row of C times MR rows, plus NV vectors of B and one broadcast of A, so
/// MR = (registers - NV - 1) / NV. With 32 vector registers (AVX-512) that is 14 x 2 vectors:
/// 14 x 32 floats or 14 x 16 doubles; with 16 (AVX2, SSE) 6 x 2 vectors. Each k step does
/// 2*MR FMAs for 2 vector loads and MR broadcasts, which keeps both FMA ports busy (alone, on
/// operands in L1/L2, ~170 GFLOP/s f32 on the machine below). The loops around it follow
/// BLIS/GotoBLAS (gemm_blocked):
/// for each nc-wide panel of B and kc-deep slice, B is packed once; for each mc-high block
/// of A, A is packed; then each kc x NR micro-panel of B is swept by every MR-row micro-panel
/// of the A block. Measured on a Sapphire Rapids class Xeon (48 KiB L1d, 2 MiB L2 per core,
/// bench/gemm.cpp and sweeps of kc 128..512, mc 84..1022, nc 512..4096): the best kc gives a
/// B micro-panel of 32-48 KiB (L2 refills L1 fast enough that a larger kc, fewer passes over
/// C, wins), and a small A block (~150 KiB) beats one of half of L2 by 3-5%, because the
/// packed B panel (kc x nc, 1.5 MiB) then stays in L2 too. Differences between neighbouring
/// choices are 1-3%; the sizes are reasonable for smaller caches as well.
template <class T>
struct gemm_blocking {
  static constexpr int lanes = gemm_vec<T>::lanes;
#if EMBER_HAS_XSIMD
  /// 64-byte vectors come with 32 architectural registers (AVX-512); assume 16 otherwise.
  static constexpr int registers = lanes * sizeof(T) >= 64 ? 32 : 16;
  static constexpr int nv = 2;
  static constexpr int mr = (registers - nv - 1) / nv;
#else
  static constexpr int registers = 16;
  static constexpr int nv = 4;  // one lane per "vector": a 4 x 4 scalar tile
  static constexpr int mr = 4;
#endif
  static constexpr int nr = nv * lanes;
  /// Depth of a packed block (elements of k): a kc x NR micro-panel of B is 48 KiB (f32)
  /// or 32 KiB (f64).
  static constexpr std::int64_t kc = sizeof(T) == 4 ? 384 : 256;
  /// Rows of A per packed block (a multiple of every mr above): 126 KiB (f32) or 168 KiB
  /// (f64), small enough that the packed B panel stays in L2 beside it.
  static constexpr std::int64_t mc = 84;
  /// Columns of B per packed panel: kc x nc is 1.5 MiB.
  static constexpr std::int64_t nc = sizeof(T) == 4 ? 1024 : 768;
};

/// Edge/strided update of one row of a C tile: c = alpha * acc + beta * c (beta == 0 never
/// reads c), for the n_valid columns of `row` (NV vectors of accumulators). The arithmetic is
/// the vector arithmetic of the full-tile path, so a value never depends on where its tile
/// falls (edge or not) and every thread count gives the same bits.
template <class T, int NV>
void gemm_update_row(const T* row, T alpha, T beta, T* c, std::int64_t c_cs, std::int64_t n_valid) {
  using ops = gemm_vec<T>;
  using V = typename ops::type;
  constexpr int W = ops::lanes;
  const V va(alpha), vb(beta);
  alignas(64) T buf[NV * W];
  if (beta != T(0))
    for (std::int64_t j = 0; j < n_valid; ++j) buf[j] = c[j * c_cs];
  for (int v = 0; v < NV; ++v) {
    V r = va * ops::load_aligned(row + v * W);
    if (beta != T(0)) r = ops::fma(vb, ops::load_aligned(buf + v * W), r);
    ops::store(buf + v * W, r);
  }
  for (std::int64_t j = 0; j < n_valid; ++j) c[j * c_cs] = buf[j];
}

/// The micro-kernel: C[MRows x n_valid] = alpha * Ap * Bp + beta * C over one packed
/// micro-panel pair. Ap holds kc steps of MRows values (k-major), Bp kc steps of NV*lanes
/// values (zero-padded past n_valid), 64-byte aligned.
template <class T, int MRows, int NV>
void gemm_micro_kernel(std::int64_t kc, const T* __restrict a, const T* __restrict b, T alpha,
                       T beta, T* c, std::int64_t c_rs, std::int64_t c_cs, std::int64_t n_valid) {
  using ops = gemm_vec<T>;
  using V = typename ops::type;
  constexpr int W = ops::lanes;
  V acc[MRows][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MRows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V(T(0));
  // the C tile is needed only after the k loop: start fetching it now
  for (int i = 0; i < MRows; ++i) {
    __builtin_prefetch(c + i * c_rs, 1, 3);
    __builtin_prefetch(c + i * c_rs + (n_valid - 1) * c_cs, 1, 3);
  }
  for (std::int64_t p = 0; p < kc; ++p) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = ops::load_aligned(b + v * W);
#pragma GCC unroll 16
    for (int i = 0; i < MRows; ++i) {
      const V ai(a[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = ops::fma(ai, bv[v], acc[i][v]);
    }
    a += MRows;
    b += NV * W;
  }
  if (n_valid == NV * W && c_cs == 1) {
    // full tile, unit column stride: straight from the registers (same arithmetic as
    // gemm_update_row, which handles edges)
    const V va(alpha), vb(beta);
    if (beta == T(0)) {
#pragma GCC unroll 16
      for (int i = 0; i < MRows; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) ops::store(c + i * c_rs + v * W, va * acc[i][v]);
    } else {
#pragma GCC unroll 16
      for (int i = 0; i < MRows; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          T* cp = c + i * c_rs + v * W;
          ops::store(cp, ops::fma(vb, ops::load(cp), va * acc[i][v]));
        }
    }
    return;
  }
  // edge tile or strided C: through a buffer (acc itself must never be addressed, or the
  // compiler keeps it in memory instead of registers)
  alignas(64) T tile[MRows][NV * W];
#pragma GCC unroll 16
  for (int i = 0; i < MRows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) ops::store(&tile[i][v * W], acc[i][v]);
  for (int i = 0; i < MRows; ++i) gemm_update_row<T, NV>(tile[i], alpha, beta, c + i * c_rs, c_cs, n_valid);
}

template <class T>
using gemm_kernel_fn = void (*)(std::int64_t, const T*, const T*, T, T, T*, std::int64_t,
                                std::int64_t, std::int64_t);

/// kernels[rows - 1][vectors - 1]: every tile shape an edge can need, so rows past m are never
/// computed (m = 64 with MR = 14 runs 4 tiles of 14 rows and one of 8).
template <class T, std::size_t... R, std::size_t... V>
constexpr auto gemm_kernel_table(std::index_sequence<R...>, std::index_sequence<V...>) {
  using row_t = std::array<gemm_kernel_fn<T>, sizeof...(V)>;
  auto row = [](auto r) { return row_t{&gemm_micro_kernel<T, decltype(r)::value + 1, V + 1>...}; };
  return std::array<row_t, sizeof...(R)>{row(std::integral_constant<int, static_cast<int>(R)>{})...};
}

template <class T>
inline constexpr auto gemm_kernels =
    gemm_kernel_table<T>(std::make_index_sequence<gemm_blocking<T>::mr>{},
                         std::make_index_sequence<gemm_blocking<T>::nv>{});

// Note [GEMM packing transposes]: packing a row-major A (or a column-major B, the x · Wᵀ of a
// linear layer) is a transpose. Element by element it costs about a cycle per value, which for
// an MLP-sized product (64 x 784 · 784 x 256) is 40% of the multiply time. Instead L x L blocks
// (L = SIMD lanes) are transposed in registers: log2(L) rounds of two-input shuffles written
// with the compiler's generic vector extension (__builtin_shufflevector: GCC >= 12, clang),
// which lowers them to the target's own shuffles, so no instruction set is named here.
#if EMBER_HAS_XSIMD && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12))
#define EMBER_GEMM_SHUFFLE 1
#else
#define EMBER_GEMM_SHUFFLE 0
#endif

#if EMBER_GEMM_SHUFFLE
/// Lanes of the in-register transpose (one native vector).
template <class T>
inline constexpr int gemm_tr_lanes = gemm_vec<T>::lanes;

template <class T>
struct gemm_tr_vec {
  using type __attribute__((vector_size(gemm_tr_lanes<T> * sizeof(T)))) = T;
};

/// One round of the block transpose: swaps the off-diagonal H x H blocks of every 2H x 2H
/// block between rows a and b (Hi picks the second output row).
template <int L, int H, bool Hi, class V, std::size_t... E>
EMBER_ALWAYS_INLINE V gemm_tr_round(V a, V b, std::index_sequence<E...>) noexcept {
  return __builtin_shufflevector(
      a, b, (Hi ? ((E & H) == 0 ? E + H : L + E) : ((E & H) == 0 ? E : L + E - H))...);
}

template <int L, int H, class V>
EMBER_ALWAYS_INLINE void gemm_tr_rounds(V* v) noexcept {
  if constexpr (H < L) {
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i)
      if ((i & H) == 0) {
        const V a = v[i], b = v[i + H];
        v[i] = gemm_tr_round<L, H, false>(a, b, std::make_index_sequence<L>{});
        v[i + H] = gemm_tr_round<L, H, true>(a, b, std::make_index_sequence<L>{});
      }
    gemm_tr_rounds<L, H * 2>(v);
  }
}

/// Loads L rows of L values (row r at src + row_of(r) * ld), transposes them in registers.
template <class T, class RowOf>
EMBER_ALWAYS_INLINE void gemm_tr_load(const T* src, std::int64_t ld, RowOf row_of,
                                      typename gemm_tr_vec<T>::type* v) noexcept {
  constexpr int L = gemm_tr_lanes<T>;
#pragma GCC unroll 16
  for (int r = 0; r < L; ++r) __builtin_memcpy(&v[r], src + row_of(r) * ld, sizeof(v[r]));
  gemm_tr_rounds<L, 1>(v);
}
#endif

/// Extra elements the A buffer needs past its end (transposed packing stores whole vectors).
template <class T>
inline constexpr std::int64_t gemm_pack_slack = 64;

/// Packs rows [0, mc) x depth [0, kc) of A (strides a_rs, a_cs) into MR-row panels: panel r
/// starts at r * MR * kc and holds kc steps of its rows (the last panel may be shorter; it is
/// stored with its own row count as the step, densely). Writes up to gemm_pack_slack elements
/// past mc * kc.
template <class T>
void gemm_pack_a(std::int64_t mc, std::int64_t kc, const T* a, std::int64_t a_rs, std::int64_t a_cs,
                 T* out) {
  constexpr int MR = gemm_blocking<T>::mr;
  for (std::int64_t r0 = 0; r0 < mc; r0 += MR) {
    const std::int64_t mr = std::min<std::int64_t>(MR, mc - r0);
    T* dst = out + r0 * kc;
    const T* src = a + r0 * a_rs;
    std::int64_t p = 0;
    if (a_rs == 1 && mr == MR) {
      // column-major A: each k step is MR contiguous values
      for (; p < kc; ++p)
        for (int i = 0; i < MR; ++i) dst[p * MR + i] = src[p * a_cs + i];
    }
#if EMBER_GEMM_SHUFFLE
    else if (a_cs == 1 && mr == MR) {
      // row-major A: transpose L steps x L rows at a time; MR rows are C chunks of L rows
      // (the last chunk repeats its last row). Stores go in increasing address order, each a
      // whole vector: the lanes past a chunk's rows land on places a later store overwrites
      // (Note [GEMM packing transposes]).
      constexpr int L = gemm_tr_lanes<T>;
      constexpr int C = (MR + L - 1) / L;
      using V = typename gemm_tr_vec<T>::type;
      for (; p + L <= kc; p += L) {
        V v[C][L];
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c)
          gemm_tr_load(src + p, a_rs, [c](int r) { return std::min(c * L + r, MR - 1); }, v[c]);
#pragma GCC unroll 16
        for (int q = 0; q < L; ++q)
#pragma GCC unroll 4
          for (int c = 0; c < C; ++c) __builtin_memcpy(dst + (p + q) * MR + c * L, &v[c][q], sizeof(V));
      }
    }
#endif
    for (; p < kc; ++p)
      for (std::int64_t i = 0; i < mr; ++i) dst[p * mr + i] = src[i * a_rs + p * a_cs];
  }
}

/// Packs depth [0, kc) x columns [0, nc) of B into NR-column panels: panel j starts at
/// j * kc (j a multiple of NR) and holds kc steps of NR values; the last panel uses as many
/// whole vectors as it needs, zero-filled past nc.
template <class T>
void gemm_pack_b(std::int64_t kc, std::int64_t nc, const T* b, std::int64_t b_rs, std::int64_t b_cs,
                 T* out) {
  constexpr int NR = gemm_blocking<T>::nr;
  constexpr int W = gemm_blocking<T>::lanes;
  const std::int64_t full = nc / NR * NR;  // columns in whole panels
  if (b_cs == 1) {
    // row-major B: read each row of B once, front to back, handing NR values to each panel
    for (std::int64_t p = 0; p < kc; ++p) {
      const T* s = b + p * b_rs;
      for (std::int64_t j0 = 0; j0 < full; j0 += NR) {
        T* d = out + j0 * kc + p * NR;
        for (int j = 0; j < NR; ++j) d[j] = s[j0 + j];
      }
    }
  } else {
    for (std::int64_t j0 = 0; j0 < full; j0 += NR) {
      T* dst = out + j0 * kc;
      const T* src = b + j0 * b_cs;
      std::int64_t p = 0;
#if EMBER_GEMM_SHUFFLE
      if (b_rs == 1) {
        // column-major B (a weight used transposed): L x L transposes, NR / L per block
        constexpr int L = gemm_tr_lanes<T>;
        using V = typename gemm_tr_vec<T>::type;
        for (; p + L <= kc; p += L)
          for (int jj = 0; jj < NR; jj += L) {
            V v[L];
            gemm_tr_load(src + jj * b_cs + p, b_cs, [](int r) { return r; }, v);
#pragma GCC unroll 16
            for (int q = 0; q < L; ++q) __builtin_memcpy(dst + (p + q) * NR + jj, &v[q], sizeof(V));
          }
      }
#endif
      for (; p < kc; ++p)
        for (int j = 0; j < NR; ++j) dst[p * NR + j] = src[p * b_rs + j * b_cs];
    }
  }
  if (full < nc) {
    const std::int64_t nr = nc - full;
    const std::int64_t step = (nr + W - 1) / W * W;
    T* dst = out + full * kc;
    const T* src = b + full * b_cs;
    for (std::int64_t p = 0; p < kc; ++p) {
      std::int64_t j = 0;
      for (; j < nr; ++j) dst[p * step + j] = src[p * b_rs + j * b_cs];
      for (; j < step; ++j) dst[p * step + j] = T(0);
    }
  }
}

/// A growable 64-byte aligned scratch buffer, one per thread and element type (packed panels).
template <class T>
class gemm_scratch {
 public:
  gemm_scratch() = default;
  gemm_scratch(const gemm_scratch&) = delete;
  gemm_scratch& operator=(const gemm_scratch&) = delete;
  ~gemm_scratch() { release(); }

  T* get(std::size_t n) {
    if (n > cap_) {
      release();
      p_ = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64}));
      cap_ = n;
    }
    return p_;
  }

 private:
  void release() {
    if (p_) ::operator delete(p_, std::align_val_t{64});
    p_ = nullptr;
    cap_ = 0;
  }
  T* p_ = nullptr;
  std::size_t cap_ = 0;
};

}  // namespace ember::detail

#undef EMBER_GEMM_SHUFFLE
