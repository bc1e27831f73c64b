// Strided traversal of N operands over one shape: dimension coalescing and a row loop that
// hands each innermost row (count, per-operand pointers and inner strides) to a callback.
#pragma once

#include <ember/core/shape.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <utility>

namespace ember::detail {

/// Note [Coalescing]: the traversal first drops size-1 dims and merges adjacent dims i, i+1
/// when, for every operand, stride[i] == stride[i+1] * size[i+1] (the pair walks memory as one
/// dim). A contiguous tensor becomes one long row; a transposed one stays 2-D.
template <std::size_t N>
struct strided_plan {
  shape sizes;
  std::array<shape, N> strides;
};

template <std::size_t N>
strided_plan<N> coalesce(const shape& sizes, const std::array<const shape*, N>& strides) {
  strided_plan<N> p;
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    const std::size_t last = p.sizes.size();
    bool merge = last > 0;
    for (std::size_t k = 0; k < N && merge; ++k)
      merge = p.strides[k][last - 1] == (*strides[k])[d] * sizes[d];
    if (merge) {
      p.sizes[last - 1] *= sizes[d];
      for (std::size_t k = 0; k < N; ++k) p.strides[k][last - 1] = (*strides[k])[d];
    } else {
      p.sizes.push_back(sizes[d]);
      for (std::size_t k = 0; k < N; ++k) p.strides[k].push_back((*strides[k])[d]);
    }
  }
  if (p.sizes.empty()) {  // a single element (or a rank-0 tensor)
    p.sizes.push_back(1);
    for (std::size_t k = 0; k < N; ++k) p.strides[k].push_back(1);
  }
  return p;
}

/// Calls row(n, ptrs, inner_strides) for every innermost row of `sizes`, where ptrs[k] is
/// operand k's pointer at the row start and inner_strides[k] its step (elements). Operands
/// are typed pointers; strides are in elements of each operand. Nothing runs when empty.
template <class Row, class... Ptrs>
void for_each_row(const shape& sizes, const std::array<const shape*, sizeof...(Ptrs)>& strides,
                  Row&& row, Ptrs... base) {
  constexpr std::size_t N = sizeof...(Ptrs);
  for (auto s : sizes)
    if (s == 0) return;
  const strided_plan<N> p = coalesce<N>(sizes, strides);
  const std::size_t rank = p.sizes.size();
  const std::int64_t inner = p.sizes[rank - 1];
  std::array<std::int64_t, N> inner_strides;
  for (std::size_t k = 0; k < N; ++k) inner_strides[k] = p.strides[k][rank - 1];

  shape counter(rank - 1, 0);
  std::array<std::int64_t, N> offs{};
  for (;;) {
    [&]<std::size_t... K>(std::index_sequence<K...>) {
      row(inner, std::tuple{(base + offs[K])...}, inner_strides);
    }(std::make_index_sequence<N>{});
    // advance the outer counter (odometer), innermost outer dim first
    std::size_t d = rank - 1;
    for (;;) {
      if (d == 0) return;
      --d;
      if (++counter[d] < p.sizes[d]) {
        for (std::size_t k = 0; k < N; ++k) offs[k] += p.strides[k][d];
        break;
      }
      counter[d] = 0;
      for (std::size_t k = 0; k < N; ++k) offs[k] -= p.strides[k][d] * (p.sizes[d] - 1);
    }
  }
}

/// Elementwise loop: f(a[i], b[i], ...) over every element, with the contiguous fast path.
template <class F, class... Ptrs>
void for_each_element(const shape& sizes, const std::array<const shape*, sizeof...(Ptrs)>& strides,
                      F&& f, Ptrs... base) {
  for_each_row(
      sizes, strides,
      [&](std::int64_t n, auto ptrs, const auto& st) {
        bool unit = true;
        for (auto s : st) unit = unit && s == 1;
        [&]<std::size_t... K>(std::index_sequence<K...>) {
          if (unit) {
            for (std::int64_t i = 0; i < n; ++i) f(std::get<K>(ptrs)[i]...);
          } else {
            for (std::int64_t i = 0; i < n; ++i) f(std::get<K>(ptrs)[i * st[K]]...);
          }
        }(std::index_sequence_for<Ptrs...>{});
      },
      base...);
}

}  // namespace ember::detail
