// Tests of include/ember/io/pt.hpp (and io/zip.hpp, io/pickle.hpp): torch.save checkpoints
// against the values PyTorch saved beside them (test/tools/gen_pt_cases.py, the digits MLP
// oracle), and hostile files: corrupt zips, lying storages, forbidden globals.
#include <support/errors.hpp>
#include <support/safetensors.hpp>

#include <ember/io/pt.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace em = ember;
using ember_test::error_of;
using ember_test::message_of;
using ember_test::test_data;

namespace {

std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string_view tag_of(em::dtype t) {
  switch (t) {
    case em::dtype::f32: return "F32";
    case em::dtype::f64: return "F64";
    case em::dtype::f16: return "F16";
    case em::dtype::bf16: return "BF16";
    case em::dtype::i64: return "I64";
    case em::dtype::i32: return "I32";
    case em::dtype::i16: return "I16";
    case em::dtype::i8: return "I8";
    case em::dtype::u8: return "U8";
    case em::dtype::boolean: return "BOOL";
  }
  return "?";
}

/// The elements of `t` in row-major order, as raw little-endian bytes.
std::vector<unsigned char> bytes_of(const em::any_tensor& t) {
  return t.visit([](const auto& x) {
    const auto c = x.contiguous();
    const auto* p = reinterpret_cast<const unsigned char*>(c.data());
    return std::vector<unsigned char>(p, p + c.nbytes());
  });
}

/// Same dtype, shape and bytes as the tensor PyTorch wrote to the expected file.
void check_same(const em::state_dict& sd, const std::string& key,
                const ember_test::st_tensor& want) {
  INFO("key " << key);
  REQUIRE(sd.contains(key));
  const em::any_tensor& t = sd.at(key);
  CHECK(tag_of(t.dtype()) == want.dtype);
  CHECK(t.shape() == em::shape(want.shape));
  CHECK(t.device() == em::cpu);
  CHECK(bytes_of(t) == want.bytes);
}

std::vector<std::string> json_strings(const std::string& text) {
  std::vector<std::string> out;
  for (const auto& v : ember_test::json::parse(text).arr) out.push_back(v.as_string());
  return out;
}

std::uint32_t le32(const std::vector<std::uint8_t>& b, std::size_t at) {
  return std::uint32_t(b[at]) | std::uint32_t(b[at + 1]) << 8 | std::uint32_t(b[at + 2]) << 16 |
         std::uint32_t(b[at + 3]) << 24;
}
void put32(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}
/// Offset of the central-directory record of `name` in a zip without comment.
std::size_t central_record(const std::vector<std::uint8_t>& b, const std::string& name) {
  const std::size_t cd = le32(b, b.size() - 22 + 16);
  for (std::size_t p = cd; p + 46 <= b.size(); ++p)
    if (le32(b, p) == 0x02014b50u &&
        std::string(reinterpret_cast<const char*>(&b[p + 46]), name.size()) == name &&
        b[p + 28] == name.size())
      return p;
  FAIL("no central record for " << name);
  return 0;
}

em::errc parse_error(const std::vector<std::uint8_t>& b) {
  return error_of([&] { em::io::parse_pt(b.data(), b.size()); });
}
std::string parse_message(const std::vector<std::uint8_t>& b) {
  return message_of([&] { em::io::parse_pt(b.data(), b.size()); });
}

}  // namespace

TEST_CASE("load_pt reads the digits MLP with PyTorch's keys, order, dtypes and values",
          "[io][pt]") {
  const em::state_dict sd = em::io::load_pt(test_data("models/mlp_digits.pt"));
  const auto want = ember_test::read_safetensors(test_data("models/mlp_digits.safetensors"));
  // the order of the state_dict in PyTorch (oracle/models/README.md)
  CHECK(sd.keys() == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  REQUIRE(sd.size() == want.tensors.size());
  for (const auto& [name, t] : want.tensors) check_same(sd, name, t);
  const em::tensor<float> w = sd.get<float>("0.weight");
  CHECK(w.shape() == em::shape{32, 64});
  CHECK(w.is_contiguous());
  CHECK(sd.metadata().empty());  // torch's per-module `_metadata` versions are dropped
}

TEST_CASE("load_pt: every storage dtype, 0-d, empty, non-contiguous and shared storages",
          "[io][pt]") {
  const auto want = ember_test::read_safetensors(test_data("pt/dtypes_expected.safetensors"));
  for (const char* file : {"pt/dtypes.pt", "pt/dtypes_proto4.pt"}) {
    INFO(file);
    const em::state_dict sd = em::io::load_pt(test_data(file));
    CHECK(sd.keys() == json_strings(want.meta("keys")));
    for (const auto& [name, t] : want.tensors) {
      check_same(sd, name, t);
      const em::any_tensor& got = sd.at(name);
      std::vector<std::int64_t> strides;
      for (const auto& v : ember_test::json::parse(want.meta("stride:" + name)).arr)
        strides.push_back(v.as_int());
      CHECK(got.strides() == em::shape(strides));  // as torch saved them, not made contiguous
      CHECK(got.impl_ptr()->offset == std::stoll(want.meta("offset:" + name)));
    }
    CHECK(sd.at("scalar_f32").dim() == 0);
    CHECK(sd.get<float>("scalar_f32").item() == 2.5f);
    CHECK(sd.get<std::int64_t>("scalar_i64").item() == -9);
    CHECK(sd.at("empty").numel() == 0);
    CHECK_FALSE(sd.get<double>("transposed").is_contiguous());
    // views share the base's storage, as torch.load gives: a write shows through
    for (const char* view : {"view_offset", "view_strided"}) {
      CHECK(want.meta(std::string("shares:") + view) == "base");
      CHECK(sd.at(view).impl_ptr()->storage == sd.at("base").impl_ptr()->storage);
    }
    CHECK(sd.at("f32").impl_ptr()->storage != sd.at("base").impl_ptr()->storage);
    sd.get<float>("base").fill_(-1.0f);
    CHECK(sd.get<float>("view_offset").contiguous().data()[0] == -1.0f);
  }
}

TEST_CASE("load_pt: BatchNorm state (int64 0-d num_batches_tracked), also as a ZIP64 archive",
          "[io][pt]") {
  const auto want = ember_test::read_safetensors(test_data("pt/batchnorm_expected.safetensors"));
  for (const char* file : {"pt/batchnorm.pt", "pt/batchnorm_zip64.pt"}) {
    INFO(file);
    const em::state_dict sd = em::io::load_pt(test_data(file));
    CHECK(sd.keys() == json_strings(want.meta("keys")));
    for (const auto& [name, t] : want.tensors) check_same(sd, name, t);
    const em::tensor<std::int64_t> n = sd.get<std::int64_t>("1.num_batches_tracked");
    CHECK(n.dim() == 0);
    CHECK(n.item() == 1);
  }
}

TEST_CASE("load_pt flattens nested checkpoints; scalars become metadata", "[io][pt]") {
  const auto want = ember_test::read_safetensors(test_data("pt/nested_expected.safetensors"));
  const em::state_dict sd = em::io::load_pt(test_data("pt/nested.pt"));
  // nested dict, nn.Parameter, list and _rebuild_from_type_v2 tensors, in the pickle's order
  CHECK(sd.keys() == json_strings(want.meta("keys")));
  for (const auto& [name, t] : want.tensors) check_same(sd, name, t);
  int scalars = 0;
  for (const auto& [key, text] : want.metadata) {
    if (key.rfind("meta:", 0) != 0) continue;
    INFO(key);
    ++scalars;
    REQUIRE(sd.metadata().count(key.substr(5)) == 1);
    CHECK(sd.metadata().at(key.substr(5)) == text);  // Python's str / repr
  }
  CHECK(scalars == 5);
  CHECK(sd.metadata().size() == 5);
}

TEST_CASE("load_pt loads storages saved from another device to the CPU", "[io][pt]") {
  const em::state_dict sd = em::io::load_pt(test_data("pt/cuda_location.pt"));  // "cuda:0"
  const em::tensor<float> w = sd.get<float>("w");
  CHECK(w.device() == em::cpu);
  REQUIRE(w.numel() == 3);
  CHECK(w.data()[0] == 1.5f);
  CHECK(w.data()[1] == -2.0f);
  CHECK(w.data()[2] == 4.25f);
}

TEST_CASE("load_pt rejects hostile and corrupt files with errc::io", "[io][pt]") {
  struct bad {
    const char* file;
    const char* says;
  };
  const bad cases[] = {
      {"os_system.pt", "global 'os.system' is not allowed"},
      {"unknown_opcode.pt", "unknown opcode 0xff (at offset 5)"},
      {"short_storage.pt", "needs 400 bytes but 'short_storage/data/0' holds 16"},
      {"out_of_range.pt", "reach element 15 of a storage of 12 f32 elements"},
      {"negative_stride.pt", "negative value -1 in the stride"},
      {"missing_storage.pt", "'missing_storage/data/7' is missing"},
      {"deflated.pt", "'deflated/data.pkl' is compressed (method 8, deflate)"},
      {"big_endian.pt", "byte order 'big'"},
      {"recursive.pt", "contains itself"},
      {"shared_bomb.pt", "too large"},
  };
  for (const auto& c : cases) {
    INFO(c.file);
    const std::string path = test_data(std::string("pt/") + c.file);
    CHECK(error_of([&] { em::io::load_pt(path); }) == em::errc::io);
    const std::string msg = message_of([&] { em::io::load_pt(path); });
    CHECK_THAT(msg, Catch::Contains(c.says));
    CHECK_THAT(msg, Catch::Contains(path));
  }
  CHECK(error_of([] { em::io::load_pt(test_data("pt/no_such_file.pt")); }) == em::errc::io);
  CHECK_THAT(message_of([] { em::io::load_pt(test_data("pt/no_such_file.pt")); }),
             Catch::Contains("cannot open"));
}

TEST_CASE("load_pt: valid torch files that are not state_dicts are not_implemented", "[io][pt]") {
  CHECK(error_of([] { em::io::load_pt(test_data("pt/bare_tensor.pt")); }) ==
        em::errc::not_implemented);
  CHECK_THAT(message_of([] { em::io::load_pt(test_data("pt/legacy.pt")); }),
             Catch::Contains("legacy torch.save format"));
  CHECK(error_of([] { em::io::load_pt(test_data("pt/legacy.pt")); }) == em::errc::not_implemented);
}

TEST_CASE("parse_pt: truncated, misdirected and lying zips are errc::io", "[io][pt][zip]") {
  const auto good = read_bytes(test_data("models/mlp_digits.pt"));
  REQUIRE(em::io::parse_pt(good.data(), good.size()).size() == 4);
  const std::size_t eocd = good.size() - 22;
  REQUIRE(le32(good, eocd) == 0x06054b50u);

  SECTION("every truncation") {
    for (std::size_t n = 0; n < good.size(); n += (n < 600 || n > good.size() - 600) ? 1 : 97) {
      const std::vector<std::uint8_t> cut(good.begin(),
                                          good.begin() + static_cast<std::ptrdiff_t>(n));
      INFO("first " << n << " bytes");
      CHECK(parse_error(cut) == em::errc::io);
    }
  }
  SECTION("central directory offset past the end") {
    auto b = good;
    put32(b, eocd + 16, 0x7ffffff0u);
    CHECK(parse_error(b) == em::errc::io);
    CHECK_THAT(parse_message(b), Catch::Contains("central directory"));
  }
  SECTION("more entries than the directory holds") {
    auto b = good;
    b[eocd + 8] = b[eocd + 10] = 200;
    CHECK(parse_error(b) == em::errc::io);
  }
  SECTION("sizes that run past the archive") {
    auto b = good;
    const std::size_t r = central_record(b, "mlp_digits/data/0");
    put32(b, r + 20, 0x10000000u);
    put32(b, r + 24, 0x10000000u);
    CHECK_THAT(parse_message(b), Catch::Contains("run past the end of the archive"));
  }
  SECTION("a size that lies within the archive fails the CRC") {
    auto b = good;
    const std::size_t r = central_record(b, "mlp_digits/data/0");
    put32(b, r + 20, 4096);
    put32(b, r + 24, 4096);
    CHECK_THAT(parse_message(b), Catch::Contains("CRC-32 mismatch"));
  }
  SECTION("compressed and stored sizes that disagree") {
    auto b = good;
    put32(b, central_record(b, "mlp_digits/data/1") + 20, 100);
    CHECK_THAT(parse_message(b), Catch::Contains("sizes differ"));
  }
  SECTION("a local header offset pointing elsewhere") {
    auto b = good;
    put32(b, central_record(b, "mlp_digits/data/1") + 42, 7);
    CHECK_THAT(parse_message(b), Catch::Contains("no local header"));
  }
  SECTION("a corrupt tensor byte") {
    auto b = good;
    b[700] ^= 0x40;  // inside mlp_digits/data/0 (local header at 555)
    CHECK_THAT(parse_message(b), Catch::Contains("'mlp_digits/data/0': CRC-32 mismatch"));
  }
  SECTION("a second entry with the same name") {
    auto b = good;
    const std::size_t r = central_record(b, "mlp_digits/data/1");
    b[r + 46 + 16] = '0';  // "mlp_digits/data/1" -> "mlp_digits/data/0"
    CHECK_THAT(parse_message(b), Catch::Contains("appears twice"));
  }
  SECTION("any single byte of the headers and directory flipped: a state_dict or errc::io") {
    std::vector<std::size_t> at;
    for (std::size_t i = 0; i < 600; ++i) at.push_back(i);
    for (std::size_t i = le32(good, eocd + 16); i < good.size(); ++i) at.push_back(i);
    int rejected = 0;
    for (std::size_t i : at) {
      auto b = good;
      b[i] ^= 0xff;
      try {
        em::io::parse_pt(b.data(), b.size());
      } catch (const em::error& e) {
        INFO("byte " << i << ": " << e.what());
        CHECK((e.category() == em::errc::io || e.category() == em::errc::not_implemented));
        ++rejected;
      }
    }
    CHECK(rejected > static_cast<int>(at.size()) / 2);
  }
}

TEST_CASE("zip_reader: CRC-32, entries and lookup", "[io][zip]") {
  const std::string check = "123456789";
  CHECK(em::io::detail::zip_crc32(reinterpret_cast<const std::uint8_t*>(check.data()),
                                  check.size()) ==
        0xCBF43926u);  // the standard check value of CRC-32/ISO-HDLC
  const auto b = read_bytes(test_data("models/mlp_digits.pt"));
  const em::io::zip_reader zip(b.data(), b.size(), "mlp");
  // the entries the oracle README lists, with their sizes
  REQUIRE(zip.entries().size() == 6);
  CHECK(zip.entries()[0].name == "mlp_digits/data.pkl");
  CHECK(zip.read("mlp_digits/data.pkl").size() == 475);
  CHECK(zip.read("mlp_digits/data/0").size() == 8192);
  CHECK(zip.find("mlp_digits/data/9") == nullptr);
  CHECK_THAT(message_of([&] { zip.read("nope"); }),
             Catch::Contains("[ember.io] mlp: zip: no entry named 'nope'"));
  CHECK(error_of([] { em::io::zip_reader z(nullptr, 0); }) == em::errc::io);
}

namespace {
em::io::pickle_graph unpickle_bytes(const std::string& s,
                                    const em::io::unpickle_options& opt = {}) {
  return em::io::unpickle(reinterpret_cast<const std::uint8_t*>(s.data()), s.size(), opt);
}
std::string unpickle_message(const std::string& s, const em::io::unpickle_options& opt = {}) {
  return message_of([&] { unpickle_bytes(s, opt); });
}
}  // namespace

TEST_CASE("unpickle: forbidden globals are never imported, whatever the opcode", "[io][pickle]") {
  using namespace std::string_literals;
  // protocol 2 GLOBAL, protocol 4 STACK_GLOBAL (SHORT_BINUNICODE module, name)
  CHECK_THAT(unpickle_message("\x80\x02"
                              "cbuiltins\neval\n"
                              "X\x01\x00\x00\x00"
                              "1\x85R."s),
             Catch::Contains("global 'builtins.eval' is not allowed"));
  CHECK_THAT(unpickle_message("\x80\x04\x8c\x0asubprocess\x8c\x05Popen\x93)R."s),
             Catch::Contains("global 'subprocess.Popen' is not allowed"));
  CHECK_THAT(unpickle_message("\x80\x02"
                              "ctorch\n_load_global\n."s),
             Catch::Contains("'torch._load_global'"));
  // allowed but not callable: a storage type cannot be constructed by REDUCE
  CHECK_THAT(unpickle_message("\x80\x02"
                              "ctorch\nFloatStorage\n)R."s),
             Catch::Contains("REDUCE of 'torch.FloatStorage', which is not callable"));
  // REDUCE of something that is not a global
  CHECK_THAT(unpickle_message("\x80\x02"
                              "X\x01\x00\x00\x00"
                              "a)R."s),
             Catch::Contains("REDUCE of a str"));
  // BUILD only sets dict attributes
  CHECK_THAT(unpickle_message("\x80\x02]}b."s), Catch::Contains("BUILD on a list"));
  // INST, OBJ, NEWOBJ would construct objects
  CHECK_THAT(unpickle_message("\x80\x02(cos\nsystem\no."s), Catch::Contains("'os.system'"));
  CHECK_THAT(unpickle_message("\x80\x02\x81."s),
             Catch::Contains("opcode NEWOBJ (0x81) is not supported"));
  CHECK_THAT(unpickle_message("\x80\x02(ios\nsystem\n."s), Catch::Contains("opcode INST"));
}

TEST_CASE("unpickle: malformed pickles and exceeded limits are errc::io", "[io][pickle]") {
  using namespace std::string_literals;
  const std::pair<std::string, const char*> cases[] = {
      {"", "truncated pickle"},
      {"\x80\x02"s, "truncated pickle"},
      {"\x80\x06."s, "unsupported pickle protocol 6"},
      {"\x80\x02."s, "stack underflow"},
      {"\x80\x02(."s, "stack underflow"},
      {"\x80\x02K\x01\x86."s, "stack underflow"},
      {"\x80\x02h\x05."s, "memo entry 5 read before it was written"},
      {"\x80\x02X\xff\xff\xff\x7f"s, "string of 2147483647 bytes exceeds the limit"},
      {"\x80\x02X\x10\x00\x00\x00"
       "abc"s,
       "truncated pickle: 16 bytes needed, 3 left"},
      {"\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09."s, "does not fit in 64 bits"},
      {"\x80\x02}K\x01"
       "a."s,
       "APPEND on a dict"},
      {"\x80\x02]K\x01K\x02s."s, "SETITEM on a list"},
      {"\x80\x02}(K\x01u."s, "odd number"},
      {"\x80\x02t."s, "no MARK"},
      {"\x80\x02"
       "cos"s,
       "GLOBAL without a newline"},
      {"\x80\x02T\xff\xff\xff\xff."s, "negative BINSTRING length"},
      {"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00."s, "FRAME of 255 bytes"},
  };
  for (const auto& c : cases) {
    const std::string& bytes = c.first;  // not a structured binding: the lambda captures it
    const auto& says = c.second;
    INFO(says);
    CHECK(error_of([&] { unpickle_bytes(bytes); }) == em::errc::io);
    CHECK_THAT(unpickle_message(bytes), Catch::Contains(says));
  }
  const std::string marks(100, '(');
  CHECK_THAT(unpickle_message("\x80\x02" + marks + ".", {.max_marks = 64}),
             Catch::Contains("too many nested MARKs"));
  const auto pt = read_bytes(test_data("pt/batchnorm.pt"));
  const auto pkl = em::io::zip_reader(pt.data(), pt.size()).read("batchnorm/data.pkl");
  const std::string s(pkl.begin(), pkl.end());
  CHECK(unpickle_bytes(s).objects.size() > 20);
  CHECK_THAT(unpickle_message(s, {.max_objects = 20}), Catch::Contains("too many objects"));
  CHECK_THAT(unpickle_message(s, {.max_memo = 8}), Catch::Contains("too many memo entries"));
  CHECK_THAT(unpickle_message(s, {.max_string = 4}), Catch::Contains("exceeds the limit"));
  CHECK_THAT(unpickle_message(s, {.max_stack = 4}),
             Catch::Contains("too many values on the stack"));
}

TEST_CASE("unpickle: the values of a torch pickle", "[io][pickle]") {
  using namespace std::string_literals;
  // pickle.dumps({'a': [1, -2, 2**40, 1.5, True, None, 'x', b'y', ()]}, protocol=3) by CPython
  const std::string s =
      "\x80\x03}q\x00X\x01\x00\x00\x00"
      "aq\x01]q\x02(K\x01J\xfe\xff\xff\xff\x8a\x06\x00\x00\x00"
      "\x00\x00\x01G?\xf8\x00\x00\x00\x00\x00\x00\x88NX\x01\x00\x00\x00xq\x03"
      "C\x01yq\x04)es."s;
  const em::io::pickle_graph g = unpickle_bytes(s);
  const auto& root = g[g.root];
  REQUIRE(root.kind == em::io::pickle_kind::dict);
  REQUIRE(root.items.size() == 2);
  CHECK(g[root.items[0]].text == "a");
  const auto& list = g[root.items[1]];
  REQUIRE(list.items.size() == 9);
  CHECK(g[list.items[0]].integer == 1);
  CHECK(g[list.items[1]].integer == -2);
  CHECK(g[list.items[2]].integer == (std::int64_t{1} << 40));
  CHECK(g[list.items[3]].floating == 1.5);
  CHECK(g[list.items[4]].boolean);
  CHECK(g[list.items[5]].kind == em::io::pickle_kind::none);
  CHECK(g[list.items[6]].text == "x");
  CHECK(g[list.items[7]].kind == em::io::pickle_kind::bytes);
  CHECK(g[list.items[8]].kind == em::io::pickle_kind::tuple);
}
