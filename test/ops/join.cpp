// Tests for include/ember/ops/join.hpp (cat, stack, split, chunk, unbind, pad) and
// include/ember/ops/scan.hpp (cumsum, cumprod, tril, triu, topk, sort). Expected values from
// the PyTorch oracle (test/data/oracle/ops: cat, stack; index_join_extra from
// test/tools/gen_index_join_cases.py) or small hand-computed examples.
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/ember.hpp>
#include <ember/ops/join.hpp>
#include <ember/ops/scan.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace em = ember;
namespace et = ember_test;

namespace {

template <class T>
std::vector<T> vals(const em::tensor<T>& t) {
  std::vector<T> out;
  const auto& s = t.shape();
  std::vector<std::int64_t> idx(s.size(), 0);
  for (std::int64_t n = 0; n < t.numel(); ++n) {
    std::int64_t off = 0;
    for (std::size_t d = 0; d < s.size(); ++d) off += idx[d] * t.strides()[d];
    out.push_back(t.data()[off]);
    for (std::size_t d = s.size(); d-- > 0;) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

template <class T>
void check_close(const em::tensor<T>& got, const em::tensor<T>& want, double tol) {
  REQUIRE(got.shape() == want.shape());
  const auto g = vals(got), w = vals(want);
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    bool ok;
    if constexpr (std::is_floating_point_v<T>) {
      const double gi = g[i], wi = w[i];
      ok = std::isnan(wi) ? std::isnan(gi)
           : std::isinf(wi) ? gi == wi
                            : std::abs(gi - wi) <= tol * (1 + std::abs(wi));
    } else {
      ok = g[i] == w[i];
    }
    if (!ok && bad++ == 0) first = i;
  }
  INFO(bad << " of " << w.size() << " elements differ; first: element " << first << ", got "
            << (bad ? double(g[first]) : 0.0) << ", want " << (bad ? double(w[first]) : 0.0));
  CHECK(bad == 0);
}


template <class T>
void check_equal(const em::tensor<T>& got, const em::tensor<T>& want) {
  check_close(got, want, 0.0);
}

/// The same values as is, spread out in a larger buffer, and with reversed dims in memory.
template <class T>
std::vector<em::tensor<T>> layouts(const em::tensor<T>& t) {
  std::vector<em::tensor<T>> out{t};
  if (t.dim() == 0) return out;
  em::shape big = t.shape();
  for (auto& e : big) e = 2 * e + 1;
  em::tensor<T> v = em::zeros<T>(big);
  for (std::int64_t d = 0; d < t.dim(); ++d) v = v.slice(d, 1, v.size(d), 2);
  v.copy_(t);
  out.push_back(v);
  em::shape rev;
  for (std::int64_t d = t.dim(); d-- > 0;) rev.push_back(d);
  out.push_back(t.permute(rev).contiguous().permute(rev));
  return out;
}

template <class T>
em::tensor<T> tv(std::vector<T> v, em::shape s) {
  return em::from_vector<T>(std::move(v), s);
}
em::tensor<std::int64_t> iv(std::vector<std::int64_t> v, em::shape s) {
  return em::from_vector<std::int64_t>(std::move(v), s);
}

void for_cases(const et::st_file& f, const std::string& op,
               const std::function<void(const et::json::value&, const std::string&)>& fn) {
  const int n = std::stoi(f.meta("num_cases"));
  int seen = 0;
  for (int i = 0; i < n; ++i) {
    const std::string p = "case" + std::to_string(i);
    const et::json::value meta = et::json::parse(f.meta(p));
    if (meta.at("op").as_string() != op) continue;
    INFO(p << ": " << meta.at("expr").as_string());
    fn(meta, p);
    ++seen;
  }
  CHECK(seen > 0);
}

const et::st_file& extra() {
  static const et::st_file f =
      et::read_safetensors(et::test_data("oracle/ops/index_join_extra.safetensors"));
  return f;
}

template <class T>
constexpr double tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;

template <class T>
std::string oracle_path(const std::string& family) {
  return et::test_data(std::string("oracle/ops/") + (std::is_same_v<T, float> ? "f32/" : "") +
                       family + ".safetensors");
}

template <class F>
void check_error(F&& f, em::errc c, std::vector<std::string> fragments) {
  try {
    f();
    FAIL("no error thrown");
  } catch (const em::error& e) {
    INFO(e.what());
    CHECK(e.category() == c);
    for (const auto& s : fragments) CHECK(std::string(e.what()).find(s) != std::string::npos);
  }
}

template <class T>
std::vector<em::tensor<T>> inputs_of(const et::st_file& f, const std::string& p) {
  std::vector<em::tensor<T>> in;
  for (int j = 0; f.contains(p + ".in" + std::to_string(j)); ++j) in.push_back(f.get<T>(p + ".in" + std::to_string(j)));
  return in;
}

}  // namespace

TEMPLATE_TEST_CASE("cat and stack match PyTorch (oracle), any layout", "[ops][join][oracle]", double, float) {
  using T = TestType;
  for (const std::string fam : {"cat", "stack"}) {
    const et::st_file f = et::read_safetensors(oracle_path<T>(fam));
    for_cases(f, fam, [&](const et::json::value& meta, const std::string& p) {
      const auto in = inputs_of<T>(f, p);
      const std::int64_t dim = meta.at("args").at("dim").as_int();
      const auto want = f.get<T>(p + ".out");
      for (int l = 0; l < 3; ++l) {
        std::vector<em::tensor<T>> v;
        for (const auto& t : in) v.push_back(layouts(t)[static_cast<std::size_t>(l)]);
        check_close(fam == "cat" ? em::cat(v, dim) : em::stack(v, dim), want, tol<T>);
      }
      // mixed layouts in one call
      std::vector<em::tensor<T>> mixed;
      for (std::size_t j = 0; j < in.size(); ++j) mixed.push_back(layouts(in[j])[j % 3]);
      check_close(fam == "cat" ? em::cat(mixed, dim) : em::stack(mixed, dim), want, tol<T>);
    });
  }
}

TEST_CASE("cat (legacy empty skip), stack, split and chunk match PyTorch", "[ops][join][oracle]") {
  const auto& f = extra();
  for_cases(f, "cat", [&](const et::json::value& meta, const std::string& p) {
    const auto in = inputs_of<double>(f, p);  // in0, in1, in2 (1-D empty); called as [0, 1, 2, 0]
    check_equal(em::cat({in[0], in[1], in[2], in[0]}, meta.at("args").at("dim").as_int()), f.get<double>(p + ".out"));
  });
  for_cases(f, "stack", [&](const et::json::value& meta, const std::string& p) {
    const auto in = inputs_of<double>(f, p);
    check_equal(em::stack({in[0], in[1]}, meta.at("args").at("dim").as_int()), f.get<double>(p + ".out"));
  });
  for (const std::string op : {"split", "chunk"})
    for_cases(f, op, [&](const et::json::value& meta, const std::string&) {
      const auto x = em::arange<double>(0, 42).reshape({7, 6});
      const auto& a = meta.at("args");
      const std::int64_t dim = a.at("dim").as_int();
      const auto parts = op == "chunk" ? em::chunk(x, a.at("arg").as_int(), dim)
                         : a.at("arg").is_array() ? em::split(x, a.at("arg").as_int_list(), dim)
                                                  : em::split(x, a.at("arg").as_int(), dim);
      const auto& shapes = meta.at("out_shapes").arr;
      REQUIRE(parts.size() == shapes.size());
      std::int64_t off = 0;
      for (std::size_t i = 0; i < parts.size(); ++i) {
        CHECK(parts[i].shape() == em::shape(shapes[i].as_int_list()));
        CHECK(parts[i].storage() == x.storage());  // views
        check_equal(parts[i], x.narrow(dim, off, parts[i].size(dim)).contiguous());
        off += parts[i].size(dim);
      }
      CHECK(off == x.size(dim));
    });
}

TEST_CASE("pad matches PyTorch in every mode", "[ops][join][oracle]") {
  const auto& f = extra();
  for_cases(f, "pad", [&](const et::json::value& meta, const std::string& p) {
    const auto& a = meta.at("args");
    const auto pads = a.at("pad").as_int_list();
    const std::string mode = a.at("mode").as_string();
    const auto m = mode == "reflect" ? em::pad_mode::reflect : mode == "replicate" ? em::pad_mode::replicate
                   : mode == "circular" ? em::pad_mode::circular : em::pad_mode::constant;
    for (const auto& x : layouts(f.get<double>(p + ".in0"))) {
      const auto got = m == em::pad_mode::constant ? em::pad(x, pads, a.at("value").as_double()) : em::pad(x, pads, m);
      check_equal(got, f.get<double>(p + ".out"));
    }
  });
}

TEST_CASE("cumsum, cumprod, tril and triu match PyTorch", "[ops][scan][oracle]") {
  const auto& f = extra();
  for_cases(f, "cumsum", [&](const et::json::value& meta, const std::string& p) {
    const std::int64_t dim = meta.at("args").at("dim").as_int();
    if (f.at(p + ".in0").dtype == "I64") {
      for (const auto& x : layouts(f.get<std::int64_t>(p + ".in0")))
        check_equal(em::cumsum(x, dim), f.get<std::int64_t>(p + ".out"));
      // int32 input gives int64, as PyTorch
      check_equal(em::cumsum(f.get<std::int64_t>(p + ".in0").to<std::int32_t>(), dim), f.get<std::int64_t>(p + ".out"));
    } else if (f.at(p + ".in0").dtype == "F32") {
      // float32 scans accumulate in double, as PyTorch's CPU kernel: bit-identical
      for (const auto& x : layouts(f.get<float>(p + ".in0"))) check_equal(em::cumsum(x, dim), f.get<float>(p + ".out"));
    } else {
      for (const auto& x : layouts(f.get<double>(p + ".in0"))) check_close(em::cumsum(x, dim), f.get<double>(p + ".out"), 1e-14);
      const auto x = f.get<double>(p + ".in0");
      check_close(em::cumsum(x * 2.0, dim), (f.get<double>(p + ".out") * 2.0).eval(), 1e-14);
    }
  });
  for_cases(f, "cumprod", [&](const et::json::value& meta, const std::string& p) {
    for (const auto& x : layouts(f.get<double>(p + ".in0")))
      check_close(em::cumprod(x, meta.at("args").at("dim").as_int()), f.get<double>(p + ".out"), 1e-14);
  });
  for (const std::string op : {"tril", "triu"})
    for_cases(f, op, [&](const et::json::value& meta, const std::string& p) {
      const std::int64_t k = meta.at("args").at("diagonal").as_int();
      for (const auto& x : layouts(f.get<double>(p + ".in0"))) {
        check_equal(op == "tril" ? em::tril(x, k) : em::triu(x, k), f.get<double>(p + ".out"));
        auto y = x.clone();
        op == "tril" ? em::tril_(y, k) : em::triu_(y, k);
        check_equal(y, f.get<double>(p + ".out"));
      }
    });
}

TEST_CASE("topk and sort match PyTorch (NaN counts as the largest)", "[ops][scan][oracle]") {
  const auto& f = extra();
  for (const std::string op : {"topk", "sort"})
    for_cases(f, op, [&](const et::json::value& meta, const std::string& p) {
      const auto& a = meta.at("args");
      for (const auto& x : layouts(f.get<double>(p + ".in0"))) {
        const auto r = op == "topk" ? em::topk(x, a.at("k").as_int(), a.at("dim").as_int(), a.at("largest").as_bool())
                                    : em::sort(x, a.at("dim").as_int(), a.at("descending").as_bool());
        check_equal(r.values, f.get<double>(p + ".out"));
        check_equal(r.indices, f.get<std::int64_t>(p + ".out1"));
        if (op == "sort")
          check_equal(em::argsort(x, a.at("dim").as_int(), a.at("descending").as_bool()), f.get<std::int64_t>(p + ".out1"));
      }
    });
}

TEST_CASE("join ops: small hand-computed cases, every element type", "[ops][join]") {
  const auto a = tv<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  check_equal(em::cat({a, a}, -1), tv<float>({0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5}, {2, 6}));
  check_equal(em::cat({a, em::zeros<float>({0, 3})}, 0), a);
  check_equal(em::cat({em::zeros<float>({0}), em::zeros<float>({0})}, 1), em::zeros<float>({0}));  // all skipped
  check_equal(em::cat({a.to<bool>(), a.to<bool>()}, 0), tv<bool>({0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1}, {4, 3}));
  check_equal(em::cat({a.to<em::half>(), a.to<em::half>()}, 1).to<float>(), em::cat({a, a}, 1));
  check_equal(em::cat(std::vector<em::tensor<std::int64_t>>{iv({1}, {1}), iv({2, 3}, {2})}), iv({1, 2, 3}, {3}));
  auto c = em::cat({a}, 0);
  CHECK(c.storage() != a.storage());  // always a new tensor
  check_equal(em::stack({em::full<float>({}, 1.f), em::full<float>({}, 2.f)}), tv<float>({1, 2}, {2}));
  check_equal(em::stack({a, a}, 2), tv<float>({0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5}, {2, 3, 2}));

  // split/chunk return views: a write through one is seen in the input
  auto b = a.clone();
  auto parts = em::split(b, 2, 1);
  REQUIRE(parts.size() == 2);
  parts[1].fill_(9.f);
  check_equal(b, tv<float>({0, 1, 9, 3, 4, 9}, {2, 3}));
  CHECK(em::split(em::zeros<float>({0, 2}), 0, 0).size() == 1);
  CHECK(em::chunk(em::zeros<float>({0}), 3).size() == 3);
  CHECK(em::chunk(em::zeros<float>({6}), 4).size() == 3);
  CHECK(em::chunk(a * 2.f, 2, 1)[0].shape() == em::shape{2, 2});
  const auto ub = em::unbind(a, 1);
  REQUIRE(ub.size() == 3);
  check_equal(ub[2], tv<float>({2, 5}, {2}));

  // pad: 0-d with no padding, empty inputs, crop to nothing, other element types, expressions
  check_equal(em::pad(em::full<float>({}, 1.f), {}), em::full<float>({}, 1.f));
  check_equal(em::pad(em::zeros<float>({0, 2}), {1, 1}), em::zeros<float>({0, 4}));
  check_equal(em::pad(em::zeros<float>({0, 2}), {0, 0, 1, 1}, 3), em::full<float>({2, 2}, 3.f));
  check_equal(em::pad(a, {-2, -1}), em::zeros<float>({2, 0}));
  check_equal(em::pad(a.to<std::int32_t>(), {1, 0}, 7), tv<std::int32_t>({7, 0, 1, 2, 7, 3, 4, 5}, {2, 4}));
  check_equal(em::pad(a.to<em::half>(), {0, 1}, 0.5f).to<float>(), tv<float>({0, 1, 2, 0.5f, 3, 4, 5, 0.5f}, {2, 4}));
  check_equal(em::pad(a + 1.f, {1, 1}, em::pad_mode::reflect), tv<float>({2, 1, 2, 3, 2, 5, 4, 5, 6, 5}, {2, 5}));
  check_equal(em::pad(tv<float>({1, 2, 3}, {3}), {2, 2}, em::pad_mode::circular), tv<float>({2, 3, 1, 2, 3, 1, 2}, {7}));
  check_equal(em::pad(tv<float>({1, 2, 3}, {3}), {-1, 2}, em::pad_mode::replicate), tv<float>({2, 3, 3, 3}, {4}));
}

TEST_CASE("scan ops: small hand-computed cases, every element type", "[ops][scan]") {
  const auto a = tv<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  check_equal(em::cumsum(a, 1), tv<float>({1, 3, 6, 4, 9, 15}, {2, 3}));
  check_equal(em::cumsum(a.t(), 1), tv<float>({1, 5, 2, 7, 3, 9}, {3, 2}));
  check_equal(em::cumsum(tv<bool>({true, false, true}, {3}), 0), iv({1, 1, 2}, {3}));
  check_equal(em::cumsum(em::full<float>({}, 3.f), 0), em::full<float>({}, 3.f));
  check_equal(em::cumsum(em::zeros<float>({0, 3}), 1), em::zeros<float>({0, 3}));
  check_equal(em::cumsum(a.to<em::half>(), 0).to<float>(), tv<float>({1, 2, 3, 5, 7, 9}, {2, 3}));
  check_equal(em::cumprod(a, -1), tv<float>({1, 2, 6, 4, 20, 120}, {2, 3}));
  check_equal(em::cumprod(a.to<std::int8_t>(), 0), iv({1, 2, 3, 4, 10, 18}, {2, 3}));
  // int64 wraps like PyTorch's (two's complement), without undefined behaviour
  const std::int64_t big = std::numeric_limits<std::int64_t>::max();
  check_equal(em::cumsum(iv({big, 1}, {2}), 0), iv({big, std::numeric_limits<std::int64_t>::min()}, {2}));

  const auto sq = em::ones<std::int32_t>({3, 3});
  check_equal(em::tril(sq), tv<std::int32_t>({1, 0, 0, 1, 1, 0, 1, 1, 1}, {3, 3}));
  check_equal(em::triu(sq, 1), tv<std::int32_t>({0, 1, 1, 0, 0, 1, 0, 0, 0}, {3, 3}));
  check_equal(em::tril(em::ones<bool>({2, 3})), tv<bool>({1, 0, 0, 1, 1, 0}, {2, 3}));
  check_equal(em::triu(em::ones<float>({2, 0, 3})), em::zeros<float>({2, 0, 3}));
  check_equal(em::tril(em::ones<float>({1, 1}) * 2.f), em::full<float>({1, 1}, 2.f));
  auto m = em::ones<float>({3, 4});
  em::triu_(m.slice(1, 1, 4), 0);  // in place through a view
  check_equal(m, tv<float>({1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1}, {3, 4}));

  // topk/sort: ties lowest index first (documented), k = 0, 0-d input, ints, half
  const auto t = tv<float>({1, 2, 1, 2, 2}, {5});
  auto [v, i] = em::topk(t, 3);
  check_equal(v, tv<float>({2, 2, 2}, {3}));
  check_equal(i, iv({1, 3, 4}, {3}));
  check_equal(em::topk(t, 2, 0, false).indices, iv({0, 2}, {2}));
  check_equal(em::sort(t, 0, true).indices, iv({1, 3, 4, 0, 2}, {5}));
  check_equal(em::topk(a, 0, 1).values, em::zeros<float>({2, 0}));
  check_equal(em::topk(em::zeros<float>({0, 3}), 2, 1).indices, em::zeros<std::int64_t>({0, 2}));
  const auto s0 = em::topk(em::full<float>({}, 4.f), 1);
  CHECK(s0.values.dim() == 0);
  CHECK(s0.values.item() == 4.f);
  CHECK(s0.indices.item() == 0);
  check_equal(em::topk(iv({3, 9, -1, 9}, {4}), 2).values, iv({9, 9}, {2}));
  check_equal(em::topk(a.to<em::half>(), 1, 0).values.to<float>(), tv<float>({4, 5, 6}, {1, 3}));
  check_equal(em::argsort(tv<bool>({true, false, true}, {3})), iv({1, 0, 2}, {3}));
  check_equal(em::sort(a * -1.f, 1).values, tv<float>({-3, -2, -1, -6, -5, -4}, {2, 3}));
}

TEMPLATE_TEST_CASE("topk's heap path and sort's key path agree, ties and NaN included", "[ops][scan]",
                   float, double, em::half, std::int32_t, std::int64_t, bool, std::uint8_t) {
  using T = TestType;
  em::manual_seed(11);
  // many ties (values 0..4), and for floats NaN, -0.0 and +inf
  auto x = em::randint<std::int64_t>(0, 5, {3, 100}).to<T>();
  if constexpr (em::is_floating_v<T>) {
    const float specials[] = {std::numeric_limits<float>::quiet_NaN(), -0.0f, 0.0f,
                              std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
    for (std::int64_t j = 0; j < 100; j += 7) x.data()[j] = T(specials[(j / 7) % 5]);
    x.data()[150] = T(std::numeric_limits<float>::quiet_NaN());
  }
  for (bool largest : {true, false}) {
    INFO("largest = " << largest);
    const auto full = em::sort(x, 1, largest);          // key path (k = n)
    const auto few = em::topk(x, 4, 1, largest);         // heap path (16 k <= n)
    check_equal(few.indices, full.indices.slice(1, 0, 4).contiguous());
    // stable: equal keys in index order, so each run of equal values has increasing indices
    const auto v = full.values.template to<float>();
    const auto ix = full.indices;
    bool stable = true;
    for (std::int64_t r = 0; r < 3; ++r)
      for (std::int64_t j = 1; j < 100; ++j) {
        const float a = v.at({r, j - 1}), b = v.at({r, j});
        if ((a == b || (std::isnan(a) && std::isnan(b))) && ix.at({r, j - 1}) > ix.at({r, j})) stable = false;
      }
    CHECK(stable);
  }
  if constexpr (em::is_floating_v<T>) {  // NaN first when largest, last when smallest
    CHECK(std::isnan(float(em::topk(x, 1, 1).values.at({0, 0}))));
    CHECK(std::isnan(float(em::sort(x, 1).values.at({0, 99}))));
    CHECK(em::topk(x, 2, 1, false).values.template to<float>().at({0, 0}) == -std::numeric_limits<float>::infinity());
  }
}

TEST_CASE("join and scan ops: large inputs take the parallel paths", "[ops][join][scan]") {
  em::manual_seed(3);
  const auto x = em::randn<float>({64, 1500});
  const auto y = em::randn<float>({64, 700});
  const auto c = em::cat({x, y.t().contiguous().t(), x}, 1);  // a strided input among contiguous ones
  REQUIRE(c.shape() == em::shape{64, 3700});
  check_equal(c.slice(1, 1500, 2200), y);
  check_equal(c.slice(1, 2200, 3700), x);
  const auto c0 = em::cat({x, x}, 0);
  check_equal(c0.slice(0, 64, 128), x);
  const auto st = em::stack({x, x, x}, 1);
  check_equal(st.select(1, 2), x);

  // cumsum vs a plain loop, along both dims
  const auto cs1 = em::cumsum(x, 1), cs0 = em::cumsum(x, 0);
  bool ok = true;
  for (std::int64_t r = 0; r < 64; r += 9) {
    double acc = 0;
    for (std::int64_t j = 0; j < 1500; ++j) {
      acc += x.at({r, j});
      ok = ok && cs1.at({r, j}) == static_cast<float>(acc);
    }
  }
  for (std::int64_t j = 0; j < 1500; j += 37) {
    double acc = 0;
    for (std::int64_t r = 0; r < 64; ++r) {
      acc += x.at({r, j});
      ok = ok && cs0.at({r, j}) == static_cast<float>(acc);
    }
  }
  CHECK(ok);
  // topk of each row = the first k of the row sorted descending
  const auto [tv5, ti5] = em::topk(x, 5, 1);
  const auto srt = em::sort(x, 1, true);
  check_equal(tv5, srt.values.slice(1, 0, 5).contiguous());
  check_equal(ti5, srt.indices.slice(1, 0, 5).contiguous());
  const auto tri = em::tril(em::ones<float>({8, 300, 300}));
  CHECK(em::sum(tri).item() == Approx(8 * 300 * 301 / 2));
  const auto padded = em::pad(x, {3, 3, 1, 1}, 1.f);
  check_equal(padded.slice(0, 1, 65).slice(1, 3, 1503), x);
  CHECK(em::sum(padded).item() == Approx(em::sum(x).item() + (66.0 * 1506 - 64 * 1500)).epsilon(1e-4));
}

TEST_CASE("join and scan ops: bad input is an em::error naming shapes and sizes", "[ops][join][scan][errors]") {
  const auto a = em::zeros<float>({3, 4});
  using V = std::vector<em::tensor<float>>;
  check_error([&] { em::cat(V{}, 0); }, em::errc::value, {"non-empty"});
  check_error([&] { em::cat({a, em::full<float>({}, 1.f)}, 0); }, em::errc::shape, {"zero-dimensional", "position 1"});
  check_error([&] { em::cat({a, em::zeros<float>({3})}, 0); }, em::errc::shape, {"same rank", "(3,4)", "(3)"});
  check_error([&] { em::cat({a, em::zeros<float>({3, 3})}, 0); }, em::errc::shape, {"dimension 0", "(3,3)"});
  check_error([&] { em::cat({a, a}, 2); }, em::errc::index, {"dimension 2"});
  check_error([&] { em::cat({a, em::tensor<float>()}, 0); }, em::errc::value, {"undefined"});
  check_error([&] { em::stack(V{}, 0); }, em::errc::value, {"non-empty"});
  check_error([&] { em::stack({a, em::zeros<float>({3, 3})}, 0); }, em::errc::shape, {"(3,4) at entry 0", "(3,3) at entry 1"});
  check_error([&] { em::stack({a, a}, 3); }, em::errc::index, {"dimension 3"});
  check_error([&] { em::split(em::full<float>({}, 1.f), 1); }, em::errc::shape, {"rank >= 1"});
  check_error([&] { em::split(a, -1); }, em::errc::value, {"non-negative"});
  check_error([&] { em::split(a, 0); }, em::errc::value, {"size is 3"});
  check_error([&] { em::split(a, std::vector<std::int64_t>{1, 1}, 1); }, em::errc::shape, {"sum to 4"});
  check_error([&] { em::split(a, std::vector<std::int64_t>{5, -1}, 1); }, em::errc::value, {"non-negative"});
  check_error([&] { em::split(a, 1, 2); }, em::errc::index, {"dimension 2"});
  check_error([&] { em::chunk(a, 0); }, em::errc::value, {"chunks > 0"});
  check_error([&] { em::chunk(em::full<float>({}, 1.f), 1); }, em::errc::shape, {"rank >= 1"});
  check_error([&] { em::unbind(a, 5); }, em::errc::index, {"dimension 5"});
  check_error([&] { em::pad(a, {1}); }, em::errc::value, {"even"});
  check_error([&] { em::pad(a, {1, 1, 1, 1, 1, 1}); }, em::errc::value, {"(3,4)"});
  check_error([&] { em::pad(a, {-3, -2}); }, em::errc::shape, {"crops", "size 4"});
  check_error([&] { em::pad(a, {4, 0}, em::pad_mode::reflect); }, em::errc::value, {"reflect", "size 4"});
  check_error([&] { em::pad(a, {0, 5}, em::pad_mode::circular); }, em::errc::value, {"circular", "size 4"});
  check_error([&] { em::pad(em::zeros<float>({1, 0}), {1, 1}, em::pad_mode::replicate); }, em::errc::shape, {"replicate", "size 0"});
  check_error([&] { em::cumsum(a, 2); }, em::errc::index, {"dimension 2"});
  check_error([&] { em::cumprod(a, -3); }, em::errc::index, {"dimension -3"});
  check_error([&] { em::tril(em::zeros<float>({3})); }, em::errc::shape, {"rank >= 2", "(3)"});
  check_error([&] { em::triu_(em::zeros<float>({1, 3}).expand({3, 3})); }, em::errc::value, {"overlap"});
  check_error([&] { em::topk(a, 5, 1); }, em::errc::value, {"k = 5", "dimension 1", "size 4"});
  check_error([&] { em::topk(a, -1, 1); }, em::errc::value, {"k = -1"});
  check_error([&] { em::topk(a, 1, 2); }, em::errc::index, {"dimension 2"});
  check_error([&] { em::topk(em::full<float>({}, 1.f), 2); }, em::errc::value, {"k = 2"});
  check_error([&] { em::sort(a, 2); }, em::errc::index, {"dimension 2"});
}
