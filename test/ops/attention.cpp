// Tests of include/ember/ops/attention.hpp and include/ember/ops/dropout.hpp:
// scaled_dot_product_attention against PyTorch 1.13 (the shared oracle, plus causal, bool and
// float masks, broadcast batch dims, custom scale, a fully masked row (NaN) and rank 5 from
// test/tools/gen_norm_attention_cases.py) and against a long double reference on strided
// inputs spanning several row tiles; dropout statistics, exact scaling, reproducibility
// (manual_seed, thread count), edge probabilities; attention dropout; every error case.
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/ops/attention.hpp>
#include <ember/ops/dropout.hpp>

#include <ember/ops/factory.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace em = ember;
namespace et = ember_test;
namespace F = ember::nn::functional;

namespace {

/// Row-major values of any tensor, read through its strides.
template <class T>
std::vector<double> host(const em::tensor<T>& t) {
  std::vector<double> out;
  if (t.numel() == 0) return out;
  const auto& s = t.shape();
  std::vector<std::int64_t> idx(s.size(), 0);
  for (std::int64_t n = 0; n < t.numel(); ++n) {
    std::int64_t off = 0;
    for (std::size_t d = 0; d < s.size(); ++d) off += idx[d] * t.strides()[d];
    out.push_back(static_cast<double>(t.data()[off]));
    for (std::size_t d = s.size(); d-- > 0;) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/// |got - want| <= tol * (1 + |want|) elementwise (NaN must match NaN).
template <class T>
void check_close(const em::tensor<T>& got, const em::shape& shape, const std::vector<double>& want,
                 double tol) {
  REQUIRE(got.shape() == shape);
  const auto g = host(got);
  REQUIRE(g.size() == want.size());
  int reported = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const bool ok = std::isnan(want[i]) ? std::isnan(g[i])
                                        : std::abs(g[i] - want[i]) <= tol * (1 + std::abs(want[i]));
    if (!ok && reported++ < 5) {
      INFO("element " << i << ": got " << g[i] << ", want " << want[i] << " (tol " << tol << ")");
      CHECK(ok);
    }
  }
  CHECK(reported == 0);
}
template <class T>
void check_close(const em::tensor<T>& got, const em::tensor<T>& want, double tol) {
  check_close(got, want.shape(), host(want), tol);
}

template <class T>
constexpr double oracle_tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;

/// Runs f with n threads, restoring the previous count.
template <class Fn>
auto with_threads(int n, Fn f) {
  const int old = em::get_num_threads();
  em::set_num_threads(n);
  auto r = f();
  em::set_num_threads(old);
  return r;
}

/// Requires that f throws an ember::error of category c whose message contains every part.
template <class Fn>
void require_error(Fn f, em::errc c, std::vector<std::string> parts) {
  try {
    f();
    FAIL("no ember::error thrown");
  } catch (const em::error& e) {
    INFO(e.what());
    CHECK(e.category() == c);
    for (const auto& p : parts) CHECK(std::string(e.what()).find(p) != std::string::npos);
  }
}

/// softmax(q kᵀ scale + mask) v in long double for q (B, L, E), k (B, S, E), v (B, S, Ev) given
/// as row-major values; mask(b, i, j) returns the additive term (-inf to mask).
template <class Mask>
std::vector<double> ref_attention(const std::vector<double>& q, const std::vector<double>& k,
                                  const std::vector<double>& v, std::int64_t B, std::int64_t L,
                                  std::int64_t S, std::int64_t E, std::int64_t Ev, double scale,
                                  Mask mask) {
  std::vector<double> out(static_cast<std::size_t>(B * L * Ev));
  std::vector<long double> p(static_cast<std::size_t>(S));
  auto at = [](const std::vector<double>& a, std::int64_t i) { return a[static_cast<std::size_t>(i)]; };
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < L; ++i) {
      long double mx = -INFINITY;
      for (std::int64_t j = 0; j < S; ++j) {
        long double s = 0;
        for (std::int64_t e = 0; e < E; ++e) s += (long double)at(q, (b * L + i) * E + e) * at(k, (b * S + j) * E + e);
        p[static_cast<std::size_t>(j)] = s * scale + mask(b, i, j);
        mx = std::max(mx, p[static_cast<std::size_t>(j)]);
      }
      long double sum = 0;
      for (auto& x : p) sum += (x = std::exp(x - mx));
      for (std::int64_t d = 0; d < Ev; ++d) {
        long double acc = 0;
        for (std::int64_t j = 0; j < S; ++j) acc += p[static_cast<std::size_t>(j)] / sum * at(v, (b * S + j) * Ev + d);
        out[static_cast<std::size_t>((b * L + i) * Ev + d)] = static_cast<double>(acc);
      }
    }
  return out;
}

const et::st_file& extra_file() {
  static const et::st_file f =
      et::read_safetensors(et::test_data("oracle/ops/norm_attention_extra.safetensors"));
  return f;
}

}  // namespace

// ---- attention: PyTorch oracle -------------------------------------------------------------------
TEMPLATE_TEST_CASE("scaled_dot_product_attention matches the PyTorch oracle", "[attention][oracle]",
                   float, double) {
  using T = TestType;
  const et::st_file f = et::read_safetensors(et::test_data(
      std::string("oracle/ops/") + (std::is_same_v<T, float> ? "f32/" : "") +
      "scaled_dot_product_attention.safetensors"));
  const int cases = std::stoi(f.meta("num_cases"));
  REQUIRE(cases == 3);
  for (int i = 0; i < cases; ++i) {
    const std::string p = "case" + std::to_string(i);
    SECTION(p) {
      const auto q = f.get<T>(p + ".in0"), k = f.get<T>(p + ".in1"), v = f.get<T>(p + ".in2");
      const auto y = f.contains(p + ".in3")
                         ? F::scaled_dot_product_attention(q, k, v, f.get<bool>(p + ".in3"))
                         : F::scaled_dot_product_attention(q, k, v);
      check_close(y, f.get<T>(p + ".out"), oracle_tol<T>);
    }
  }
}

TEMPLATE_TEST_CASE("attention cases generated with PyTorch", "[attention][oracle]", float, double) {
  using T = TestType;
  const auto& f = extra_file();
  const std::string dt = std::is_same_v<T, float> ? "f32" : "f64";
  const int cases = std::stoi(f.meta("sdpa.num_cases"));
  REQUIRE(cases == 9);
  for (int i = 0; i < cases; ++i) {
    const std::string c = "case" + std::to_string(i), p = "sdpa." + dt + "." + c + ".";
    const auto args = et::json::parse(f.meta("sdpa." + c));
    INFO(c << " " << f.meta("sdpa." + c));
    const auto q = f.get<T>(p + "q"), k = f.get<T>(p + "k"), v = f.get<T>(p + "v");
    const F::attention_options o{
        .is_causal = args.at("is_causal").as_bool(),
        .scale = args.at("scale").is_null() ? std::nullopt : std::optional(args.at("scale").as_double())};
    const auto& kind = args.at("mask");
    const em::tensor<T> y = kind.is_null() ? F::scaled_dot_product_attention(q, k, v, o)
                            : kind.as_string() == "bool"
                                ? F::scaled_dot_product_attention(q, k, v, f.get<bool>(p + "mask"), o)
                                : F::scaled_dot_product_attention(q, k, v, f.get<T>(p + "mask"), o);
    check_close(y, f.get<T>(p + "out"), oracle_tol<T>);
  }
}

// ---- attention: semantics ------------------------------------------------------------------------
TEST_CASE("attention on strided inputs over several row tiles matches a long double reference",
          "[attention]") {
  em::manual_seed(21);
  const std::int64_t B = 2, H = 3, L = 130, S = 37, E = 12, Ev = 5;
  // (B, L, H, E) storage viewed as (B, H, L, E), as multi-head attention does after a reshape
  const auto q = em::randn<float>({B, L, H, E}).permute({0, 2, 1, 3});
  const auto k = em::randn<float>({B, S, H, E}).permute({0, 2, 1, 3});
  const auto v = em::randn<float>({B, H, Ev, S}).transpose(2, 3);
  const auto m = em::randn<float>({L, S});
  REQUIRE(!q.is_contiguous());
  const auto hq = host(q), hk = host(k), hv = host(v), hm = host(m);
  const auto want = ref_attention(hq, hk, hv, B * H, L, S, E, Ev, 0.25, [&](std::int64_t, std::int64_t i, std::int64_t j) {
    return static_cast<long double>(hm[static_cast<std::size_t>(i * S + j)]);
  });
  auto run = [&] { return F::scaled_dot_product_attention(q, k, v, m, {.scale = 0.25}); };
  const auto one = with_threads(1, run), two = with_threads(2, run);
  check_close(one, {B, H, L, Ev}, want, 2e-5);
  CHECK(host(one) == host(two));
}

TEST_CASE("attention: causal equals an explicit lower-triangular mask; masks as expressions",
          "[attention]") {
  em::manual_seed(22);
  const auto q = em::randn<double>({2, 9, 4}), k = em::randn<double>({2, 7, 4}),
             v = em::randn<double>({2, 7, 3});
  const auto i = em::arange<std::int64_t>(9).view({9, 1}), j = em::arange<std::int64_t>(7).view({1, 7});
  const em::tensor<bool> tril = i >= j;
  const auto causal = F::scaled_dot_product_attention(q, k, v, {.is_causal = true});
  CHECK(host(causal) == host(F::scaled_dot_product_attention(q, k, v, tril)));
  CHECK(host(causal) == host(F::scaled_dot_product_attention(q, k, v, i >= j)));  // bool expression
  // an additive mask of 0 / -inf is the same as the bool mask
  const em::tensor<double> additive =
      em::where(tril, em::zeros<double>({9, 7}), -std::numeric_limits<double>::infinity());
  CHECK(host(causal) == host(F::scaled_dot_product_attention(q, k, v, additive)));
  // expression operands are evaluated first
  CHECK(host(F::scaled_dot_product_attention(q * 1.0, k + 0.0, v, {.is_causal = true})) == host(causal));
  // default scale is 1/sqrt(E)
  CHECK(host(F::scaled_dot_product_attention(q, k, v, {.scale = 0.5})) ==
        host(F::scaled_dot_product_attention(q, k, v)));
}

TEST_CASE("attention: fully masked rows give NaN, other rows are unaffected", "[attention]") {
  em::manual_seed(23);
  const auto q = em::randn<float>({3, 4}), k = em::randn<float>({5, 4}), v = em::randn<float>({5, 2});
  const auto rows = em::arange<std::int64_t>(3).view({3, 1});
  const em::tensor<bool> mask = (rows != std::int64_t{1}) && (em::zeros<float>({1, 5}) == 0.f);
  const auto r = em::detail::attention_forward(q, k, v, mask, {}, em::default_generator());
  const auto y = host(r.output), w = host(r.weights);
  const auto all = host(F::scaled_dot_product_attention(q, k, v));
  for (std::size_t c = 0; c < 2; ++c) {
    CHECK(std::isnan(y[2 + c]));
    CHECK(y[c] == all[c]);
    CHECK(y[4 + c] == all[4 + c]);
  }
  for (std::size_t c = 0; c < 5; ++c) CHECK(std::isnan(w[5 + c]));
}

TEST_CASE("attention: empty dims", "[attention]") {
  const auto q = em::randn<float>({2, 3, 4});
  SECTION("no keys: zero output") {
    const auto y = F::scaled_dot_product_attention(q, em::zeros<float>({2, 0, 4}), em::zeros<float>({2, 0, 6}));
    REQUIRE(y.shape() == em::shape{2, 3, 6});
    CHECK(host(y) == std::vector<double>(36, 0.0));
  }
  SECTION("no queries, no batch") {
    CHECK(F::scaled_dot_product_attention(em::zeros<float>({2, 0, 4}), em::ones<float>({2, 5, 4}),
                                          em::ones<float>({2, 5, 6})).shape() == em::shape{2, 0, 6});
    CHECK(F::scaled_dot_product_attention(em::zeros<float>({0, 3, 4}), em::ones<float>({0, 5, 4}),
                                          em::ones<float>({0, 5, 6})).shape() == em::shape{0, 3, 6});
  }
}

TEST_CASE("attention dropout drops weights after the softmax, reproducibly", "[attention][dropout]") {
  em::manual_seed(24);
  const auto q = em::randn<double>({2, 40, 8}), k = em::randn<double>({2, 50, 8}),
             v = em::randn<double>({2, 50, 3});
  const double p = 0.3;
  auto run = [&](std::uint64_t seed) {
    em::manual_seed(seed);
    return em::detail::attention_forward(q, k, v, em::tensor<bool>{}, {.dropout_p = p},
                                         em::default_generator());
  };
  const auto r = run(5);
  const auto plain = em::detail::attention_forward(q, k, v, em::tensor<bool>{}, {}, em::default_generator());
  CHECK(!plain.dropout_mask.defined());
  CHECK(host(r.weights) == host(plain.weights));  // weights are saved before dropout
  REQUIRE(r.dropout_mask.shape() == em::shape{2, 40, 50});
  // output = (weights * mask / (1 - p)) @ v
  const auto w = host(r.weights), m = host(r.dropout_mask), hv = host(v);
  std::vector<double> want(2 * 40 * 3);
  double kept = 0;
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t i = 0; i < 40; ++i)
      for (std::int64_t j = 0; j < 50; ++j) {
        const auto wi = static_cast<std::size_t>((b * 40 + i) * 50 + j);
        kept += m[wi];
        for (std::int64_t d = 0; d < 3; ++d)
          want[static_cast<std::size_t>((b * 40 + i) * 3 + d)] +=
              w[wi] * m[wi] * (1 / (1 - p)) * hv[static_cast<std::size_t>((b * 50 + j) * 3 + d)];
      }
  check_close(r.output, {2, 40, 3}, want, 1e-12);
  CHECK(std::abs(kept / 4000 - 0.7) < 5 * std::sqrt(0.21 / 4000));
  const auto again = run(5), other = run(6);
  CHECK(host(again.output) == host(r.output));
  CHECK(host(again.dropout_mask) == m);
  CHECK(host(other.dropout_mask) != m);
  // dropout_p = 1 drops everything
  CHECK(host(F::scaled_dot_product_attention(q, k, v, {.dropout_p = 1.0})) == std::vector<double>(240, 0.0));
}

TEST_CASE("attention errors name the shapes", "[attention][errors]") {
  const auto q = em::zeros<float>({2, 3, 4}), k = em::zeros<float>({2, 5, 4}), v = em::zeros<float>({2, 5, 6});
  require_error([&] { (void)F::scaled_dot_product_attention(em::zeros<float>({4}), k, v); },
                em::errc::shape, {"at least 2 dims", "(4)"});
  require_error([&] { (void)F::scaled_dot_product_attention(q, em::zeros<float>({2, 5, 3}), v); },
                em::errc::shape, {"(2,3,4)", "(2,5,3)"});
  require_error([&] { (void)F::scaled_dot_product_attention(q, k, em::zeros<float>({2, 4, 6})); },
                em::errc::shape, {"(2,5,4)", "(2,4,6)"});
  require_error([&] { (void)F::scaled_dot_product_attention(em::zeros<float>({3, 3, 4}), k, v); },
                em::errc::shape, {"batch dims", "(3,3,4)", "(2,5,4)"});
  require_error([&] { (void)F::scaled_dot_product_attention(q, k, v, em::ones<float>({3, 4}) > 0.f); },
                em::errc::shape, {"mask of shape (3,4)", "(2,3,5)"});
  require_error([&] { (void)F::scaled_dot_product_attention(q, k, v, em::zeros<float>({3, 5}), {.is_causal = true}); },
                em::errc::value, {"is_causal"});
  require_error([&] { (void)F::scaled_dot_product_attention(q, k, v, {.dropout_p = 1.5}); },
                em::errc::value, {"dropout_p", "1.5"});
  require_error([&] { (void)F::scaled_dot_product_attention(q, k, v, {.dropout_p = -0.1}); },
                em::errc::value, {"dropout_p"});
}

// ---- dropout -------------------------------------------------------------------------------------
TEST_CASE("dropout keeps 1-p of the elements and scales them by exactly 1/(1-p)", "[dropout]") {
  const std::int64_t n = 100000;
  for (const double p : {0.1, 0.5, 0.9}) {
    INFO("p = " << p);
    em::manual_seed(31);
    const auto x = em::rand<float>({n});
    const auto y = F::dropout(x, p);
    const auto hx = host(x), hy = host(y);
    const float scale = static_cast<float>(1 / (1 - p));
    std::int64_t kept = 0;
    bool exact = true;
    for (std::size_t i = 0; i < hx.size(); ++i) {
      const bool k = hy[i] != 0 || hx[i] == 0;
      kept += k;
      exact = exact && (k ? hy[i] == static_cast<double>(static_cast<float>(hx[i]) * scale) : hy[i] == 0);
    }
    CHECK(exact);
    const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(n));
    CHECK(std::abs(static_cast<double>(kept) / static_cast<double>(n) - (1 - p)) < 5 * sigma);
  }
}

TEST_CASE("dropout is reproducible with manual_seed and any thread count", "[dropout]") {
  const auto x = em::randn<double>({300, 257});
  auto run = [&](std::uint64_t seed, int threads) {
    return with_threads(threads, [&] {
      em::manual_seed(seed);
      return em::detail::dropout_with_mask(x, 0.4, true, em::default_generator());
    });
  };
  const auto a = run(7, 1), b = run(7, 2), c = run(8, 2);
  CHECK(host(a.output) == host(b.output));
  CHECK(host(a.mask) == host(b.mask));
  CHECK(host(a.mask) != host(c.mask));
  // the output is x * mask / (1 - p), and the draw consumes ceil(n / 4) generator blocks
  check_close(a.output, em::tensor<double>(x * em::cast<double>(a.mask) * (1 / 0.6)), 0);
  em::manual_seed(7);
  (void)F::dropout(x, 0.4);
  CHECK(em::default_generator().offset() == static_cast<std::uint64_t>((300 * 257 + 3) / 4));
  // the global generator: two calls in a row differ, a re-seed repeats them
  em::manual_seed(9);
  const auto d1 = host(F::dropout(x, 0.5)), d2 = host(F::dropout(x, 0.5));
  em::manual_seed(9);
  CHECK(host(F::dropout(x, 0.5)) == d1);
  CHECK(d1 != d2);
}

TEST_CASE("dropout draws follow Note [Dropout draws]", "[dropout]") {
  // element i is kept iff word i % 4 of block start + i / 4 is below round((1 - p) 2^32)
  em::manual_seed(77);
  (void)em::rand<float>({5});  // the draw need not start at block 0
  auto& g = em::default_generator();
  const std::uint64_t start = g.offset();
  const auto x = em::ones<float>({1001});
  const double p = 0.35;
  const auto r = em::detail::dropout_with_mask(x, p, true, g);
  const auto threshold = static_cast<std::uint64_t>(std::llround((1 - p) * 4294967296.0));
  const auto m = host(r.mask);
  bool ok = true;
  for (std::size_t i = 0; i < m.size(); ++i) {
    const auto w = g.block(start + i / 4);
    ok = ok && (m[i] != 0) == (w[i % 4] < threshold);
  }
  CHECK(ok);
  CHECK(g.offset() == start + 251);
  // the batched Philox equals the generator's, block by block
  std::uint32_t words[4 * 16];
  em::detail::philox_words<16>(g.initial_seed(), (std::uint64_t{1} << 32) - 3, words);
  for (std::uint64_t b = 0; b < 16; ++b)
    for (std::size_t j = 0; j < 4; ++j)
      CHECK(words[4 * b + j] == g.block((std::uint64_t{1} << 32) - 3 + b)[j]);
}

TEST_CASE("dropout edge cases and forms", "[dropout]") {
  em::manual_seed(32);
  const auto x = em::randn<float>({6, 5});
  SECTION("p = 0 and eval mode are the identity (the input itself, as PyTorch)") {
    CHECK(F::dropout(x, 0.0).is_same(x));
    CHECK(F::dropout(x, 0.7, false).is_same(x));
    CHECK(F::dropout(x, {.p = 0.7, .training = false}).is_same(x));
    CHECK(!em::detail::dropout_with_mask(x, 0.0, true, em::default_generator()).mask.defined());
  }
  SECTION("p = 1 drops everything") {
    const auto r = em::detail::dropout_with_mask(x, 1.0, true, em::default_generator());
    CHECK(host(r.output) == std::vector<double>(30, 0.0));
    CHECK(host(r.mask) == std::vector<double>(30, 0.0));
  }
  SECTION("options form, expressions and non-contiguous inputs") {
    em::manual_seed(1);
    const auto a = F::dropout(x, 0.25);
    em::manual_seed(1);
    CHECK(host(F::dropout(x, {.p = 0.25})) == host(a));
    em::manual_seed(1);
    CHECK(host(F::dropout(x * 1.f, 0.25)) == host(a));
    const auto xt = x.t();
    em::manual_seed(1);
    const auto r = em::detail::dropout_with_mask(xt, 0.25, true, em::default_generator());
    REQUIRE(r.output.shape() == em::shape{5, 6});
    check_close(r.output, em::tensor<float>(xt * em::cast<float>(r.mask) * (1 / 0.75f)), 0);
    CHECK(F::dropout(em::zeros<float>({0, 3}), 0.5).shape() == em::shape{0, 3});
  }
  SECTION("p outside [0, 1] is an error") {
    for (const double p : {-0.1, 1.01, std::numeric_limits<double>::quiet_NaN()})
      require_error([&] { (void)F::dropout(x, p); }, em::errc::value, {"dropout", "between 0 and 1"});
  }
}
