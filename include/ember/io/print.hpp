// operator<< for tensors: PyTorch's layout and number formatting (precision 4, summarized
// above 1000 elements with 3 edge items, 80 columns), followed by the shape and dtype.
#pragma once

#include <ember/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

namespace ember {

/// Printing options (PyTorch's defaults).
struct print_options {
  int precision = 4;
  std::int64_t threshold = 1000;  ///< summarize when numel exceeds this
  std::int64_t edgeitems = 3;
  std::int64_t linewidth = 80;
};

inline print_options& get_print_options() {
  static print_options o;
  return o;
}
inline void set_print_options(const print_options& o) { get_print_options() = o; }

namespace detail {

/// Note [Print formatting]: mirrors torch/_tensor_str.py's _Formatter: floating tensors whose
/// finite non-zero values are all integers print as "3."; scientific notation is used when
/// max/min of |finite non-zero| > 1000, max > 1e8, or (non-integer) min < 1e-4; every value
/// is right-aligned to the widest. Integers print exactly, bools as True/False.
template <class T>
class number_formatter {
 public:
  number_formatter(const std::vector<T>& vals, int precision) : precision_(precision) {
    if constexpr (is_floating_v<T>) {
      std::vector<double> nz;
      for (const T& x : vals) {
        const double v = convert<double>(x);
        if (std::isfinite(v) && v != 0) nz.push_back(std::fabs(v));
      }
      if (nz.empty()) return;
      const double mn = *std::min_element(nz.begin(), nz.end());
      const double mx = *std::max_element(nz.begin(), nz.end());
      for (double v : nz) int_mode_ = int_mode_ && v == std::ceil(v);
      sci_ = mx / mn > 1000.0 || mx > 1e8 || (!int_mode_ && mn < 1e-4);
      for (const T& x : vals) {
        const double v = convert<double>(x);
        if (std::isfinite(v) && v != 0) width_ = std::max(width_, raw(x).size());
      }
    } else {
      for (const T& x : vals) width_ = std::max(width_, raw(x).size());
    }
  }

  std::size_t width() const noexcept { return width_; }

  /// The value right-aligned to the common width.
  std::string format(const T& x) const {
    std::string s = raw(x);
    if (s.size() < width_) s.insert(0, width_ - s.size(), ' ');
    return s;
  }

  std::string raw(const T& x) const {
    if constexpr (std::is_same_v<T, bool>) {
      return x ? "True" : "False";
    } else if constexpr (!is_floating_v<T>) {
      return std::to_string(static_cast<long long>(x));
    } else {
      const double v = convert<double>(x);
      if (std::isnan(v)) return "nan";
      if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
      char buf[64];
      if (sci_)
        std::snprintf(buf, sizeof buf, "%.*e", precision_, v);
      else if (int_mode_)
        std::snprintf(buf, sizeof buf, "%.0f.", v);
      else
        std::snprintf(buf, sizeof buf, "%.*f", precision_, v);
      return buf;
    }
  }

 private:
  int precision_;
  bool int_mode_ = true;
  bool sci_ = false;
  std::size_t width_ = 1;
};

template <class T>
struct tensor_printer {
  const T* data;
  const shape& sizes;
  const shape& strides;
  bool summarize;
  const print_options& opt;
  const number_formatter<T>* fmt = nullptr;

  /// Indices shown along a dim of extent n (-1 marks the "..." gap).
  std::vector<std::int64_t> shown(std::int64_t n) const {
    std::vector<std::int64_t> idx;
    if (summarize && n > 2 * opt.edgeitems) {
      for (std::int64_t i = 0; i < opt.edgeitems; ++i) idx.push_back(i);
      idx.push_back(-1);
      for (std::int64_t i = n - opt.edgeitems; i < n; ++i) idx.push_back(i);
    } else {
      for (std::int64_t i = 0; i < n; ++i) idx.push_back(i);
    }
    return idx;
  }

  /// The values that will be shown (what the formatter sizes itself on).
  void collect(std::size_t d, std::int64_t off, std::vector<T>& out) const {
    if (d == sizes.size()) {
      out.push_back(data[off]);
      return;
    }
    for (auto i : shown(sizes[d]))
      if (i >= 0) collect(d + 1, off + i * strides[d], out);
  }

  std::string render(std::size_t d, std::int64_t off, std::size_t indent) const {
    const std::size_t rank = sizes.size();
    if (d == rank) return fmt->format(data[off]);
    std::vector<std::string> parts;
    const bool vec = d + 1 == rank;
    for (auto i : shown(sizes[d]))
      parts.push_back(i < 0 ? (vec ? " ..." : "...")
                            : render(d + 1, off + i * strides[d], indent + 1));
    std::string out = "[";
    if (vec) {  // wrap rows at the line width
      const std::size_t elem = fmt->width() + 2;
      const auto lw = static_cast<std::size_t>(opt.linewidth);
      const std::size_t per_line = std::max<std::size_t>(1, lw > indent ? (lw - indent) / elem : 1);
      for (std::size_t k = 0; k < parts.size(); ++k) {
        if (k) out += (k % per_line == 0) ? ",\n" + std::string(indent + 1, ' ') : ", ";
        out += parts[k];
      }
    } else {  // one blank line per remaining dimension between blocks
      const std::string sep = "," + std::string(rank - d - 1, '\n') + std::string(indent + 1, ' ');
      for (std::size_t k = 0; k < parts.size(); ++k) {
        if (k) out += sep;
        out += parts[k];
      }
    }
    return out + "]";
  }
};

}  // namespace detail

/// Prints like PyTorch, then shape and dtype:
///   tensor([[ 0.3367,  0.1288],
///           [ 0.2345,  0.2303]], shape=(2,2), dtype=f32)
template <class T>
std::ostream& operator<<(std::ostream& os, const tensor<T>& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  const tensor<T> c = t.cpu();
  const auto& opt = get_print_options();
  detail::tensor_printer<T> pr{c.data(), c.shape(), c.strides(), c.numel() > opt.threshold, opt};
  std::vector<T> vals;
  if (c.numel() > 0) pr.collect(0, 0, vals);
  const detail::number_formatter<T> fmt(vals, opt.precision);
  pr.fmt = &fmt;
  os << "tensor(";
  if (c.numel() == 0)
    os << "[]";
  else
    os << pr.render(0, 0, 7);
  os << ", shape=" << c.shape() << ", dtype=" << c.dtype();
  if (!t.device().is_cpu()) os << ", device=" << t.device();
  return os << ")";
}

}  // namespace ember
