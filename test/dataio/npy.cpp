// Tests of include/ember/io/npy.hpp: files NumPy wrote (test/tools/gen_npy_cases.py: every
// supported dtype, Fortran order, big-endian, format 2.0 and 3.0) load with NumPy's values;
// ember's files load back and are read by NumPy itself (skipped without /usr/bin/python3 and
// numpy); hostile headers and truncated data are io errors.
#include <ember/io/npy.hpp>
#include <ember/ops/factory.hpp>

#include <catch2/catch.hpp>
#include <support/errors.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace em = ember;
namespace fs = std::filesystem;
using ember_test::error_of;
using ember_test::message_of;

namespace {

struct npy_case {
  const char* name;
  const std::vector<std::uint8_t>* bytes;
  const char* dtype;
  std::vector<std::int64_t> shape;
  std::vector<double> values;
};

#include "npy_cases.inc"

em::dtype dtype_named(const std::string& s) {
  if (s == "f4") return em::dtype::f32;
  if (s == "f8") return em::dtype::f64;
  if (s == "f2") return em::dtype::f16;
  if (s == "i1") return em::dtype::i8;
  if (s == "i2") return em::dtype::i16;
  if (s == "i4") return em::dtype::i32;
  if (s == "i8") return em::dtype::i64;
  if (s == "u1") return em::dtype::u8;
  return em::dtype::boolean;
}

std::vector<double> values_of(const em::any_tensor& a) {
  const auto d = a.to<double>().contiguous();
  return std::vector<double>(d.data(), d.data() + d.numel());
}

/// A fresh folder under the system's temporary directory, removed at scope exit.
struct temp_dir {
  fs::path path;
  temp_dir() {
    path = fs::temp_directory_path() /
           ("ember_npy_" + std::to_string(reinterpret_cast<std::uintptr_t>(this)) + "_" +
            std::to_string(std::rand()));
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

bool numpy_available() {
  return fs::exists("/usr/bin/python3") &&
         std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

std::vector<std::uint8_t> with_header(const std::string& dict, std::size_t data_bytes,
                                      std::uint8_t major = 1) {
  std::vector<std::uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', major, 0};
  out.push_back(static_cast<std::uint8_t>(dict.size() & 0xff));
  out.push_back(static_cast<std::uint8_t>(dict.size() >> 8));
  if (major >= 2) {
    out.push_back(0);
    out.push_back(0);
  }
  out.insert(out.end(), dict.begin(), dict.end());
  out.resize(out.size() + data_bytes, 0);
  return out;
}

}  // namespace

TEST_CASE("files NumPy wrote load with NumPy's values", "[npy]") {
  REQUIRE(all_cases.size() == 17);
  for (const auto& c : all_cases) {
    INFO(c.name);
    const em::any_tensor a = em::io::decode_npy(*c.bytes);
    CHECK(a.dtype() == dtype_named(c.dtype));
    CHECK(a.shape() == em::shape(c.shape));
    CHECK(values_of(a) == c.values);
  }
}

TEST_CASE("Fortran-order files load as C-order tensors with the same elements", "[npy]") {
  const auto a = em::io::decode_npy(fortran_f8_2x3x4).get<double>();
  CHECK(a.is_contiguous());
  // numpy: (np.arange(24) * 0.25).reshape(2, 3, 4)[1, 2, 3] == 5.75, [0, 1, 2] == 1.5
  CHECK(a.at({1, 2, 3}) == 5.75);
  CHECK(a.at({0, 1, 2}) == 1.5);
  const auto b = em::io::decode_npy(fortran_i4_3x2).get<std::int32_t>();
  CHECK(b.at({2, 0}) == 4);
  CHECK(b.at({0, 1}) == 1);
}

TEST_CASE("load_npy<T> converts; NumPy dtypes ember lacks are dtype errors", "[npy]") {
  temp_dir dir;
  {
    std::ofstream(dir / "f8.npy", std::ios::binary)
        .write(reinterpret_cast<const char*>(f8_4.data()), static_cast<std::streamsize>(f8_4.size()));
  }
  const em::tensor<float> f = em::io::load_npy<float>(dir / "f8.npy");
  CHECK(f.shape() == em::shape{4});
  CHECK(f.at({0}) == static_cast<float>(3.141592653589793));
  CHECK(em::io::load_npy(dir / "f8.npy").dtype() == em::dtype::f64);
  for (const auto* b : {&u4_2, &c8_2, &structured}) {
    CHECK(error_of([&] { em::io::decode_npy(*b); }) == (b == &structured ? em::errc::io : em::errc::dtype));
  }
  CHECK_THAT(message_of([] { em::io::decode_npy(u4_2); }),
             Catch::Contains("'<u4' has no ember equivalent"));
  CHECK_THAT(message_of([&] { em::io::load_npy(dir / "missing.npy"); }),
             Catch::Contains("[ember.io]") && Catch::Contains("missing.npy"));
}

TEST_CASE("save_npy round-trips every dtype NumPy shares with ember", "[npy]") {
  temp_dir dir;
  auto round = [&](const auto& t) {
    em::io::save_npy(t, dir / "t.npy");
    const em::any_tensor back = em::io::load_npy(dir / "t.npy");
    CHECK(back.dtype() == t.dtype());
    CHECK(back.shape() == t.shape());
    CHECK(values_of(back) == values_of(t));
  };
  round(em::from_vector<float>({1.5f, -2.f, 0.f, 3.25f, 1e-30f, -7.f}, {2, 3}));
  round(em::from_vector<double>({0.1, -1e300}, {2}));
  round(em::from_vector<em::half>({em::half(1.5f), em::half(-0.25f)}, {1, 2}));
  round(em::from_vector<std::int8_t>({-128, 127}, {2}));
  round(em::from_vector<std::int16_t>({-300, 300, 7}, {3, 1}));
  round(em::from_vector<std::int32_t>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2}));
  round(em::from_vector<std::int64_t>({-(std::int64_t{1} << 62), 5}, {2}));
  round(em::from_vector<std::uint8_t>({0, 255}, {2}));
  round(em::from_vector<bool>({true, false, true}, {3}));
  round(em::full<float>({}, 2.5f));         // 0-d
  round(em::zeros<float>({0, 4}));          // no elements
  // a strided view is written in C order
  const auto t = em::arange<std::int64_t>(0, 6).view({2, 3}).t();
  em::io::save_npy(t, dir / "t.npy");
  const auto back = em::io::load_npy<std::int64_t>(dir / "t.npy");
  CHECK(back.shape() == em::shape{3, 2});
  CHECK(back.at({2, 1}) == 5);
  CHECK(back.at({0, 1}) == 3);
  // the header is padded to 64 bytes and ends in a newline, as NumPy's
  const auto bytes = em::io::encode_npy(em::zeros<float>({2, 3}));
  const std::size_t hlen = bytes[8] | (bytes[9] << 8);
  CHECK((10 + hlen) % 64 == 0);
  CHECK(bytes[10 + hlen - 1] == '\n');
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  CHECK(std::string(bytes.begin() + 10, bytes.begin() + 10 + static_cast<std::ptrdiff_t>(hlen)) ==
        dict + std::string(hlen - dict.size() - 1, ' ') + "\n");
  CHECK(error_of([&] { em::io::save_npy(em::zeros<em::bfloat16>({2}), dir / "b.npy"); }) ==
        em::errc::dtype);
  CHECK_FALSE(fs::exists(dir / "b.npy"));
}

TEST_CASE("NumPy reads the files ember writes", "[npy][python]") {
  if (!numpy_available()) {
    WARN("skipped: /usr/bin/python3 with numpy is not available");
    return;
  }
  temp_dir dir;
  em::io::save_npy(em::arange<std::int64_t>(0, 24).view({2, 3, 4}).to<float>(), dir / "f4.npy");
  em::io::save_npy(em::from_vector<std::int64_t>({-5, 0, 1LL << 40}, {3}), dir / "i8.npy");
  em::io::save_npy(em::from_vector<bool>({true, false}, {2, 1}), dir / "b1.npy");
  em::io::save_npy(em::from_vector<em::half>({em::half(0.5f), em::half(-3.f)}, {2}), dir / "f2.npy");
  em::io::save_npy(em::full<double>({}, -1.25), dir / "f8.npy");
  em::io::save_npy(em::from_vector<std::int8_t>({-1, 2}, {2}), dir / "i1.npy");
  const std::string script = dir / "check.py";
  std::ofstream(script) << "import numpy as np, sys\n"
                           "d = sys.argv[1]\n"
                           "def eq(name, want):\n"
                           "    a = np.load(d + '/' + name)\n"
                           "    assert a.dtype == want.dtype and a.shape == want.shape, (name, a.dtype, a.shape)\n"
                           "    assert (a == want).all(), (name, a, want)\n"
                           "eq('f4.npy', np.arange(24, dtype=np.float32).reshape(2, 3, 4))\n"
                           "eq('i8.npy', np.array([-5, 0, 1 << 40], dtype=np.int64))\n"
                           "eq('b1.npy', np.array([[True], [False]]))\n"
                           "eq('f2.npy', np.array([0.5, -3], dtype=np.float16))\n"
                           "eq('f8.npy', np.array(-1.25))\n"
                           "eq('i1.npy', np.array([-1, 2], dtype=np.int8))\n";
  CHECK(std::system(("/usr/bin/python3 " + script + " " + dir.path.string()).c_str()) == 0);
}

TEST_CASE("hostile .npy files are io errors, never crashes", "[npy]") {
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
  CHECK(em::io::decode_npy(with_header(ok, 24)).shape() == em::shape{2, 3});
  auto io_error = [](const std::vector<std::uint8_t>& b) {
    return error_of([&] { em::io::decode_npy(b); }) == em::errc::io;
  };
  // lying shapes: more data announced than present, or less
  CHECK_THAT(message_of([&] { em::io::decode_npy(with_header(ok, 20)); }),
             Catch::Contains("needs 24 data bytes") && Catch::Contains("truncated"));
  CHECK_THAT(message_of([&] { em::io::decode_npy(with_header(ok, 28)); }),
             Catch::Contains("trailing bytes"));
  CHECK(io_error(with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", 0)));
  CHECK(io_error(with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0)));
  CHECK(io_error(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 0)));
  // no elements, but extents whose product overflows (found by test/fuzz/npy.cpp)
  CHECK(io_error(with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 1995400741459, 1459, 65, 877), }", 0)));
  CHECK(em::io::decode_npy(with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 1000000, 1000000), }", 0))
            .shape() == em::shape{0, 1000000, 1000000});
  CHECK(io_error(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3), }", 12)));
  // malformed dicts
  CHECK(io_error(with_header("{'descr': '<f4', 'fortran_order': False}", 4)));                // no shape
  CHECK(io_error(with_header("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}", 4)));
  CHECK(io_error(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}", 4)));
  CHECK(io_error(with_header("{'descr': 'f4', 'fortran_order': False, 'shape': ()}", 4)));
  CHECK(io_error(with_header("{'descr': '<f4', 'fortran_order': Maybe, 'shape': ()}", 4)));
  CHECK(io_error(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': ()} x", 4)));
  CHECK(io_error(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,,)}", 4)));
  CHECK(io_error(with_header("{'descr': '<f4", 0)));
  CHECK(em::io::decode_npy(with_header("{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(1L,)}", 4, 2))
            .numel() == 1);  // double quotes, Python 2 longs, format 2.0
  // header length fields
  auto huge = with_header(ok, 24);
  huge[8] = 0xff;
  huge[9] = 0xff;  // 65535 > file size
  CHECK_THAT(message_of([&] { em::io::decode_npy(huge); }), Catch::Contains("runs past the end"));
  auto v2 = with_header(ok, 24, 2);
  v2[11] = 0x7f;  // 2 GiB header
  CHECK_THAT(message_of([&] { em::io::decode_npy(v2); }), Catch::Contains("exceeds the limit"));
  auto magic = with_header(ok, 24);
  magic[1] = 'X';
  CHECK(io_error(magic));
  auto version = with_header(ok, 24);
  version[6] = 4;
  CHECK(io_error(version));
  // booleans with bytes other than 0 and 1 load as true
  auto b = with_header("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", 3);
  b[b.size() - 2] = 7;
  const auto bt = em::io::decode_npy(b).get<bool>();
  CHECK_FALSE(bt.at({0}));
  CHECK(bt.at({1}));
  // every truncation of a valid file
  for (const auto* c : {&f4_2x3, &fortran_i4_3x2, &v2_f4_2x2}) {
    for (std::size_t n = 0; n < c->size(); ++n)
      CHECK(io_error(std::vector<std::uint8_t>(c->begin(), c->begin() + static_cast<std::ptrdiff_t>(n))));
  }
}
