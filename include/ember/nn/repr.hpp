// Formatting helpers for module printouts in PyTorch's spelling: True/False, (3, 3), 1e-05.
#pragma once

#include <ember/core/shape.hpp>
#include <ember/ops/conv.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

namespace ember::detail {

inline std::string py_bool(bool b) { return b ? "True" : "False"; }

/// A float as Python's repr prints it: the shortest digits that read back as v, in positional
/// notation for exponents -4..15 and scientific otherwise: 0.1, 1e-05, 10.0, 1e+16, inf, nan.
inline std::string py_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string sci(buf, res.ptr);  // "-1.2345e-05": the shortest round-trip digits
  const auto e = sci.find('e');
  const int exp = std::stoi(sci.substr(e + 1));
  std::string sign, digits;
  for (char c : sci.substr(0, e)) {
    if (c == '-') sign = "-";
    else if (c != '.') digits += c;
  }
  if (exp < -4 || exp >= 16) {
    std::string mant = digits.substr(0, 1);
    if (digits.size() > 1) mant += "." + digits.substr(1);
    std::string ex = std::to_string(exp < 0 ? -exp : exp);
    if (ex.size() < 2) ex = "0" + ex;
    return sign + mant + "e" + (exp < 0 ? "-" : "+") + ex;
  }
  if (exp < 0) return sign + "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
  const auto int_len = static_cast<std::size_t>(exp + 1);
  if (digits.size() <= int_len) return sign + digits + std::string(int_len - digits.size(), '0') + ".0";
  return sign + digits.substr(0, int_len) + "." + digits.substr(int_len);
}

/// "(3, 3)" for 2-D sizes, "(3,)" for 1-D, as PyTorch prints tuples.
inline std::string py_tuple(const size2& s) {
  return "(" + std::to_string(s.h) + ", " + std::to_string(s.w) + ")";
}
inline std::string py_tuple(std::int64_t v) { return "(" + std::to_string(v) + ",)"; }
inline std::string py_tuple(const shape& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}
/// Pool sizes print as a plain integer when both extents agree (PyTorch keeps what was given).
inline std::string py_size(const size2& s) {
  return s.h == s.w ? std::to_string(s.h) : py_tuple(s);
}

}  // namespace ember::detail
