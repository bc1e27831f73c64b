// libFuzzer target for ember::io::parse_pt (zip reader, restricted unpickler, tensor checks).
// An input starting with "PK" is a whole archive; any other input is taken as a data.pkl and
// wrapped in a valid archive with storages "0".."23", so mutations reach the unpickler and the
// tensor checks instead of stopping at the CRC. Only ember::error may escape parse_pt.
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude test/fuzz/pt.cpp -o
//   pt_fuzz
//   ./pt_fuzz -max_total_time=60 -rss_limit_mb=2048 test/fuzz/corpus/pt
#include <ember/io/pt.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace {

void put_le(std::vector<std::uint8_t>& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

/// A stored zip of `archive/data.pkl` = pkl and 24 storages of 512 bytes (0/1 bytes, so bool
/// storages are valid too).
std::vector<std::uint8_t> archive_around(const std::uint8_t* pkl, std::size_t n) {
  std::vector<std::pair<std::string, std::vector<std::uint8_t>>> entries;
  entries.emplace_back("archive/data.pkl", std::vector<std::uint8_t>(pkl, pkl + n));
  for (int k = 0; k < 24; ++k) {
    std::vector<std::uint8_t> data(512);
    for (std::size_t i = 0; i < data.size(); ++i)
      data[i] = static_cast<std::uint8_t>((i / 3 + k) & 1);
    entries.emplace_back("archive/data/" + std::to_string(k), std::move(data));
  }
  std::vector<std::uint8_t> out, cd;
  for (const auto& [name, data] : entries) {
    const std::uint32_t crc = ember::io::detail::zip_crc32(data.data(), data.size());
    const std::size_t offset = out.size();
    for (auto* v : {&out, &cd}) {
      const bool central = v == &cd;
      put_le(*v, central ? 0x02014b50u : 0x04034b50u, 4);
      if (central) put_le(*v, 20, 2);  // version made by
      put_le(*v, 20, 2);               // version needed
      put_le(*v, 0, 2);                // flags
      put_le(*v, 0, 2);                // method: stored
      put_le(*v, 0, 4);                // time, date
      put_le(*v, crc, 4);
      put_le(*v, data.size(), 4);
      put_le(*v, data.size(), 4);
      put_le(*v, name.size(), 2);
      put_le(*v, 0, 2);  // extra length
      if (central) {
        put_le(*v, 0, 6);  // comment length, disk, internal attributes
        put_le(*v, 0, 4);  // external attributes
        put_le(*v, offset, 4);
      }
      v->insert(v->end(), name.begin(), name.end());
      if (!central) v->insert(v->end(), data.begin(), data.end());
    }
  }
  const std::size_t cd_offset = out.size();
  out.insert(out.end(), cd.begin(), cd.end());
  put_le(out, 0x06054b50u, 4);
  put_le(out, 0, 4);
  put_le(out, entries.size(), 2);
  put_le(out, entries.size(), 2);
  put_le(out, cd.size(), 4);
  put_le(out, cd_offset, 4);
  put_le(out, 0, 2);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
      ember::io::parse_pt(data, size);
    } else {
      const auto archive = archive_around(data, size);
      ember::io::parse_pt(archive.data(), archive.size());
    }
  } catch (const ember::error&) {
    // rejected: the expected outcome for almost every input
  }
  return 0;
}
