// Decompression without zlib: a DEFLATE decoder (RFC 1951), gzip members (RFC 1952, CRC-32 and
// ISIZE checked, several members concatenated) and zlib streams (RFC 1950, Adler-32 checked).
// Input is treated as hostile: every bit read is bounds-checked and the output is capped.
#pragma once

#include <ember/core/error.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace ember::io {

/// Limits and naming for inflate / gunzip / zlib_decompress.
struct inflate_options {
  /// Largest output accepted; more is an ember::error (io), so a small "zip bomb" cannot
  /// exhaust memory. The default is 4 GiB.
  std::size_t max_output = std::size_t{1} << 32;
  /// Where the bytes came from (a file name), quoted in error messages.
  std::string_view source = {};
};

/// CRC-32 (ISO-HDLC, as gzip and zlib's crc32()) of `data`, continuing from `crc`:
///   em::io::crc32(bytes) == 0xCBF43926 for the ASCII bytes "123456789".
inline std::uint32_t crc32(std::span<const std::uint8_t> data, std::uint32_t crc = 0) noexcept {
  static constexpr auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::uint8_t b : data) crc = table[(crc ^ b) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

/// Adler-32 (RFC 1950) of `data`, continuing from `adler` (1 for a fresh checksum).
inline std::uint32_t adler32(std::span<const std::uint8_t> data, std::uint32_t adler = 1) noexcept {
  std::uint32_t a = adler & 0xffffu, b = adler >> 16;
  std::size_t i = 0;
  while (i < data.size()) {
    // 5552 is the largest n for which 255 n (n+1) / 2 + (n+1)(65520) fits in 32 bits (zlib's NMAX)
    const std::size_t end = std::min(data.size(), i + 5552);
    for (; i < end; ++i) {
      a += data[i];
      b += a;
    }
    a %= 65521u;
    b %= 65521u;
  }
  return (b << 16) | a;
}

/// True when `data` starts with the gzip magic bytes 1f 8b.
inline bool is_gzip(std::span<const std::uint8_t> data) noexcept {
  return data.size() >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

namespace detail {

/// Note [Inflate]: the decoder keeps up to 64 input bits in a buffer. Every read first checks
/// that enough real input bits remain (never zero-fills past the end). Huffman symbols decode
/// through a 9-bit lookup table when the code is that short, else canonically bit by bit
/// (puff.c's method), so a table never needs more than 512 entries. The whole output stays in
/// memory and serves as the window; distances are checked against what was written.
class inflater {
 public:
  inflater(std::span<const std::uint8_t> in, std::size_t pos, const inflate_options& opts,
           const char* op)
      : in_(in), pos_(pos), opts_(opts), op_(op) {}

  /// Decodes one deflate stream, appending to out; returns the byte offset just past it.
  std::size_t run(std::vector<std::uint8_t>& out) {
    bool last = false;
    while (!last) {
      last = bits(1) != 0;
      switch (bits(2)) {
        case 0: stored(out); break;
        case 1: fixed_block(out); break;
        case 2: dynamic_block(out); break;
        default: fail("invalid block type 3");
      }
    }
    align();
    return pos_;
  }

 private:
  static constexpr int max_bits = 15;
  static constexpr int fast_bits = 9;

  struct huffman {
    std::array<std::uint16_t, max_bits + 1> count{};
    std::array<std::uint16_t, 288> symbol{};
    /// (length << 9) | symbol for codes of <= fast_bits bits, 0 where a longer code starts.
    std::array<std::uint16_t, 1u << fast_bits> fast{};
  };

  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    ember::detail::fail(errc::io, op_, ": ", opts_.source.empty() ? "" : "'", opts_.source,
                        opts_.source.empty() ? "" : "': ", parts..., " (at input byte ",
                        pos_ - bitcnt_ / 8, ")");
  }

  void refill() noexcept {
    while (bitcnt_ <= 56 && pos_ < in_.size()) {
      bitbuf_ |= std::uint64_t{in_[pos_++]} << bitcnt_;
      bitcnt_ += 8;
    }
  }
  std::uint32_t bits(int n) {
    if (bitcnt_ < n) refill();
    if (bitcnt_ < n) fail("truncated deflate stream");
    const auto v = static_cast<std::uint32_t>(bitbuf_ & ((std::uint64_t{1} << n) - 1));
    bitbuf_ >>= n;
    bitcnt_ -= n;
    return v;
  }
  /// Drops the bits up to the next byte boundary and returns the whole bytes still buffered
  /// to the input, so that byte-wise reads continue at the right place.
  void align() noexcept {
    bitbuf_ = 0;
    pos_ -= static_cast<std::size_t>(bitcnt_ / 8);
    bitcnt_ = 0;
  }

  void reserve_output(const std::vector<std::uint8_t>& out, std::size_t n) const {
    if (n > opts_.max_output - out.size())
      fail("output exceeds the limit of ", opts_.max_output, " bytes (inflate_options::max_output)");
  }

  void stored(std::vector<std::uint8_t>& out) {
    align();
    if (in_.size() - pos_ < 4) fail("truncated stored block header");
    const std::size_t len = in_[pos_] | (in_[pos_ + 1] << 8);
    const std::size_t nlen = in_[pos_ + 2] | (in_[pos_ + 3] << 8);
    if (len != (~nlen & 0xffffu)) fail("stored block length ", len, " does not match its complement");
    pos_ += 4;
    if (in_.size() - pos_ < len) fail("truncated stored block (", len, " bytes announced, ",
                                      in_.size() - pos_, " left)");
    reserve_output(out, len);
    out.insert(out.end(), in_.begin() + static_cast<std::ptrdiff_t>(pos_),
               in_.begin() + static_cast<std::ptrdiff_t>(pos_ + len));
    pos_ += len;
  }

  /// Builds a canonical code from code lengths. Returns 0 for a complete code, > 0 for an
  /// incomplete one, < 0 for an over-subscribed one (which is always invalid).
  static int build(huffman& h, const std::uint8_t* lengths, int n) {
    h.count.fill(0);
    h.fast.fill(0);
    for (int s = 0; s < n; ++s) ++h.count[lengths[s]];
    if (h.count[0] == n) return 1;  // no codes: incomplete (valid only for unused distances)
    int left = 1;
    for (int len = 1; len <= max_bits; ++len) {
      left = (left << 1) - h.count[len];
      if (left < 0) return -1;
    }
    std::array<std::uint16_t, max_bits + 2> offs{};
    for (int len = 1; len < max_bits; ++len) offs[len + 1] = offs[len] + h.count[len];
    for (int s = 0; s < n; ++s)
      if (lengths[s] != 0) h.symbol[offs[lengths[s]]++] = static_cast<std::uint16_t>(s);
    // fast table: assign canonical codes in (length, symbol) order and store them bit-reversed
    std::uint32_t code = 0;
    std::size_t k = 0;
    for (int len = 1; len <= max_bits; ++len) {
      for (int j = 0; j < h.count[len]; ++j, ++k, ++code) {
        if (len > fast_bits) continue;
        std::uint32_t rev = 0;
        for (int b = 0; b < len; ++b) rev |= ((code >> b) & 1u) << (len - 1 - b);
        const auto entry = static_cast<std::uint16_t>((len << fast_bits) | h.symbol[k]);
        for (std::uint32_t r = rev; r < (1u << fast_bits); r += 1u << len) h.fast[r] = entry;
      }
      code <<= 1;
    }
    return left;
  }

  int decode(const huffman& h) {
    if (bitcnt_ < max_bits) refill();
    const std::uint16_t e = h.fast[bitbuf_ & ((1u << fast_bits) - 1)];
    if (e != 0) {
      const int len = e >> fast_bits;
      if (len > bitcnt_) fail("truncated deflate stream");
      bitbuf_ >>= len;
      bitcnt_ -= len;
      return e & ((1 << fast_bits) - 1);
    }
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= max_bits; ++len) {
      code |= static_cast<int>(bits(1));
      const int count = h.count[len];
      if (code - count < first) return h.symbol[index + (code - first)];
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    fail("invalid Huffman code");
  }

  void codes(std::vector<std::uint8_t>& out, const huffman& lit, const huffman& dist) {
    static constexpr std::uint16_t len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,
                                                   15, 17, 19, 23, 27, 31, 35, 43, 51,  59,
                                                   67, 83, 99, 115, 131, 163, 195, 227, 258};
    static constexpr std::uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                                   2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static constexpr std::uint16_t dist_base[30] = {
        1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
        193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    static constexpr std::uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2,  2,  3,  3,  4,  4,  5,  5,  6,
                                                    6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    for (;;) {
      const int sym = decode(lit);
      if (sym < 256) {
        reserve_output(out, 1);
        out.push_back(static_cast<std::uint8_t>(sym));
        continue;
      }
      if (sym == 256) return;
      if (sym > 285) fail("invalid length code ", sym);
      const std::size_t len = len_base[sym - 257] + bits(len_extra[sym - 257]);
      const int dsym = decode(dist);
      if (dsym > 29) fail("invalid distance code ", dsym);
      const std::size_t d = dist_base[dsym] + bits(dist_extra[dsym]);
      if (d > out.size())
        fail("distance ", d, " reaches before the start of the output (", out.size(),
             " bytes written)");
      reserve_output(out, len);
      const std::size_t from = out.size() - d;
      out.resize(out.size() + len);
      std::uint8_t* p = out.data() + out.size() - len;
      const std::uint8_t* q = out.data() + from;
      for (std::size_t i = 0; i < len; ++i) p[i] = q[i];  // byte by byte: ranges may overlap
    }
  }

  void fixed_block(std::vector<std::uint8_t>& out) {
    static const auto tables = [] {
      std::array<huffman, 2> t;
      std::array<std::uint8_t, 288> lengths{};
      for (int s = 0; s < 288; ++s) lengths[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
      build(t[0], lengths.data(), 288);
      lengths.fill(5);
      build(t[1], lengths.data(), 30);
      return t;
    }();
    codes(out, tables[0], tables[1]);
  }

  void dynamic_block(std::vector<std::uint8_t>& out) {
    static constexpr std::uint8_t order[19] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                               11, 4,  12, 3, 13, 2, 14, 1, 15};
    const int nlen = static_cast<int>(bits(5)) + 257;
    const int ndist = static_cast<int>(bits(5)) + 1;
    const int ncode = static_cast<int>(bits(4)) + 4;
    if (nlen > 286 || ndist > 30)
      fail("dynamic block declares ", nlen, " literal/length and ", ndist, " distance codes");
    std::array<std::uint8_t, 320> lengths{};
    for (int i = 0; i < ncode; ++i) lengths[order[i]] = static_cast<std::uint8_t>(bits(3));
    huffman lencode, distcode;
    if (build(lencode, lengths.data(), 19) != 0) fail("invalid code-length code");
    lengths.fill(0);
    for (int i = 0; i < nlen + ndist;) {
      const int sym = decode(lencode);
      if (sym < 16) {
        lengths[i++] = static_cast<std::uint8_t>(sym);
        continue;
      }
      std::uint8_t value = 0;
      int repeat = 0;
      if (sym == 16) {
        if (i == 0) fail("repeat code with no previous length");
        value = lengths[i - 1];
        repeat = 3 + static_cast<int>(bits(2));
      } else if (sym == 17) {
        repeat = 3 + static_cast<int>(bits(3));
      } else {
        repeat = 11 + static_cast<int>(bits(7));
      }
      if (i + repeat > nlen + ndist) fail("code lengths overrun the declared code count");
      while (repeat--) lengths[i++] = value;
    }
    if (lengths[256] == 0) fail("dynamic block has no end-of-block code");
    // an incomplete code is valid only when all its codes are one bit long (a single code, or
    // none), as in zlib and puff.c
    int err = build(lencode, lengths.data(), nlen);
    if (err < 0 || (err > 0 && nlen != lencode.count[0] + lencode.count[1]))
      fail("invalid literal/length code");
    err = build(distcode, lengths.data() + nlen, ndist);
    if (err < 0 || (err > 0 && ndist != distcode.count[0] + distcode.count[1]))
      fail("invalid distance code");
    codes(out, lencode, distcode);
  }

  std::span<const std::uint8_t> in_;
  std::size_t pos_;
  const inflate_options& opts_;
  const char* op_;
  std::uint64_t bitbuf_ = 0;
  int bitcnt_ = 0;
};

inline std::uint32_t load_le32(std::span<const std::uint8_t> in, std::size_t p) noexcept {
  return std::uint32_t{in[p]} | std::uint32_t{in[p + 1]} << 8 | std::uint32_t{in[p + 2]} << 16 |
         std::uint32_t{in[p + 3]} << 24;
}

template <class... Parts>
[[noreturn]] void gzip_fail(const inflate_options& opts, const Parts&... parts) {
  ember::detail::fail(errc::io, "gunzip: ", opts.source.empty() ? "" : "'", opts.source,
                      opts.source.empty() ? "" : "': ", parts...);
}

/// Parses one gzip member header at `p`; returns the offset of its deflate data.
inline std::size_t gzip_header(std::span<const std::uint8_t> in, std::size_t p,
                               const inflate_options& opts) {
  const std::size_t start = p;
  auto need = [&](std::size_t n) {
    if (in.size() - p < n) gzip_fail(opts, "truncated gzip header at byte ", p);
  };
  need(10);
  if (!is_gzip(in.subspan(p))) gzip_fail(opts, "not a gzip member at byte ", p, " (bad magic)");
  if (in[p + 2] != 8) gzip_fail(opts, "unsupported compression method ", int{in[p + 2]});
  const std::uint8_t flags = in[p + 3];
  if (flags & 0xe0u) gzip_fail(opts, "reserved header flags set (", int{flags}, ")");
  p += 10;
  if (flags & 4u) {  // FEXTRA
    need(2);
    const std::size_t xlen = in[p] | (in[p + 1] << 8);
    p += 2;
    need(xlen);
    p += xlen;
  }
  for (const std::uint8_t bit : {std::uint8_t{8}, std::uint8_t{16}}) {  // FNAME, FCOMMENT
    if (!(flags & bit)) continue;
    while (true) {
      need(1);
      if (in[p++] == 0) break;
    }
  }
  if (flags & 2u) {  // FHCRC: low 16 bits of the header's CRC-32
    need(2);
    const std::uint32_t want = in[p] | (in[p + 1] << 8);
    if ((crc32(in.subspan(start, p - start)) & 0xffffu) != want)
      gzip_fail(opts, "header CRC mismatch in the member at byte ", start);
    p += 2;
  }
  return p;
}

}  // namespace detail

/// Decodes a raw DEFLATE stream (RFC 1951) that fills `data` (only the padding bits of its last
/// byte may follow the final block). Corrupt or truncated input is an ember::error (io).
///   std::vector<std::uint8_t> raw = em::io::inflate(bytes, {.max_output = 1 << 20});
inline std::vector<std::uint8_t> inflate(std::span<const std::uint8_t> data,
                                         const inflate_options& opts = {}) {
  std::vector<std::uint8_t> out;
  const std::size_t end = detail::inflater(data, 0, opts, "inflate").run(out);
  if (end != data.size())
    ember::detail::fail(errc::io, "inflate: ", data.size() - end,
                        " bytes follow the end of the deflate stream");
  return out;
}

/// Decompresses gzip data (RFC 1952): every member in turn, each checked against its CRC-32
/// and length; zero padding after the last member is ignored, other trailing bytes are an
/// error, as in Python's gzip module.
///   auto text = em::io::gunzip(file_bytes, {.source = "digits.csv.gz"});
inline std::vector<std::uint8_t> gunzip(std::span<const std::uint8_t> data,
                                        const inflate_options& opts = {}) {
  std::vector<std::uint8_t> out;
  std::size_t p = 0;
  do {
    const std::size_t first = out.size();
    p = detail::gzip_header(data, p, opts);
    p = detail::inflater(data, p, opts, "gunzip").run(out);
    if (data.size() - p < 8) detail::gzip_fail(opts, "truncated gzip trailer");
    const std::span<const std::uint8_t> member(out.data() + first, out.size() - first);
    if (crc32(member) != detail::load_le32(data, p))
      detail::gzip_fail(opts, "CRC-32 mismatch (corrupt data)");
    if (static_cast<std::uint32_t>(member.size()) != detail::load_le32(data, p + 4))
      detail::gzip_fail(opts, "length mismatch: ", member.size(), " bytes decoded, the trailer says ",
                        detail::load_le32(data, p + 4), " (mod 2^32)");
    p += 8;
    while (p < data.size() && data[p] == 0) ++p;
  } while (p < data.size());
  return out;
}

/// Decompresses a zlib stream (RFC 1950: 2-byte header, deflate data, Adler-32), as written by
/// Python's zlib.compress. Preset dictionaries are not supported (an ember::error).
///   auto raw = em::io::zlib_decompress(bytes);
inline std::vector<std::uint8_t> zlib_decompress(std::span<const std::uint8_t> data,
                                                 const inflate_options& opts = {}) {
  auto bad = [&](const char* what) {
    ember::detail::fail(errc::io, "zlib_decompress: ", opts.source.empty() ? "" : "'", opts.source,
                        opts.source.empty() ? "" : "': ", what);
  };
  if (data.size() < 6) bad("truncated zlib stream");
  if ((data[0] & 0x0fu) != 8 || (data[0] >> 4) > 7 || ((data[0] << 8) | data[1]) % 31 != 0)
    bad("invalid zlib header");
  if (data[1] & 0x20u) bad("preset dictionaries are not supported");
  std::vector<std::uint8_t> out;
  const std::size_t p = detail::inflater(data, 2, opts, "zlib_decompress").run(out);
  if (data.size() - p != 4) bad(data.size() - p < 4 ? "truncated Adler-32 trailer"
                                                    : "trailing bytes after the zlib stream");
  const std::uint32_t want = std::uint32_t{data[p]} << 24 | std::uint32_t{data[p + 1]} << 16 |
                             std::uint32_t{data[p + 2]} << 8 | data[p + 3];
  if (adler32(out) != want) bad("Adler-32 mismatch (corrupt data)");
  return out;
}

}  // namespace ember::io
