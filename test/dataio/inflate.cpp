// Tests of include/ember/io/inflate.hpp: streams compressed by Python's zlib and gzip modules
// (test/tools/gen_inflate_cases.py: stored, fixed and dynamic Huffman blocks, several levels
// and strategies, gzip headers with names, several members), and corrupt or truncated input.
#include <ember/io/inflate.hpp>

#include <catch2/catch.hpp>
#include <support/errors.hpp>

#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace em = ember;
using ember_test::error_of;
using ember_test::message_of;

namespace {

enum class container { raw, gzip, zlib };
struct inflate_case {
  const char* name;
  container kind_of_stream;
  int payload_kind;
  std::size_t n;
  const std::vector<std::uint8_t>* bytes;
};

#include "inflate_cases.inc"

/// The generator's payload(kind, n), byte for byte.
std::vector<std::uint8_t> payload(int kind, std::size_t n) {
  std::vector<std::uint8_t> out;
  if (kind == 0) {
    for (int i = 0; out.size() < n; ++i) {
      const std::string line =
          "ember inflate test line " + std::to_string(i) + ": the quick brown fox\n";
      out.insert(out.end(), line.begin(), line.end());
    }
    out.resize(n);
    return out;
  }
  std::uint32_t x = 12345;
  const std::size_t m = kind == 3 ? 200 : n;
  for (std::size_t i = 0; i < m; ++i) {
    x = (x * 1103515245u + 12345u) & 0x7fffffffu;
    out.push_back(kind != 2 ? static_cast<std::uint8_t>((x >> 16) & 0xffu)
                            : static_cast<std::uint8_t>('a' + ((x >> 16) & 3u)));
  }
  if (kind == 3) {
    const std::vector<std::uint8_t> noise = out;
    out.resize(n - 200, 0);
    out.insert(out.end(), noise.begin(), noise.end());
  }
  return out;
}

std::vector<std::uint8_t> decode(const inflate_case& c, const std::vector<std::uint8_t>& bytes,
                                 em::io::inflate_options opts = {}) {
  switch (c.kind_of_stream) {
    case container::raw: return em::io::inflate(bytes, opts);
    case container::gzip: return em::io::gunzip(bytes, opts);
    case container::zlib: return em::io::zlib_decompress(bytes, opts);
  }
  return {};
}

std::vector<std::uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

}  // namespace

TEST_CASE("checksums match their standard check values", "[inflate]") {
  // the "check" values of the CRC catalogue (CRC-32/ISO-HDLC) and of RFC 1950's Adler-32
  CHECK(em::io::crc32(bytes_of("123456789")) == 0xCBF43926u);
  CHECK(em::io::crc32(bytes_of("")) == 0u);
  CHECK(em::io::adler32(bytes_of("Wikipedia")) == 0x11E60398u);
  // continuing a checksum equals computing it in one go
  const auto all = bytes_of("123456789");
  const std::span<const std::uint8_t> s(all);
  CHECK(em::io::crc32(s.subspan(4), em::io::crc32(s.first(4))) == 0xCBF43926u);
  const auto big = payload(1, 20000);  // crosses Adler-32's 5552-byte reduction blocks
  CHECK(em::io::adler32(std::span(big).subspan(7000), em::io::adler32(std::span(big).first(7000))) ==
        em::io::adler32(big));
}

TEST_CASE("streams from Python's zlib and gzip decode exactly", "[inflate]") {
  REQUIRE(all_cases.size() == 33);
  for (const auto& c : all_cases) {
    INFO(c.name);
    const auto out = decode(c, *c.bytes);
    CHECK(out == payload(c.payload_kind, c.n));
  }
  CHECK(em::io::is_gzip(gzip_k0_l6));
  CHECK_FALSE(em::io::is_gzip(zlib_k0_l9));
}

TEST_CASE("block types: stored streams are the bytes plus framing", "[inflate]") {
  // level 0 stores: 5 framing bytes per block (header byte, LEN, NLEN)
  CHECK(raw_k0_l0.size() == 2000 + 5);
  // a hand-made stored block followed by an empty fixed block
  const std::vector<std::uint8_t> two = {0x00, 0x03, 0x00, 0xfc, 0xff, 'a', 'b', 'c', 0x03, 0x00};
  CHECK(em::io::inflate(two) == bytes_of("abc"));
}

TEST_CASE("every truncation of a stream is an io error", "[inflate]") {
  for (const auto* c : {&all_cases[0], &all_cases[2], &all_cases[4], &all_cases[5], &all_cases[6]}) {
    INFO(c->name);
    const auto& full = *c->bytes;
    for (std::size_t n = 0; n < full.size(); ++n) {
      const std::vector<std::uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
      CHECK(error_of([&] { decode(*c, cut); }) == em::errc::io);
    }
  }
}

TEST_CASE("gzip: any corrupted byte outside the unchecked header fields is detected", "[inflate]") {
  // bytes 4..9 are MTIME, XFL and OS, which no decoder checks; everything else is covered by
  // the magic, method and flag checks, the deflate syntax, the CRC-32 and the length
  const auto& good = gzip_k0_l6;
  for (std::size_t i = 0; i < good.size(); ++i) {
    if (i >= 4 && i < 10) continue;
    auto bad = good;
    bad[i] ^= 0xffu;
    INFO("byte " << i);
    CHECK(error_of([&] { em::io::gunzip(bad); }) == em::errc::io);
  }
  // a CRC mismatch names the cause, and the source when given
  auto bad = good;
  bad[bad.size() - 8] ^= 1u;
  CHECK_THAT(message_of([&] { em::io::gunzip(bad, {.source = "x.gz"}); }),
             Catch::Contains("'x.gz'") && Catch::Contains("CRC-32 mismatch"));
  // trailing garbage after a member (not zero padding) is an error
  auto trailing = good;
  trailing.push_back('x');
  CHECK(error_of([&] { em::io::gunzip(trailing); }) == em::errc::io);
}

TEST_CASE("invalid deflate syntax is an io error naming the problem", "[inflate]") {
  CHECK_THAT(message_of([] { em::io::inflate(std::vector<std::uint8_t>{0x07}); }),
             Catch::Contains("[ember.io]") && Catch::Contains("invalid block type 3"));
  // stored block whose NLEN is not the complement of LEN
  CHECK_THAT(message_of([] { em::io::inflate(std::vector<std::uint8_t>{0x01, 5, 0, 0, 0}); }),
             Catch::Contains("complement"));
  CHECK_THAT(message_of([] { em::io::inflate(bad_far_distance); }),
             Catch::Contains("distance 1 reaches before the start"));
  CHECK_THAT(message_of([] { em::io::inflate(bad_oversubscribed); }),
             Catch::Contains("invalid code-length code"));
  // raw streams must end where the data ends
  auto longer = raw_k0_l6;
  longer.push_back(0);
  CHECK_THAT(message_of([&] { em::io::inflate(longer); }), Catch::Contains("1 bytes follow"));
  // zlib framing
  auto z = zlib_k0_l9;
  z[1] ^= 1u;  // header checksum (CMF*256 + FLG) % 31 != 0
  CHECK(error_of([&] { em::io::zlib_decompress(z); }) == em::errc::io);
  z = zlib_k0_l9;
  z.back() ^= 1u;
  CHECK_THAT(message_of([&] { em::io::zlib_decompress(z); }), Catch::Contains("Adler-32 mismatch"));
  CHECK(error_of([] { em::io::gunzip(std::vector<std::uint8_t>{}); }) == em::errc::io);
}

TEST_CASE("the output limit stops a small stream that expands hugely", "[inflate]") {
  CHECK(zeros_1mib.size() < 1100);
  CHECK(em::io::zlib_decompress(zeros_1mib).size() == (1u << 20));
  CHECK_THAT(message_of([] { em::io::zlib_decompress(zeros_1mib, {.max_output = 100000}); }),
             Catch::Contains("output exceeds the limit of 100000 bytes"));
  CHECK(em::io::zlib_decompress(zeros_1mib, {.max_output = 1u << 20}).size() == (1u << 20));
  CHECK(error_of([] { em::io::zlib_decompress(zeros_1mib, {.max_output = (1u << 20) - 1}); }) ==
        em::errc::io);
}
