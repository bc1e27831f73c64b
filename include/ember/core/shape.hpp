// shape: the extents (and, with the same type, the strides) of a tensor; no heap up to rank 8.
// Also dimension wrapping, contiguous strides and PyTorch/NumPy broadcasting.
#pragma once

#include <ember/core/error.hpp>
#include <ember/core/small_vector.hpp>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <ostream>
#include <span>
#include <vector>

namespace ember {

/// Extents of a tensor, outermost first. Strides use the same type (in elements).
///   em::shape s{2, 3};  s.numel() == 6;  s.rank() == 2;  std::cout << s;  // (2,3)
class shape : public detail::small_vector<std::int64_t, 8> {
  using base = detail::small_vector<std::int64_t, 8>;

 public:
  using base::base;
  shape() noexcept = default;
  shape(std::initializer_list<std::int64_t> il) : base(il) {}
  shape(const std::vector<std::int64_t>& v) : base(v.begin(), v.end()) {}  // NOLINT: implicit

  std::int64_t rank() const noexcept { return static_cast<std::int64_t>(size()); }
  /// Product of the extents (1 for rank 0).
  std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (auto e : *this) n *= e;
    return n;
  }
  std::vector<std::int64_t> to_vector() const { return {begin(), end()}; }
  friend bool operator==(const shape& a, const shape& b) noexcept {
    return static_cast<const base&>(a) == static_cast<const base&>(b);
  }
};

/// Prints "(2,3)"; a 0-d shape prints "()".
inline std::ostream& operator<<(std::ostream& os, const shape& s) {
  os << '(';
  for (std::size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  return os << ')';
}

/// Wraps a possibly negative dimension into [0, rank). A 0-d tensor accepts dims 0 and -1,
/// as in PyTorch. Out-of-range dims are an error naming the op and the valid range.
inline std::int64_t wrap_dim(std::int64_t dim, std::int64_t rank, const char* op = "dim") {
  const std::int64_t r = rank == 0 ? 1 : rank;
  detail::check(dim >= -r && dim < r, errc::index, op, ": dimension ", dim,
                " is out of range for a tensor of rank ", rank, " (expected ", -r, "..", r - 1, ")");
  return dim < 0 ? dim + r : dim;
}

/// Row-major strides of a dense tensor of this shape.
inline shape contiguous_strides(const shape& s) {
  shape st(s.size());
  std::int64_t acc = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i] > 1 ? s[i] : 1;
  }
  return st;
}

/// Checks that every extent is >= 0 and that the product of the non-zero extents fits in
/// int64 (so the element count and the contiguous strides cannot overflow, even for a shape
/// with a zero extent, whose strides still multiply the others).
inline void check_shape(const shape& s, const char* op) {
  std::int64_t n = 1;
  for (auto e : s) {
    detail::check(e >= 0, errc::value, op, ": negative extent in shape ", s);
    if (e > 1 && n > std::numeric_limits<std::int64_t>::max() / e)
      detail::fail(errc::value, op, ": shape ", s, " has too many elements");
    if (e > 1) n *= e;
  }
}

/// The broadcast of two shapes (NumPy/PyTorch rules: align trailing dims; each pair must be
/// equal or one of them 1). Incompatible shapes are an error naming both.
inline shape broadcast_shapes(const shape& a, const shape& b, const char* op = "broadcast") {
  const std::size_t n = a.size() > b.size() ? a.size() : b.size();
  shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const std::int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      detail::fail(errc::shape, op, ": shapes ", a, " and ", b,
                   " cannot be broadcast (dimension ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

/// True when `from` broadcasts to exactly `to` (as expand/copy_ require).
inline bool broadcastable_to(const shape& from, const shape& to) noexcept {
  if (from.size() > to.size()) return false;
  const std::size_t lead = to.size() - from.size();
  for (std::size_t i = 0; i < from.size(); ++i)
    if (from[i] != 1 && from[i] != to[lead + i]) return false;
  return true;
}

}  // namespace ember
