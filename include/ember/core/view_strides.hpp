// Shape arithmetic of views: -1 inference for view/reshape, and the strides a view of new
// sizes would have over existing sizes/strides (PyTorch's rule), or none when it needs a copy.
#pragma once

#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>

#include <cstdint>
#include <optional>

namespace ember::detail {

/// Resolves one -1 extent so that the element count is `numel`; errors name the op and shapes.
inline shape infer_size(const shape& requested, std::int64_t numel, const shape& from,
                        const char* op) {
  shape out = requested;
  std::int64_t known = 1;
  std::int64_t infer_at = -1;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      check(infer_at < 0, errc::shape, op, ": only one dimension can be -1, got ", requested);
      infer_at = static_cast<std::int64_t>(i);
    } else {
      check(out[i] >= 0, errc::shape, op, ": invalid extent ", out[i], " in shape ", requested);
      known *= out[i];
    }
  }
  if (infer_at >= 0) {
    check(known != 0 && numel % known == 0, errc::shape, op, ": shape ", requested,
          " is invalid for input of shape ", from, " (", numel, " elements)");
    out[static_cast<std::size_t>(infer_at)] = numel / known;
  } else {
    check(known == numel, errc::shape, op, ": shape ", requested,
          " is invalid for input of shape ", from, " (", numel, " elements)");
  }
  return out;
}

/// Note [View strides]: a view can give `new_sizes` without a copy when every run of old dims
/// that is contiguous in memory (stride[i] == stride[i+1] * size[i+1]) maps onto a run of new
/// dims with the same element count. Returns the new strides, or nullopt when a new dim would
/// span two such runs (then reshape copies and view is an error).
inline std::optional<shape> view_strides(const shape& old_sizes, const shape& old_strides,
                                         const shape& new_sizes) {
  shape out(new_sizes.size());
  if (old_sizes.empty()) {
    for (auto& s : out) s = 1;
    return out;
  }
  const std::int64_t numel = old_sizes.numel();
  if (numel == 0) {
    if (old_sizes == new_sizes) return old_strides;
    return contiguous_strides(new_sizes);
  }
  std::int64_t view_d = new_sizes.rank() - 1;
  std::int64_t chunk_base = old_strides.back();
  std::int64_t tensor_numel = 1, view_numel = 1;
  for (std::int64_t d = old_sizes.rank() - 1; d >= 0; --d) {
    tensor_numel *= old_sizes[d];
    const bool chunk_ends =
        d == 0 || (old_sizes[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base);
    if (!chunk_ends) continue;
    while (view_d >= 0 && (view_numel < tensor_numel || new_sizes[view_d] == 1)) {
      out[view_d] = view_numel * chunk_base;
      view_numel *= new_sizes[view_d];
      --view_d;
    }
    if (view_numel != tensor_numel) return std::nullopt;
    if (d > 0) {
      chunk_base = old_strides[d - 1];
      tensor_numel = 1;
      view_numel = 1;
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

}  // namespace ember::detail
