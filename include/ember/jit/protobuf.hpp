// A minimal protocol-buffers wire-format writer (pb_writer) and reader (pb_message), and the
// ONNX messages jit/onnx.hpp writes with it (TensorProto, ValueInfoProto, NodeProto attributes):
// ONNX models without libprotobuf, readable back in tests.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ember::jit::detail {

/// Protobuf wire types (the low 3 bits of a field's tag).
enum class wire : std::uint8_t { varint = 0, fixed64 = 1, bytes = 2, fixed32 = 5 };

/// Appends protobuf fields to a byte string. Messages nest by encoding the inner message into
/// its own writer and appending it with message():
///   pb_writer dim;  dim.string(2, "N");
///   pb_writer shape;  shape.message(1, dim);
class pb_writer {
 public:
  void raw_varint(std::uint64_t v) {
    while (v >= 0x80) {
      buf_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    buf_.push_back(static_cast<char>(v));
  }
  void tag(std::uint32_t field, wire w) {
    raw_varint((static_cast<std::uint64_t>(field) << 3) | static_cast<std::uint64_t>(w));
  }
  /// int32/int64/uint64/enum/bool field (negative values take 10 bytes, as protobuf does).
  void varint(std::uint32_t field, std::int64_t v) {
    tag(field, wire::varint);
    raw_varint(static_cast<std::uint64_t>(v));
  }
  /// string/bytes field.
  void bytes(std::uint32_t field, std::string_view s) {
    tag(field, wire::bytes);
    raw_varint(s.size());
    buf_.append(s.data(), s.size());
  }
  void string(std::uint32_t field, std::string_view s) { bytes(field, s); }
  /// An embedded message field.
  void message(std::uint32_t field, const pb_writer& m) { bytes(field, m.buf_); }
  /// Appends the fields already encoded in another writer (same message).
  void append(const pb_writer& other) { buf_ += other.buf_; }
  void fixed32(std::uint32_t field, std::uint32_t v) {
    tag(field, wire::fixed32);
    append_le(v);
  }
  void fixed64(std::uint32_t field, std::uint64_t v) {
    tag(field, wire::fixed64);
    append_le(v);
  }
  void float32(std::uint32_t field, float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    fixed32(field, u);
  }
  void float64(std::uint32_t field, double d) {
    std::uint64_t u;
    std::memcpy(&u, &d, 8);
    fixed64(field, u);
  }
  /// A packed repeated int32/int64 field (written even when empty only if `always`).
  void packed_varints(std::uint32_t field, std::span<const std::int64_t> vs, bool always = false) {
    if (vs.empty() && !always) return;
    pb_writer inner;
    for (std::int64_t v : vs) inner.raw_varint(static_cast<std::uint64_t>(v));
    bytes(field, inner.buf_);
  }
  /// A packed repeated float field.
  void packed_floats(std::uint32_t field, std::span<const float> vs) {
    if (vs.empty()) return;
    pb_writer inner;
    for (float f : vs) {
      std::uint32_t u;
      std::memcpy(&u, &f, 4);
      inner.append_le(u);
    }
    bytes(field, inner.buf_);
  }

  const std::string& str() const& noexcept { return buf_; }
  std::string str() && noexcept { return std::move(buf_); }
  std::size_t size() const noexcept { return buf_.size(); }

 private:
  template <class U>
  void append_le(U v) {
    for (std::size_t i = 0; i < sizeof(U); ++i)
      buf_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string buf_;
};

/// One decoded field: its number, wire type, and its varint/fixed value or its bytes.
struct pb_field {
  std::uint32_t number = 0;
  wire type = wire::varint;
  std::uint64_t scalar = 0;  ///< varint, fixed32 or fixed64 payload
  std::string_view data;     ///< bytes payload (views the parsed buffer)

  std::int64_t as_int() const noexcept { return static_cast<std::int64_t>(scalar); }
  float as_float() const noexcept {
    const auto u = static_cast<std::uint32_t>(scalar);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

/// The fields of one serialized message, in order (views the buffer: keep it alive):
///   pb_message model(bytes);  model.get_int(1) == 8;  pb_message g(model.get_bytes(7));
class pb_message {
 public:
  pb_message() = default;
  explicit pb_message(std::string_view buf) {
    std::size_t pos = 0;
    while (pos < buf.size()) {
      const std::uint64_t key = read_varint(buf, pos);
      pb_field f;
      f.number = static_cast<std::uint32_t>(key >> 3);
      f.type = static_cast<wire>(key & 7);
      switch (f.type) {
        case wire::varint: f.scalar = read_varint(buf, pos); break;
        case wire::fixed64: f.scalar = read_le(buf, pos, 8); break;
        case wire::fixed32: f.scalar = read_le(buf, pos, 4); break;
        case wire::bytes: {
          const std::uint64_t n = read_varint(buf, pos);
          ember::detail::check(n <= buf.size() - pos, errc::io,
                               "protobuf: a length-delimited field of ", n,
                               " bytes overruns the message (", buf.size() - pos, " left)");
          f.data = buf.substr(pos, n);
          pos += n;
          break;
        }
        default:
          ember::detail::fail(errc::io, "protobuf: unsupported wire type ",
                              static_cast<int>(key & 7), " (field ", f.number, ")");
      }
      fields_.push_back(f);
    }
  }

  const std::vector<pb_field>& fields() const noexcept { return fields_; }
  /// Every field with this number.
  std::vector<pb_field> all(std::uint32_t number) const {
    std::vector<pb_field> out;
    for (const auto& f : fields_)
      if (f.number == number) out.push_back(f);
    return out;
  }
  bool has(std::uint32_t number) const {
    for (const auto& f : fields_)
      if (f.number == number) return true;
    return false;
  }
  /// The last occurrence (protobuf's rule for singular fields); an error when absent.
  const pb_field& get(std::uint32_t number) const {
    for (auto it = fields_.rbegin(); it != fields_.rend(); ++it)
      if (it->number == number) return *it;
    ember::detail::fail(errc::io, "protobuf: field ", number, " absent");
  }
  std::int64_t get_int(std::uint32_t number, std::int64_t fallback = 0) const {
    return has(number) ? get(number).as_int() : fallback;
  }
  std::string_view get_bytes(std::uint32_t number) const {
    return has(number) ? get(number).data : std::string_view{};
  }
  std::vector<pb_message> messages(std::uint32_t number) const {
    std::vector<pb_message> out;
    for (const auto& f : fields_)
      if (f.number == number) out.emplace_back(f.data);
    return out;
  }
  std::vector<std::string> strings(std::uint32_t number) const {
    std::vector<std::string> out;
    for (const auto& f : fields_)
      if (f.number == number) out.emplace_back(f.data);
    return out;
  }
  /// A repeated integer field, packed or not.
  std::vector<std::int64_t> ints(std::uint32_t number) const {
    std::vector<std::int64_t> out;
    for (const auto& f : fields_) {
      if (f.number != number) continue;
      if (f.type == wire::bytes) {
        std::size_t pos = 0;
        while (pos < f.data.size())
          out.push_back(static_cast<std::int64_t>(read_varint(f.data, pos)));
      } else {
        out.push_back(f.as_int());
      }
    }
    return out;
  }

 private:
  static std::uint64_t read_varint(std::string_view buf, std::size_t& pos) {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      ember::detail::check(pos < buf.size(), errc::io, "protobuf: truncated varint");
      const auto b = static_cast<std::uint8_t>(buf[pos++]);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    ember::detail::fail(errc::io, "protobuf: varint longer than 10 bytes");
  }
  static std::uint64_t read_le(std::string_view buf, std::size_t& pos, std::size_t n) {
    ember::detail::check(buf.size() - pos >= n, errc::io, "protobuf: truncated fixed", 8 * n,
                         " field");
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i)
      v |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(buf[pos + i])) << (8 * i);
    pos += n;
    return v;
  }
  std::vector<pb_field> fields_;
};

// ---- ONNX messages (field numbers from onnx.proto) ------------------------------------------

/// ONNX TensorProto.DataType of an ember dtype.
constexpr std::int64_t onnx_elem_type(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return 1;
    case dtype::u8: return 2;
    case dtype::i8: return 3;
    case dtype::i16: return 5;
    case dtype::i32: return 6;
    case dtype::i64: return 7;
    case dtype::boolean: return 9;
    case dtype::f16: return 10;
    case dtype::f64: return 11;
    case dtype::bf16: return 16;
  }
  return 0;
}

/// Appends n elements of T little-endian (ONNX raw_data is little-endian on every host).
template <class T>
void append_le(std::string& out, const T* p, std::size_t n) {
  const auto* bytes = reinterpret_cast<const char*>(p);
  if constexpr (std::endian::native == std::endian::little || sizeof(T) == 1) {
    out.append(bytes, n * sizeof(T));
  } else {
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t b = sizeof(T); b-- > 0;) out.push_back(bytes[i * sizeof(T) + b]);
  }
}

/// A TensorProto (dims 1, data_type 2, name 8, raw_data 9) holding a contiguous CPU copy of t.
template <int = 0>  // Note [Deferred instantiation]
pb_writer onnx_tensor(const std::string& name, const any_tensor& t) {
  pb_writer w;
  std::vector<std::int64_t> dims(t.shape().begin(), t.shape().end());
  w.packed_varints(1, dims);
  w.varint(2, onnx_elem_type(t.dtype()));
  if (!name.empty()) w.string(8, name);
  std::string raw;
  t.visit([&](const auto& typed) {
    const auto c = typed.cpu().contiguous();
    if (c.numel() > 0) append_le(raw, c.data(), static_cast<std::size_t>(c.numel()));
  });
  w.bytes(9, raw);
  return w;
}

/// A TensorProto of the given dims (empty: 0-d) holding v converted to dtype t (constants of
/// formulas, masks).
inline pb_writer onnx_values(const std::string& name, dtype t,
                             const std::vector<std::int64_t>& dims, const std::vector<double>& v) {
  pb_writer w;
  w.packed_varints(1, dims);
  w.varint(2, onnx_elem_type(t));
  if (!name.empty()) w.string(8, name);
  std::string raw;
  visit_dtype(t, [&](auto e) {
    using T = decltype(e);
    for (double x : v) {
      const T c = convert<T>(x);
      append_le(raw, &c, 1);
    }
  });
  w.bytes(9, raw);
  return w;
}

/// An int64 TensorProto (shape, axes and index inputs; exact for every int64, unlike doubles).
inline pb_writer onnx_ints(const std::string& name, const std::vector<std::int64_t>& v,
                           bool scalar) {
  pb_writer w;
  if (!scalar) w.varint(1, static_cast<std::int64_t>(v.size()));
  w.varint(2, onnx_elem_type(dtype::i64));
  w.string(8, name);
  std::string raw;
  append_le(raw, v.data(), v.size());
  w.bytes(9, raw);
  return w;
}

/// A ValueInfoProto: name 1, type 2 = TypeProto{tensor_type 1 = {elem_type 1, shape 2}}; an
/// extent of -1 (jit::symbolic, the batch) becomes dim_param "N".
inline pb_writer onnx_value_info(const std::string& name, dtype elem,
                                 const std::vector<std::int64_t>& extents) {
  pb_writer shape;
  for (std::int64_t e : extents) {
    pb_writer dim;
    if (e == -1)
      dim.string(2, "N");
    else if (e >= 0)
      dim.varint(1, e);
    shape.message(1, dim);
  }
  pb_writer tensor_type;
  tensor_type.varint(1, onnx_elem_type(elem));
  tensor_type.message(2, shape);
  pb_writer type;
  type.message(1, tensor_type);
  pb_writer info;
  info.string(1, name);
  info.message(2, type);
  return info;
}

/// One ONNX NodeProto being built: inputs, outputs, op_type and typed attributes.
struct onnx_node {
  std::string op_type;
  std::vector<std::string> in, out;
  pb_writer attrs;  // repeated AttributeProto (field 5 of NodeProto)

  const std::string& y() const { return out.front(); }
  // AttributeProto: name 1, f 2, i 3, s 4, t 5, ints 8, type 20 (FLOAT 1 INT 2 STRING 3 TENSOR 4
  // INTS 7)
  onnx_node& i(std::string_view key, std::int64_t v) {
    return add(key, 2, [&](pb_writer& a) { a.varint(3, v); });
  }
  onnx_node& f(std::string_view key, double v) {
    return add(key, 1, [&](pb_writer& a) { a.float32(2, static_cast<float>(v)); });
  }
  onnx_node& ints(std::string_view key, const std::vector<std::int64_t>& v) {
    return add(key, 7, [&](pb_writer& a) { a.packed_varints(8, v); });
  }
  onnx_node& t(std::string_view key, const pb_writer& tensor) {
    return add(key, 4, [&](pb_writer& a) { a.message(5, tensor); });
  }

 private:
  template <class F>
  onnx_node& add(std::string_view key, std::int64_t type, F&& fill) {
    pb_writer a;
    a.string(1, key);
    a.varint(20, type);
    fill(a);
    attrs.message(5, a);
    return *this;
  }
};

}  // namespace ember::jit::detail
