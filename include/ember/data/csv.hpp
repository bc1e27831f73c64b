// read_csv: a numeric CSV file (gzip-compressed or not, detected by its magic bytes) as a 2-D
// tensor, rows x columns, parsed with std::from_chars; errors name the file, line and column.
#pragma once

#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/io/inflate.hpp>
#include <ember/ops/factory.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace ember::data {

/// Options of read_csv / parse_csv.
struct csv_options {
  /// true: the first line is a header (skipped); false: it is data; unset (the default): it is
  /// a header when one of its fields is not a number.
  std::optional<bool> header = std::nullopt;
  char delimiter = ',';
};

namespace detail {

using ember::detail::fail;

/// One CSV field, without surrounding blanks and quotes ("" inside quotes is one quote).
struct csv_field {
  std::string_view raw;  ///< the text between the quotes or blanks
  std::string unescaped;  ///< the value when it had doubled quotes
  bool escaped = false;
  std::string_view value() const noexcept { return escaped ? std::string_view(unescaped) : raw; }
};

/// Reads and checks one numeric or boolean field as T.
template <class T>
bool parse_csv_value(std::string_view s, T& out) {
  if (!s.empty() && s[0] == '+' && s.size() > 1 && s[1] != '-' && s[1] != '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  if constexpr (std::is_same_v<T, bool>) {
    if (s == "1" || s == "true" || s == "True" || s == "TRUE") return out = true, true;
    if (s == "0" || s == "false" || s == "False" || s == "FALSE") return out = false, true;
    return false;
  } else if constexpr (std::is_integral_v<T>) {
    std::int64_t v = 0;
    const auto r = std::from_chars(s.data(), end, v);
    if (r.ec != std::errc() || r.ptr != end) return false;
    if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) return false;
    out = static_cast<T>(v);
    return true;
  } else {
    // parsed as double, then rounded to T, as numpy.loadtxt and torch.tensor(list) do
    double v = 0;
    const auto r = std::from_chars(s.data(), end, v);
    if (r.ptr != end || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range)) return false;
    if (r.ec == std::errc::result_out_of_range) {  // overflow to +-inf, underflow to 0, as strtod
      v = std::strtod(std::string(s).c_str(), nullptr);
    }
    out = convert<T>(v);
    return true;
  }
}

/// Splits CSV text into lines and fields; keeps the physical line number for messages.
class csv_lexer {
 public:
  csv_lexer(std::string_view text, char delim, std::string_view source)
      : s_(text), delim_(delim), source_(source) {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") s_.remove_prefix(3);  // UTF-8 byte order mark
  }

  /// The next non-blank line's fields; false at the end of the text.
  bool next(std::vector<csv_field>& fields) {
    while (pos_ < s_.size()) {
      std::size_t eol = s_.find('\n', pos_);
      if (eol == std::string_view::npos) eol = s_.size();
      std::string_view line = s_.substr(pos_, eol - pos_);
      pos_ = eol + 1;
      ++line_;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
      split(line, fields);
      return true;
    }
    return false;
  }
  std::size_t line() const noexcept { return line_; }

  template <class... Parts>
  [[noreturn]] void error(std::size_t column, const Parts&... parts) const {
    fail(errc::io, "read_csv: '", source_, "' line ", line_, ", column ", column, ": ", parts...);
  }

 private:
  bool blank(char c) const { return (c == ' ' || c == '\t') && c != delim_; }

  void split(std::string_view line, std::vector<csv_field>& fields) {
    fields.clear();
    std::size_t i = 0;
    while (true) {
      csv_field f;
      while (i < line.size() && blank(line[i])) ++i;
      if (i < line.size() && line[i] == '"') {
        const std::size_t start = ++i;
        while (true) {
          if (i >= line.size()) error(fields.size() + 1, "unterminated quoted field");
          if (line[i] == '"') {
            if (i + 1 < line.size() && line[i + 1] == '"') {
              f.escaped = true;
              i += 2;
              continue;
            }
            break;
          }
          ++i;
        }
        f.raw = line.substr(start, i - start);
        ++i;
        if (f.escaped) {
          for (std::size_t k = 0; k < f.raw.size(); ++k) {
            f.unescaped += f.raw[k];
            if (f.raw[k] == '"') ++k;
          }
        }
        while (i < line.size() && blank(line[i])) ++i;
        if (i < line.size() && line[i] != delim_)
          error(fields.size() + 1, "unexpected text after a quoted field");
      } else {
        const std::size_t start = i;
        while (i < line.size() && line[i] != delim_) ++i;
        std::size_t end = i;
        while (end > start && blank(line[end - 1])) --end;
        f.raw = line.substr(start, end - start);
      }
      fields.push_back(std::move(f));
      if (i >= line.size()) return;
      ++i;  // the delimiter; a line ending in one has an empty last field
      if (i == line.size()) {
        fields.emplace_back();
        return;
      }
    }
  }

  std::string_view s_;
  char delim_;
  std::string_view source_;
  std::size_t pos_ = 0;
  std::size_t line_ = 0;
};

/// The whole content of a file, gunzipped when it starts with the gzip magic bytes.
inline std::vector<std::uint8_t> read_file_maybe_gzip(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  ember::detail::check(f != nullptr, errc::io, "read_csv: cannot open '", path, "': ",
                       std::strerror(errno));
  std::vector<std::uint8_t> bytes;
  std::uint8_t buf[1 << 16];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) bytes.insert(bytes.end(), buf, buf + n);
  ember::detail::check(!std::ferror(f.get()), errc::io, "read_csv: error reading '", path, "': ",
                       std::strerror(errno));
  if (io::is_gzip(bytes)) return io::gunzip(bytes, {.source = path});
  return bytes;
}

}  // namespace detail

/// Parses CSV text holding numbers (or true/false, 0/1 for bool) into a rows x columns tensor.
/// Blank lines are skipped; fields may be quoted. A ragged row, an empty field or a value that
/// does not parse as T is an ember::error (io) naming `source`, the line and the column.
///   auto t = em::data::parse_csv<float>("a,b\n1,2\n3,4\n");   // (2,2), header detected
template <class T = float>
tensor<T> parse_csv(std::string_view text, const csv_options& opts = {},
                    std::string_view source = "<memory>") {
  static_assert(is_element_v<T>, "read_csv<T>: T must be an ember element type (float, double, "
                                 "std::int64_t, ...)");
  ember::detail::check(opts.delimiter != '"' && opts.delimiter != '\n' && opts.delimiter != '\r',
                       errc::value, "read_csv: invalid delimiter '", opts.delimiter, "'");
  detail::csv_lexer lex(text, opts.delimiter, source);
  std::vector<detail::csv_field> fields;
  std::vector<T> values;
  std::int64_t rows = 0;
  std::size_t cols = 0, first_line = 0;
  bool header_line = false;
  while (lex.next(fields)) {
    if (first_line == 0) {
      first_line = lex.line();
      cols = fields.size();
      if (opts.header) {
        header_line = *opts.header;
      } else {  // a header when a field is not a number (not a boolean, for T = bool)
        std::conditional_t<std::is_same_v<T, bool>, bool, double> probe{};
        for (const auto& f : fields) header_line |= !detail::parse_csv_value(f.value(), probe);
      }
      if (header_line) continue;
    }
    if (fields.size() != cols)
      lex.error(std::min(fields.size(), cols) + 1, "the line has ", fields.size(),
                " columns, expected ", cols, " (as line ", first_line,
                header_line ? ", the header)" : ")");
    for (std::size_t c = 0; c < fields.size(); ++c) {
      T v{};
      const std::string_view text = fields[c].value();
      if (text.empty()) lex.error(c + 1, "empty field");
      if (!detail::parse_csv_value(text, v))
        lex.error(c + 1, "cannot parse '", text, "' as ", dtype_of<T>);
      values.push_back(v);
    }
    ++rows;
  }
  return from_vector<T>(values, {rows, static_cast<std::int64_t>(cols)});
}

/// Reads a numeric CSV file into a rows x columns tensor<T>. A gzip file (by its magic bytes,
/// whatever its name) is decompressed first. See parse_csv for the rules.
///   auto digits = em::data::read_csv<float>("digits.csv.gz");          // (1797,65)
///   auto t = em::data::read_csv<double>("x.tsv", {.header = true, .delimiter = '\t'});
template <class T = float>
tensor<T> read_csv(const std::string& path, const csv_options& opts = {}) {
  const std::vector<std::uint8_t> bytes = detail::read_file_maybe_gzip(path);
  return parse_csv<T>(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                      opts, path);
}

}  // namespace ember::data
