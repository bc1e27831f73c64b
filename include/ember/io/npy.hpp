// NumPy's .npy format: save_npy (format 1.0, little-endian, C order, atomic write) and
// load_npy / decode_npy (format 1.0-3.0, either byte order, C or Fortran order) for the dtypes
// ember shares with NumPy: f2 f4 f8 i1 i2 i4 i8 u1 b1. Files are validated as hostile input.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>
#include <ember/io/atomic_file.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace ember::io {

namespace detail {

using ember::detail::check;
using ember::detail::fail;

inline constexpr char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
/// The largest header accepted (NumPy itself refuses more than 10,000 bytes by default).
inline constexpr std::size_t npy_max_header = 65536;

/// The NumPy type string of an ember dtype ("<f4"), or "" when NumPy has none (bf16).
constexpr std::string_view npy_descr(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "<f4";
    case dtype::f64: return "<f8";
    case dtype::f16: return "<f2";
    case dtype::i8: return "|i1";
    case dtype::i16: return "<i2";
    case dtype::i32: return "<i4";
    case dtype::i64: return "<i8";
    case dtype::u8: return "|u1";
    case dtype::boolean: return "|b1";
    case dtype::bf16: return "";
  }
  return "";
}

struct npy_header {
  dtype type = dtype::f32;
  bool big_endian = false;
  bool fortran_order = false;
  shape sizes;
};

/// Note [npy header]: the header is a Python dict literal such as
///   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
/// This parser accepts exactly that grammar (either quote style, Python 2's "3L" integers,
/// any whitespace) with the three keys once each, as numpy.lib.format does; anything else is
/// an error, never a guess.
class npy_header_parser {
 public:
  npy_header_parser(std::string_view text, std::string_view source) : s_(text), src_(source) {}

  npy_header parse() {
    npy_header h;
    bool seen[3] = {false, false, false};
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = string_literal();
      expect(':');
      int k = key == "descr" ? 0 : key == "fortran_order" ? 1 : key == "shape" ? 2 : -1;
      if (k < 0) bad("unexpected key '", key, "'");
      if (seen[k]) bad("key '", key, "' appears twice");
      seen[k] = true;
      if (k == 0) descr(string_literal(), h);
      if (k == 1) h.fortran_order = boolean();
      if (k == 2) h.sizes = tuple();
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != '}') bad("expected ',' or '}' at header offset ", i_);
    }
    ++i_;
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r'))
      ++i_;
    if (i_ != s_.size()) bad("unexpected text after the header dict");
    if (!seen[0] || !seen[1] || !seen[2])
      bad("the header lacks one of the keys 'descr', 'fortran_order', 'shape'");
    return h;
  }

 private:
  template <class... Parts>
  [[noreturn]] void bad(const Parts&... parts) const {
    fail(errc::io, "load_npy: '", src_, "': malformed header: ", parts...);
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  void expect(char c) {
    skip_ws();
    if (peek() != c) bad("expected '", c, "' at header offset ", i_);
    ++i_;
  }
  std::string string_literal() {
    skip_ws();
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a string at header offset ", i_);
    const std::size_t start = ++i_;
    while (i_ < s_.size() && s_[i_] != q) {
      if (s_[i_] == '\\' || static_cast<unsigned char>(s_[i_]) < 0x20 ||
          static_cast<unsigned char>(s_[i_]) > 0x7e)
        bad("unsupported character in a string at header offset ", i_);
      ++i_;
    }
    if (i_ >= s_.size()) bad("unterminated string");
    return std::string(s_.substr(start, i_++ - start));
  }
  bool boolean() {
    skip_ws();
    if (s_.substr(i_, 4) == "True") return i_ += 4, true;
    if (s_.substr(i_, 5) == "False") return i_ += 5, false;
    bad("expected True or False at header offset ", i_);
  }
  shape tuple() {
    expect('(');
    shape out;
    bool comma_after_last = false;
    while (true) {
      skip_ws();
      if (peek() == ')') break;
      std::int64_t v = 0;
      const std::size_t start = i_;
      while (peek() >= '0' && peek() <= '9') {
        if (v > (std::numeric_limits<std::int64_t>::max() - 9) / 10) bad("dimension too large");
        v = v * 10 + (s_[i_++] - '0');
      }
      if (i_ == start) bad("expected a non-negative integer at header offset ", i_);
      if (peek() == 'L') ++i_;
      if (out.size() >= 64) bad("more than 64 dimensions");
      out.push_back(v);
      comma_after_last = false;
      skip_ws();
      if (peek() == ',') {
        ++i_;
        comma_after_last = true;
        continue;
      }
      if (peek() != ')') bad("expected ',' or ')' at header offset ", i_);
    }
    ++i_;
    // Python needs the trailing comma for one element: "(3)" is an int, not a tuple
    if (out.size() == 1 && !comma_after_last) bad("shape (", out[0], ") is not a tuple");
    return out;
  }
  void descr(const std::string& d, npy_header& h) const {
    const bool well_formed = d.size() >= 3 && std::string_view("<>|=").find(d[0]) != std::string::npos &&
                             std::all_of(d.begin() + 2, d.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!well_formed) bad("invalid descr '", d, "'");
    const std::string t = d.substr(1);
    h.big_endian = d[0] == '>' || (d[0] == '=' && std::endian::native == std::endian::big);
    if (t == "f4") h.type = dtype::f32;
    else if (t == "f8") h.type = dtype::f64;
    else if (t == "f2") h.type = dtype::f16;
    else if (t == "i1") h.type = dtype::i8;
    else if (t == "i2") h.type = dtype::i16;
    else if (t == "i4") h.type = dtype::i32;
    else if (t == "i8") h.type = dtype::i64;
    else if (t == "u1") h.type = dtype::u8;
    else if (t == "b1") h.type = dtype::boolean;
    else
      fail(errc::dtype, "load_npy: '", src_, "': NumPy dtype '", d, "' has no ember equivalent ",
           "(supported: f2 f4 f8 i1 i2 i4 i8 u1 b1)");
  }

  std::string_view s_;
  std::string_view src_;
  std::size_t i_ = 0;
};

/// Reads an .npy stream through `read(dst, n)` (which must deliver exactly n bytes) given
/// the stream's total size. Every size is checked against `total` before any allocation.
template <class Read>
any_tensor read_npy(Read&& read, std::uint64_t total, std::string_view source) {
  unsigned char pre[12];
  check(total >= 10, errc::io, "load_npy: '", source, "': too short for an .npy file (", total,
        " bytes)");
  read(pre, 10);
  check(std::memcmp(pre, npy_magic, 6) == 0, errc::io, "load_npy: '", source,
        "': not an .npy file (bad magic)");
  const int major = pre[6], minor = pre[7];
  check(major >= 1 && major <= 3 && minor == 0, errc::io, "load_npy: '", source,
        "': unsupported format version ", major, ".", minor);
  std::uint64_t header_len = pre[8] | (pre[9] << 8);
  std::uint64_t offset = 10;
  if (major >= 2) {
    check(total >= 12, errc::io, "load_npy: '", source, "': truncated header length");
    read(pre + 10, 2);
    header_len |= std::uint64_t{pre[10]} << 16 | std::uint64_t{pre[11]} << 24;
    offset = 12;
  }
  check(header_len <= npy_max_header, errc::io, "load_npy: '", source, "': header length ",
        header_len, " exceeds the limit of ", npy_max_header, " bytes");
  check(header_len <= total - offset, errc::io, "load_npy: '", source, "': header length ",
        header_len, " runs past the end of the file (", total, " bytes)");
  std::string text(static_cast<std::size_t>(header_len), '\0');
  read(text.data(), text.size());
  offset += header_len;
  const npy_header h = npy_header_parser(text, source).parse();

  // the product of the non-zero extents must fit too (strides are computed from it even when
  // an extent of 0 leaves no elements)
  std::uint64_t numel = 1, nonzero = 1;
  for (std::int64_t e : h.sizes) {
    const auto u = static_cast<std::uint64_t>(std::max<std::int64_t>(e, 1));
    check(nonzero <= (std::uint64_t{1} << 60) / u, errc::io, "load_npy: '", source, "': shape ",
          h.sizes, " is too large");
    nonzero *= u;
    numel *= static_cast<std::uint64_t>(e);
  }
  const std::size_t item = item_size(h.type);
  const std::uint64_t data_bytes = numel * item;
  check(data_bytes == total - offset, errc::io, "load_npy: '", source, "': shape ", h.sizes,
        " of ", to_string(h.type), " needs ", data_bytes, " data bytes, the file has ",
        total - offset, data_bytes > total - offset ? " (truncated)" : " (trailing bytes)");

  return visit_dtype(h.type, [&](auto e) -> any_tensor {
    using E = decltype(e);
    shape stored = h.sizes;  // Fortran order: the data are C order for the reversed shape
    if (h.fortran_order) std::reverse(stored.begin(), stored.end());
    tensor<E> t = ember::detail::make_tensor<E>(stored);
    auto* bytes = reinterpret_cast<unsigned char*>(t.data());
    if (data_bytes > 0) read(bytes, static_cast<std::size_t>(data_bytes));
    if constexpr (std::is_same_v<E, bool>) {
      for (std::uint64_t i = 0; i < numel; ++i) bytes[i] = bytes[i] != 0;  // any byte: a valid bool
    }
    if (item > 1 && h.big_endian != (std::endian::native == std::endian::big))
      for (std::uint64_t i = 0; i < numel; ++i) std::reverse(bytes + i * item, bytes + (i + 1) * item);
    if (h.fortran_order && t.dim() > 1) {
      shape order;
      for (std::int64_t d = t.dim(); d-- > 0;) order.push_back(d);
      t = t.permute(order).contiguous();
    }
    return any_tensor(t);
  });
}

}  // namespace detail

/// Decodes the bytes of an .npy file held in memory (see load_npy).
///   em::any_tensor a = em::io::decode_npy(bytes);
template <int = 0>  // Note [Deferred instantiation]
any_tensor decode_npy(std::span<const std::uint8_t> bytes, std::string_view source = "<memory>") {
  std::size_t pos = 0;
  auto read = [&](void* dst, std::size_t n) {
    ember::detail::check(n <= bytes.size() - pos, errc::io, "load_npy: '", source, "': truncated");
    std::memcpy(dst, bytes.data() + pos, n);
    pos += n;
  };
  return detail::read_npy(read, bytes.size(), source);
}

/// Loads an .npy file with its own element type (C or Fortran order, either byte order; the
/// result is a contiguous C-order tensor). Corrupt, truncated or lying files are ember::error
/// (io); NumPy dtypes ember lacks (u4, c8, ...) are ember::error (dtype).
///   em::any_tensor a = em::io::load_npy("x.npy");  a.dtype();  // e.g. em::dtype::f64
template <int = 0>  // Note [Deferred instantiation]
any_tensor load_npy(const std::string& path) {
  std::error_code ec;
  const std::uintmax_t total = std::filesystem::file_size(path, ec);
  ember::detail::check(!ec, errc::io, "load_npy: cannot open '", path, "': ", ec.message());
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  ember::detail::check(f != nullptr, errc::io, "load_npy: cannot open '", path, "': ",
                       std::strerror(errno));
  auto read = [&](void* dst, std::size_t n) {
    ember::detail::check(std::fread(dst, 1, n, f.get()) == n, errc::io, "load_npy: '", path,
                         "': truncated or unreadable (", n, " bytes expected)");
  };
  return detail::read_npy(read, total, path);
}

/// Loads an .npy file as tensor<T>, converting the elements when the file holds another
/// type (NumPy's default float64 becomes float with load_npy<float>).
///   em::tensor<float> x = em::io::load_npy<float>("x.npy");
template <class T>
tensor<T> load_npy(const std::string& path) {
  return load_npy(path).to<T>();
}

namespace detail {

/// Magic, version 1.0, header length and the header dict padded as NumPy pads it.
inline std::string npy_prefix(const any_tensor& t) {
  ember::detail::check(t.defined(), errc::value, "save_npy: undefined tensor");
  const std::string_view descr = npy_descr(t.dtype());
  ember::detail::check(!descr.empty(), errc::dtype, "save_npy: NumPy has no ", t.dtype(),
                       " dtype; convert the tensor first, e.g. with to<float>()");
  std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (";
  for (std::int64_t e : t.shape()) header += std::to_string(e) + ", ";
  if (t.dim() > 1) header.resize(header.size() - 2);
  if (t.dim() == 1) header.pop_back();  // "(3,)"
  header += "), }";
  // magic, version, length, dict, spaces, newline: a multiple of 64 bytes, as NumPy writes
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  ember::detail::check(header.size() <= 65535, errc::shape, "save_npy: shape ", t.shape(),
                       " does not fit a format 1.0 header");
  std::string out(npy_magic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xffu);
  out += static_cast<char>(header.size() >> 8);
  return out + header;
}

/// Passes t's elements, little-endian and in C order, to sink(bytes, n) in pieces.
template <class Sink>
void npy_data(const any_tensor& t, Sink&& sink) {
  t.visit([&](const auto& typed) {
    const auto c = typed.cpu().contiguous();
    const auto* p = reinterpret_cast<const unsigned char*>(c.data());
    const std::size_t item = c.element_size(), n = c.nbytes();
    if (item == 1 || std::endian::native == std::endian::little) {
      if (n > 0) sink(p, n);
      return;
    }
    std::vector<unsigned char> buf;
    for (std::size_t i = 0; i < n; i += buf.size()) {
      buf.assign(p + i, p + std::min(n, i + (std::size_t{1} << 16)));
      for (std::size_t k = 0; k < buf.size(); k += item) std::reverse(&buf[k], &buf[k] + item);
      sink(buf.data(), buf.size());
    }
  });
}

}  // namespace detail

/// The bytes of an .npy file (format 1.0, little-endian, C order) holding t.
///   std::vector<std::uint8_t> b = em::io::encode_npy(t);
template <int = 0>  // Note [Deferred instantiation]
std::vector<std::uint8_t> encode_npy(const any_tensor& t) {
  const std::string prefix = detail::npy_prefix(t);
  std::vector<std::uint8_t> out(prefix.begin(), prefix.end());
  detail::npy_data(t, [&](const unsigned char* p, std::size_t n) { out.insert(out.end(), p, p + n); });
  return out;
}

/// Saves t as an .npy file readable by numpy.load (atomically: a failed save keeps the old
/// file). Any device; bfloat16 has no NumPy dtype (an ember::error, dtype).
///   em::io::save_npy(em::arange<std::int64_t>(0, 6).view({2, 3}), "x.npy");
template <int = 0>  // Note [Deferred instantiation]
void save_npy(const any_tensor& t, const std::string& path) {
  const std::string prefix = detail::npy_prefix(t);
  atomic_write(path, [&](file_writer& w) {
    w.write(prefix);
    detail::npy_data(t, [&](const unsigned char* p, std::size_t n) { w.write(p, n); });
  });
}
template <class T>
void save_npy(const tensor<T>& t, const std::string& path) {
  save_npy(any_tensor(t), path);
}

}  // namespace ember::io
