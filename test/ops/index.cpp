// Tests for include/ember/ops/index.hpp: index_select, gather, scatter(_add), index_add,
// embedding, one_hot, masked_fill/select. Expected values from the PyTorch oracle
// (test/data/oracle/ops: index_select, embedding; index_join_extra from
// test/tools/gen_index_join_cases.py) or small hand-computed examples.
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/ember.hpp>
#include <ember/ops/index.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

namespace em = ember;
namespace F = ember::nn::functional;
namespace et = ember_test;

namespace {

/// Row-major values of any tensor, read through its strides.
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

/// |got - want| <= tol * (1 + |want|) elementwise, with equal shapes (the oracle's rule).
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
  REQUIRE(got.shape() == want.shape());
  CHECK(vals(got) == vals(want));
}

/// The same values in other layouts: as is, spread out (every dim strided by 2 inside a
/// larger buffer) and with reversed dims in memory.
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
em::tensor<std::int64_t> iv(std::vector<std::int64_t> v) {
  const em::shape s{static_cast<std::int64_t>(v.size())};
  return em::from_vector<std::int64_t>(std::move(v), s);
}

/// Runs f(meta, prefix) for every case of `op` in an oracle file.
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

/// Throws an em::error of category c whose message contains every fragment.
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

}  // namespace

TEMPLATE_TEST_CASE("index_select matches PyTorch (oracle), any layout", "[ops][index][oracle]",
                   double, float) {
  using T = TestType;
  const et::st_file f = et::read_safetensors(oracle_path<T>("index_select"));
  for_cases(f, "index_select", [&](const et::json::value& meta, const std::string& p) {
    const auto x = f.get<T>(p + ".in0");
    const auto idx = f.get<std::int64_t>(p + ".in1");
    const std::int64_t dim = meta.at("args").at("dim").as_int();
    for (const auto& xl : layouts(x))
      for (const auto& il : layouts(idx)) check_close(em::index_select(xl, dim, il), f.get<T>(p + ".out"), tol<T>);
    check_close(em::index_select(x * T(1), dim - x.dim(), idx), f.get<T>(p + ".out"), tol<T>);
    // the backward core: d sum(out * U) / dx
    check_close(em::detail::index_select_backward(f.get<T>(p + ".upstream"), dim, idx, x.shape()),
                f.get<T>(p + ".grad0"), tol<T>);
  });
}

TEMPLATE_TEST_CASE("embedding matches PyTorch (oracle), forward and backward core",
                   "[ops][index][oracle]", double, float) {
  using T = TestType;
  const et::st_file f = et::read_safetensors(oracle_path<T>("embedding"));
  for_cases(f, "embedding", [&](const et::json::value& meta, const std::string& p) {
    const auto w = f.get<T>(p + ".in0");
    const auto ids = f.get<std::int64_t>(p + ".in1");
    const et::json::value* pad = meta.at("args").find("padding_idx");
    for (const auto& wl : layouts(w)) {
      check_close(em::embedding(ids, wl), f.get<T>(p + ".out"), tol<T>);
      if (pad) check_close(F::embedding(ids, wl, {.padding_idx = pad->as_int()}), f.get<T>(p + ".out"), tol<T>);
      else check_close(F::embedding(ids, wl), f.get<T>(p + ".out"), tol<T>);
    }
    std::optional<std::int64_t> pi;
    if (pad) pi = pad->as_int();
    check_close(em::detail::embedding_backward(f.get<T>(p + ".upstream"), ids, w.size(0), pi),
                f.get<T>(p + ".grad0"), tol<T>);
  });
  const auto& x = extra();
  for_cases(x, "embedding", [&](const et::json::value& meta, const std::string& p) {
    const auto w = x.get<double>(p + ".in0");
    const auto ids = x.get<std::int64_t>(p + ".in1");
    check_close(F::embedding(ids, w, {.padding_idx = meta.at("args").at("padding_idx").as_int()}),
                x.get<double>(p + ".out"), 1e-15);
  });
}

TEST_CASE("gather, scatter, scatter_add and index_add match PyTorch", "[ops][index][oracle]") {
  const auto& f = extra();
  for_cases(f, "gather", [&](const et::json::value& meta, const std::string& p) {
    const auto x = f.get<double>(p + ".in0");
    const auto idx = f.get<std::int64_t>(p + ".in1");
    const std::int64_t dim = meta.at("args").at("dim").as_int();
    for (const auto& xl : layouts(x))
      for (const auto& il : layouts(idx)) check_equal(em::gather(xl, dim, il), f.get<double>(p + ".out"));
    check_equal(em::gather(x, dim, idx.to<std::int32_t>()), f.get<double>(p + ".out"));
    // gather's adjoint: <gather(x), u> == <x, gather_backward(u)>
    const auto u = em::randn<double>(idx.shape());
    const double lhs = em::sum(em::gather(x, dim, idx) * u).item();
    const double rhs = em::sum(x * em::detail::gather_backward(u, dim < 0 ? dim + x.dim() : dim, idx, x.shape())).item();
    CHECK(lhs == Approx(rhs).epsilon(1e-12));
  });
  for_cases(f, "scatter_add", [&](const et::json::value& meta, const std::string& p) {
    const auto x = f.get<double>(p + ".in0");
    const auto idx = f.get<std::int64_t>(p + ".in1");
    const auto src = f.get<double>(p + ".in2");
    const std::int64_t dim = meta.at("args").at("dim").as_int();
    for (const auto& xl : layouts(x))
      for (const auto& sl : layouts(src)) {
        check_close(em::scatter_add(xl, dim, idx, sl), f.get<double>(p + ".out"), 1e-12);
        auto y = xl.clone();
        auto r = em::scatter_add_(y, dim, idx, sl);
        CHECK(r.is_same(y));
        check_close(y, f.get<double>(p + ".out"), 1e-12);
      }
  });
  for_cases(f, "scatter", [&](const et::json::value& meta, const std::string& p) {
    const std::int64_t dim = meta.at("args").at("dim").as_int();
    for (const auto& xl : layouts(f.get<double>(p + ".in0")))
      check_equal(em::scatter(xl, dim, f.get<std::int64_t>(p + ".in1"), f.get<double>(p + ".in2")),
                  f.get<double>(p + ".out"));
  });
  for_cases(f, "index_add", [&](const et::json::value& meta, const std::string& p) {
    const auto x = f.get<double>(p + ".in0");
    const auto idx = f.get<std::int64_t>(p + ".in1");
    const auto src = f.get<double>(p + ".in2");
    const std::int64_t dim = meta.at("args").at("dim").as_int();
    const double alpha = meta.at("args").at("alpha").as_double();
    for (const auto& xl : layouts(x))
      for (const auto& sl : layouts(src))
        check_close(em::index_add(xl, dim, idx, sl, alpha), f.get<double>(p + ".out"), 1e-12);
  });
}

TEST_CASE("one_hot, masked_fill and masked_select match PyTorch", "[ops][index][oracle]") {
  const auto& f = extra();
  for_cases(f, "one_hot", [&](const et::json::value& meta, const std::string& p) {
    const auto lab = f.get<std::int64_t>(p + ".in0");
    const std::int64_t n = meta.at("args").at("num_classes").as_int();
    for (const auto& l : layouts(lab)) check_equal(em::one_hot(l, n), f.get<std::int64_t>(p + ".out"));
    check_equal(em::one_hot<float>(lab, n), f.get<std::int64_t>(p + ".out").to<float>());
  });
  for_cases(f, "masked_fill", [&](const et::json::value& meta, const std::string& p) {
    const auto x = f.get<double>(p + ".in0");
    const auto m = f.get<bool>(p + ".in1");
    const double v = meta.at("args").at("value").as_double();
    for (const auto& xl : layouts(x)) check_equal(em::masked_fill(xl, m, v), f.get<double>(p + ".out"));
    if (em::broadcastable_to(m.shape(), x.shape())) {
      auto y = x.clone();
      em::masked_fill_(y, m, v);
      check_equal(y, f.get<double>(p + ".out"));
    }
  });
  for_cases(f, "masked_select", [&](const et::json::value&, const std::string& p) {
    const auto x = f.get<double>(p + ".in0");
    for (const auto& xl : layouts(x))
      check_equal(em::masked_select(xl, f.get<bool>(p + ".in1")), f.get<double>(p + ".out"));
    check_equal(em::masked_select(x * 1.0, x > 0.0), em::masked_select(x, (x > 0.0).eval()));
  });
}

TEST_CASE("index ops: small hand-computed cases, every element type", "[ops][index]") {
  const auto x = tv<float>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  check_equal(em::index_select(x, 1, iv({3, 0, 3})), tv<float>({3, 0, 3, 7, 4, 7, 11, 8, 11}, {3, 3}));
  check_equal(em::index_select(x, 0, iv({2}, {})), tv<float>({8, 9, 10, 11}, {1, 4}));  // 0-d index
  check_equal(em::index_select(x, -2, em::from_vector<std::int32_t>({1}, {1})), tv<float>({4, 5, 6, 7}, {1, 4}));
  check_equal(em::index_select(x, 0, em::zeros<std::int64_t>({0})), em::zeros<float>({0, 4}));
  check_equal(em::index_select(em::full<float>({}, 5.f), 0, iv({0})), em::full<float>({}, 5.f));
  check_equal(em::index_select(em::zeros<float>({0, 4}), 1, iv({3, 3})), em::zeros<float>({0, 2}));
  check_equal(em::index_select(x.t(), 0, iv({1})), tv<float>({1, 5, 9}, {1, 3}));
  check_equal(em::index_select(x.to<bool>(), 1, iv({0, 1})), tv<bool>({false, true, true, true, true, true}, {3, 2}));
  check_equal(em::index_select(x.to<em::half>(), 0, iv({1})).to<float>(), tv<float>({4, 5, 6, 7}, {1, 4}));
  check_equal(em::index_select(x.to<std::int8_t>(), 1, iv({2})), tv<std::int8_t>({2, 6, 10}, {3, 1}));

  check_equal(em::gather(x, 1, iv({3, 3, 0, 1}, {2, 2})), tv<float>({3, 3, 4, 5}, {2, 2}));
  check_equal(em::gather(x, 0, iv({2, 0, 1}, {1, 3})), tv<float>({8, 1, 6}, {1, 3}));
  check_equal(em::gather(em::full<double>({}, 2.0), 0, iv({0}, {})), em::full<double>({}, 2.0));
  check_equal(em::gather(x, 1, em::zeros<std::int64_t>({3, 0})), em::zeros<float>({3, 0}));
  check_equal(em::gather(x.to<em::half>(), 1, iv({1}, {1, 1})).to<float>(), tv<float>({1}, {1, 1}));

  // scatter_add: duplicates accumulate; index smaller than src; bool adds as "or"
  const auto z = em::zeros<float>({2, 3});
  check_equal(em::scatter_add(z, 1, iv({0, 0, 2}, {1, 3}), em::ones<float>({2, 4})), tv<float>({2, 0, 1, 0, 0, 0}, {2, 3}));
  check_equal(em::scatter_add(z.to<std::int32_t>(), 0, iv({1, 1}, {2, 1}), em::full<std::int32_t>({2, 1}, 3)),
              tv<std::int32_t>({0, 0, 0, 6, 0, 0}, {2, 3}));
  check_equal(em::scatter_add(em::zeros<bool>({3}), 0, iv({0, 0}), em::ones<bool>({2})), tv<bool>({true, false, false}, {3}));
  check_equal(em::scatter_add(z.to<em::half>(), 1, iv({2}, {1, 1}), em::full<em::half>({1, 1}, 1.5f)).to<float>(),
              tv<float>({0, 0, 1.5f, 0, 0, 0}, {2, 3}));
  check_equal(em::scatter(z, 1, iv({2, 2}, {1, 2}), tv<float>({1, 2}, {1, 2})), tv<float>({0, 0, 2, 0, 0, 0}, {2, 3}));

  // index_add with duplicates and alpha; 0-d index
  check_equal(em::index_add(z, 1, iv({2, 2}), em::ones<float>({2, 2}), 3), tv<float>({0, 0, 6, 0, 0, 6}, {2, 3}));
  check_equal(em::index_add(z, 0, iv({1}, {}), em::ones<float>({1, 3})), tv<float>({0, 0, 0, 1, 1, 1}, {2, 3}));
  check_equal(em::index_add(z.to<std::int64_t>(), 0, iv({1, 1}), em::ones<std::int64_t>({2, 3})),
              tv<std::int64_t>({0, 0, 0, 2, 2, 2}, {2, 3}));

  // embedding: any index shape, 0-d index, int32 indices
  const auto w = tv<double>({0, 1, 10, 11, 20, 21}, {3, 2});
  check_equal(em::embedding(iv({2, 0, 2, 1}, {2, 2}), w), tv<double>({20, 21, 0, 1, 20, 21, 10, 11}, {2, 2, 2}));
  check_equal(em::embedding(iv({1}, {}), w), tv<double>({10, 11}, {2}));
  check_equal(em::embedding(em::from_vector<std::int32_t>({1}, {1}), w), tv<double>({10, 11}, {1, 2}));
  check_equal(em::embedding(em::zeros<std::int64_t>({0, 3}), w), em::zeros<double>({0, 3, 2}));
  check_equal(em::detail::embedding_backward(em::ones<double>({4, 2}), iv({0, 2, 0, 1}), 3, std::int64_t{0}),
              tv<double>({0, 0, 1, 1, 1, 1}, {3, 2}));
  check_equal(em::detail::embedding_backward(em::ones<double>({4, 2}), iv({0, 2, 0, 1}), 3, std::nullopt),
              tv<double>({2, 2, 1, 1, 1, 1}, {3, 2}));

  // one_hot edge cases (as PyTorch)
  check_equal(em::one_hot(iv({2}, {}), 4), iv({0, 0, 1, 0}, {4}));
  check_equal(em::one_hot(em::zeros<std::int64_t>({0}), 3), em::zeros<std::int64_t>({0, 3}));
  check_equal(em::one_hot(iv({1, 3})), iv({0, 1, 0, 0, 0, 0, 0, 1}, {2, 4}));

  // masked ops with bool expressions and other element types
  check_equal(em::masked_fill(x, x > 5.f, -1), tv<float>({0, 1, 2, 3, 4, 5, -1, -1, -1, -1, -1, -1}, {3, 4}));
  check_equal(em::masked_select(x.to<std::int32_t>(), x.to<std::int32_t>() < 3), tv<std::int32_t>({0, 1, 2}, {3}));
  check_equal(em::masked_select(x, em::zeros<bool>({4})), em::zeros<float>({0}));
  check_equal(em::masked_fill(x.to<em::half>(), x > 0.f, 2).to<float>(),
              tv<float>({0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, {3, 4}));
}

TEST_CASE("index ops: in-place variants, aliasing and version counter", "[ops][index]") {
  auto x = tv<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  const auto v0 = x.storage()->version();
  auto r = em::scatter_add_(x, 1, iv({0, 0}, {1, 2}), em::ones<float>({1, 2}));
  CHECK(r.is_same(x));
  CHECK(x.storage()->version() > v0);
  check_equal(x, tv<float>({3, 2, 3, 4, 5, 6}, {2, 3}));
  // src aliases self: reads the old values
  auto y = tv<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  em::scatter_add_(y, 0, iv({1, 1, 1}, {1, 3}), y);
  check_equal(y, tv<float>({1, 2, 3, 5, 7, 9}, {2, 3}));
  auto y2 = tv<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  em::index_add_(y2, 0, iv({0}), y2.slice(0, 1, 2));
  check_equal(y2, tv<float>({5, 7, 9, 4, 5, 6}, {2, 3}));
  // index tensor aliasing an int64 self
  auto s = iv({0, 1, 1});
  em::scatter_add_(s, 0, s, iv({5, 5, 5}));
  check_equal(s, iv({5, 11, 1}));
  // writes through a view
  auto big = em::zeros<float>({3, 4});
  em::index_add_(big.slice(1, 1, 3), 1, iv({1}), em::ones<float>({3, 1}));
  check_equal(big, tv<float>({0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0}, {3, 4}));
  auto m = em::zeros<float>({2, 2});
  em::masked_fill_(m.t(), tv<bool>({true, false}, {2}), 3.f);  // column of m.t() -> row of m
  check_equal(m, tv<float>({3, 3, 0, 0}, {2, 2}));
  // a failed in-place op leaves self unchanged (indices are validated before writing)
  auto k = tv<float>({1, 2, 3}, {3});
  CHECK_THROWS_AS(em::scatter_add_(k, 0, iv({0, 9}), em::ones<float>({2})), em::error);
  check_equal(k, tv<float>({1, 2, 3}, {3}));
}

TEST_CASE("index ops: large inputs take the parallel paths and agree with plain loops", "[ops][index]") {
  em::manual_seed(7);
  const std::int64_t R = 300, C = 257;
  const auto x = em::randn<float>({R, C});
  const auto xt = em::randn<float>({C, R}).t();  // non-contiguous
  const auto rows = em::randint<std::int64_t>(0, R, {400});
  const auto cols = em::randint<std::int64_t>(0, C, {R, 300});
  for (const auto& in : {x, xt}) {
    const auto a = em::index_select(in, 0, rows);
    const auto c = cols.select(0, 0);
    const auto b = em::index_select(in, 1, c);
    bool ok = true;
    for (std::int64_t i = 0; i < 400; i += 7)
      for (std::int64_t j = 0; j < C; j += 5) ok = ok && a.at({i, j}) == in.at({rows.at({i}), j});
    for (std::int64_t i = 0; i < R; i += 7)
      for (std::int64_t j = 0; j < 300; j += 5) ok = ok && b.at({i, j}) == in.at({i, c.at({j})});
    CHECK(ok);
    const auto g = em::gather(in, 1, cols);
    ok = true;
    for (std::int64_t i = 0; i < R; i += 3)
      for (std::int64_t j = 0; j < 300; j += 11) ok = ok && g.at({i, j}) == in.at({i, cols.at({i, j})});
    CHECK(ok);
  }
  // scatter_add of ones counts the indices; index_add along dim 0 (column-parallel path)
  const auto counts = em::scatter_add(em::zeros<float>({R, C}), 1, cols, em::ones<float>({R, 300}));
  CHECK(em::sum(counts).item() == Approx(R * 300));
  std::vector<float> want(static_cast<std::size_t>(C), 0.f);
  for (std::int64_t j = 0; j < 300; ++j) want[static_cast<std::size_t>(cols.at({5, j}))] += 1.f;
  CHECK(vals(counts.select(0, 5)) == want);
  const auto src = em::ones<float>({400, 1000});
  const auto acc = em::index_add(em::zeros<float>({R, 1000}), 0, rows, src);
  std::vector<float> hist(static_cast<std::size_t>(R), 0.f);
  for (std::int64_t i = 0; i < 400; ++i) hist[static_cast<std::size_t>(rows.at({i}))] += 1.f;
  bool ok = true;
  for (std::int64_t i = 0; i < R; ++i) ok = ok && acc.at({i, 999}) == hist[static_cast<std::size_t>(i)] && acc.at({i, 0}) == hist[static_cast<std::size_t>(i)];
  CHECK(ok);
}

TEST_CASE("index ops: bad input is an em::error naming the index, dim and size", "[ops][index][errors]") {
  const auto x = em::zeros<float>({3, 4});
  check_error([&] { em::index_select(x, 0, iv({-1})); }, em::errc::index, {"index -1", "dimension 0", "size 3"});
  check_error([&] { em::index_select(x, 1, iv({4})); }, em::errc::index, {"index 4", "dimension 1", "size 4"});
  check_error([&] { em::index_select(x, 2, iv({0})); }, em::errc::index, {"dimension 2"});
  check_error([&] { em::index_select(x, 0, iv({0}, {1, 1})); }, em::errc::shape, {"vector"});
  check_error([&] { em::index_select(em::zeros<float>({0, 4}), 0, iv({0})); }, em::errc::index, {"size 0"});
  check_error([&] { em::index_select(em::full<float>({}, 1.f), 0, iv({0, 0})); }, em::errc::shape, {"0-d"});
  check_error([&] { em::gather(x, 1, iv({0, 5}, {1, 2})); }, em::errc::index, {"index 5", "dimension 1", "size 4"});
  check_error([&] { em::gather(x, 1, iv({-1}, {1, 1})); }, em::errc::index, {"index -1"});
  check_error([&] { em::gather(x, 1, iv({0}, {1})); }, em::errc::shape, {"same number of dimensions"});
  check_error([&] { em::gather(x, 1, em::zeros<std::int64_t>({4, 1})); }, em::errc::shape, {"(4,1)", "(3,4)"});
  check_error([&] { em::gather(x, -3, iv({0}, {1, 1})); }, em::errc::index, {"dimension -3"});
  check_error([&] { em::scatter_add(x, 1, iv({0, 0}, {1, 2}), em::ones<float>({1, 1})); }, em::errc::shape, {"src"});
  check_error([&] { em::scatter_add(x, 1, iv({7}, {1, 1}), em::ones<float>({1, 1})); }, em::errc::index, {"index 7", "size 4"});
  check_error([&] { em::scatter_add(x, 1, iv({0}, {1}), em::ones<float>({1})); }, em::errc::shape, {"dimensions"});
  check_error([&] { em::scatter_add_(em::zeros<float>({1, 4}).expand({3, 4}), 1, iv({0}, {1, 1}), em::ones<float>({1, 1})); },
              em::errc::value, {"overlap"});
  check_error([&] { em::index_add(x, 0, iv({1}), em::ones<float>({1, 3})); }, em::errc::shape, {"(1,3)", "(1,4)"});
  check_error([&] { em::index_add(x, 0, iv({-1}), em::ones<float>({1, 4})); }, em::errc::index, {"index -1", "size 3"});
  check_error([&] { em::index_add(x, 0, iv({3}), em::ones<float>({1, 4})); }, em::errc::index, {"index 3"});
  check_error([&] { em::embedding(iv({-1}), x); }, em::errc::index, {"index -1", "size 3"});
  check_error([&] { em::embedding(iv({3}), x); }, em::errc::index, {"index 3", "dimension 0", "size 3"});
  check_error([&] { em::embedding(iv({0}), em::zeros<float>({3})); }, em::errc::shape, {"2-D"});
  check_error([&] { F::embedding(iv({0}), x, {.padding_idx = 3}); }, em::errc::index, {"padding_idx 3"});
  check_error([&] { F::embedding(iv({0}), x, {.padding_idx = -4}); }, em::errc::index, {"padding_idx -4"});
  CHECK_NOTHROW(F::embedding(iv({0}), x, {.padding_idx = -3}));
  check_error([&] { em::one_hot(iv({-1})); }, em::errc::index, {"non-negative"});
  check_error([&] { em::one_hot(iv({3}), 3); }, em::errc::index, {"3", "num_classes = 3"});
  check_error([&] { em::one_hot(iv({0}), 0); }, em::errc::index, {"num_classes = 0"});
  check_error([&] { em::one_hot(em::zeros<std::int64_t>({0})); }, em::errc::value, {"empty"});
  check_error([&] { em::one_hot(iv({1}), -2); }, em::errc::value, {"-2"});
  check_error([&] { em::masked_fill(x, em::zeros<bool>({2}), 1.f); }, em::errc::shape, {"(3,4)", "(2)"});
  check_error([&] { em::masked_fill_(x, em::zeros<bool>({2, 3, 4}), 1.f); }, em::errc::shape, {"(2,3,4)"});
  check_error([&] { em::masked_select(x, em::zeros<bool>({3})); }, em::errc::shape, {"(3)"});
}
