// Tests for include/ember/ops/factory.hpp: constant, range and random factories, from_vector,
// from_blob, *_like and allocator accounting. Expected values are computed by hand.
#include <catch2/catch.hpp>

#include <ember/core/allocator.hpp>
#include <ember/core/random.hpp>
#include <ember/ops/factory.hpp>

#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace em = ember;
using Catch::Matchers::Contains;
using shp = em::shape;

namespace {

/// Row-major element list, read straight from storage with the tensor's offset and strides.
template <class T>
std::vector<T> values(const em::tensor<T>& t) {
  std::vector<T> out;
  if (t.numel() == 0) return out;
  const T* base = static_cast<const T*>(t.storage()->data());
  const std::int64_t n = t.dim();
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n), 0);
  for (;;) {
    std::int64_t off = t.storage_offset();
    for (std::int64_t d = 0; d < n; ++d) off += idx[d] * t.strides()[d];
    out.push_back(base[off]);
    std::int64_t d = n - 1;
    while (d >= 0 && ++idx[d] == t.shape()[d]) idx[d--] = 0;
    if (d < 0) return out;
  }
}

template <class T>
double mean_of(const std::vector<T>& v) {
  double s = 0;
  for (auto x : v) s += static_cast<double>(x);
  return s / static_cast<double>(v.size());
}

template <class T>
double std_of(const std::vector<T>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (auto x : v) s += (static_cast<double>(x) - m) * (static_cast<double>(x) - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

}  // namespace

/// Expects `expr` to throw ember::error of category `cat` whose message contains each part.
#define CHECK_EMBER_ERROR(expr, cat, ...)                                    \
  do {                                                                       \
    bool thrown_ = false;                                                    \
    try {                                                                    \
      (void)(expr);                                                          \
    } catch (const em::error& e_) {                                          \
      thrown_ = true;                                                        \
      CHECK(e_.category() == (cat));                                         \
      for (const char* part_ : {__VA_ARGS__})                                \
        CHECK_THAT(std::string(e_.what()), Contains(part_));                 \
    }                                                                        \
    CHECK(thrown_);                                                          \
  } while (0)

TEST_CASE("factory: empty, zeros, ones, full", "[factory]") {
  auto e = em::empty<float>({2, 3});
  CHECK(e.shape() == shp{2, 3});
  CHECK(e.strides() == shp{3, 1});
  CHECK(e.dtype() == em::dtype::f32);
  CHECK(e.device() == em::cpu);
  CHECK(e.storage_offset() == 0);
  CHECK(em::empty<double>({4}).dtype() == em::dtype::f64);
  CHECK(em::empty<float>({0, 5}).numel() == 0);
  CHECK(em::empty<float>({2, 1, 3}).strides() == shp{3, 3, 1});
  CHECK(em::empty<float>({}).dim() == 0);
  CHECK_EMBER_ERROR(em::empty<float>({2, -1}), em::errc::value, "(2,-1)");

  CHECK(values(em::zeros<float>({2, 2})) == std::vector<float>{0, 0, 0, 0});
  CHECK(values(em::zeros<std::int64_t>({3})) == std::vector<std::int64_t>{0, 0, 0});
  CHECK(em::zeros<std::int64_t>({3}).dtype() == em::dtype::i64);
  CHECK(values(em::ones<double>({3})) == std::vector<double>{1, 1, 1});
  CHECK(values(em::ones<bool>({2})) == std::vector<bool>{true, true});
  CHECK(values(em::full<float>({2, 3}, 2.5f)) == std::vector<float>(6, 2.5f));
  CHECK(values(em::full<std::int32_t>({2}, 2.7)) == std::vector<std::int32_t>{2, 2});
  CHECK(values(em::full<std::int32_t>({2}, -2.7)) == std::vector<std::int32_t>{-2, -2});
  auto s = em::full<float>({}, 3);
  CHECK(s.dim() == 0);
  CHECK(s.item() == 3.f);
  CHECK(em::zeros<float>({0}).shape() == shp{0});
  CHECK_EMBER_ERROR(em::zeros<float>({-3}), em::errc::value, "(-3)");
}

TEST_CASE("factory: arange", "[factory]") {
  CHECK(values(em::arange<std::int64_t>(5)) == std::vector<std::int64_t>{0, 1, 2, 3, 4});
  CHECK(em::arange<std::int64_t>(5).dtype() == em::dtype::i64);
  auto i = em::arange<std::int64_t>(0, 10);
  CHECK(i.shape() == shp{10});
  CHECK(i.at({9}) == 9);
  CHECK(values(em::arange<std::int64_t>(2, 11, 3)) == std::vector<std::int64_t>{2, 5, 8});
  CHECK(values(em::arange<std::int64_t>(2, 12, 3)) == std::vector<std::int64_t>{2, 5, 8, 11});
  CHECK(values(em::arange<std::int64_t>(10, 0, -3)) == std::vector<std::int64_t>{10, 7, 4, 1});
  CHECK(values(em::arange<std::int32_t>(-3, 3)) ==
        std::vector<std::int32_t>{-3, -2, -1, 0, 1, 2});
  CHECK(values(em::arange<float>(0, 1, 0.25)) == std::vector<float>{0.f, 0.25f, 0.5f, 0.75f});
  CHECK(values(em::arange<float>(1.0, -1.0, -0.5)) == std::vector<float>{1.f, 0.5f, 0.f, -0.5f});
  auto d = em::arange<double>(1.0, 2.0, 0.3);  // ceil(1 / 0.3) = 4 elements
  REQUIRE(d.numel() == 4);
  CHECK(d.at({0}) == 1.0);
  CHECK(d.at({3}) == Approx(1.9));
  auto f = em::arange<float>(0.0, 1.0, 0.1);  // ceil(1 / 0.1) = 10
  CHECK(f.numel() == 10);
  CHECK(f.at({9}) == Approx(0.9f));
  CHECK(em::arange<float>(0, 5, 2).shape() == shp{3});
  CHECK(values(em::arange<double>(0, 5, 2)) == std::vector<double>{0, 2, 4});
  CHECK(em::arange<std::int64_t>(3, 3).numel() == 0);
  CHECK(em::arange<std::int64_t>(3, 3, -1).numel() == 0);
  CHECK_EMBER_ERROR(em::arange<std::int64_t>(0, 10, -1), em::errc::value, "arange", "sign",
                    "start=0", "end=10");
  CHECK_EMBER_ERROR(em::arange<float>(1.0, 0.0, 0.5), em::errc::value, "arange", "sign");
  CHECK_EMBER_ERROR(em::arange<std::int64_t>(0, 10, 0), em::errc::value, "arange", "step=0");
  CHECK_EMBER_ERROR(em::arange<float>(0.0, 1.0, 0.0), em::errc::value, "arange", "step=0");
}

TEST_CASE("factory: linspace", "[factory]") {
  CHECK(values(em::linspace<double>(0.0, 1.0, 5)) ==
        std::vector<double>{0.0, 0.25, 0.5, 0.75, 1.0});
  CHECK(values(em::linspace<double>(1.0, 0.0, 3)) == std::vector<double>{1.0, 0.5, 0.0});
  auto f = em::linspace<float>(0.1, 0.7, 7);
  REQUIRE(f.numel() == 7);
  CHECK(f.at({0}) == 0.1f);  // endpoints exact
  CHECK(f.at({6}) == 0.7f);
  CHECK(f.at({3}) == Approx(0.4f));
  auto g = em::linspace<double>(-1.3, 2.9, 11);
  CHECK(g.at({0}) == -1.3);
  CHECK(g.at({10}) == 2.9);
  for (std::int64_t k = 0; k < 11; ++k) CHECK(g.at({k}) == Approx(-1.3 + 0.42 * k));
  auto one = em::linspace<float>(3.0, 5.0, 1);
  CHECK(one.shape() == shp{1});
  CHECK(one.at({0}) == 3.f);
  auto zero = em::linspace<float>(3.0, 5.0, 0);
  CHECK(zero.shape() == shp{0});
  CHECK(values(em::linspace<std::int64_t>(0.0, 10.0, 3)) == std::vector<std::int64_t>{0, 5, 10});
  CHECK_EMBER_ERROR(em::linspace<float>(0.0, 1.0, -1), em::errc::value, "linspace", "-1");
}

TEST_CASE("factory: eye", "[factory]") {
  auto i3 = em::eye<float>(3);
  CHECK(i3.shape() == shp{3, 3});
  CHECK(values(i3) == std::vector<float>{1, 0, 0, 0, 1, 0, 0, 0, 1});
  CHECK(values(em::eye<float>(2, 3)) == std::vector<float>{1, 0, 0, 0, 1, 0});
  CHECK(values(em::eye<std::int64_t>(3, 2)) == std::vector<std::int64_t>{1, 0, 0, 1, 0, 0});
  CHECK(em::eye<std::int64_t>(3, 2).dtype() == em::dtype::i64);
  CHECK(em::eye<float>(0).shape() == shp{0, 0});
  CHECK(em::eye<float>(2, 0).shape() == shp{2, 0});
  CHECK_EMBER_ERROR(em::eye<float>(-1), em::errc::value, "eye", "-1");
  CHECK_EMBER_ERROR(em::eye<float>(2, -3), em::errc::value, "eye", "-3");
}

TEST_CASE("factory: rand", "[factory][random]") {
  em::manual_seed(123);
  auto r = em::rand<float>({100000});
  CHECK(r.dtype() == em::dtype::f32);
  auto v = values(r);
  bool in_range = true;
  for (float x : v) in_range = in_range && x >= 0.f && x < 1.f;
  CHECK(in_range);
  CHECK(std::abs(mean_of(v) - 0.5) < 0.01);
  CHECK(std::abs(std_of(v) - std::sqrt(1.0 / 12.0)) < 0.01);

  auto rd = values(em::rand<double>({100001}));  // odd count: last pair half-used
  in_range = true;
  for (double x : rd) in_range = in_range && x >= 0.0 && x < 1.0;
  CHECK(in_range);
  CHECK(std::abs(mean_of(rd) - 0.5) < 0.01);

  em::generator g(5);
  auto a = values(em::rand<float>({33}, g));
  em::generator g2(5);
  CHECK(values(em::rand<float>({33}, g2)) == a);
  CHECK(values(em::rand<float>({33}, g2)) != a);  // the generator advanced
  CHECK(em::rand<float>({2, 0}).numel() == 0);
}

TEST_CASE("factory: randn", "[factory][random]") {
  em::manual_seed(2024);
  auto n = em::randn<float>({100000});
  CHECK(n.shape() == shp{100000});
  auto v = values(n);
  CHECK(std::abs(mean_of(v)) < 0.02);
  CHECK(std::abs(std_of(v) - 1.0) < 0.02);
  bool finite = true;
  for (float x : v) finite = finite && std::isfinite(x);
  CHECK(finite);

  auto vd = values(em::randn<double>({100001}));
  CHECK(std::abs(mean_of(vd)) < 0.02);
  CHECK(std::abs(std_of(vd) - 1.0) < 0.02);

  SECTION("manual_seed makes it repeat") {
    em::manual_seed(7);
    auto a = values(em::randn<float>({2, 50}));
    em::manual_seed(7);
    auto b = values(em::randn<float>({2, 50}));
    CHECK(a == b);
    em::manual_seed(7);
    auto d1 = values(em::randn<double>({9}));
    em::manual_seed(7);
    CHECK(values(em::randn<double>({9})) == d1);
    em::manual_seed(8);
    CHECK(values(em::randn<float>({2, 50})) != a);
    em::manual_seed(7);
    (void)em::randn<float>({3});
    CHECK(values(em::randn<float>({2, 50})) != a);  // a later call continues the stream
  }
  SECTION("explicit generator") {
    em::generator g(7);
    CHECK(g.initial_seed() == 7);
    auto a = values(em::randn<float>({100}, g));
    em::generator h(7);
    CHECK(values(em::randn<float>({100}, h)) == a);
    em::manual_seed(7);  // the default generator with the same seed gives the same stream
    CHECK(values(em::randn<float>({100})) == a);
    g.seed(7);
    CHECK(values(em::randn<float>({100}, g)) == a);
    em::generator other(8);
    CHECK(values(em::randn<float>({100}, other)) != a);
    const auto before = em::default_generator().offset();
    (void)em::randn<float>({10}, g);  // an explicit generator leaves the default one alone
    CHECK(em::default_generator().offset() == before);
  }
}

TEST_CASE("factory: randint", "[factory][random]") {
  em::manual_seed(99);
  auto r = em::randint<std::int64_t>(-2, 3, {1000});
  CHECK(r.dtype() == em::dtype::i64);
  CHECK(r.shape() == shp{1000});
  std::set<std::int64_t> seen;
  bool in_range = true;
  for (auto x : values(r)) {
    in_range = in_range && x >= -2 && x < 3;
    seen.insert(x);
  }
  CHECK(in_range);
  CHECK(seen == std::set<std::int64_t>{-2, -1, 0, 1, 2});
  auto big = values(em::randint<std::int32_t>(0, 1000, {20000}));
  CHECK(std::abs(mean_of(big) - 499.5) < 10.0);
  CHECK(values(em::randint<std::int64_t>(4, 5, {6})) == std::vector<std::int64_t>(6, 4));

  em::generator g(3), h(3);
  CHECK(values(em::randint<std::int64_t>(0, 100, {2, 8}, g)) ==
        values(em::randint<std::int64_t>(0, 100, {2, 8}, h)));
  CHECK_EMBER_ERROR(em::randint<std::int64_t>(3, 3, {2}), em::errc::value, "randint", "lo=3",
                    "hi=3");
  CHECK_EMBER_ERROR(em::randint<std::int64_t>(5, 1, {2}), em::errc::value, "randint", "lo=5",
                    "hi=1");
}

TEST_CASE("factory: from_vector", "[factory]") {
  std::vector<float> host{1, 2, 3, 4, 5, 6};
  auto t = em::from_vector<float>(host, {2, 3});
  CHECK(t.shape() == shp{2, 3});
  CHECK(t.strides() == shp{3, 1});
  CHECK(t.at({1, 0}) == 4.f);
  host[3] = 100.f;  // the tensor owns a copy
  CHECK(t.at({1, 0}) == 4.f);
  CHECK(t.data() != host.data());
  t.fill_(0.f);
  CHECK(host[0] == 1.f);

  auto one = em::from_vector<float>({7, 8, 9});  // 1-D overload
  CHECK(one.shape() == shp{3});
  CHECK(values(one) == std::vector<float>{7, 8, 9});
  auto i = em::from_vector<std::int64_t>({0, 2}, {2});
  CHECK(i.dtype() == em::dtype::i64);
  CHECK(values(i) == std::vector<std::int64_t>{0, 2});
  auto b = em::from_vector<bool>({true, false, true});
  CHECK(values(b) == std::vector<bool>{true, false, true});
  CHECK(em::from_vector<float>(std::vector<float>{}).shape() == shp{0});
  CHECK(em::from_vector<float>({5.f}, shp{}).item() == 5.f);

  CHECK_EMBER_ERROR(em::from_vector<float>({1, 2, 3, 4, 5}, {2, 3}), em::errc::shape,
                    "from_vector", "5", "(2,3)");
  CHECK_EMBER_ERROR(em::from_vector<float>({1, 2}, {-1, -2}), em::errc::value, "from_vector",
                    "(-1,-2)");
}

TEST_CASE("factory: from_blob", "[factory]") {
  float buf[6] = {0, 1, 2, 3, 4, 5};
  const auto in_use = em::memory_stats().in_use;
  auto w = em::from_blob<float>(buf, {2, 3});
  CHECK(em::memory_stats().in_use == in_use);  // no allocation: user memory
  CHECK(w.shape() == shp{2, 3});
  CHECK(w.strides() == shp{3, 1});
  CHECK(w.data() == buf);
  CHECK_FALSE(w.storage()->owns_memory());
  CHECK(w.at({1, 2}) == 5.f);
  buf[4] = 40.f;  // user writes are visible in the tensor
  CHECK(w.at({1, 1}) == 40.f);
  w.select(0, 0).fill_(9.f);  // tensor writes are visible in the buffer
  CHECK(buf[0] == 9.f);
  CHECK(buf[2] == 9.f);
  CHECK(buf[3] == 3.f);

  SECTION("strided") {
    float m[6] = {0, 1, 2, 3, 4, 5};
    auto t = em::from_blob<float>(m, {3, 2}, {1, 3});  // the transpose of a 2x3 row-major buffer
    CHECK(t.strides() == shp{1, 3});
    CHECK_FALSE(t.is_contiguous());
    CHECK(values(t) == std::vector<float>{0, 3, 1, 4, 2, 5});
    t.select(1, 1).fill_(-1.f);  // m[3], m[4], m[5]
    CHECK(m[3] == -1.f);
    CHECK(m[5] == -1.f);
    CHECK(m[2] == 2.f);
    float every_other[5] = {1, 0, 2, 0, 3};
    CHECK(values(em::from_blob<float>(every_other, {3}, {2})) == std::vector<float>{1, 2, 3});
  }
  SECTION("deleter runs when the last view dies") {
    int calls = 0;
    void* freed = nullptr;
    double data[4] = {1, 2, 3, 4};
    {
      auto t = em::from_blob<double>(data, {4}, [&](void* p) {
        ++calls;
        freed = p;
      });
      auto v = t.view({2, 2}).t();
      t = em::tensor<double>();
      CHECK(calls == 0);
      CHECK(v.at({1, 0}) == 2.0);
    }
    CHECK(calls == 1);
    CHECK(freed == data);
  }
  SECTION("errors") {
    CHECK_EMBER_ERROR(em::from_blob<float>(buf, {2, 3}, {1}), em::errc::shape, "from_blob",
                      "(2,3)", "(1)");
    CHECK_EMBER_ERROR(em::from_blob<float>(nullptr, {2}), em::errc::value, "from_blob", "(2)");
    CHECK_EMBER_ERROR(em::from_blob<float>(buf, {-2}), em::errc::value, "from_blob", "(-2)");
    CHECK(em::from_blob<float>(nullptr, {0}).numel() == 0);
  }
}

TEST_CASE("factory: *_like", "[factory]") {
  auto d = em::empty<double>({2, 3});
  auto z = em::zeros_like(d);
  CHECK(z.shape() == shp{2, 3});
  CHECK(z.dtype() == em::dtype::f64);
  CHECK(values(z) == std::vector<double>(6, 0.0));
  CHECK(z.storage() != d.storage());
  auto o = em::ones_like(em::empty<std::int32_t>({4}));
  CHECK(o.dtype() == em::dtype::i32);
  CHECK(values(o) == std::vector<std::int32_t>{1, 1, 1, 1});
  auto f = em::full_like(d, 2.5);
  CHECK(f.dtype() == em::dtype::f64);
  CHECK(values(f) == std::vector<double>(6, 2.5));
  CHECK(em::full_like(em::empty<std::int64_t>({2}), 3.9).at({0}) == 3);
  auto e = em::empty_like(em::zeros<float>({3, 1, 2}));
  CHECK(e.shape() == shp{3, 1, 2});
  CHECK(e.dtype() == em::dtype::f32);
  auto t = em::zeros<float>({2, 5}).t();  // shape of a view
  CHECK(em::zeros_like(t).shape() == shp{5, 2});
  auto r = em::rand_like(d);
  CHECK(r.shape() == shp{2, 3});
  CHECK(r.dtype() == em::dtype::f64);
  auto n = em::randn_like(em::empty<float>({7}));
  CHECK(n.shape() == shp{7});
  CHECK(n.dtype() == em::dtype::f32);
  CHECK(em::zeros_like(em::full<float>({}, 1.f)).dim() == 0);
}

TEST_CASE("factory: memory accounting", "[factory][memory]") {
  const auto before = em::memory_stats().in_use;
  {
    auto z = em::zeros<float>({1000});
    CHECK(em::memory_stats().in_use >= before + 4000);
    auto v = z.view({10, 100});  // a view allocates nothing
    CHECK(v.storage() == z.storage());
    CHECK(em::memory_stats().in_use == before + 4000);
  }
  CHECK(em::memory_stats().in_use == before);
}
