// The xsimd adapter: ember's batch type for an element type (xsimd::batch on the compile-time
// best instruction set, or none), its width, and loads/stores. The only place that names xsimd
// types besides simd/math.hpp.
#pragma once

#include <ember/core/config.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if EMBER_HAS_XSIMD
#include <xsimd/xsimd.hpp>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#endif

namespace ember::simd {

/// True when T has a SIMD batch ember evaluates expressions with (float and double).
template <class T>
inline constexpr bool has_batch_v =
#if EMBER_HAS_XSIMD
    std::is_same_v<T, float> || std::is_same_v<T, double>;
#else
    false;
#endif

#if EMBER_HAS_XSIMD
template <class T>
using batch = xsimd::batch<T>;
/// Lanes per batch (1 when T has no batch).
template <class T>
inline constexpr std::size_t width = has_batch_v<T> ? xsimd::batch<T>::size : 1;

template <class T>
EMBER_ALWAYS_INLINE batch<T> load(const T* p) noexcept {
  return batch<T>::load_unaligned(p);
}
template <class T>
EMBER_ALWAYS_INLINE void store(T* p, const batch<T>& v) noexcept {
  v.store_unaligned(p);
}
/// True when store_stream writes past the caches (x86 with SSE2: MOVNTPS/MOVNTPD); elsewhere
/// store_stream is a plain store.
inline constexpr bool has_stream_store =
#if defined(__SSE2__)
    true;
#else
    false;
#endif
/// A non-temporal store of a packet to p, which must be aligned to the packet's size (Note
/// [Streaming stores] in eval/assign.hpp). Weakly ordered: call stream_fence() before the
/// values are handed to another thread.
template <class T>
EMBER_ALWAYS_INLINE void store_stream(T* p, const batch<T>& v) noexcept {
#if defined(__SSE2__)
  // (dispatch on the register's size, not its type: vector types as template arguments lose
  // their attributes, and GCC warns)
  constexpr std::size_t bytes = sizeof(typename batch<T>::register_type);
  constexpr bool f = std::is_same_v<T, float>, d = std::is_same_v<T, double>;
  if constexpr (f && bytes == 16) {
    _mm_stream_ps(p, v);
  } else if constexpr (d && bytes == 16) {
    _mm_stream_pd(p, v);
#if defined(__AVX__)
  } else if constexpr (f && bytes == 32) {
    _mm256_stream_ps(p, v);
  } else if constexpr (d && bytes == 32) {
    _mm256_stream_pd(p, v);
#endif
#if defined(__AVX512F__)
  } else if constexpr (f && bytes == 64) {
    _mm512_stream_ps(p, v);
  } else if constexpr (d && bytes == 64) {
    _mm512_stream_pd(p, v);
#endif
  } else {
    v.store_aligned(p);
  }
#else
  v.store_aligned(p);
#endif
}
/// Orders earlier streaming stores before later stores (SFENCE; nothing elsewhere).
EMBER_ALWAYS_INLINE void stream_fence() noexcept {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}
template <class T>
EMBER_ALWAYS_INLINE batch<T> broadcast(T v) noexcept {
  return batch<T>(v);
}
/// Sum of the lanes.
template <class T>
EMBER_ALWAYS_INLINE T hsum(const batch<T>& v) noexcept {
  return xsimd::hadd(v);
}
template <class T>
EMBER_ALWAYS_INLINE T hmax(const batch<T>& v) noexcept {
  alignas(64) T tmp[width<T>];
  v.store_unaligned(tmp);
  T m = tmp[0];
  for (std::size_t i = 1; i < width<T>; ++i) m = (tmp[i] > m || tmp[i] != tmp[i]) ? tmp[i] : m;
  return m;
}
#else
template <class T>
struct batch {};  // never instantiated: has_batch_v is false
template <class T>
inline constexpr std::size_t width = 1;
#endif

/// True for xsimd batches and batch masks (lets functors pick a batch-specific formula).
template <class V>
struct is_batch : std::false_type {};
#if EMBER_HAS_XSIMD
template <class T, class A>
struct is_batch<xsimd::batch<T, A>> : std::true_type {};
template <class T, class A>
struct is_batch<xsimd::batch_bool<T, A>> : std::true_type {};
#endif
template <class V>
inline constexpr bool is_batch_v = is_batch<V>::value;

}  // namespace ember::simd
