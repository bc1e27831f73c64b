// Formatting helpers for module printouts in PyTorch's spelling: True/False, (3, 3), 1e-05.
#pragma once

#include <ember/core/shape.hpp>
#include <ember/ops/conv.hpp>

#include <cstdint>
#include <sstream>
#include <string>

namespace ember::detail {

inline std::string py_bool(bool b) { return b ? "True" : "False"; }

/// A float as Python's repr prints it: 0.1, 1e-05, 0.5, 1.0.
inline std::string py_float(double v) {
  std::ostringstream os;
  os.precision(17);
  for (int p = 1; p <= 17; ++p) {  // the shortest text that reads back as v
    std::ostringstream t;
    t.precision(p);
    t << v;
    if (std::stod(t.str()) == v) {
      std::string s = t.str();
      if (auto e = s.find('e'); e != std::string::npos) {  // 1e-5 -> 1e-05 as Python
        std::string mant = s.substr(0, e), ex = s.substr(e + 1);
        const char sign = ex[0] == '-' ? '-' : '+';
        if (ex[0] == '-' || ex[0] == '+') ex = ex.substr(1);
        while (ex.size() > 1 && ex[0] == '0') ex = ex.substr(1);
        if (ex.size() < 2) ex = "0" + ex;
        return mant + "e" + sign + ex;
      }
      if (s.find('.') == std::string::npos) s += ".0";
      return s;
    }
  }
  os << v;
  return os.str();
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
