// Tests of include/ember/data/csv.hpp: the bundled digits file (gzip) against numbers NumPy
// computed, header detection, quoting, element types, and errors naming file, line and column.
#include <ember/data/csv.hpp>

#include <catch2/catch.hpp>
#include <support/errors.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace em = ember;
namespace fs = std::filesystem;
using ember_test::error_of;
using ember_test::message_of;

namespace {

const std::string digits_path = EMBER_TEST_DATA "/../../examples/data/digits.csv.gz";

struct temp_file {
  std::string path;
  explicit temp_file(const std::string& content, const std::string& name = "t.csv") {
    path = (fs::temp_directory_path() /
            ("ember_csv_" + std::to_string(reinterpret_cast<std::uintptr_t>(this)) + "_" + name))
               .string();
    std::ofstream(path, std::ios::binary) << content;
  }
  ~temp_file() { fs::remove(path); }
};

}  // namespace

TEST_CASE("the digits file: shape, values and checksums from NumPy", "[csv]") {
  // Expected values: /usr/bin/python3 with numpy 1.24,
  //   a = np.loadtxt(gzip.open('examples/data/digits.csv.gz', 'rt'), delimiter=',')
  //   a.shape, a[0, :12], a[-1, :12], a.sum(), (a * np.arange(1, a.size + 1).reshape(a.shape)).sum(),
  //   np.bincount(a[:, -1].astype(int)), a.sum(0)[:8]
  const em::tensor<float> a = em::data::read_csv<float>(digits_path);
  REQUIRE(a.shape() == em::shape{1797, 65});
  REQUIRE(a.is_contiguous());
  const float* p = a.data();
  const float row0[12] = {0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15};
  const float last[12] = {0, 0, 10, 14, 8, 1, 0, 0, 0, 2, 16, 14};
  for (int j = 0; j < 12; ++j) {
    CHECK(p[j] == row0[j]);
    CHECK(p[1796 * 65 + j] == last[j]);
  }
  CHECK(a.at({0, 64}) == 0.f);
  CHECK(a.at({1796, 64}) == 8.f);
  CHECK(a.at({100, 30}) == 4.f);
  CHECK(a.at({1000, 45}) == 12.f);
  double sum = 0, weighted = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    sum += p[i];
    weighted += p[i] * static_cast<double>(i + 1);
  }
  CHECK(sum == 569788.0);
  CHECK(weighted == 33208223891.0);
  int counts[10] = {};
  for (std::int64_t r = 0; r < 1797; ++r) ++counts[static_cast<int>(p[r * 65 + 64])];
  const int want_counts[10] = {178, 182, 177, 183, 181, 182, 181, 179, 174, 180};
  for (int d = 0; d < 10; ++d) CHECK(counts[d] == want_counts[d]);
  const double colsum[8] = {0, 546, 9353, 21269, 21291, 10390, 2448, 233};
  for (int c = 0; c < 8; ++c) {
    double s = 0;
    for (std::int64_t r = 0; r < 1797; ++r) s += p[r * 65 + c];
    CHECK(s == colsum[c]);
  }
  // the same data as integers; gzip detected by content, not by the name
  const auto i64 = em::data::read_csv<std::int64_t>(digits_path);
  CHECK(i64.shape() == em::shape{1797, 65});
  CHECK(i64.at({1796, 64}) == 8);
  std::ifstream in(digits_path, std::ios::binary);
  const std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  temp_file renamed(gz, "digits.dat");
  CHECK(em::data::read_csv<std::uint8_t>(renamed.path).shape() == em::shape{1797, 65});
}

TEST_CASE("header detection and explicit header options", "[csv]") {
  const std::string with_header = "x,y,label\n1.5,2,0\n-3,4e2,1\n";
  auto t = em::data::parse_csv<double>(with_header);
  REQUIRE(t.shape() == em::shape{2, 3});
  CHECK(t.at({1, 1}) == 400.0);
  CHECK(t.at({0, 0}) == 1.5);
  CHECK(em::data::parse_csv<double>(with_header, {.header = true}).shape() == em::shape{2, 3});
  CHECK(error_of([&] { em::data::parse_csv<double>(with_header, {.header = false}); }) == em::errc::io);
  // a numeric first line is data unless told otherwise
  CHECK(em::data::parse_csv<float>("1,2\n3,4\n").shape() == em::shape{2, 2});
  CHECK(em::data::parse_csv<float>("1,2\n3,4\n", {.header = true}).shape() == em::shape{1, 2});
  // header only, and nothing at all
  CHECK(em::data::parse_csv<float>("a,b,c\n").shape() == em::shape{0, 3});
  CHECK(em::data::parse_csv<float>("").shape() == em::shape{0, 0});
  // the header must have as many columns as the data
  CHECK_THAT(message_of([] { em::data::parse_csv<float>("a,b\n1,2,3\n"); }),
             Catch::Contains("line 2") && Catch::Contains("has 3 columns, expected 2") &&
                 Catch::Contains("the header"));
}

TEST_CASE("delimiters, blanks, quotes, line endings and special values", "[csv]") {
  auto t = em::data::parse_csv<float>("\xEF\xBB\xBF 1 ;\t2\r\n\r\n  \n\"3\";\"+4\"\r\n", {.delimiter = ';'});
  REQUIRE(t.shape() == em::shape{2, 2});
  CHECK(t.at({0, 0}) == 1.f);
  CHECK(t.at({0, 1}) == 2.f);
  CHECK(t.at({1, 1}) == 4.f);
  auto tabs = em::data::parse_csv<std::int32_t>("\"a \"\"b\"\"\"\tc\n-7\t8", {.delimiter = '\t'});
  CHECK(tabs.shape() == em::shape{1, 2});
  CHECK(tabs.at({0, 0}) == -7);
  auto special = em::data::parse_csv<double>("nan,inf,-inf,1e400,1e-400\n");
  CHECK(std::isnan(special.at({0, 0})));
  CHECK(special.at({0, 1}) == std::numeric_limits<double>::infinity());
  CHECK(special.at({0, 2}) == -std::numeric_limits<double>::infinity());
  CHECK(special.at({0, 3}) == std::numeric_limits<double>::infinity());
  CHECK(special.at({0, 4}) == 0.0);
  // rounded once from the decimal value to double, then to float (as numpy.loadtxt(dtype=float32))
  CHECK(em::data::parse_csv<float>("0.1\n").at({0, 0}) == static_cast<float>(0.1));
  auto b = em::data::parse_csv<bool>("flag,other\ntrue,0\nFalse,1\n");
  CHECK(b.shape() == em::shape{2, 2});
  CHECK(b.at({0, 0}));
  CHECK_FALSE(b.at({1, 0}));
  auto h = em::data::parse_csv<em::half>("0.5,-2\n");
  CHECK(static_cast<float>(h.at({0, 1})) == -2.f);
}

TEST_CASE("errors name the file, the line and the column", "[csv]") {
  temp_file ragged("1,2,3\n4,5,6\n\n7,8\n");
  CHECK_THAT(message_of([&] { em::data::read_csv<float>(ragged.path); }),
             Catch::Contains("[ember.io]") && Catch::Contains(ragged.path) &&
                 Catch::Contains("line 4, column 3") && Catch::Contains("has 2 columns, expected 3"));
  temp_file garbage("1,2,3\n4,x5,6\n");
  CHECK_THAT(message_of([&] { em::data::read_csv<float>(garbage.path); }),
             Catch::Contains("line 2, column 2") && Catch::Contains("cannot parse 'x5' as f32"));
  CHECK_THAT(message_of([] { em::data::parse_csv<float>("1,2\n3,\n"); }),
             Catch::Contains("line 2, column 2: empty field"));
  CHECK_THAT(message_of([] { em::data::parse_csv<float>("1,2\n3,4,\n"); }),
             Catch::Contains("line 2, column 3"));
  CHECK_THAT(message_of([] { em::data::parse_csv<std::int64_t>("1,2\n3,4.5\n"); }),
             Catch::Contains("cannot parse '4.5' as i64"));
  CHECK_THAT(message_of([] { em::data::parse_csv<std::int8_t>("1,200\n"); }),
             Catch::Contains("cannot parse '200' as i8"));
  CHECK_THAT(message_of([] { em::data::parse_csv<float>("1,\"2\n"); }),
             Catch::Contains("unterminated quoted field"));
  CHECK_THAT(message_of([] { em::data::parse_csv<float>("1,2\n3,4 5\n"); }),
             Catch::Contains("line 2, column 2: cannot parse '4 5'"));
  CHECK_THAT(message_of([] { em::data::read_csv<float>("/nonexistent/dir/x.csv"); }),
             Catch::Contains("cannot open '/nonexistent/dir/x.csv'"));
  // a corrupt gzip file is an io error naming the file
  std::ifstream in(digits_path, std::ios::binary);
  std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  gz[gz.size() / 2] = static_cast<char>(gz[gz.size() / 2] ^ 0x55);
  temp_file corrupt(gz, "bad.csv.gz");
  CHECK_THAT(message_of([&] { em::data::read_csv<float>(corrupt.path); }),
             Catch::Contains("gunzip") && Catch::Contains("bad.csv.gz"));
  CHECK(error_of([] { em::data::parse_csv<float>("1\n", {.delimiter = '"'}); }) == em::errc::value);
}
