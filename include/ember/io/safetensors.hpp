// The safetensors format (Hugging Face): save_safetensors, load_safetensors and the in-memory
// parse_safetensors. Every length, offset, shape and dtype of a file is checked before use.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>
#include <ember/io/atomic_file.hpp>
#include <ember/io/json.hpp>
#include <ember/state_dict.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// Note [safetensors layout]: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON
//   {"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [2, 3],
//    "data_offsets": [begin, end]}, ...}
// then the data buffer; offsets are relative to its start (byte 8 + N), data is row-major and
// little-endian. The tensors must tile the buffer exactly: no holes, no overlaps, nothing after
// the last one (empty tensors have begin == end). ember writes the header padded with spaces so
// that 8 + N is a multiple of 8, and the tensors in state_dict order.
//
// Note [safetensors load order]: load_safetensors returns the tensors in the order of their
// data in the file (by data_offsets; empty tensors sharing an offset keep their header order).
// For a file ember wrote that is the saved state_dict's order; PyTorch's safe_open lists keys
// sorted by name instead, and Hugging Face's writer lays data out by dtype size, then name.
//
// Note [safetensors copy, not map]: each tensor is copied into ember's own storage (aligned for
// SIMD, writable, independent of the file). Files of 1 MiB or more are read through a
// read-only mmap rather than read(), so the data crosses memory once; the map lives only for
// the duration of the load. Zero-copy tensors over a shared mapping were not chosen: the file
// format does not align data to the element size, ember's tensors are writable, and a file
// truncated by another process while mapped would fault at any later access (SIGBUS) instead
// of during the load.

namespace ember::io {
namespace detail {

static_assert(std::endian::native == std::endian::little,
              "ember: safetensors I/O copies little-endian data as is; this host is big-endian");

/// The reference implementation's limit on the JSON header.
inline constexpr std::uint64_t st_max_header_bytes = 100'000'000;
/// Files at least this large are memory-mapped by load_safetensors.
inline constexpr std::size_t st_mmap_threshold = std::size_t(1) << 20;
/// Longest shape accepted in a file.
inline constexpr std::size_t st_max_rank = 64;

struct st_dtype_tag {
  std::string_view name;
  dtype type;
};
inline constexpr st_dtype_tag st_dtype_tags[] = {
    {"F32", dtype::f32}, {"F64", dtype::f64}, {"I32", dtype::i32},     {"I64", dtype::i64},
    {"U8", dtype::u8},   {"BOOL", dtype::boolean}, {"BF16", dtype::bf16}, {"F16", dtype::f16},
    {"I8", dtype::i8},   {"I16", dtype::i16}};

inline std::string_view st_tag_of(dtype t) {
  for (const auto& d : st_dtype_tags)
    if (d.type == t) return d.name;
  ::ember::detail::fail(errc::internal, "safetensors: no tag for dtype ", t);
}

/// One tensor of a header, checked against the data buffer by st_check_layout.
struct st_entry {
  std::string name;
  dtype type = dtype::f32;
  shape sizes;
  std::uint64_t begin = 0, end = 0;
  std::size_t order = 0;  // position in the header
};

struct st_header {
  std::vector<st_entry> entries;
  std::map<std::string, std::string> metadata;
};

inline std::string st_tensor_context(const std::string& ctx, std::string_view name) {
  return ctx + ": tensor " + json::quoted(name);
}

inline dtype st_parse_dtype(json::reader& r) {
  if (r.peek() != json::kind::string) r.fail("\"dtype\" is not a string");
  const std::string tag = r.read_string();
  for (const auto& d : st_dtype_tags)
    if (d.name == tag) return d.type;
  static constexpr std::string_view foreign[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2"};
  for (auto f : foreign)
    if (f == tag) r.fail("dtype " + tag + " has no ember element type");
  r.fail("unknown dtype " + json::quoted(tag));
}

inline shape st_parse_shape(json::reader& r) {
  shape s;
  r.begin_array();
  while (r.next_element()) {
    if (s.size() == st_max_rank)
      r.fail("shape has more than " + std::to_string(st_max_rank) + " dims");
    const std::int64_t e = r.read_int64();
    if (e < 0) r.fail("negative extent " + std::to_string(e) + " in \"shape\"");
    s.push_back(e);
  }
  // The product of the extents > 1 must fit int64: then numel() and the strides of any tensor
  // of this shape do (zero extents would otherwise hide an overflow).
  std::int64_t n = 1;
  for (auto e : s) {
    if (e <= 1) continue;
    if (n > std::numeric_limits<std::int64_t>::max() / e) r.fail("shape has too many elements");
    n *= e;
  }
  return s;
}

inline std::pair<std::uint64_t, std::uint64_t> st_parse_offsets(json::reader& r) {
  std::int64_t v[2] = {0, 0};
  std::size_t n = 0;
  r.begin_array();
  while (r.next_element()) {
    if (n == 2) r.fail("\"data_offsets\" has more than 2 values");
    v[n] = r.read_int64();
    if (v[n] < 0) r.fail("negative value in \"data_offsets\"");
    ++n;
  }
  if (n != 2) r.fail("\"data_offsets\" needs 2 values, got " + std::to_string(n));
  return {static_cast<std::uint64_t>(v[0]), static_cast<std::uint64_t>(v[1])};
}

/// Parses the JSON header (strictly: duplicate or unknown keys are errors).
inline st_header st_parse_header(std::string_view text, const std::string& ctx) {
  json::reader r(text, ctx + ": header");
  if (text.empty() || text[0] != '{') r.fail("the header does not start with '{'");
  st_header h;
  bool seen_metadata = false;
  std::string name;
  r.begin_object();
  while (r.next_member(name)) {
    if (name == "__metadata__") {
      r.set_context(ctx + ": header \"__metadata__\"");
      if (seen_metadata) r.fail("duplicate \"__metadata__\"");
      seen_metadata = true;
      std::string key;
      r.begin_object();
      while (r.next_member(key)) {
        if (r.peek() != json::kind::string)
          r.fail("the value of " + json::quoted(key) + " is not a string");
        if (!h.metadata.emplace(key, r.read_string()).second)
          r.fail("duplicate key " + json::quoted(key));
      }
      r.set_context(ctx + ": header");
      continue;
    }
    r.set_context(st_tensor_context(ctx, name));
    st_entry e;
    e.order = h.entries.size();
    bool has_dtype = false, has_shape = false, has_offsets = false;
    std::string key;
    r.begin_object();
    while (r.next_member(key)) {
      bool* seen = key == "dtype" ? &has_dtype
                   : key == "shape" ? &has_shape
                   : key == "data_offsets" ? &has_offsets
                                           : nullptr;
      if (!seen) r.fail("unknown key " + json::quoted(key));
      if (*seen) r.fail("duplicate key " + json::quoted(key));
      *seen = true;
      if (seen == &has_dtype) e.type = st_parse_dtype(r);
      else if (seen == &has_shape) e.sizes = st_parse_shape(r);
      else std::tie(e.begin, e.end) = st_parse_offsets(r);
    }
    if (!has_dtype || !has_shape || !has_offsets)
      r.fail(std::string("missing \"") +
             (!has_dtype ? "dtype" : !has_shape ? "shape" : "data_offsets") + "\"");
    e.name = std::move(name);
    h.entries.push_back(std::move(e));
    r.set_context(ctx + ": header");
  }
  r.finish();
  // duplicate names: sorted copy of the names, adjacent equal
  std::vector<const std::string*> names;
  names.reserve(h.entries.size());
  for (const auto& e : h.entries) names.push_back(&e.name);
  std::sort(names.begin(), names.end(), [](auto* a, auto* b) { return *a < *b; });
  for (std::size_t i = 1; i < names.size(); ++i)
    ::ember::detail::check(*names[i] != *names[i - 1], errc::io, ctx, ": the header names tensor ",
                           json::quoted(*names[i]), " twice");
  return h;
}

/// Checks each entry's byte count against its shape and dtype, and that the entries tile the
/// data buffer of `data_size` bytes; sorts them into file order (Note [safetensors load order]).
inline void st_check_layout(std::vector<st_entry>& entries, std::uint64_t data_size,
                            const std::string& ctx) {
  for (const auto& e : entries) {
    const std::string where = st_tensor_context(ctx, e.name);
    ::ember::detail::check(e.end >= e.begin, errc::io, where, ": data_offsets [", e.begin, ", ",
                           e.end, "] end before they begin");
    ::ember::detail::check(e.end <= data_size, errc::io, where, ": data_offsets [", e.begin, ", ",
                           e.end, "] reach past the ", data_size,
                           "-byte data buffer (truncated file?)");
    const auto numel = static_cast<std::uint64_t>(e.sizes.numel());  // fits: st_parse_shape
    const std::uint64_t item = item_size(e.type);
    ::ember::detail::check(numel <= std::numeric_limits<std::uint64_t>::max() / item &&
                               numel * item == e.end - e.begin,
                           errc::io, where, ": data_offsets [", e.begin, ", ", e.end, "] hold ",
                           e.end - e.begin, " bytes, but shape ", e.sizes, " of ",
                           st_tag_of(e.type), " needs ", numel, " x ", item);
  }
  std::sort(entries.begin(), entries.end(), [](const st_entry& a, const st_entry& b) {
    return std::tie(a.begin, a.end, a.order) < std::tie(b.begin, b.end, b.order);
  });
  std::uint64_t pos = 0;
  for (const auto& e : entries) {
    if (e.begin != pos)
      ::ember::detail::fail(errc::io, st_tensor_context(ctx, e.name), ": data_offsets [", e.begin,
                            ", ", e.end, "] ", e.begin < pos ? "overlap" : "leave a hole after",
                            " the data before (which ends at byte ", pos, ")");
    pos = e.end;
  }
  ::ember::detail::check(pos == data_size, errc::io, ctx, ": ", data_size - pos,
                         " bytes after the last tensor are not part of any tensor");
}

/// Parses a whole file held in memory; `ctx` starts every error message.
inline state_dict st_parse(const std::uint8_t* data, std::size_t size, const std::string& ctx) {
  ::ember::detail::check(data != nullptr || size == 0, errc::io, ctx, ": null data");
  ::ember::detail::check(size >= 8, errc::io, ctx, ": ", size,
                         " bytes is too short for the 8-byte header length");
  std::uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | data[k];
  ::ember::detail::check(n <= st_max_header_bytes, errc::io, ctx, ": header length ", n,
                         " exceeds the limit of ", st_max_header_bytes, " bytes");
  ::ember::detail::check(n <= size - 8, errc::io, ctx, ": header length ", n, " exceeds the ",
                         size - 8, " bytes after the length (truncated file?)");
  const auto header_len = static_cast<std::size_t>(n);
  st_header h = st_parse_header(
      std::string_view(reinterpret_cast<const char*>(data) + 8, header_len), ctx);
  const std::uint8_t* buffer = data + 8 + header_len;
  st_check_layout(h.entries, size - 8 - header_len, ctx);

  state_dict sd;
  for (const auto& e : h.entries) {
    const std::uint8_t* src = buffer + e.begin;
    const auto nbytes = static_cast<std::size_t>(e.end - e.begin);
    if (e.type == dtype::boolean)
      for (std::size_t i = 0; i < nbytes; ++i)
        ::ember::detail::check(src[i] <= 1, errc::io, st_tensor_context(ctx, e.name),
                               ": BOOL element ", i, " is byte ", int(src[i]), ", not 0 or 1");
    visit_dtype(e.type, [&](auto v) {
      auto t = ::ember::detail::make_tensor<decltype(v)>(e.sizes, cpu);
      if (nbytes != 0) std::memcpy(t.data(), src, nbytes);
      sd.insert(e.name, t);
    });
  }
  sd.metadata() = std::move(h.metadata);
  return sd;
}

/// A contiguous CPU tensor with t's values (t itself when it is one). A device tensor comes over
/// as the storage span its view covers (one copy_bytes through the device hook), then is made
/// contiguous on the CPU, so no kernel has to run on the device.
template <class T>
tensor<T> st_contiguous_on_cpu(const tensor<T>& t) {
  if (t.device().is_cpu()) return t.contiguous();
  if (t.numel() == 0) return ::ember::detail::make_tensor<T>(t.shape(), cpu);
  const auto [lo, hi] = ::ember::detail::extent_range(t.shape(), t.strides());
  auto host = ::ember::detail::make_tensor<T>(shape{hi - lo + 1}, cpu);
  ::ember::detail::copy_bytes(host.data(), cpu, t.data() + lo, t.device(),
                              static_cast<std::size_t>(hi - lo + 1) * sizeof(T));
  return host.as_strided(t.shape(), t.strides(), -lo).contiguous();
}

/// Closes a descriptor / unmaps a mapping on scope exit.
struct st_fd_closer {
  int fd;
  ~st_fd_closer() { ::close(fd); }
};
struct st_unmapper {
  void* p;
  std::size_t n;
  ~st_unmapper() { ::munmap(p, n); }
};

}  // namespace detail

/// Parses safetensors bytes held in memory (a whole file) into a state_dict, in file order
/// (Note [safetensors load order]). Malformed input is an ember::error (io) naming `source` and
/// the tensor; no byte outside [data, data + size) is read.
///   std::vector<std::uint8_t> bytes = ...;
///   em::state_dict sd = em::io::parse_safetensors(bytes.data(), bytes.size());
inline state_dict parse_safetensors(const std::uint8_t* data, std::size_t size,
                                    std::string_view source = "<memory>") {
  return detail::st_parse(data, size, "parse_safetensors: '" + std::string(source) + "'");
}

/// Reads a .safetensors file (any writer: ember, Hugging Face's safetensors, PyTorch tools).
/// Tensors come back on the CPU, in file order, each in its own storage; `__metadata__` becomes
/// metadata(). A missing, unreadable or malformed file is an ember::error (io) naming it.
///   em::state_dict sd = em::io::load_safetensors("net.safetensors");
inline state_dict load_safetensors(const std::string& path) {
  const std::string ctx = "load_safetensors: '" + path + "'";
  // O_NONBLOCK: opening a FIFO must not hang; it is then rejected as not a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  ::ember::detail::check(fd >= 0, errc::io, ctx, ": cannot open: ", std::strerror(errno));
  const detail::st_fd_closer closer{fd};
  struct stat st {};
  ::ember::detail::check(::fstat(fd, &st) == 0, errc::io, ctx, ": cannot stat: ",
                         std::strerror(errno));
  ::ember::detail::check(S_ISREG(st.st_mode), errc::io, ctx, ": not a regular file");
  ::ember::detail::check(static_cast<std::uint64_t>(st.st_size) <=
                             std::numeric_limits<std::size_t>::max(),
                         errc::io, ctx, ": file too large for this platform");
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size >= detail::st_mmap_threshold) {  // Note [safetensors copy, not map]
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::ember::detail::check(p != MAP_FAILED, errc::io, ctx, ": cannot map ", size, " bytes: ",
                           std::strerror(errno));
    const detail::st_unmapper unmap{p, size};
    return detail::st_parse(static_cast<const std::uint8_t*>(p), size, ctx);
  }
  std::vector<std::uint8_t> bytes(size);
  std::size_t got = 0;
  while (got < size) {
    const ::ssize_t r = ::read(fd, bytes.data() + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    ::ember::detail::check(r >= 0, errc::io, ctx, ": read failed: ", std::strerror(errno));
    ::ember::detail::check(r > 0, errc::io, ctx, ": the file shrank to ", got,
                           " bytes while being read");
    got += static_cast<std::size_t>(r);
  }
  return detail::st_parse(bytes.data(), size, ctx);
}

/// Writes `sd` as a .safetensors file through atomic_write. Tensors are written in state_dict
/// order, made contiguous and copied to the CPU when needed; metadata() becomes `__metadata__`.
/// Names or metadata that are not UTF-8, and a tensor named "__metadata__", are an ember::error
/// (value) before anything is written; a failed write (a full disk, a tensor that cannot reach
/// the CPU) is an ember::error (io) that leaves the previous file as it was.
///   em::io::save_safetensors(sd, "net.safetensors");
template <int = 0>  // Note [Deferred instantiation]
void save_safetensors(const state_dict& sd, const std::string& path) {
  const std::string ctx = "save_safetensors: '" + path + "'";
  const auto utf8 = [&](std::string_view s, const char* what) {
    ::ember::detail::check(json::is_valid_utf8(s), errc::value, ctx, ": ", what, " ",
                           json::quoted(s), " is not valid UTF-8");
  };
  std::string header = "{";
  if (!sd.metadata().empty()) {
    header += "\"__metadata__\":{";
    for (const auto& [k, v] : sd.metadata()) {
      utf8(k, "metadata key");
      utf8(v, "metadata value");
      if (header.back() != '{') header += ',';
      json::write_string(header, k);
      header += ':';
      json::write_string(header, v);
    }
    header += '}';
  }
  std::uint64_t offset = 0;
  for (const auto& [name, t] : sd) {
    utf8(name, "tensor name");
    ::ember::detail::check(name != "__metadata__", errc::value, ctx,
                           ": a tensor cannot be named \"__metadata__\"");
    const std::uint64_t nbytes = t.nbytes();
    if (header.size() > 1) header += ',';
    json::write_string(header, name);
    header += ":{\"dtype\":\"";
    header += detail::st_tag_of(t.dtype());
    header += "\",\"shape\":[";
    for (std::size_t d = 0; d < t.shape().size(); ++d)
      header += (d ? "," : "") + std::to_string(t.shape()[d]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');  // Note [safetensors layout]
  ::ember::detail::check(header.size() <= detail::st_max_header_bytes, errc::value, ctx,
                         ": the header would take ", header.size(), " bytes, over the limit of ",
                         detail::st_max_header_bytes);

  atomic_write(path, [&](file_writer& w) {
    std::uint8_t len[8];
    for (int k = 0; k < 8; ++k) len[k] = static_cast<std::uint8_t>(header.size() >> (8 * k));
    w.write(len, 8);
    w.write(header);
    for (const auto& [name, t] : sd)
      t.visit([&](const auto& typed) {
        const auto c = detail::st_contiguous_on_cpu(typed);
        w.write(c.data(), c.nbytes());
      });
    ::ember::detail::check(w.written() == 8 + header.size() + offset, errc::io, ctx,
                           ": the tensors changed size while being saved");
  });
}

}  // namespace ember::io
