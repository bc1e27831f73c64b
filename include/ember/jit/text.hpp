// The readable text form of jit graphs: operator<< and to_string print it, parse_graph reads it
// back (its exact inverse; safe on hostile text), and validate checks a graph's structure.
#pragma once

#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/expr/op.hpp>
#include <ember/jit/graph.hpp>

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <locale>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

// Note [Graph text grammar]
// Whitespace (space, tab, CR, LF) may appear between any two tokens; the printer puts one node
// per line, indented by two spaces per level, and ends the text with a newline.
//   graph   := 'graph' '(' [def {',' def}] ')' '{' {line} 'return' '(' [use {',' use}] ')' '}'
//   line    := 'const' def                                   (a constant; tensor not in the text)
//            | [def {',' def} '='] opname '(' [use {',' use}] ')' [attrs] [graph]
//   def     := use ':' dtype '[' [extent {',' extent}] ']'  (dtype: to_string(dtype), "f32" ...)
//   use     := '%' (name | string)        name: [A-Za-z0-9_.:]+, else the name is quoted
//   extent  := 'N' | integer in [-1, 2^40]                   ('N' and -1 are jit::symbolic)
//   attrs   := '{' [key '=' attr {',' key '=' attr}] '}'     key: [A-Za-z_][A-Za-z0-9_]* | string
//   attr    := integer | real | '[' [integer {',' integer}] ']' | string
//   real    := a number with '.' or an exponent, 'inf', '-inf' or 'nan'  (printed as %.17g)
//   string  := '"' ... '"' with escapes \" \\ \n \t \r \xHH; other control bytes must be escaped
// Value ids are assigned in order of appearance; each (nested) graph has its own names. The
// printer lists constants first, in id order; a node without outputs prints without '='.

namespace ember::jit {
namespace detail {

/// Fused bodies nest at most this deep in text that parse_graph and validate accept.
inline constexpr int max_nesting = 16;
/// The largest extent the parser accepts (2^40).
inline constexpr std::int64_t max_extent = std::int64_t{1} << 40;

constexpr bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_word_char(char c) noexcept { return is_alpha(c) || is_digit(c) || c == '_'; }
constexpr bool is_name_char(char c) noexcept { return is_word_char(c) || c == '.' || c == ':'; }

/// Calls f on each element of r, with ", " between.
template <class R, class F>
void write_list(std::ostream& os, const R& r, F&& f) {
  bool first = true;
  for (const auto& x : r) {
    if (!first) os << ", ";
    first = false;
    f(x);
  }
}

inline void write_quoted(std::ostream& os, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  os << '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') os << '\\' << ch;
    else if (ch == '\n') os << "\\n";
    else if (ch == '\t') os << "\\t";
    else if (ch == '\r') os << "\\r";
    else if (c < 0x20 || c == 0x7f) os << "\\x" << hex[c >> 4] << hex[c & 15];
    else os << ch;
  }
  os << '"';
}

inline void write_use(std::ostream& os, const graph& g, int id) {
  if (id < 0 || static_cast<std::size_t>(id) >= g.values.size()) {
    os << "%<bad id " << id << '>';  // only a broken graph prints this; it does not parse
    return;
  }
  const std::string& n = g.values[static_cast<std::size_t>(id)].name;
  bool bare = !n.empty();
  for (char c : n) bare = bare && is_name_char(c);
  os << '%';
  if (bare) os << n;
  else write_quoted(os, n);
}

inline void write_def(std::ostream& os, const graph& g, int id) {
  write_use(os, g, id);
  if (id < 0 || static_cast<std::size_t>(id) >= g.values.size()) return;
  const value& v = g.values[static_cast<std::size_t>(id)];
  os << " : " << to_string(v.type) << '[';
  write_list(os, v.shape, [&](std::int64_t e) {
    if (e == symbolic) os << 'N';
    else os << e;
  });
  os << ']';
}

/// %.17g (locale-independent), always with a '.', an exponent, "inf" or "nan".
inline std::string format_real(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general, 17);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

inline void write_attr(std::ostream& os, const attribute& a) {
  if (const auto* i = std::get_if<std::int64_t>(&a)) {
    os << *i;
  } else if (const auto* d = std::get_if<double>(&a)) {
    os << format_real(*d);
  } else if (const auto* l = std::get_if<std::vector<std::int64_t>>(&a)) {
    os << '[';
    write_list(os, *l, [&](std::int64_t e) { os << e; });
    os << ']';
  } else if (const auto* s = std::get_if<std::string>(&a)) {
    write_quoted(os, *s);
  }
}

inline void write_key(std::ostream& os, const std::string& k) {
  bool bare = !k.empty() && !is_digit(k[0]);
  for (char c : k) bare = bare && is_word_char(c);
  if (bare) os << k;
  else write_quoted(os, k);
}

inline void write_graph(std::ostream& os, const graph& g, int indent, int depth) {
  if (depth > 64) {  // only reachable through a cyclic or absurdly deep body
    os << "graph <nested too deep>";
    return;
  }
  const std::string pad(static_cast<std::size_t>(indent) + 2, ' ');
  const auto def = [&](int id) { write_def(os, g, id); };
  const auto use = [&](int id) { write_use(os, g, id); };
  os << "graph(";
  write_list(os, g.inputs, def);
  os << ") {\n";
  for (const auto& c : g.constants) {
    os << pad << "const ";
    write_def(os, g, c.first);
    os << '\n';
  }
  for (const node& n : g.nodes) {
    os << pad;
    write_list(os, n.outputs, def);
    os << (n.outputs.empty() ? "" : " = ") << name(n.kind) << '(';
    write_list(os, n.inputs, use);
    os << ')';
    if (!n.attrs.empty()) {
      os << " {";
      write_list(os, n.attrs, [&](const auto& kv) {
        write_key(os, kv.first);
        os << " = ";
        write_attr(os, kv.second);
      });
      os << '}';
    }
    if (n.body) {
      os << ' ';
      write_graph(os, *n.body, indent + 2, depth + 1);
    }
    os << '\n';
  }
  os << pad << "return (";
  write_list(os, g.outputs, use);
  os << ")\n" << std::string(static_cast<std::size_t>(indent), ' ') << '}';
}

}  // namespace detail

/// Prints g as readable SSA text (see Note [Graph text grammar]), ending with a newline:
///   std::cout << traced.graph();   // graph(%input0 : f32[N, 64]) { ... }
inline std::ostream& operator<<(std::ostream& os, const graph& g);

/// The text form of g; parse_graph(to_string(g)) rebuilds it.
inline std::string to_string(const graph& g) {
  std::ostringstream os;  // a fresh stream: no caller's flags or locale in the text
  os.imbue(std::locale::classic());
  detail::write_graph(os, g, 0, 0);
  os << '\n';
  return os.str();
}
inline std::ostream& operator<<(std::ostream& os, const graph& g) { return os << to_string(g); }

namespace detail {

/// Reads the text form; every malformed input is an ember::error naming line and column.
class graph_parser {
 public:
  explicit graph_parser(std::string_view text) noexcept : s_(text) {}

  graph parse() {
    graph g = parse_graph_at(0);
    skip_ws();
    if (p_ < s_.size()) fail("expected the end of the text after the graph's closing '}'");
    return g;
  }

 private:
  using scope = std::unordered_map<std::string, int>;

  template <class... Parts>
  [[noreturn]] void fail_at(std::size_t at, const Parts&... parts) const {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') ++line, col = 1;
      else ++col;
    }
    ember::detail::fail(errc::value, "jit::parse_graph: line ", line, ", column ", col, ": ",
                        parts...);
  }
  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    fail_at(p_, parts...);
  }
  /// A token quoted for a message (escaped, cut at 40 bytes).
  static std::string show(std::string_view t) {
    std::ostringstream os;
    write_quoted(os, t.substr(0, 40));
    return t.size() > 40 ? os.str() + "..." : os.str();
  }

  void skip_ws() noexcept {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\t' || s_[p_] == '\n' || s_[p_] == '\r'))
      ++p_;
  }
  bool at(char c) noexcept {
    skip_ws();
    return p_ < s_.size() && s_[p_] == c;
  }
  bool accept(char c) noexcept {
    if (!at(c)) return false;
    ++p_;
    return true;
  }
  void expect(char c, const char* what) {
    if (!accept(c)) fail("expected ", what);
  }
  std::string_view word() noexcept {
    skip_ws();
    const std::size_t b = p_;
    while (p_ < s_.size() && is_word_char(s_[p_])) ++p_;
    return s_.substr(b, p_ - b);
  }

  /// Items separated by ',' up to `close` (which may come at once): f parses one item.
  template <class F>
  void list(char close, const char* what, F&& f) {
    if (accept(close)) return;
    do f();
    while (accept(','));
    expect(close, what);
  }

  std::string parse_string() {
    expect('"', "'\"'");
    std::string out;
    for (;;) {
      if (p_ >= s_.size()) fail("unterminated string (expected '\"')");
      const char c = s_[p_];
      const auto u = static_cast<unsigned char>(c);
      if (c == '"') break;
      if (u < 0x20 || u == 0x7f) fail("control character in a string (write it as an escape)");
      ++p_;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p_ >= s_.size()) fail("unterminated string (expected an escape after '\\')");
      const char e = s_[p_++];
      if (e == '"' || e == '\\') out += e;
      else if (e == 'n') out += '\n';
      else if (e == 't') out += '\t';
      else if (e == 'r') out += '\r';
      else if (e == 'x') {
        unsigned v = 0;
        const char* h = s_.data() + p_;
        if (p_ + 2 > s_.size() || std::from_chars(h, h + 2, v, 16).ptr != h + 2)
          fail("expected two hex digits after '\\x'");
        out += static_cast<char>(v);
        p_ += 2;
      } else {
        fail_at(p_ - 2, "unknown escape ", show(s_.substr(p_ - 2, 2)),
                R"( (use \" \\ \n \t \r \xHH))");
      }
    }
    ++p_;
    return out;
  }

  std::int64_t parse_int(const char* what) {
    skip_ws();
    const std::size_t b = p_;
    if (p_ < s_.size() && s_[p_] == '-') ++p_;
    while (p_ < s_.size() && is_digit(s_[p_])) ++p_;
    std::int64_t v = 0;
    const auto r = std::from_chars(s_.data() + b, s_.data() + p_, v);
    if (r.ec == std::errc::result_out_of_range) fail_at(b, "integer out of range");
    if (r.ec != std::errc() || r.ptr != s_.data() + p_) fail_at(b, "expected ", what);
    return v;
  }

  std::string parse_value_name() {
    skip_ws();
    if (p_ >= s_.size() || s_[p_] != '%') fail("expected a value ('%name')");
    ++p_;
    if (p_ < s_.size() && s_[p_] == '"') return parse_string();
    const std::size_t b = p_;
    while (p_ < s_.size() && is_name_char(s_[p_])) ++p_;
    if (p_ == b) fail("expected a value name after '%'");
    return std::string(s_.substr(b, p_ - b));
  }

  int parse_use(const scope& sc) {
    const std::size_t b = (skip_ws(), p_);
    const std::string n = parse_value_name();
    const auto it = sc.find(n);
    if (it == sc.end()) fail_at(b, "use of undefined value %", show(n));
    return it->second;
  }

  int parse_def(graph& g, scope& sc) {
    const std::size_t b = (skip_ws(), p_);
    std::string n = parse_value_name();
    if (sc.count(n)) fail_at(b, "value %", show(n), " defined twice");
    expect(':', "':' and the value's type");
    const std::size_t tb = (skip_ws(), p_);
    const std::string_view t = word();
    ember::dtype type = dtype::f32;
    bool found = false;
    for (int k = 0; k < 256 && !found; ++k) {
      const auto d = static_cast<ember::dtype>(k);
      if (to_string(d) != "unknown" && to_string(d) == t) type = d, found = true;
    }
    if (t.empty()) fail_at(tb, "expected a dtype");
    if (!found) fail_at(tb, "unknown dtype ", show(t));
    expect('[', "'[' and the value's shape");
    std::vector<std::int64_t> shape;
    list(']', "',' or ']' in the shape", [&] {
      const std::size_t eb = (skip_ws(), p_);
      if (p_ < s_.size() && s_[p_] == 'N' && (p_ + 1 >= s_.size() || !is_word_char(s_[p_ + 1]))) {
        ++p_;
        shape.push_back(symbolic);
        return;
      }
      const std::int64_t e = parse_int("an extent (N or an integer)");
      if (e < -1 || e > max_extent) fail_at(eb, "extent ", e, " out of range [-1, 2^40]");
      shape.push_back(e);
    });
    const int id = static_cast<int>(g.values.size());
    g.values.push_back({n, type, std::move(shape)});
    sc.emplace(std::move(n), id);
    return id;
  }

  attribute parse_attr() {
    skip_ws();
    if (at('"')) return parse_string();
    if (accept('[')) {
      std::vector<std::int64_t> l;
      list(']', "',' or ']' in the integer list",
           [&] { l.push_back(parse_int("an integer in the list")); });
      return l;
    }
    const std::size_t b = p_;
    const bool neg = p_ < s_.size() && s_[p_] == '-';
    if (neg) ++p_;
    if (p_ < s_.size() && is_alpha(s_[p_])) {
      const std::string_view w = word();
      if (w == "inf") return neg ? -std::numeric_limits<double>::infinity()
                                 : std::numeric_limits<double>::infinity();
      if (w == "nan" && !neg) return std::numeric_limits<double>::quiet_NaN();
      fail_at(b, "expected an attribute value (number, [list], \"string\", inf or nan)");
    }
    bool real = false;
    while (p_ < s_.size()) {
      const char c = s_[p_];
      if (c == '.' || c == 'e' || c == 'E') real = true;
      else if (!is_digit(c) && c != '+' && c != '-') break;
      ++p_;
    }
    const char* first = s_.data() + b;
    const char* last = s_.data() + p_;
    if (first == last) fail_at(b, "expected an attribute value (number, [list], \"string\")");
    if (real) {
      double d = 0;
      const auto r = std::from_chars(first, last, d, std::chars_format::general);
      if (r.ec == std::errc::result_out_of_range) fail_at(b, "real number out of range");
      if (r.ec != std::errc() || r.ptr != last) fail_at(b, "bad real number ", show({first, last}));
      return d;
    }
    std::int64_t i = 0;
    const auto r = std::from_chars(first, last, i);
    if (r.ec == std::errc::result_out_of_range) fail_at(b, "integer out of range");
    if (r.ec != std::errc() || r.ptr != last) fail_at(b, "bad integer ", show({first, last}));
    return i;
  }

  attributes parse_attrs() {
    expect('{', "'{'");
    attributes a;
    if (accept('}')) return a;
    do {
      const std::size_t kb = (skip_ws(), p_);
      std::string key;
      if (at('"')) {
        key = parse_string();
      } else {
        key = std::string(word());
        if (key.empty() || is_digit(key[0])) fail_at(kb, "expected an attribute name");
      }
      if (a.count(key)) fail_at(kb, "duplicate attribute ", show(key));
      expect('=', "'=' after the attribute name");
      a.emplace(std::move(key), parse_attr());
    } while (accept(','));
    expect('}', "',' or '}' in the attributes");
    return a;
  }

  void parse_node(graph& g, scope& sc, std::vector<int> outputs, std::string_view opname,
                  std::size_t op_at, int depth) {
    node n;
    n.outputs = std::move(outputs);
    bool found = false;
    for (op o : all_ops)
      if (!found && name(o) == opname) n.kind = o, found = true;
    if (opname.empty()) fail_at(op_at, "expected an op name");
    if (!found) fail_at(op_at, "unknown op ", show(opname));
    expect('(', "'(' after the op name");
    list(')', "',' or ')' after an op input", [&] { n.inputs.push_back(parse_use(sc)); });
    if (at('{')) n.attrs = parse_attrs();
    skip_ws();
    const std::size_t save = p_;
    if (word() == "graph") {
      p_ = save;
      n.body = std::make_shared<graph>(parse_graph_at(depth + 1));
    } else {
      p_ = save;
    }
    // Outputs become visible after the node: a node cannot read its own results.
    for (int id : n.outputs) sc.emplace(g.values[static_cast<std::size_t>(id)].name, id);
    g.nodes.push_back(std::move(n));
  }

  graph parse_graph_at(int depth) {
    skip_ws();
    if (depth > max_nesting) fail("fused bodies nested deeper than ", max_nesting, " levels");
    if (const std::size_t b = p_; word() != "graph") fail_at(b, "expected 'graph'");
    graph g;
    scope sc;
    expect('(', "'(' after 'graph'");
    list(')', "',' or ')' after a graph input", [&] { g.inputs.push_back(parse_def(g, sc)); });
    expect('{', "'{' to open the graph's body");
    for (;;) {
      skip_ws();
      const std::size_t b = p_;
      if (p_ >= s_.size() || s_[p_] == '}')
        fail("expected a node, 'const' or 'return' (missing 'return')");
      if (s_[p_] == '%') {
        std::vector<int> outs;
        scope pending;  // outputs are defined only once the node ends
        do {
          const std::size_t db = (skip_ws(), p_);
          const int id = parse_def(g, pending);
          const std::string& n = g.values[static_cast<std::size_t>(id)].name;
          if (sc.count(n)) fail_at(db, "value %", show(n), " defined twice");
          outs.push_back(id);
        } while (accept(','));
        expect('=', "',' or '=' after a node output");
        const std::size_t ob = (skip_ws(), p_);
        parse_node(g, sc, std::move(outs), word(), ob, depth);
        continue;
      }
      const std::string_view w = word();
      if (w == "const") {
        const int id = parse_def(g, sc);
        g.constants.emplace(id, any_tensor{});
      } else if (w == "return") {
        expect('(', "'(' after 'return'");
        list(')', "',' or ')' after a returned value",
             [&] { g.outputs.push_back(parse_use(sc)); });
        break;
      } else {
        if (w.empty()) fail_at(b, "expected a node, 'const' or 'return'");
        parse_node(g, sc, {}, w, b, depth);
      }
    }
    expect('}', "'}' after 'return (...)'");
    // New unnamed values must not collide with numeric names read here.
    int next = 0;
    for (const value& v : g.values) {
      long long k = -1;
      const char* e = v.name.data() + v.name.size();
      const bool numeric = !v.name.empty() && is_digit(v.name[0]) &&
                           std::from_chars(v.name.data(), e, k).ptr == e;
      if (numeric && k < std::numeric_limits<int>::max() && k + 1 > next)
        next = static_cast<int>(k + 1);
    }
    g.set_next_number(next);
    return g;
  }

  std::string_view s_;
  std::size_t p_ = 0;
};

}  // namespace detail

/// Parses the text form (see Note [Graph text grammar]): the exact inverse of to_string.
/// Constants come back as undefined any_tensors, to be filled by the loader. Text is treated
/// as untrusted: anything malformed is an ember::error (errc::value) naming line and column.
///   jit::graph g = jit::parse_graph("graph(%x : f32[N]) {\n  %y : f32[N] = relu(%x)\n"
///                                   "  return (%y)\n}\n");
inline graph parse_graph(std::string_view text) { return detail::graph_parser(text).parse(); }

namespace detail {

/// How many inputs an op takes in a graph: [lo, hi] (hi = -1: any); lo = -1: not a graph op.
constexpr std::pair<int, int> input_count(op o) noexcept {
  const auto v = static_cast<std::uint16_t>(o);
  if (v >= 2 && v <= 27) return {1, 1};    // unary elementwise
  if (v >= 40 && v <= 54) return {2, 2};   // binary elementwise
  if (v >= 80 && v <= 90) return {1, 1};   // reductions
  switch (o) {
    case op::scalar: return {0, 0};
    case op::where: case op::clamp: return {3, 3};
    case op::leaky_relu: case op::elu: return {2, 2};
    case op::cast: case op::softmax: case op::log_softmax: case op::max_pool2d:
    case op::avg_pool2d: case op::adaptive_avg_pool2d: case op::reshape: case op::permute:
    case op::expand: case op::slice: case op::select: case op::contiguous:
    case op::detach: return {1, 1};
    case op::matmul: case op::embedding: return {2, 2};
    case op::linear: case op::conv2d: case op::layer_norm: case op::group_norm: return {3, 3};
    case op::batch_norm: return {5, 5};
    case op::cat: case op::stack: return {1, -1};
    case op::scaled_dot_product_attention: return {3, 4};
    case op::fused: case op::custom: return {0, -1};
    default: return {-1, -1};  // op::leaf, and ops this table does not know yet
  }
}

/// One attribute an op needs (or may have): its key, variant alternative (0 int, 1 double,
/// 2 int list, 3 string), list length (-1: any) and whether it must be present.
struct attr_rule {
  const char* key;
  int alt;
  int size;
  bool required;
};

inline std::vector<attr_rule> attr_rules(op o) {
  constexpr int i = 0, d = 1, l = 2, s = 3;
  switch (o) {
    case op::scalar: return {{"value", d, -1, true}};
    case op::sum: case op::mean: case op::prod: case op::amax: case op::amin: case op::logsumexp:
      return {{"dims", l, -1, true}, {"keepdim", i, -1, true}};
    case op::var: case op::std:
      return {{"dims", l, -1, true}, {"keepdim", i, -1, true}, {"correction", i, -1, true}};
    case op::argmax: case op::argmin: return {{"dim", i, -1, false}, {"keepdim", i, -1, true}};
    case op::softmax: case op::log_softmax: case op::cat: case op::stack:
      return {{"dim", i, -1, true}};
    case op::conv2d:
      return {{"stride", l, 2, true}, {"padding", l, 2, true}, {"dilation", l, 2, true},
              {"groups", i, -1, true}};
    case op::batch_norm:
      return {{"eps", d, -1, true}, {"momentum", d, -1, true}, {"training", i, -1, true}};
    case op::layer_norm: return {{"normalized_shape", l, -1, true}, {"eps", d, -1, true}};
    case op::group_norm: return {{"groups", i, -1, true}, {"eps", d, -1, true}};
    case op::max_pool2d:
      return {{"kernel", l, 2, true}, {"stride", l, 2, true}, {"padding", l, 2, true},
              {"dilation", l, 2, true}, {"ceil_mode", i, -1, true}};
    case op::avg_pool2d:
      return {{"kernel", l, 2, true}, {"stride", l, 2, true}, {"padding", l, 2, true},
              {"ceil_mode", i, -1, true}, {"count_include_pad", i, -1, true}};
    case op::adaptive_avg_pool2d: return {{"output_size", l, 2, true}};
    case op::reshape: case op::expand: return {{"shape", l, -1, true}};
    case op::permute: return {{"dims", l, -1, true}};
    case op::slice:
      return {{"dim", i, -1, true}, {"start", i, -1, true}, {"end", i, -1, true},
              {"step", i, -1, true}};
    case op::select: return {{"dim", i, -1, true}, {"index", i, -1, true}};
    case op::embedding: return {{"padding_idx", i, -1, true}};
    case op::scaled_dot_product_attention:
      return {{"is_causal", i, -1, true}, {"scale", d, -1, false}};
    case op::custom: return {{"name", s, -1, true}};
    default: return {};
  }
}

inline void validate_at(const graph& g, int depth, const std::string& where) {
  auto bad = [&](const auto&... parts) {
    ember::detail::fail(errc::value, "jit::validate: ", where, parts...);
  };
  if (depth > max_nesting) bad("fused bodies nested deeper than ", max_nesting, " levels");
  const std::size_t nv = g.values.size();
  auto label = [&](int id) {
    std::ostringstream os;
    write_use(os, g, id);
    return os.str();
  };
  std::unordered_set<std::string_view> names;
  for (std::size_t v = 0; v < nv; ++v) {
    const value& x = g.values[v];
    const int id = static_cast<int>(v);
    if (!names.insert(x.name).second) bad("two values are named ", label(id));
    if (to_string(x.type) == "unknown") bad("value ", label(id), " has an invalid dtype");
    for (std::int64_t e : x.shape)
      if (e < -1 || e > max_extent) bad("value ", label(id), " has extent ", e);
  }
  std::vector<char> defined(nv, 0);
  auto is_defined = [&](int id) { return defined[static_cast<std::size_t>(id)] != 0; };
  auto check_id = [&](int id, const auto&... what) {
    if (id < 0 || static_cast<std::size_t>(id) >= nv)
      bad(what..., "id ", id, " out of range (", nv, " values)");
  };
  auto define = [&](int id, const auto&... what) {
    check_id(id, what..., ": value ");
    if (is_defined(id)) bad(what..., ": value ", label(id), " defined twice");
    defined[static_cast<std::size_t>(id)] = 1;
  };
  for (int id : g.inputs) define(id, "graph input");
  for (const auto& c : g.constants) define(c.first, "constant");
  for (std::size_t k = 0; k < g.nodes.size(); ++k) {
    const node& n = g.nodes[k];
    std::ostringstream os;
    os << "node " << k << " (" << name(n.kind) << "): ";
    const std::string at = os.str();
    for (int id : n.inputs) {
      check_id(id, at, "input ");
      if (!is_defined(id)) bad(at, "input ", label(id), " is used before it is defined");
    }
    const auto [lo, hi] = input_count(n.kind);
    const int ni = static_cast<int>(n.inputs.size()), no = static_cast<int>(n.outputs.size());
    if (lo < 0) bad(at, "not an op a graph may contain");
    if (ni < lo || (hi >= 0 && ni > hi))
      bad(at, ni, " inputs, expected ", lo, hi == lo ? "" : hi < 0 ? " or more" : " to ",
          hi == lo || hi < 0 ? "" : std::to_string(hi));
    const bool many = n.kind == op::custom || n.kind == op::fused;
    if (many ? no < 1 : no != 1) bad(at, no, " outputs, expected ", many ? "1 or more" : "1");
    for (const attr_rule& r : attr_rules(n.kind)) {
      static constexpr const char* alt[] = {"an int", "a double", "an int list", "a string"};
      const auto it = n.attrs.find(r.key);
      if (it == n.attrs.end()) {
        if (r.required) bad(at, "missing attribute \"", r.key, "\" (", alt[r.alt], ")");
        continue;
      }
      const auto* list = std::get_if<std::vector<std::int64_t>>(&it->second);
      if (static_cast<int>(it->second.index()) != r.alt ||
          (r.size >= 0 && list && list->size() != static_cast<std::size_t>(r.size)))
        bad(at, "attribute \"", r.key, "\" must be ", alt[r.alt],
            r.size >= 0 ? " of length " + std::to_string(r.size) : std::string());
    }
    if (n.kind != op::fused && n.body) bad(at, "only fused nodes have a body");
    if (n.kind == op::fused) {
      if (!n.body) bad(at, "no body");
      const graph& b = *n.body;
      if (b.inputs.size() != n.inputs.size() || b.outputs.size() != n.outputs.size())
        bad(at, "the body has ", b.inputs.size(), " inputs and ", b.outputs.size(),
            " outputs, the node ", n.inputs.size(), " and ", n.outputs.size());
      for (std::size_t j = 0; j < b.nodes.size(); ++j)  // checked first: no cycles through bodies
        if (!is_elementwise(b.nodes[j].kind) && b.nodes[j].kind != op::scalar)
          bad(at, "body node ", j, " (", name(b.nodes[j].kind), ") is not elementwise");
      validate_at(b, depth + 1, where + "node " + std::to_string(k) + " (fused) body: ");
    }
    for (int id : n.outputs) define(id, at, "output");
  }
  for (int id : g.outputs) {
    check_id(id, "graph output: value ");
    if (!is_defined(id)) bad("graph output ", label(id), " is never defined");
  }
  for (std::size_t v = 0; v < nv; ++v)
    if (!defined[v])
      bad("value ", label(static_cast<int>(v)),
          " is never defined (not an input, constant or node output)");
}

}  // namespace detail

/// Checks g's structure (for graphs loaded from untrusted files): ids in range; each value
/// defined once (input, constant or node output) before use; names unique; per-op input and
/// output counts and attributes (docs/jit.md); fused bodies elementwise and matching their
/// node. Throws ember::error (errc::value) "jit::validate: node K (op): ...".
///   jit::validate(jit::parse_graph(text));
inline void validate(const graph& g) { detail::validate_at(g, 0, ""); }

}  // namespace ember::jit
