// Test-only safetensors reader: a minimal JSON parser for the header, the tensors as raw bytes
// with dtype and shape, the __metadata__ map, and conversion to ember tensors. Enough for the
// PyTorch oracle files (written by shared/tools/safetensors_io.py); not a library API.
#pragma once

#include <ember/ember.hpp>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember_test {

// ---- JSON ---------------------------------------------------------------------------------------
namespace json {

/// One JSON value. Numbers keep their double value and, when written without '.', 'e' or 'E',
/// their exact int64 value too (shapes and offsets must not go through double).
struct value {
  enum class kind { null, boolean, number, string, array, object };
  kind k = kind::null;
  bool b = false;
  double num = 0;
  std::int64_t integer = 0;
  bool is_integer = false;
  std::string str;
  std::vector<value> arr;
  struct member;             // {first: key, second: value}, defined below
  std::vector<member> obj;  // in file order

  bool is_null() const { return k == kind::null; }
  bool is_number() const { return k == kind::number; }
  bool is_string() const { return k == kind::string; }
  bool is_array() const { return k == kind::array; }
  bool is_object() const { return k == kind::object; }

  /// The member `key` of an object, or nullptr.
  const value* find(std::string_view key) const;  // defined below, once value is complete
  /// The member `key`; throws when missing.
  const value& at(std::string_view key) const {
    const value* v = find(key);
    if (!v) throw std::runtime_error("json: missing key '" + std::string(key) + "'");
    return *v;
  }
  double as_double() const {
    if (k != kind::number) throw std::runtime_error("json: expected a number");
    return num;
  }
  std::int64_t as_int() const {
    if (k != kind::number || !is_integer) throw std::runtime_error("json: expected an integer");
    return integer;
  }
  bool as_bool() const {
    if (k != kind::boolean) throw std::runtime_error("json: expected true/false");
    return b;
  }
  const std::string& as_string() const {
    if (k != kind::string) throw std::runtime_error("json: expected a string");
    return str;
  }
  std::vector<std::int64_t> as_int_list() const {
    if (k != kind::array) throw std::runtime_error("json: expected an array of integers");
    std::vector<std::int64_t> out;
    for (const auto& v : arr) out.push_back(v.as_int());
    return out;
  }
};

// not std::pair<std::string, value>: with clang, that pair's traits need value's destructor
// while value's members are still being instantiated
struct value::member {
  std::string first;
  value second;
};

inline const value* value::find(std::string_view key) const {
  if (k != kind::object) return nullptr;
  for (const auto& [name, v] : obj)
    if (name == key) return &v;
  return nullptr;
}

namespace detail {
struct parser {
  std::string_view s;
  std::size_t i = 0;
  int depth = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("json: " + what + " at offset " + std::to_string(i));
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  char peek() {
    ws();
    if (i >= s.size()) fail("unexpected end");
    return s[i];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i;
  }
  bool literal(std::string_view w) {
    if (s.substr(i, w.size()) != w) return false;
    i += w.size();
    return true;
  }
  static void put_utf8(std::string& out, std::uint32_t cp) {
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
  std::uint32_t hex4() {
    if (i + 4 > s.size()) fail("truncated \\u escape");
    std::uint32_t v = 0;
    const auto r = std::from_chars(s.data() + i, s.data() + i + 4, v, 16);
    if (r.ptr != s.data() + i + 4) fail("bad \\u escape");
    i += 4;
    return v;
  }
  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (i >= s.size()) fail("unterminated string");
      const char c = s[i++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) fail("unterminated escape");
      switch (const char e = s[i++]) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {  // surrogate pair
            if (!literal("\\u")) fail("lone high surrogate");
            const std::uint32_t lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) fail("bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
  }
  value number() {
    const std::size_t b = i;
    if (i < s.size() && s[i] == '-') ++i;
    bool integral = true;
    while (i < s.size()) {
      const char c = s[i];
      if (c >= '0' && c <= '9') { ++i; continue; }
      if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') { integral = false; ++i; continue; }
      break;
    }
    value v;
    v.k = value::kind::number;
    const std::string text(s.substr(b, i - b));
    if (text.empty() || text == "-") fail("bad number");
    std::size_t used = 0;
    try {
      v.num = std::stod(text, &used);
    } catch (const std::out_of_range&) {  // e.g. subnormal underflow: strtod still gives a value
      v.num = std::strtod(text.c_str(), nullptr);
      used = text.size();
    } catch (const std::exception&) {
      fail("bad number '" + text + "'");
    }
    if (used != text.size()) fail("bad number '" + text + "'");
    if (integral) {
      const auto r = std::from_chars(text.data(), text.data() + text.size(), v.integer);
      if (r.ec != std::errc{} || r.ptr != text.data() + text.size())
        fail("integer out of range '" + text + "'");
      v.is_integer = true;
    }
    return v;
  }
  value parse_value() {
    if (++depth > 64) fail("nesting too deep");
    value v;
    const char c = peek();
    if (c == '{') {
      ++i;
      v.k = value::kind::object;
      if (peek() == '}') {
        ++i;
      } else {
        for (;;) {
          std::string key = string();
          for (const auto& kv : v.obj)
            if (kv.first == key) fail("duplicate key '" + key + "'");
          expect(':');
          v.obj.push_back(value::member{std::move(key), parse_value()});
          if (peek() == ',') { ++i; continue; }
          expect('}');
          break;
        }
      }
    } else if (c == '[') {
      ++i;
      v.k = value::kind::array;
      if (peek() == ']') {
        ++i;
      } else {
        for (;;) {
          v.arr.push_back(parse_value());
          if (peek() == ',') { ++i; continue; }
          expect(']');
          break;
        }
      }
    } else if (c == '"') {
      v.k = value::kind::string;
      v.str = string();
    } else if (literal("true")) {
      v.k = value::kind::boolean;
      v.b = true;
    } else if (literal("false")) {
      v.k = value::kind::boolean;
    } else if (literal("null")) {
      v.k = value::kind::null;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v = number();
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    --depth;
    return v;
  }
};
}  // namespace detail

/// Parses a complete JSON text (trailing whitespace allowed, nothing else).
inline value parse(std::string_view text) {
  detail::parser p{text};
  value v = p.parse_value();
  p.ws();
  if (p.i != text.size()) p.fail("trailing characters");
  return v;
}

}  // namespace json

// ---- safetensors ----------------------------------------------------------------------------------

/// One stored tensor: dtype tag ("F64", "F32", "I64", "BOOL", ...), shape and raw LE bytes.
struct st_tensor {
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

/// Bytes per element of a dtype tag, 0 when unknown.
inline std::size_t st_item_size(std::string_view tag) {
  static const std::pair<std::string_view, std::size_t> table[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
      {"I8", 1},  {"U64", 8}, {"U32", 4}, {"U16", 2},  {"U8", 1},  {"BOOL", 1}};
  for (const auto& [name, size] : table)
    if (name == tag) return size;
  return 0;
}

/// The dtype tag that stores T.
template <class T>
constexpr std::string_view st_tag() {
  if constexpr (std::is_same_v<T, double>) return "F64";
  else if constexpr (std::is_same_v<T, float>) return "F32";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "I64";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "I32";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "U8";
  else if constexpr (std::is_same_v<T, bool>) return "BOOL";
  else static_assert(sizeof(T) == 0, "st_tag: unsupported element type");
}

/// A whole file: tensors by name and the __metadata__ map.
struct st_file {
  std::string path;
  std::map<std::string, st_tensor> tensors;
  std::map<std::string, std::string> metadata;

  bool contains(const std::string& name) const { return tensors.count(name) != 0; }
  const st_tensor& at(const std::string& name) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw std::runtime_error(path + ": no tensor '" + name + "'");
    return it->second;
  }
  const std::string& meta(const std::string& key) const {
    auto it = metadata.find(key);
    if (it == metadata.end()) throw std::runtime_error(path + ": no metadata key '" + key + "'");
    return it->second;
  }

  /// The tensor `name` as an ember tensor; its dtype must be exactly T's.
  template <class T>
  ember::tensor<T> get(const std::string& name) const {
    static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");
    const st_tensor& t = at(name);
    if (t.dtype != st_tag<T>())
      throw std::runtime_error(path + ": tensor '" + name + "' has dtype " + t.dtype + ", not " +
                               std::string(st_tag<T>()));
    ember::tensor<T> out = ember::empty<T>(ember::shape(t.shape));
    if (!t.bytes.empty()) std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
    return out;
  }
};

/// Parses safetensors bytes; `what` names the source in errors. Checks what the reference
/// implementation checks: header size, JSON object, known dtypes, offsets consistent with
/// shape and dtype and inside the buffer, the buffer covered without holes or overlaps,
/// metadata values being strings, BOOL bytes being 0 or 1.
inline st_file parse_safetensors(const std::vector<unsigned char>& buf, const std::string& what) {
  auto fail = [&](const std::string& m) -> void { throw std::runtime_error(what + ": " + m); };
  st_file f;
  f.path = what;
  if (buf.size() < 8) fail("shorter than 8 bytes");
  std::uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | buf[static_cast<std::size_t>(k)];
  if (n > 100'000'000) fail("header too large (" + std::to_string(n) + " bytes)");
  if (n > buf.size() - 8) fail("header length " + std::to_string(n) + " exceeds the file size");
  const std::string_view text(reinterpret_cast<const char*>(buf.data()) + 8, static_cast<std::size_t>(n));
  if (text.empty() || text[0] != '{') fail("header does not start with '{'");
  const json::value header = json::parse(text);
  const std::size_t data_start = 8 + static_cast<std::size_t>(n);
  const std::size_t data_size = buf.size() - data_start;
  std::vector<std::tuple<std::uint64_t, std::uint64_t, std::string>> spans;
  for (const auto& [name, info] : header.obj) {
    if (name == "__metadata__") {
      if (!info.is_object()) fail("__metadata__ is not an object");
      for (const auto& [k, v] : info.obj) {
        if (!v.is_string()) fail("__metadata__ value of '" + k + "' is not a string");
        f.metadata[k] = v.str;
      }
      continue;
    }
    if (!info.is_object() || info.obj.size() != 3 || !info.find("dtype") || !info.find("shape") ||
        !info.find("data_offsets"))
      fail("bad entry for tensor '" + name + "'");
    st_tensor t;
    t.dtype = info.at("dtype").as_string();
    const std::size_t item = st_item_size(t.dtype);
    if (item == 0) fail("unknown dtype '" + t.dtype + "' of '" + name + "'");
    t.shape = info.at("shape").as_int_list();
    std::uint64_t count = 1;
    for (auto d : t.shape) {
      if (d < 0) fail("negative extent in the shape of '" + name + "'");
      if (d != 0 && count > (std::uint64_t(1) << 62) / static_cast<std::uint64_t>(d))
        fail("shape of '" + name + "' overflows");
      count *= static_cast<std::uint64_t>(d);
    }
    const auto offs = info.at("data_offsets").as_int_list();
    if (offs.size() != 2 || offs[0] < 0 || offs[1] < offs[0])
      fail("bad data_offsets of '" + name + "'");
    const auto b = static_cast<std::uint64_t>(offs[0]), e = static_cast<std::uint64_t>(offs[1]);
    if (e - b != count * item)
      fail("data_offsets of '" + name + "' do not match its shape and dtype " + t.dtype);
    if (e > data_size) fail("data of '" + name + "' runs past the end of the file");
    t.bytes.assign(buf.begin() + static_cast<std::ptrdiff_t>(data_start + b),
                   buf.begin() + static_cast<std::ptrdiff_t>(data_start + e));
    if (t.dtype == "BOOL")
      for (auto byte : t.bytes)
        if (byte > 1) fail("BOOL tensor '" + name + "' holds a byte other than 0/1");
    spans.emplace_back(b, e, name);
    f.tensors.emplace(name, std::move(t));
  }
  std::sort(spans.begin(), spans.end());
  std::uint64_t pos = 0;
  for (const auto& [b, e, name] : spans) {
    if (b != pos) fail("hole or overlap before tensor '" + name + "'");
    pos = e;
  }
  if (pos != data_size) fail(std::to_string(data_size - pos) + " trailing bytes after the last tensor");
  return f;
}

/// Reads and parses a .safetensors file.
inline st_file read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<unsigned char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_safetensors(buf, path);
}

#ifdef EMBER_TEST_DATA
/// Absolute path of a file under test/data (EMBER_TEST_DATA is set by the build).
inline std::string test_data(const std::string& rel) { return std::string(EMBER_TEST_DATA) + "/" + rel; }
#endif

}  // namespace ember_test
