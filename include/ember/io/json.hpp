// A small, strict, hostile-input-safe JSON pull reader (file headers: safetensors) and the string
// escaper for writing JSON. Malformed text is an ember::error (io) naming the byte offset.
#pragma once

#include <ember/core/error.hpp>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace ember::io::json {

/// The kind of the next value, from reader::peek().
enum class kind { object, array, string, number, boolean, null, end };

namespace detail {

/// Length of the UTF-8 sequence starting at s[i] (1..4), or 0 when it is not well-formed
/// (overlong forms, surrogates, code points above U+10FFFF and truncation are rejected).
inline std::size_t utf8_length(std::string_view s, std::size_t i) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // UTF-16 surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  return n;
}

inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace detail

/// True when `s` is well-formed UTF-8.
inline bool is_valid_utf8(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = detail::utf8_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

/// Appends `s` as a quoted JSON string: '"', '\\' and control characters are escaped, other
/// bytes (UTF-8) are copied; the caller checks is_valid_utf8 when the input is untrusted.
///   std::string out;  em::io::json::write_string(out, "a\"b");  // out == "\"a\\\"b\""
inline void write_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 0xF];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

/// `s` quoted for an error message: escaped as JSON, cut after `max_bytes` bytes.
inline std::string quoted(std::string_view s, std::size_t max_bytes = 128) {
  std::string out;
  write_string(out, s.substr(0, max_bytes));
  if (s.size() > max_bytes) out.insert(out.size() - 1, "...");
  return out;
}

/// A pull reader over one JSON text (RFC 8259, no extensions): the caller asks for the value it
/// expects, so nothing is built that the schema does not need. Nesting is limited to
/// `max_depth`; strings must be valid UTF-8 (escaped lone surrogates are rejected); integers
/// are read exactly as int64. Errors are ember::error (io) starting with `context`:
///   em::io::json::reader r(R"({"shape": [2, 3]})", "header");
///   r.begin_object();  std::string key;
///   while (r.next_member(key)) { r.begin_array(); while (r.next_element()) r.read_int64(); }
///   r.finish();
class reader {
 public:
  static constexpr int max_depth = 64;

  explicit reader(std::string_view text, std::string context = "json")
      : s_(text), context_(std::move(context)) {}

  /// The prefix of error messages (a file and an entry, say); may change while reading.
  void set_context(std::string context) { context_ = std::move(context); }
  /// Byte offset of the next unread character.
  std::size_t offset() const noexcept { return i_; }

  /// The kind of the next value (kind::end at the end of the text).
  kind peek() {
    skip_ws();
    if (i_ >= s_.size()) return kind::end;
    switch (s_[i_]) {
      case '{': return kind::object;
      case '[': return kind::array;
      case '"': return kind::string;
      case 't': case 'f': return kind::boolean;
      case 'n': return kind::null;
      default: return kind::number;  // or garbage: reported by the read
    }
  }

  void begin_object() { open('{', "an object"); }
  void begin_array() { open('[', "an array"); }

  /// Reads the next member's key (and the ':' after it); false at the closing '}'.
  bool next_member(std::string& key) {
    if (!next_item('}')) return false;
    key = read_string();
    expect(':');
    return true;
  }
  /// Moves to the next element; false at the closing ']'.
  bool next_element() { return next_item(']'); }

  std::string read_string() {
    skip_ws();
    if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
    ++i_;
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) fail("unterminated string");
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return out;
      }
      if (c < 0x20) fail("control character in a string");
      if (c == '\\') {
        read_escape(out);
        continue;
      }
      const std::size_t n = detail::utf8_length(s_, i_);
      if (n == 0) fail("invalid UTF-8 in a string");
      out.append(s_.substr(i_, n));
      i_ += n;
    }
  }

  /// Reads an integer (no fraction or exponent) that fits in int64, exactly.
  std::int64_t read_int64() {
    skip_ws();
    const std::size_t begin = i_;
    const bool integral = scan_number();
    const std::string_view text = s_.substr(begin, i_ - begin);
    if (!integral) fail("expected an integer, got " + std::string(text));
    std::int64_t v = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    if (r.ec != std::errc{} || r.ptr != text.data() + text.size())
      fail("integer " + std::string(text.substr(0, 40)) + " does not fit in int64");
    return v;
  }

  /// Reads and discards one value of any kind (checked like every other read, except that
  /// duplicate keys inside it are not looked for).
  void skip_value() {
    switch (peek()) {
      case kind::object: {
        begin_object();
        std::string key;
        while (next_member(key)) skip_value();
        return;
      }
      case kind::array:
        begin_array();
        while (next_element()) skip_value();
        return;
      case kind::string:
        read_string();
        return;
      case kind::boolean:
        if (!literal("true") && !literal("false")) fail("invalid literal");
        return;
      case kind::null:
        if (!literal("null")) fail("invalid literal");
        return;
      case kind::number:
        scan_number();
        return;
      case kind::end:
        fail("unexpected end of the text");
    }
  }

  /// Checks that only whitespace follows the value that was read.
  void finish() {
    skip_ws();
    if (i_ != s_.size()) fail("unexpected characters after the JSON value");
  }

  /// Throws the ember::error (io) for `what` at the current offset.
  [[noreturn]] void fail(const std::string& what) const {
    ::ember::detail::fail(errc::io, context_, ": ", what, " at byte ", i_);
  }

 private:
  void skip_ws() noexcept {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  void expect(char c) {
    skip_ws();
    if (i_ >= s_.size() || s_[i_] != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  bool literal(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  void open(char c, const char* what) {
    skip_ws();
    if (i_ >= s_.size() || s_[i_] != c) fail(std::string("expected ") + what);
    if (first_.size() >= static_cast<std::size_t>(max_depth))
      fail("nesting deeper than " + std::to_string(max_depth) + " levels");
    ++i_;
    first_.push_back(1);
  }
  // Shared by next_member/next_element: the closing bracket ends the container, otherwise a
  // ',' must separate items (no trailing comma).
  bool next_item(char close) {
    if (first_.empty()) fail("no open object or array");
    skip_ws();
    if (i_ < s_.size() && s_[i_] == close) {
      ++i_;
      first_.pop_back();
      return false;
    }
    if (!first_.back()) {
      expect(',');
      skip_ws();
      if (i_ < s_.size() && s_[i_] == close) fail("trailing comma");
    }
    first_.back() = 0;
    return true;
  }
  std::uint32_t hex4() {
    if (s_.size() - i_ < 4) fail("truncated \\u escape");
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<std::uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<std::uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<std::uint32_t>(h - 'A' + 10);
      else fail("invalid \\u escape");
    }
    return v;
  }
  void read_escape(std::string& out) {
    ++i_;  // the backslash
    if (i_ >= s_.size()) fail("unterminated escape");
    const char e = s_[i_++];
    switch (e) {
      case '"': case '\\': case '/': out += e; return;
      case 'b': out += '\b'; return;
      case 'f': out += '\f'; return;
      case 'n': out += '\n'; return;
      case 'r': out += '\r'; return;
      case 't': out += '\t'; return;
      case 'u': break;
      default: fail(std::string("invalid escape '\\") + e + "'");
    }
    std::uint32_t cp = hex4();
    if (cp >= 0xDC00 && cp < 0xE000) fail("lone low surrogate in a \\u escape");
    if (cp >= 0xD800 && cp < 0xDC00) {
      if (!literal("\\u")) fail("lone high surrogate in a \\u escape");
      const std::uint32_t low = hex4();
      if (low < 0xDC00 || low >= 0xE000) fail("invalid low surrogate in a \\u escape");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    detail::append_utf8(out, cp);
  }
  // Consumes -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; returns whether it is an integer.
  bool scan_number() {
    const auto digit = [&] { return i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; };
    const auto digits = [&](const char* what) {
      if (!digit()) fail(std::string("expected ") + what);
      while (digit()) ++i_;
    };
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
      if (digit()) fail("leading zero in a number");
    } else {
      digits("a value");
    }
    bool integral = true;
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      digits("digits after '.'");
      integral = false;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      digits("an exponent");
      integral = false;
    }
    return integral;
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::string context_;
  std::vector<char> first_;  // per open container: no item read yet
};

}  // namespace ember::io::json
