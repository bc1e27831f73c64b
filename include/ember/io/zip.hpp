// zip_reader: a read-only ZIP archive over a buffer in memory (ZIP64 aware; stored entries, as
// torch.save writes). Every offset and length is checked against the buffer, names are unique,
// and each entry's CRC-32 is verified when it is read.
#pragma once

#include <ember/core/error.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ember::io {

namespace detail {

/// Eight 256-entry tables for slicing-by-8 CRC-32 (reflected polynomial 0xEDB88320).
inline constexpr auto zip_crc_tables = [] {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (std::size_t i = 0; i < 256; ++i)
    for (std::size_t k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xffu];
  return t;
}();

/// CRC-32 as zip and zlib define it, eight bytes per step (checkpoints are gigabytes).
inline std::uint32_t zip_crc32(const std::uint8_t* p, std::size_t n,
                               std::uint32_t crc = 0) noexcept {
  const auto& t = zip_crc_tables;
  std::uint32_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    const std::uint32_t a = c ^ (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 |
                                 std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24);
    const std::uint32_t b = std::uint32_t(p[4]) | std::uint32_t(p[5]) << 8 |
                            std::uint32_t(p[6]) << 16 | std::uint32_t(p[7]) << 24;
    c = t[7][a & 0xffu] ^ t[6][(a >> 8) & 0xffu] ^ t[5][(a >> 16) & 0xffu] ^ t[4][a >> 24] ^
        t[3][b & 0xffu] ^ t[2][(b >> 8) & 0xffu] ^ t[1][(b >> 16) & 0xffu] ^ t[0][b >> 24];
  }
  for (; n > 0; --n, ++p) c = t[0][(c ^ *p) & 0xffu] ^ (c >> 8);
  return ~c;
}

inline std::uint64_t zip_le(const std::uint8_t* p, int bytes) noexcept {
  std::uint64_t v = 0;
  for (int i = bytes; i-- > 0;) v = (v << 8) | p[i];
  return v;
}

inline constexpr std::uint32_t zip_local_sig = 0x04034b50u;
inline constexpr std::uint32_t zip_central_sig = 0x02014b50u;
inline constexpr std::uint32_t zip_eocd_sig = 0x06054b50u;
inline constexpr std::uint32_t zip64_eocd_sig = 0x06064b50u;
inline constexpr std::uint32_t zip64_locator_sig = 0x07064b50u;

inline const char* zip_method_name(std::uint16_t m) noexcept {
  switch (m) {
    case 8: return "deflate";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    case 95: return "xz";
    default: return "unknown";
  }
}

}  // namespace detail

/// One central-directory entry of a zip archive (sizes already widened from ZIP64 fields).
struct zip_entry {
  std::string name;
  std::uint16_t method = 0;  ///< 0 stored, 8 deflate, ...
  std::uint16_t flags = 0;
  std::uint32_t crc32 = 0;
  std::uint64_t compressed_size = 0;
  std::uint64_t size = 0;  ///< uncompressed
  std::uint64_t local_offset = 0;
};

/// Reads a zip archive held in memory; entries come back as views into the buffer, which must
/// outlive the reader. Anything inconsistent is an ember::error (io) naming `source`:
///   em::io::zip_reader zip(bytes.data(), bytes.size(), "net.pt");
///   std::span<const std::uint8_t> pkl = zip.read("archive/data.pkl");  // CRC-32 checked
class zip_reader {
 public:
  zip_reader(const std::uint8_t* data, std::size_t size, std::string source = "zip")
      : data_(data), size_(size), source_(std::move(source)) {
    parse_directory();
  }

  const std::vector<zip_entry>& entries() const noexcept { return entries_; }
  std::string_view source() const noexcept { return source_; }

  /// The entry named `name`, or nullptr.
  const zip_entry* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &entries_[it->second];
  }

  /// The bytes of `name`; an error when the archive has no such entry.
  std::span<const std::uint8_t> read(std::string_view name) const {
    const zip_entry* e = find(name);
    if (e == nullptr) fail("no entry named '", name, "'");
    return read(*e);
  }

  /// The bytes of `e` after checking its local header (signature, same name, inside the
  /// buffer), that it is stored uncompressed, and its CRC-32.
  std::span<const std::uint8_t> read(const zip_entry& e) const {
    const std::uint64_t off = e.local_offset;
    if (!in_bounds(off, 30) || detail::zip_le(data_ + off, 4) != detail::zip_local_sig)
      fail("entry '", e.name, "': no local header at offset ", off);
    const std::uint8_t* h = data_ + off;
    const std::uint64_t name_len = detail::zip_le(h + 26, 2), extra_len = detail::zip_le(h + 28, 2);
    if (!in_bounds(off + 30, name_len + extra_len))
      fail("entry '", e.name, "': local header runs past the end of the archive");
    const std::string_view local_name(reinterpret_cast<const char*>(h + 30), name_len);
    if (local_name != e.name)
      fail("entry '", e.name, "': its local header names '", local_name, "'");
    if (e.flags & 1u) fail("entry '", e.name, "' is encrypted");
    if (e.method != 0 || detail::zip_le(h + 8, 2) != 0)
      fail("entry '", e.name, "' is compressed (method ", e.method, ", ",
           detail::zip_method_name(e.method),
           "); only stored entries (method 0, as torch.save writes) are supported");
    if (e.compressed_size != e.size)
      fail("entry '", e.name, "' is stored but its sizes differ (", e.compressed_size, " vs ",
           e.size, ")");
    const std::uint64_t start = off + 30 + name_len + extra_len;
    if (!in_bounds(start, e.size))
      fail("entry '", e.name, "': ", e.size, " bytes at offset ", start,
           " run past the end of the archive (", size_, " bytes)");
    const std::uint8_t* p = data_ + start;
    const std::uint32_t crc = detail::zip_crc32(p, static_cast<std::size_t>(e.size));
    if (crc != e.crc32)
      fail("entry '", e.name, "': CRC-32 mismatch (the directory says ", std::hex, e.crc32,
           ", the data has ", crc, std::dec, "): corrupt archive");
    return {p, static_cast<std::size_t>(e.size)};
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    ember::detail::fail(errc::io, source_, ": zip: ", parts...);
  }
  bool in_bounds(std::uint64_t off, std::uint64_t len) const noexcept {
    return off <= size_ && len <= size_ - off;
  }

  /// The end-of-central-directory record: the last signature whose comment ends the buffer.
  std::uint64_t find_eocd() const {
    if (size_ >= 22) {
      const std::uint64_t lowest = size_ - 22 > 0xffff ? size_ - 22 - 0xffff : 0;
      for (std::uint64_t pos = size_ - 22 + 1; pos-- > lowest;) {
        const std::uint8_t* p = data_ + pos;
        if (detail::zip_le(p, 4) == detail::zip_eocd_sig &&
            pos + 22 + detail::zip_le(p + 20, 2) == size_)
          return pos;
      }
    }
    fail("no end-of-central-directory record in ", size_,
         " bytes (not a zip archive, or truncated)");
  }

  void parse_directory() {
    const std::uint64_t eocd = find_eocd();
    const std::uint8_t* p = data_ + eocd;
    std::uint64_t disk = detail::zip_le(p + 4, 2), cd_disk = detail::zip_le(p + 6, 2);
    std::uint64_t count_disk = detail::zip_le(p + 8, 2), count = detail::zip_le(p + 10, 2);
    std::uint64_t cd_size = detail::zip_le(p + 12, 4), cd_offset = detail::zip_le(p + 16, 4);
    std::uint64_t cd_end = eocd;  // the directory must end before the record describing it
    if (count == 0xffff || count_disk == 0xffff || cd_size == 0xffffffffu ||
        cd_offset == 0xffffffffu) {
      // ZIP64: a locator just before the record points at the 64-bit record.
      if (eocd < 20 || detail::zip_le(data_ + eocd - 20, 4) != detail::zip64_locator_sig)
        fail("the end record needs ZIP64 values but there is no ZIP64 locator");
      const std::uint64_t z = detail::zip_le(data_ + eocd - 20 + 8, 8);
      if (z > eocd - 20 || eocd - 20 - z < 56 ||
          detail::zip_le(data_ + z, 4) != detail::zip64_eocd_sig)
        fail("bad ZIP64 end-of-central-directory offset ", z);
      const std::uint8_t* q = data_ + z;
      disk = detail::zip_le(q + 16, 4);
      cd_disk = detail::zip_le(q + 20, 4);
      count_disk = detail::zip_le(q + 24, 8);
      count = detail::zip_le(q + 32, 8);
      cd_size = detail::zip_le(q + 40, 8);
      cd_offset = detail::zip_le(q + 48, 8);
      cd_end = z;
    }
    if (disk != 0 || cd_disk != 0 || count_disk != count)
      fail("multi-disk archives are not supported");
    if (cd_offset > cd_end || cd_size > cd_end - cd_offset)
      fail("central directory (", cd_size, " bytes at offset ", cd_offset,
           ") lies outside the archive before its end record at ", cd_end);
    if (count > cd_size / 46)
      fail(count, " entries cannot fit in a central directory of ", cd_size, " bytes");
    entries_.reserve(static_cast<std::size_t>(count));
    std::uint64_t pos = cd_offset;
    const std::uint64_t end = cd_offset + cd_size;
    for (std::uint64_t i = 0; i < count; ++i) pos = parse_entry(pos, end, i);
  }

  /// Parses the central-directory entry at `pos` (inside [pos, end)); returns the next position.
  std::uint64_t parse_entry(std::uint64_t pos, std::uint64_t end, std::uint64_t i) {
    if (end - pos < 46 || detail::zip_le(data_ + pos, 4) != detail::zip_central_sig)
      fail("central directory entry ", i, " at offset ", pos, " is missing or truncated");
    const std::uint8_t* p = data_ + pos;
    zip_entry e;
    e.flags = static_cast<std::uint16_t>(detail::zip_le(p + 8, 2));
    e.method = static_cast<std::uint16_t>(detail::zip_le(p + 10, 2));
    e.crc32 = static_cast<std::uint32_t>(detail::zip_le(p + 16, 4));
    e.compressed_size = detail::zip_le(p + 20, 4);
    e.size = detail::zip_le(p + 24, 4);
    const std::uint64_t name_len = detail::zip_le(p + 28, 2), extra_len = detail::zip_le(p + 30, 2);
    const std::uint64_t comment_len = detail::zip_le(p + 32, 2);
    std::uint64_t disk = detail::zip_le(p + 34, 2);
    e.local_offset = detail::zip_le(p + 42, 4);
    if (end - pos - 46 < name_len + extra_len + comment_len)
      fail("central directory entry ", i, " runs past the directory's end");
    e.name.assign(reinterpret_cast<const char*>(p + 46), name_len);
    parse_zip64_extra(e, disk, p + 46 + name_len, extra_len);
    if (disk != 0) fail("entry '", e.name, "' starts on disk ", disk, " (multi-disk archive)");
    if (!index_.emplace(e.name, entries_.size()).second)
      fail("the name '", e.name, "' appears twice in the central directory");
    entries_.push_back(std::move(e));
    return pos + 46 + name_len + extra_len + comment_len;
  }

  /// Replaces the 32-bit fields set to 0xffff... by the values of the ZIP64 extra field (id 1),
  /// which holds, in this order, only those that overflowed.
  void parse_zip64_extra(zip_entry& e, std::uint64_t& disk, const std::uint8_t* x,
                         std::uint64_t len) const {
    const bool need_size = e.size == 0xffffffffu, need_csize = e.compressed_size == 0xffffffffu;
    const bool need_offset = e.local_offset == 0xffffffffu, need_disk = disk == 0xffff;
    if (!need_size && !need_csize && !need_offset && !need_disk) return;
    for (std::uint64_t k = 0; len - k >= 4;) {
      const std::uint64_t id = detail::zip_le(x + k, 2), n = detail::zip_le(x + k + 2, 2);
      if (n > len - k - 4) fail("entry '", e.name, "': extra field runs past its end");
      if (id == 1) {
        const std::uint8_t* f = x + k + 4;
        std::uint64_t used = 0;
        auto take = [&](std::uint64_t& v, int bytes) {
          if (n - used < std::uint64_t(bytes))
            fail("entry '", e.name, "': short ZIP64 extra field");
          v = detail::zip_le(f + used, bytes);
          used += static_cast<std::uint64_t>(bytes);
        };
        if (need_size) take(e.size, 8);
        if (need_csize) take(e.compressed_size, 8);
        if (need_offset) take(e.local_offset, 8);
        if (need_disk) take(disk, 4);
        return;
      }
      k += 4 + n;
    }
    fail("entry '", e.name, "' needs ZIP64 sizes but has no ZIP64 extra field");
  }

  const std::uint8_t* data_;
  std::size_t size_;
  std::string source_;
  std::vector<zip_entry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace ember::io
