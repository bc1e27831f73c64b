// Tests of include/ember/io/safetensors.hpp, io/save.hpp and io/json.hpp: round trips of every
// dtype, the PyTorch-written oracle files, atomic saves, hostile files, and Python interop (the
// expected values come from numpy/PyTorch, from the oracle files, or are exact by construction).
#include <ember/io/json.hpp>
#include <ember/io/safetensors.hpp>
#include <ember/io/save.hpp>
#include <ember/ops/factory.hpp>

#include <support/errors.hpp>
#include <support/safetensors.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

namespace em = ember;
namespace fs = std::filesystem;
using bytes = std::vector<std::uint8_t>;
using Catch::Matchers::Contains;
using ember_test::error_of;
using ember_test::message_of;

namespace {

/// A fresh directory under /tmp, removed with everything in it.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "ember_st_XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  std::size_t entries() const {
    return static_cast<std::size_t>(std::distance(fs::directory_iterator(path), {}));
  }
};

bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const bytes& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
}

/// The raw bytes of a tensor in row-major order (through a contiguous copy).
bytes raw(const em::any_tensor& t) {
  return t.visit([](const auto& typed) {
    const auto c = typed.contiguous();
    const auto* p = reinterpret_cast<const std::uint8_t*>(c.data());
    return bytes(p, p + c.nbytes());
  });
}

template <class T>
bytes raw_of(const std::vector<T>& v) {
  bytes out(v.size() * sizeof(T));
  for (std::size_t i = 0; i < v.size(); ++i) {
    const T x = v[i];  // std::vector<bool> has no data()
    std::memcpy(out.data() + i * sizeof(T), &x, sizeof(T));
  }
  return out;
}

/// A safetensors file from a header text and a data buffer; `len` overrides the length field.
bytes st_file(std::string_view header, const bytes& data = {},
              std::uint64_t len = std::numeric_limits<std::uint64_t>::max()) {
  if (len == std::numeric_limits<std::uint64_t>::max()) len = header.size();
  bytes out(8);
  for (int k = 0; k < 8; ++k)
    out[static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(len >> (8 * k));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

em::state_dict parse(const bytes& b) {
  return em::io::parse_safetensors(b.data(), b.size(), "mutant");
}

/// One of each dtype, with values that are exact in every type (bit patterns for f16/bf16).
em::state_dict every_dtype() {
  em::state_dict sd;
  sd.insert("f32", em::from_vector<float>({-1.f, -0.5f, 0.f, 0.5f, 1.f, 1.5f}, {2, 3}));
  sd.insert("f64", em::from_vector<double>({1.0 / 3.0, -2.0 / 7.0, 1e300, -0.0}));
  sd.insert("i32", em::from_vector<std::int32_t>({std::numeric_limits<std::int32_t>::min(), -1, 7,
                                                  std::numeric_limits<std::int32_t>::max()},
                                                 {2, 1, 2}));
  sd.insert("i64", em::from_vector<std::int64_t>({std::numeric_limits<std::int64_t>::min(), -1,
                                                  std::numeric_limits<std::int64_t>::max()}));
  sd.insert("u8", em::from_vector<std::uint8_t>({0, 128, 255}));
  sd.insert("bool", em::from_vector<bool>({true, false, true}));
  sd.insert("bf16", em::from_vector<em::bfloat16>({em::bfloat16::from_bits(0x3F80),     // 1.0
                                                   em::bfloat16::from_bits(0xC020),     // -2.5
                                                   em::bfloat16::from_bits(0x3DCD)}));  // 0.1
  sd.insert("f16", em::from_vector<em::half>({em::half::from_bits(0x3C00),              // 1.0
                                              em::half::from_bits(0xC100),              // -2.5
                                              em::half::from_bits(0x2E66)}));           // 0.1
  sd.insert("i8", em::from_vector<std::int8_t>({-128, 0, 127}));
  sd.insert("i16", em::from_vector<std::int16_t>({-32768, 5, 32767}));
  return sd;
}

void check_same(const em::state_dict& got, const em::state_dict& want) {
  REQUIRE(got.keys() == want.keys());
  for (const auto& [name, w] : want) {
    INFO("tensor " << name);
    const em::any_tensor& g = got.at(name);
    CHECK(g.dtype() == w.dtype());
    CHECK(g.shape() == w.shape());
    CHECK(g.device() == em::cpu);
    CHECK(raw(g) == raw(w));
  }
  CHECK(got.metadata() == want.metadata());
}

}  // namespace

// ---- round trips
// ----------------------------------------------------------------------------------

TEST_CASE("safetensors: every dtype round-trips bit-exactly, in state_dict order",
          "[io][safetensors]") {
  temp_dir dir;
  const auto sd = every_dtype();
  em::save(sd, dir / "all.safetensors");
  check_same(em::load(dir / "all.safetensors"), sd);

  // The file itself, read by the test-only reader: padded header, dtype tags, contiguous data.
  const bytes file = read_file(dir / "all.safetensors");
  std::uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | file[static_cast<std::size_t>(k)];
  CHECK((8 + n) % 8 == 0);
  const auto ref = ember_test::parse_safetensors(file, "all.safetensors");
  const std::map<std::string, std::string> tags = {
      {"f32", "F32"},   {"f64", "F64"},   {"i32", "I32"}, {"i64", "I64"}, {"u8", "U8"},
      {"bool", "BOOL"}, {"bf16", "BF16"}, {"f16", "F16"}, {"i8", "I8"},   {"i16", "I16"}};
  for (const auto& [name, tag] : tags) {
    INFO(name);
    CHECK(ref.at(name).dtype == tag);
    CHECK(ref.at(name).bytes == raw(sd.at(name)));
    CHECK(em::shape(ref.at(name).shape) == sd.at(name).shape());
  }
  CHECK(ref.at("f32").bytes == raw_of<float>({-1.f, -0.5f, 0.f, 0.5f, 1.f, 1.5f}));
  CHECK(ref.at("bool").bytes == bytes{1, 0, 1});
  CHECK(ref.at("bf16").bytes == bytes{0x80, 0x3F, 0x20, 0xC0, 0xCD, 0x3D});  // little-endian
}

TEST_CASE("safetensors: 0-d, empty and empty-state_dict round trips", "[io][safetensors]") {
  temp_dir dir;
  em::state_dict sd;
  sd.insert("scalar", em::full<float>({}, 3.5f));
  sd.insert("empty_rows", em::zeros<float>({0, 4}));
  sd.insert("after", em::from_vector<std::int64_t>({42}));
  sd.insert("empty_cols", em::zeros<std::int16_t>({3, 0}));
  sd.insert("scalar_bool", em::full<bool>({}, true));
  em::save(sd, dir / "z.safetensors");
  const auto got = em::load(dir / "z.safetensors");
  check_same(got, sd);
  CHECK(got.get<float>("scalar").dim() == 0);
  CHECK(got.get<float>("scalar").item() == 3.5f);
  CHECK(got.get<bool>("scalar_bool").item());

  em::save(em::state_dict{}, dir / "none.safetensors");
  CHECK(read_file(dir / "none.safetensors") == st_file("{}      "));
  CHECK(em::load(dir / "none.safetensors").empty());
}

TEST_CASE("safetensors: views and non-contiguous tensors are saved as their row-major values",
          "[io][safetensors]") {
  temp_dir dir;
  const auto base = em::arange<float>(0, 6).view({2, 3});  // [[0,1,2],[3,4,5]]
  em::state_dict sd;
  sd.insert("transposed", base.t());
  sd.insert("row1", base.select(0, 1));
  sd.insert("strided", em::arange<std::int32_t>(0, 10).slice(0, 1, 10, 3));
  sd.insert("expanded", em::from_vector<double>({1.5, -2.0}, {2, 1}).expand({2, 3}));
  em::save(sd, dir / "v.safetensors");
  const auto got = em::load(dir / "v.safetensors");
  CHECK(got.at("transposed").shape() == em::shape{3, 2});
  CHECK(raw(got.at("transposed")) == raw_of<float>({0, 3, 1, 4, 2, 5}));
  CHECK(raw(got.at("row1")) == raw_of<float>({3, 4, 5}));
  CHECK(raw(got.at("strided")) == raw_of<std::int32_t>({1, 4, 7}));
  CHECK(raw(got.at("expanded")) == raw_of<double>({1.5, 1.5, 1.5, -2.0, -2.0, -2.0}));
  const auto ref = ember_test::read_safetensors(dir / "v.safetensors");
  CHECK(ref.at("row1").bytes == raw_of<float>({3, 4, 5}));  // storage offset not written
}

TEST_CASE("safetensors: metadata and names with quotes, control characters and non-ASCII",
          "[io][safetensors]") {
  temp_dir dir;
  em::state_dict sd;
  sd.insert("layer \"1\"\n\t\\.weight", em::ones<float>({2}));
  sd.insert("\xce\xbc-\xf0\x9f\x98\x80", em::ones<std::uint8_t>({1}));  // "µ-😀"
  sd.metadata()["format"] = "pt";
  sd.metadata()["note"] = "line1\nline2 \"q\" \x01 \xc3\xa9";
  sd.metadata()[""] = "";
  em::save(sd, dir / "m.safetensors");
  check_same(em::load(dir / "m.safetensors"), sd);
  const auto ref = ember_test::read_safetensors(dir / "m.safetensors");
  CHECK(ref.metadata == sd.metadata());
  CHECK(ref.contains("layer \"1\"\n\t\\.weight"));

  em::state_dict bad;
  bad.insert("\xff", em::ones<float>({1}));
  CHECK(error_of([&] { em::save(bad, dir / "bad.safetensors"); }) == em::errc::value);
  em::state_dict bad_meta;
  bad_meta.metadata()["k"] = "\xc0\xaf";  // overlong '/'
  CHECK(error_of([&] { em::save(bad_meta, dir / "bad.safetensors"); }) == em::errc::value);
  em::state_dict reserved;
  reserved.insert("__metadata__", em::ones<float>({1}));
  CHECK(error_of([&] { em::save(reserved, dir / "bad.safetensors"); }) == em::errc::value);
  CHECK(!fs::exists(dir / "bad.safetensors"));
}

TEST_CASE("safetensors: files of 1 MiB and more go through mmap and load the same",
          "[io][safetensors]") {
  temp_dir dir;
  constexpr std::int64_t n = 300'000;  // 1.2 MB of f32
  auto big = em::empty<float>({n});
  for (std::int64_t i = 0; i < n; ++i) big.data()[i] = static_cast<float>(i) * 0.25f;
  em::state_dict sd;
  sd.insert("big", big);
  sd.insert("tail", em::from_vector<std::int8_t>({-1, 1}));
  em::save(sd, dir / "big.safetensors");
  REQUIRE(fs::file_size(dir / "big.safetensors") >= em::io::detail::st_mmap_threshold);
  const auto got = em::load(dir / "big.safetensors");
  const auto g = got.get<float>("big");
  bool all = true;
  for (std::int64_t i = 0; i < n; ++i) all = all && g.data()[i] == static_cast<float>(i) * 0.25f;
  CHECK(all);
  CHECK(raw(got.at("tail")) == raw_of<std::int8_t>({-1, 1}));
}

TEST_CASE("safetensors: tensors on another device are copied to the CPU to be saved",
          "[io][safetensors]") {
  // A stand-in device backend: "device" memory is host memory, copied with memcpy.
  auto& hook = em::detail::device_copy_hook();
  if (hook != nullptr) {
    WARN("a device backend is linked; skipped");
    return;
  }
  hook = [](void* dst, em::device, const void* src, em::device, std::size_t n) {
    std::memcpy(dst, src, n);
  };
  static float device_mem[6] = {1, 2, 3, 4, 5, 6};
  auto impl = std::make_shared<em::detail::tensor_impl>();
  impl->storage = std::make_shared<em::detail::storage_impl>(device_mem, sizeof device_mem,
                                                             em::device::cuda(0), nullptr);
  impl->sizes = {2, 3};
  impl->strides = {3, 1};
  impl->type = em::dtype::f32;
  temp_dir dir;
  em::state_dict sd;
  sd.insert("gpu", em::any_tensor(impl));
  sd.insert("gpu_t", em::any_tensor(impl).get<float>().t());
  em::save(sd, dir / "d.safetensors");
  hook = nullptr;
  const auto got = em::load(dir / "d.safetensors");
  CHECK(got.at("gpu").device() == em::cpu);
  CHECK(raw(got.at("gpu")) == raw_of<float>({1, 2, 3, 4, 5, 6}));
  CHECK(raw(got.at("gpu_t")) == raw_of<float>({1, 4, 2, 5, 3, 6}));
}

// ---- files written by PyTorch
// ---------------------------------------------------------------------

TEST_CASE("safetensors: the PyTorch-trained MLP loads as the test-only reader reads it",
          "[io][safetensors][oracle]") {
  const std::string path = EMBER_TEST_DATA "/models/mlp_digits.safetensors";
  const auto sd = em::load(path);
  const auto ref = ember_test::read_safetensors(path);
  // file order of the data (Note [safetensors load order]); shapes from the oracle README
  CHECK(sd.keys() == std::vector<std::string>{"0.bias", "0.weight", "2.bias", "2.weight"});
  CHECK(sd.at("0.weight").shape() == em::shape{32, 64});
  CHECK(sd.at("2.weight").shape() == em::shape{10, 32});
  for (const auto& [name, t] : sd) {
    INFO(name);
    const auto want = ref.get<float>(name);
    CHECK(t.shape() == want.shape());
    CHECK(raw(t) == raw(want));
  }
  CHECK(sd.metadata() == ref.metadata);
  CHECK(sd.metadata().at("format") == "pytorch state_dict");
  CHECK(sd.metadata().at("architecture").find("Linear(in_features=64") != std::string::npos);
}

TEST_CASE("safetensors: the oracle file with every format feature loads byte-exactly",
          "[io][safetensors][oracle]") {
  const std::string path = EMBER_TEST_DATA "/oracle/format/all_dtypes.safetensors";
  const auto sd = em::load(path);
  const auto ref = ember_test::read_safetensors(path);
  REQUIRE(sd.size() == ref.tensors.size());
  const std::map<std::string, em::dtype> types = {
      {"F64", em::dtype::f64},     {"F32", em::dtype::f32}, {"F16", em::dtype::f16},
      {"I64", em::dtype::i64},     {"I32", em::dtype::i32}, {"U8", em::dtype::u8},
      {"BOOL", em::dtype::boolean}};
  for (const auto& [name, want] : ref.tensors) {
    INFO(name);
    const auto& t = sd.at(name);
    CHECK(t.dtype() == types.at(want.dtype));
    CHECK(t.shape() == em::shape(want.shape));
    CHECK(raw(t) == want.bytes);
  }
  CHECK(sd.at("scalar_i64").dim() == 0);
  CHECK(sd.at("empty_f32").shape() == em::shape{0, 4});
  CHECK(sd.metadata() == ref.metadata);
}

// ---- atomic saves
// ------------------------------------------------------------------------------------

TEST_CASE("safetensors: a save that fails mid-way keeps the previous file byte-identical",
          "[io][safetensors]") {
  if (em::detail::device_copy_hook() != nullptr) {
    WARN("a device backend is linked; skipped");
    return;
  }
  temp_dir dir;
  const std::string path = dir / "net.safetensors";
  em::save(every_dtype(), path);
  const bytes before = read_file(path);

  // A tensor on a device without a backend: its copy to the CPU throws after the header and
  // the first tensor were written.
  static float device_mem[4] = {};
  auto impl = std::make_shared<em::detail::tensor_impl>();
  impl->storage = std::make_shared<em::detail::storage_impl>(device_mem, sizeof device_mem,
                                                             em::device::cuda(0), nullptr);
  impl->sizes = {4};
  impl->strides = {1};
  impl->type = em::dtype::f32;
  em::state_dict failing;
  failing.insert("ok", em::ones<double>({100}));
  failing.insert("on_gpu", em::any_tensor(impl));
  const std::string msg = message_of([&] { em::save(failing, path); });
  CHECK_THAT(
      msg, Contains("[ember.io]") && Contains("net.safetensors") && Contains("previous file kept"));
  CHECK(error_of([&] { em::save(failing, path); }) == em::errc::io);
  CHECK(read_file(path) == before);
  CHECK(dir.entries() == 1);  // no temporary file left behind
  check_same(em::load(path), every_dtype());
}

TEST_CASE("safetensors: saving into a missing directory or over a directory is an io error",
          "[io][safetensors]") {
  temp_dir dir;
  em::state_dict sd;
  sd.insert("w", em::ones<float>({3}));
  const std::string missing = dir / "no/such/dir/w.safetensors";
  CHECK(error_of([&] { em::save(sd, missing); }) == em::errc::io);
  CHECK(!fs::exists(dir / "no"));
  fs::create_directory(dir / "sub");
  write_file(dir / "sub/keep", {1, 2, 3});
  CHECK(error_of([&] { em::save(sd, dir / "sub"); }) == em::errc::io);
  CHECK(fs::is_directory(dir / "sub"));
  CHECK(read_file(dir / "sub/keep") == bytes{1, 2, 3});
  CHECK(dir.entries() == 1);
}

// ---- hostile and malformed files
// ------------------------------------------------------------------

TEST_CASE("safetensors: files that cannot be read are io errors naming them", "[io][safetensors]") {
  temp_dir dir;
  const std::string missing = dir / "missing.safetensors";
  CHECK(error_of([&] { em::load(missing); }) == em::errc::io);
  CHECK_THAT(message_of([&] { em::load(missing); }), Contains("missing.safetensors"));
  CHECK(error_of([&] { em::load(dir.path.string()); }) == em::errc::io);
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  CHECK_THAT(message_of([&] { em::load(dir / "fifo"); }), Contains("not a regular file"));
  write_file(dir / "short", {1, 0, 0});
  CHECK_THAT(message_of([&] { em::load(dir / "short"); }), Contains("too short"));
}

TEST_CASE("safetensors: a truncated file is an io error naming the file and the tensor",
          "[io][safetensors]") {
  temp_dir dir;
  em::save(every_dtype(), dir / "t.safetensors");
  bytes b = read_file(dir / "t.safetensors");
  b.pop_back();  // the last byte of the last tensor, "i16"
  write_file(dir / "t.safetensors", b);
  const std::string msg = message_of([&] { em::load(dir / "t.safetensors"); });
  CHECK_THAT(msg, Contains("[ember.io]") && Contains("t.safetensors") && Contains("\"i16\""));
  b.resize(20);  // inside the header
  write_file(dir / "t.safetensors", b);
  CHECK_THAT(message_of([&] { em::load(dir / "t.safetensors"); }),
             Contains("header length") && Contains("truncated"));
}

TEST_CASE("safetensors: each malformation of the header or layout is an io error",
          "[io][safetensors]") {
  const auto entry = [](const char* name, const char* dtype, const char* shape, const char* offs) {
    return std::string("\"") + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
           ",\"data_offsets\":" + offs + "}";
  };
  const bytes data8(8, 0);
  const std::string good = "{" + entry("a", "F32", "[2]", "[0,8]") + "}";
  REQUIRE_NOTHROW(parse(st_file(good, data8)));

  struct bad_case {
    const char* what;
    bytes file;
    const char* message;  // a part of the expected message
  };
  const std::string hdr_a = "{" + entry("a", "F32", "[2]", "[0,8]");
  std::string rank65 = "[1";
  for (int i = 0; i < 64; ++i) rank65 += ",1";
  rank65 += "]";
  const std::vector<bad_case> cases = {
      {"too short", bytes{1, 2, 3}, "too short"},
      {"header > 100 MB", st_file(good, data8, 100'000'001), "exceeds the limit"},
      {"header > file", st_file(good, data8, 1'000), "exceeds the"},
      {"huge header length", st_file(good, data8, std::uint64_t(1) << 63), "exceeds the limit"},
      {"empty header", st_file("", {}), "does not start with '{'"},
      {"leading space", st_file(" " + good, data8), "does not start with '{'"},
      {"array header", st_file("[]"), "does not start with '{'"},
      {"offsets out of range", st_file("{" + entry("a", "F32", "[2]", "[0,8]") + "}", bytes(4)),
       "\"a\": data_offsets [0, 8] reach past"},
      {"end < begin", st_file("{" + entry("a", "F32", "[0]", "[8,0]") + "}", data8), "\"a\""},
      {"byte count", st_file("{" + entry("a", "F32", "[3]", "[0,8]") + "}", data8), "needs 3 x 4"},
      {"numel*itemsize wraps to 0",
       st_file("{" + entry("a", "F64", "[4611686018427387904]", "[0,0]") + "}"),
       "needs 4611686018427387904 x 8"},
      {"overlap",
       st_file(
           "{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "I32", "[1]", "[4,8]") + "}",
           data8),
       "overlap"},
      {"hole",
       st_file(
           "{" + entry("a", "F32", "[1]", "[0,4]") + "," + entry("b", "U8", "[2]", "[6,8]") + "}",
           data8),
       "hole"},
      {"hole at the start", st_file("{" + entry("a", "F32", "[1]", "[4,8]") + "}", data8), "hole"},
      {"bytes after the last tensor", st_file(good, bytes(9)), "1 bytes after the last tensor"},
      {"data but no tensors", st_file("{}", bytes(1)), "after the last tensor"},
      {"empty tensor inside another",
       st_file(hdr_a + "," + entry("e", "F32", "[0]", "[4,4]") + "}", data8),
       "\"e\": data_offsets [4, 4] overlap"},
      {"duplicate tensor", st_file(hdr_a + "," + entry("a", "F32", "[0]", "[8,8]") + "}", data8),
       "names tensor \"a\" twice"},
      {"duplicate field",
       st_file("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               data8),
       "duplicate key \"dtype\""},
      {"unknown field",
       st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", data8),
       "unknown key \"x\""},
      {"missing field", st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", data8),
       "missing \"data_offsets\""},
      {"tensor entry not an object", st_file("{\"a\":[1]}", {}), "expected an object"},
      {"unknown dtype", st_file("{" + entry("a", "F128", "[2]", "[0,8]") + "}", data8),
       "unknown dtype \"F128\""},
      {"dtype ember lacks", st_file("{" + entry("a", "U32", "[2]", "[0,8]") + "}", data8),
       "U32 has no ember"},
      {"dtype not a string",
       st_file("{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", data8),
       "not a string"},
      {"negative extent", st_file("{" + entry("a", "F32", "[-2]", "[0,8]") + "}", data8),
       "negative extent"},
      {"huge shape", st_file("{" + entry("a", "U8", "[4294967296,4294967296,0]", "[0,0]") + "}"),
       "too many elements"},
      {"extent beyond int64",
       st_file("{" + entry("a", "U8", "[9223372036854775808]", "[0,0]") + "}"),
       "does not fit in int64"},
      {"fractional extent", st_file("{" + entry("a", "F32", "[2.0]", "[0,8]") + "}", data8),
       "expected an integer"},
      {"exponent extent", st_file("{" + entry("a", "F32", "[2e0]", "[0,8]") + "}", data8),
       "expected an integer"},
      {"string extent", st_file("{" + entry("a", "F32", "[\"2\"]", "[0,8]") + "}", data8),
       "expected a value"},
      {"rank > 64", st_file("{" + entry("a", "U8", rank65.c_str(), "[0,1]") + "}", bytes(1)),
       "more than 64 dims"},
      {"negative offset", st_file("{" + entry("a", "F32", "[0]", "[-8,-8]") + "}"),
       "negative value"},
      {"three offsets", st_file("{" + entry("a", "F32", "[2]", "[0,8,8]") + "}", data8),
       "more than 2"},
      {"one offset", st_file("{" + entry("a", "F32", "[0]", "[0]") + "}"), "needs 2 values"},
      {"non-UTF-8 name", st_file("{" + entry("\xff", "F32", "[2]", "[0,8]") + "}", data8),
       "invalid UTF-8"},
      {"overlong UTF-8 name", st_file("{" + entry("\xc0\xaf", "F32", "[2]", "[0,8]") + "}", data8),
       "invalid UTF-8"},
      {"surrogate in UTF-8",
       st_file("{" + entry("\xed\xa0\x80", "F32", "[2]", "[0,8]") + "}", data8), "invalid UTF-8"},
      {"lone escaped surrogate",
       st_file("{" + entry("\\ud800", "F32", "[2]", "[0,8]") + "}", data8), "surrogate"},
      {"control char in name", st_file("{" + entry("a\nb", "F32", "[2]", "[0,8]") + "}", data8),
       "control character"},
      {"metadata value not a string", st_file("{\"__metadata__\":{\"k\":1}}"),
       "value of \"k\" is not a string"},
      {"metadata value null", st_file("{\"__metadata__\":{\"k\":null}}"), "not a string"},
      {"metadata not an object", st_file("{\"__metadata__\":\"x\"}"), "expected an object"},
      {"duplicate metadata key", st_file("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"),
       "duplicate key \"k\""},
      {"duplicate __metadata__", st_file("{\"__metadata__\":{},\"__metadata__\":{}}"),
       "duplicate \"__metadata__\""},
      {"trailing garbage", st_file(good + "x", data8), "unexpected characters after"},
      {"second object", st_file(good + "{}", data8), "unexpected characters after"},
      {"trailing comma", st_file("{" + entry("a", "F32", "[2]", "[0,8]") + ",}", data8),
       "trailing comma"},
      {"unterminated", st_file("{\"a\":{\"dtype\":\"F32", data8), "unterminated"},
      {"BOOL byte 2", st_file("{" + entry("b", "BOOL", "[2]", "[0,2]") + "}", bytes{1, 2}),
       "BOOL element 1 is byte 2"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    try {
      parse(c.file);
      FAIL_CHECK("no error");
    } catch (const em::error& e) {
      CHECK(e.category() == em::errc::io);
      CHECK_THAT(e.what(), Contains("'mutant'") && Contains(c.message));
    }
  }
}

TEST_CASE("safetensors: every truncation and byte mutation of a good file parses or throws io",
          "[io][safetensors]") {
  temp_dir dir;
  em::state_dict sd;
  sd.insert("w", em::from_vector<float>({1, 2, 3, 4}, {2, 2}));
  sd.insert("s", em::full<std::int64_t>({}, 7));
  sd.insert("e", em::zeros<em::half>({0}));
  sd.insert("m", em::from_vector<bool>({true, false}));
  sd.metadata()["k"] = "v\xc3\xa9";
  em::save(sd, dir / "g.safetensors");
  const bytes good = read_file(dir / "g.safetensors");
  check_same(parse(good), sd);

  std::size_t parsed = 0, rejected = 0, wrong_category = 0;
  const auto attempt = [&](const bytes& b) {
    try {
      parse(b);
      ++parsed;
    } catch (const em::error& e) {
      ++rejected;
      wrong_category += e.category() != em::errc::io;
    }
  };
  for (std::size_t len = 0; len < good.size(); ++len)
    attempt(bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(len)));
  const std::uint8_t values[] = {0x00, 0x01, 0x7F, 0x80, 0xFF, '"', '{', ']', ',', '9', '-', ' '};
  for (std::size_t i = 0; i < good.size(); ++i)
    for (const auto v : values) {
      bytes b = good;
      b[i] = v;
      attempt(b);
    }
  CHECK(rejected > good.size());
  CHECK(parsed > 0);  // e.g. mutations inside float data
  CHECK(wrong_category == 0);
}

// ---- the JSON reader
// -------------------------------------------------------------------------------

TEST_CASE("json::reader reads strictly and exactly", "[io][json]") {
  namespace json = em::io::json;
  json::reader r(
      R"( {"a": [0, -9223372036854775808, 9223372036854775807], "s": "\u00e9\ud83d\ude00\/",
                     "skip": {"x": [true, false, null, -1.5e+3, {}]}} )",
      "t");
  std::string key;
  r.begin_object();
  REQUIRE(r.next_member(key));
  CHECK(key == "a");
  std::vector<std::int64_t> ints;
  r.begin_array();
  while (r.next_element()) ints.push_back(r.read_int64());
  CHECK(ints == std::vector<std::int64_t>{0, std::numeric_limits<std::int64_t>::min(),
                                          std::numeric_limits<std::int64_t>::max()});
  REQUIRE(r.next_member(key));
  CHECK(r.read_string() == "\xc3\xa9\xf0\x9f\x98\x80/");
  REQUIRE(r.next_member(key));
  CHECK(key == "skip");
  CHECK(r.peek() == json::kind::object);
  r.skip_value();
  CHECK_FALSE(r.next_member(key));
  CHECK_NOTHROW(r.finish());

  const auto fails = [](std::string text) {
    json::reader q(text, "t");
    try {
      q.skip_value();
      q.finish();
    } catch (const em::error& e) {
      return e.category() == em::errc::io;
    }
    return false;
  };
  CHECK(fails(std::string(65, '[') + std::string(65, ']')));  // deeper than 64
  CHECK_FALSE(fails(std::string(64, '[') + std::string(64, ']')));
  CHECK(fails("01"));
  CHECK(fails("1."));
  CHECK(fails("-"));
  CHECK(fails("[1,]"));
  CHECK(fails("{\"a\" 1}"));
  CHECK(fails("tru"));
  CHECK(fails("\"\\x\""));
  CHECK(fails("\"\\u12\""));
  CHECK(fails("\"\xf4\x90\x80\x80\""));  // above U+10FFFF
  CHECK(fails("\"\xe2\x82\""));          // truncated sequence
  CHECK(fails("[1] 2"));
  CHECK(fails(""));
  CHECK_FALSE(fails("\"\xf4\x8f\xbf\xbf\""));  // U+10FFFF
  json::reader big("99999999999999999999", "t");
  CHECK_THAT(message_of([&] { big.read_int64(); }), Contains("does not fit in int64"));

  std::string out;
  json::write_string(out, "a\"b\\c\n\x01\xc3\xa9");
  CHECK(out == "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"");
  CHECK(json::is_valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
  CHECK_FALSE(json::is_valid_utf8("\xe0\x80\x80"));  // overlong
}

// ---- Python interop
// --------------------------------------------------------------------------------

namespace {

const char* const python = "/usr/bin/python3";

bool python_has_numpy() {
  return std::system((std::string(python) + " -c 'import numpy' >/dev/null 2>&1").c_str()) == 0;
}

/// Runs a Python script with one argument; true when it exits 0.
bool run_python(const temp_dir& dir, const std::string& script, const std::string& arg) {
  const std::string path = dir / "check.py";
  std::ofstream(path) << script;
  const int rc = std::system((std::string(python) + " " + path + " '" + arg + "'").c_str());
  return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

// Reads an ember-written file with json + numpy and checks values computed by numpy / PyTorch.
const char* const python_reader = R"PY(
import json, struct, sys
import numpy as np
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
assert (8 + n) % 8 == 0, 'header not padded'
h = json.loads(b[8:8 + n].decode('utf-8'))
assert h.pop('__metadata__') == {'format': 'pt', 'note': '\u00b5 "q"\n'}
buf = b[8 + n:]
NP = {'F32': '<f4', 'F64': '<f8', 'I32': '<i4', 'I64': '<i8', 'U8': 'u1', 'BOOL': '?',
      'F16': '<f2', 'I8': 'i1', 'I16': '<i2', 'BF16': '<u2'}
pos = 0
for name, e in h.items():  # data in header order, tiling the buffer
    assert e['data_offsets'][0] == pos, name
    pos = e['data_offsets'][1]
assert pos == len(buf)
def get(name, tag):
    e = h[name]
    assert e['dtype'] == tag, (name, e['dtype'])
    lo, hi = e['data_offsets']
    return np.frombuffer(buf[lo:hi], dtype=NP[tag]).reshape(e['shape'])
def same(name, tag, want):
    got = get(name, tag)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.array_equal(got, want), (name, got, want)
i32, i64 = np.iinfo(np.int32), np.iinfo(np.int64)
same('f32', 'F32', (np.arange(6, dtype=np.float32) * 0.5 - 1).reshape(2, 3))
same('f64', 'F64', np.array([1 / 3, -2 / 7, 1e300, -0.0]))
same('i32', 'I32', np.array([i32.min, -1, 7, i32.max], np.int32).reshape(2, 1, 2))
same('i64', 'I64', np.array([i64.min, -1, i64.max], np.int64))
same('u8', 'U8', np.array([0, 128, 255], np.uint8))
same('bool', 'BOOL', np.array([True, False, True]))
same('f16', 'F16', np.array([1.0, -2.5, 0.1], np.float16))
same('i8', 'I8', np.array([-128, 0, 127], np.int8))
same('i16', 'I16', np.array([-32768, 5, 32767], np.int16))
same('scalar', 'F32', np.array(3.5, np.float32))
same('empty', 'F32', np.zeros((0, 4), np.float32))
same('\u5c42.weight_t', 'F64', np.arange(6, dtype=np.float64).reshape(2, 3).T)
bf = get('bf16', 'BF16')
try:
    import torch
    lo, hi = h['bf16']['data_offsets']
    got = torch.frombuffer(bytearray(buf[lo:hi]), dtype=torch.bfloat16)
    assert torch.equal(got, torch.tensor([1.0, -2.5, 0.1], dtype=torch.bfloat16)), got
except ImportError:
    assert list(bf) == [0x3F80, 0xC020, 0x3DCD], bf
)PY";

// Writes a file the way Hugging Face's writer lays it out (sorted keys; data by dtype size, then
// name), with values ember checks against their exact decimal/bit values.
const char* const python_writer = R"PY(
import json, struct, sys
import numpy as np
t = {
    'w_f32': np.arange(12, dtype=np.float32).reshape(3, 4) / np.float32(4),
    'b_f64': np.array([1 / 3, 2 / 3, -1e-300]),
    'idx_i64': np.array([-2**63, 2**63 - 1, 5], np.int64),
    'mask': np.array([[True, False], [False, True]]),
    'h_f16': np.array([0.5, -65504, 2.0**-24], np.float16),
    'bf': np.array([0x3F80, 0xC020, 0x0001], '<u2'),
    'scalar': np.array(7, np.int32),
    'empty': np.zeros((0, 3), np.float32),
    'u8': np.arange(250, 256, dtype=np.uint8),
    'i8': np.array([-128, 127], np.int8),
    'i16': np.array([-32768, 32767], np.int16),
}
tags = {'w_f32': 'F32', 'b_f64': 'F64', 'idx_i64': 'I64', 'mask': 'BOOL', 'h_f16': 'F16',
        'bf': 'BF16', 'scalar': 'I32', 'empty': 'F32', 'u8': 'U8', 'i8': 'I8', 'i16': 'I16'}
order = sorted(t, key=lambda k: (-t[k].dtype.itemsize, k))
header, data = {'__metadata__': {'format': 'pt', '\u00fcn\u00ef': '\u00e7\u00f8d\u00e9'}}, b''
for k in order:
    raw = np.ascontiguousarray(t[k]).astype(t[k].dtype.newbyteorder('<')).tobytes()
    header[k] = {'dtype': tags[k], 'shape': list(t[k].shape),
                 'data_offsets': [len(data), len(data) + len(raw)]}
    data += raw
text = json.dumps(header, sort_keys=True).encode('utf-8')
text += b' ' * (-(8 + len(text)) % 8)
open(sys.argv[1], 'wb').write(struct.pack('<Q', len(text)) + text + data)
)PY";

}  // namespace

TEST_CASE("safetensors: Python (json + numpy, PyTorch for bf16) reads what ember writes",
          "[io][safetensors][python]") {
  if (!python_has_numpy()) {
    WARN("/usr/bin/python3 with numpy not available; Python interop skipped");
    return;
  }
  temp_dir dir;
  em::state_dict sd = every_dtype();
  sd.insert("scalar", em::full<float>({}, 3.5f));
  sd.insert("empty", em::zeros<float>({0, 4}));
  sd.insert("\xe5\xb1\x82.weight_t", em::arange<double>(0, 6).view({2, 3}).t());  // "层"
  sd.metadata()["format"] = "pt";
  sd.metadata()["note"] = "\xc2\xb5 \"q\"\n";
  em::save(sd, dir / "ember.safetensors");
  CHECK(run_python(dir, python_reader, dir / "ember.safetensors"));
}

TEST_CASE("safetensors: ember reads what Python writes", "[io][safetensors][python]") {
  if (!python_has_numpy()) {
    WARN("/usr/bin/python3 with numpy not available; Python interop skipped");
    return;
  }
  temp_dir dir;
  REQUIRE(run_python(dir, python_writer, dir / "py.safetensors"));
  const auto sd = em::load(dir / "py.safetensors");
  // data order: 8-byte dtypes, then 4, 2, 1; by name within a size; the empty tensor first at
  // its offset
  CHECK(sd.keys() == std::vector<std::string>{"b_f64", "idx_i64", "empty", "scalar", "w_f32", "bf",
                                              "h_f16", "i16", "i8", "mask", "u8"});
  CHECK(sd.metadata() == std::map<std::string, std::string>{{"format", "pt"},
                                                            {"\xc3\xbcn\xc3\xaf",
                                                             "\xc3\xa7\xc3\xb8"
                                                             "d\xc3\xa9"}});
  std::vector<float> w(12);
  for (int i = 0; i < 12; ++i) w[static_cast<std::size_t>(i)] = static_cast<float>(i) / 4.f;
  CHECK(sd.at("w_f32").shape() == em::shape{3, 4});
  CHECK(raw(sd.at("w_f32")) == raw_of(w));
  CHECK(raw(sd.at("b_f64")) == raw_of<double>({1.0 / 3.0, 2.0 / 3.0, -1e-300}));
  CHECK(raw(sd.at("idx_i64")) ==
        raw_of<std::int64_t>({std::numeric_limits<std::int64_t>::min(),
                              std::numeric_limits<std::int64_t>::max(), 5}));
  CHECK(sd.at("mask").shape() == em::shape{2, 2});
  CHECK(raw(sd.at("mask")) == bytes{1, 0, 0, 1});
  CHECK(raw(sd.at("h_f16")) == raw_of<std::uint16_t>({0x3800, 0xFBFF, 0x0001}));
  CHECK(static_cast<float>(sd.get<em::half>("h_f16").at({1})) == -65504.f);
  CHECK(static_cast<float>(sd.get<em::bfloat16>("bf").at({1})) == -2.5f);
  CHECK(sd.get<std::int32_t>("scalar").item() == 7);
  CHECK(sd.get<std::int32_t>("scalar").dim() == 0);
  CHECK(sd.at("empty").shape() == em::shape{0, 3});
  CHECK(raw(sd.at("u8")) == bytes{250, 251, 252, 253, 254, 255});
  CHECK(raw(sd.at("i8")) == raw_of<std::int8_t>({-128, 127}));
  CHECK(raw(sd.at("i16")) == raw_of<std::int16_t>({-32768, 32767}));
}
