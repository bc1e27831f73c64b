// Tests of include/ember/eval/assign.hpp (and core/parallel.hpp, which it runs on): writing
// expressions into views, in-place operators, shape and overlap errors, aliasing between the
// destination and the expression's leaves, expressions outliving their operands, and bitwise
// reproducibility across thread counts and traversal paths. Expected values are computed here
// in double from the definitions, never taken from ember.
#include <catch2/catch.hpp>

#include <ember/ember.hpp>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace em = ember;
using Catch::Matchers::Contains;

namespace {

/// Row-major element list read straight from storage with the tensor's offset and strides.
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

/// Values 0, 1, ..., numel-1 (times `scale`) with shape s.
template <class T = float>
em::tensor<T> seq(const em::shape& s, double scale = 1) {
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(static_cast<double>(i) * scale);
  return em::from_vector<T>(v, s);
}

/// Same sizes, every element within rel * (1 + |want|).
template <class T>
bool close(const std::vector<T>& got, const std::vector<double>& want, double rel = 2e-6) {
  if (got.size() != want.size()) return false;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= rel * (1 + std::fabs(want[i])))) return false;
  return true;
}

/// Bitwise equality of two float tensors' elements (NaNs included).
template <class T>
bool same_bits(const em::tensor<T>& a, const em::tensor<T>& b) {
  const auto va = values(a), vb = values(b);
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(T)) == 0;
}

/// Note [Contraction]: with FMA in the instruction set (__FMA__, e.g. -march=native) GCC's
/// default -ffp-contract=fast may fuse a * b + c in one traversal loop and not in another, so
/// there the paths agree to rounding rather than bitwise (-ffp-contract=off restores bitwise
/// identity; the default x86-64 build has no FMA and is checked bitwise).
template <class T>
bool same_across_paths(const em::tensor<T>& a, const em::tensor<T>& b) {
#if defined(__FMA__)
  const auto va = values(a), vb = values(b);
  if (va.size() != vb.size()) return false;
  for (std::size_t i = 0; i < va.size(); ++i)
    if (!(std::fabs(double(va[i]) - double(vb[i])) <= 16 * std::numeric_limits<T>::epsilon() * (1 + std::fabs(double(va[i])))))
      return false;
  return true;
#else
  return same_bits(a, b);
#endif
}

/// Restores the thread count when a test ends (even by an exception).
struct threads_guard {
  int saved = em::get_num_threads();
  ~threads_guard() { em::set_num_threads(saved); }
};

double gelu_tanh_ref(double x) {
  return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

}  // namespace

/// Expects `expr` to throw ember::error of category `cat` whose message contains each part.
#define CHECK_EMBER_ERROR(expr, cat, ...)                    \
  do {                                                       \
    bool thrown_ = false;                                    \
    try {                                                    \
      (void)(expr);                                          \
    } catch (const em::error& e_) {                          \
      thrown_ = true;                                        \
      CHECK(e_.category() == (cat));                         \
      for (const char* part_ : {__VA_ARGS__})                \
        CHECK_THAT(std::string(e_.what()), Contains(part_)); \
    }                                                        \
    CHECK(thrown_);                                          \
  } while (0)

TEST_CASE("copy_ of an expression writes into a view only", "[assign]") {
  auto t = seq({3, 5});  // [[0..4], [5..9], [10..14]]
  const auto x = seq({3, 2}, 0.5);
  auto v = t.slice(1, 0, 4, 2);  // columns 0 and 2
  CHECK(v.shape() == em::shape{3, 2});
  v.copy_(em::exp(x) + 1.f);
  std::vector<double> want;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j)
      want.push_back(j % 2 == 0 && j < 4 ? std::exp(0.5 * (i * 2 + j / 2)) + 1 : i * 5 + j);
  CHECK(close(values(t), want));

  // broadcasting a smaller expression into a bigger destination: a row, a column, a 0-d
  auto d = em::zeros<double>({4, 3});
  d.copy_(em::from_vector<double>({1, 2, 3}) * 2);
  CHECK(values(d) == std::vector<double>{2, 4, 6, 2, 4, 6, 2, 4, 6, 2, 4, 6});
  d.copy_(em::from_vector<double>({1, 2, 3, 4}, {4, 1}) - 1);
  CHECK(values(d) == std::vector<double>{0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3});
  d.t().slice(0, 1, 2).copy_(em::from_vector<double>({7}, em::shape{}) + 0.5);  // column 1 of d
  CHECK(values(d) == std::vector<double>{0, 7.5, 0, 1, 7.5, 1, 2, 7.5, 2, 3, 7.5, 3});
  // an expression reading other views, written through a transposed destination
  auto dst = em::zeros<float>({3, 4});
  const auto src = seq({4, 3});
  dst.t().copy_(src * src);
  std::vector<double> w2;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) w2.push_back(double(j * 3 + i) * (j * 3 + i));
  CHECK(close(values(dst), w2, 0));
}

TEST_CASE("in-place operators with tensors, expressions and scalars, on views", "[assign]") {
  auto t = seq({3, 5});
  auto v = t.slice(1, 1, 5, 2);  // columns 1 and 3
  std::vector<double> want;
  for (int i = 0; i < 15; ++i) want.push_back(i);
  auto apply = [&](auto f) {
    for (int i = 0; i < 3; ++i)
      for (int j : {1, 3}) want[i * 5 + j] = f(want[i * 5 + j], i, j);
  };
  v += em::from_vector<float>({100, 200}, {1, 2});  // tensor, broadcast over rows
  apply([](double w, int, int j) { return w + (j == 1 ? 100 : 200); });
  CHECK(close(values(t), want));
  v -= em::sqrt(em::from_vector<float>({4, 9, 16}, {3, 1}));  // expression
  apply([](double w, int i, int) { return w - (i + 2); });
  CHECK(close(values(t), want));
  v *= 3;  // int scalar
  apply([](double w, int, int) { return w * 3; });
  CHECK(close(values(t), want));
  v /= 0.5;  // double scalar
  apply([](double w, int, int) { return w / 0.5; });
  CHECK(close(values(t), want));
  v += 1.5f;
  v -= 0.25;
  apply([](double w, int, int) { return w + 1.25; });
  CHECK(close(values(t), want));
  // on a transposed view, with an expression of other tensors
  auto m = seq<double>({2, 3});
  m.t() *= em::from_vector<double>({1, 10}, {1, 2}) + em::from_vector<double>({0, 0, 1}, {3, 1});
  CHECK(values(m) == std::vector<double>{0, 1, 4, 30, 40, 55});
  // integer tensors (the scalar path)
  auto k = em::from_vector<std::int64_t>({1, 2, 3, 4});
  k.slice(0, 0, 4, 2) += 10;
  k *= em::from_vector<std::int64_t>({2, 2, 3, 3});
  CHECK(values(k) == std::vector<std::int64_t>{22, 4, 39, 12});
}

TEST_CASE("assignment errors: shapes and overlapping destinations", "[assign]") {
  auto dst = em::zeros<float>({3, 4});
  CHECK_EMBER_ERROR(dst.copy_(em::exp(em::zeros<float>({5}))), em::errc::shape, "copy_", "(5)", "(3,4)");
  CHECK_EMBER_ERROR(dst.copy_(em::zeros<float>({2, 3, 4}) + 1.f), em::errc::shape, "(2,3,4)", "(3,4)");
  CHECK_EMBER_ERROR(dst += em::zeros<float>({2, 3, 4}), em::errc::shape, "(2,3,4)", "(3,4)");
  CHECK_EMBER_ERROR(dst -= em::zeros<float>({4, 3}), em::errc::shape, "(3,4)", "(4,3)");
  auto col = em::zeros<float>({3, 1});
  CHECK_EMBER_ERROR(col *= em::ones<float>({3, 4}), em::errc::shape, "(3,4)", "(3,1)");
  CHECK(values(dst) == std::vector<float>(12, 0.f));  // nothing was written
  // an expanded destination would write one element many times
  auto e = em::zeros<float>({1, 4}).expand({3, 4});
  CHECK_EMBER_ERROR(e.copy_(em::exp(em::ones<float>({3, 4}))), em::errc::value, "overlap");
  CHECK_EMBER_ERROR(e += 1.f, em::errc::value, "overlap");
  // a size-1 dimension with stride 0 is fine (nothing is written twice)
  auto one = em::zeros<float>({4}).expand({1, 4});
  one += 2.f;
  CHECK(values(one) == std::vector<float>{2, 2, 2, 2});
}

TEST_CASE("aliasing: the destination is read by the expression", "[assign][alias]") {
  SECTION("a.copy_(a.t() + 1) gives the transpose of the original plus 1") {
    for (std::int64_t n : {5, 64, 300}) {  // 300x300 is split over threads
      CAPTURE(n);
      auto a = seq({n, n});
      a.copy_(a.t() + 1.f);
      std::vector<double> want;
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < n; ++j) want.push_back(double(j * n + i) + 1);
      CHECK(close(values(a), want, 0));
    }
  }
  SECTION("a.copy_(a[0] + a) broadcasts the original first row") {
    auto a = seq<double>({4, 6});
    a.copy_(a[0] + a);
    std::vector<double> want;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 6; ++j) want.push_back(j + (i * 6 + j));
    CHECK(values(a) == want);
  }
  SECTION("shifted overlapping slices, both directions") {
    const std::int64_t n = 1001;
    auto x = seq({n});
    x.slice(0, 1, n).copy_(x.slice(0, 0, n - 1) * 2.f);
    std::vector<double> want{0};
    for (std::int64_t i = 1; i < n; ++i) want.push_back(2.0 * double(i - 1));
    CHECK(close(values(x), want, 0));
    auto y = seq({n});
    y.slice(0, 0, n - 1).copy_(y.slice(0, 1, n) * 2.f + y.slice(0, 0, n - 1));
    want.clear();
    for (std::int64_t i = 0; i + 1 < n; ++i) want.push_back(2.0 * double(i + 1) + double(i));
    want.push_back(double(n - 1));
    CHECK(close(values(y), want, 0));
  }
  SECTION("in-place operators reading the destination through another view") {
    auto a = seq({3, 3});
    a += a.t();
    CHECK(values(a) == std::vector<float>{0, 4, 8, 4, 8, 12, 8, 12, 16});
    auto b = seq({2, 4});
    b *= b;  // the same layout: no temporary needed, still right
    CHECK(values(b) == std::vector<float>{0, 1, 4, 9, 16, 25, 36, 49});
    auto c = seq({6});
    c.slice(0, 0, 6, 2) -= c.slice(0, 1, 6, 2) * 10.f;  // interleaved, disjoint elements
    CHECK(values(c) == std::vector<float>{-10, 1, -28, 3, -46, 5});
    auto d = seq({2, 3});
    d.slice(1, 1, 3) += em::exp(d.slice(1, 0, 2) * 0.f);  // d[:,1:] += 1 reading d[:,:2]
    CHECK(values(d) == std::vector<float>{0, 2, 3, 3, 5, 6});
  }
}

TEST_CASE("writes bump the storage version", "[assign]") {
  auto t = seq({4, 4});
  const auto& st = t.storage();
  auto v0 = st->version();
  t.copy_(t * 2.f);
  CHECK(st->version() > v0);
  v0 = st->version();
  t.slice(0, 1, 3) += 1.f;  // through a view: the shared storage's counter
  CHECK(st->version() > v0);
  v0 = st->version();
  t.copy_(t.t() - 1.f);  // aliased: through a temporary
  CHECK(st->version() > v0);
  v0 = st->version();
  t /= em::ones<float>({4});
  CHECK(st->version() > v0);
  const auto other = seq({4});
  const auto ov = other.storage()->version();
  t.copy_(other + 1.f);  // sources are not written
  CHECK(other.storage()->version() == ov);
}

TEST_CASE("expressions hold their operands: no dangling", "[assign][dangling]") {
  em::manual_seed(20240611);
  auto e = em::exp(em::randn<float>({3}) + 1.f);  // the randn tensor is a temporary
  auto make_expr = [] {
    const auto a = em::full<float>({5}, 0.25f);
    const auto b = em::from_vector<float>({1, 2, 3, 4, 5});
    return a * b + em::sin(b);  // a and b die here
  };
  auto e2 = make_expr();
  // churn the caching allocator so freed blocks of these sizes are handed out again
  std::vector<em::tensor<float>> keep;
  for (int i = 0; i < 64; ++i) {
    auto junk = em::full<float>({3}, 1e6f);
    keep.push_back(em::full<float>({i % 2 ? 3 : 5}, -7.f));
    auto junk2 = em::full<float>({5}, 123.f);
  }
  em::tensor<float> r = e;
  em::tensor<float> r2 = e2;
  em::manual_seed(20240611);
  const auto x = values(em::randn<float>({3}));  // the same draws again
  std::vector<double> want;
  for (float v : x) want.push_back(std::exp(double(v) + 1));
  CHECK(close(values(r), want));
  CHECK(close(values(e.eval()), want));  // evaluating twice gives the same
  want.clear();
  for (int i = 1; i <= 5; ++i) want.push_back(0.25 * i + std::sin(double(i)));
  CHECK(close(values(r2), want));
  for (const auto& k : keep) CHECK(values(k)[0] == -7.f);  // and nothing was overwritten
}

TEST_CASE("results are bitwise identical for any thread count", "[assign][threads]") {
  threads_guard guard;
  // sizes that split unevenly into 4 tasks of at least elementwise_grain (32768) elements:
  // 200003 elements (6 grains), and 401 x 399 (4 grains); 1000003 and 1001 x 999 took 34 s of
  // the sanitized run for no more coverage
  const std::int64_t n = 200003;
  em::manual_seed(7);
  const auto x = em::randn<float>({n});
  const auto a = em::from_vector<float>({1.25f}, em::shape{});  // 0-d
  const auto b = em::from_vector<float>({-0.5f}, {1});  // broadcast (1)
  const auto xm = em::randn<float>({401, 399});
  const auto row = em::randn<float>({399});
  const auto colv = em::randn<float>({401, 1});
  std::vector<em::tensor<float>> r1, r2, r3;
  for (int threads : {1, 2, 3, 4}) {
    em::set_num_threads(threads);
    CHECK(em::get_num_threads() == threads);
    r1.push_back(em::gelu_tanh(a * x + b));
    r2.push_back(em::exp(xm * row) - colv / (1.f + em::abs(xm)));
    auto d = em::empty<float>({399, 401});  // written through a transposed destination
    d.t().copy_(em::sigmoid(xm.t().t() + colv));
    r3.push_back(d);
  }
  for (std::size_t k = 1; k < r1.size(); ++k) {
    CAPTURE(k + 1);
    CHECK(same_bits(r1[0], r1[k]));
    CHECK(same_bits(r2[0], r2[k]));
    CHECK(same_bits(r3[0], r3[k]));
  }
  // and the values are right (sanity against the definition)
  const auto vx = values(x), vr = values(r1[0]);
  std::vector<double> want;
  for (float v : vx) want.push_back(gelu_tanh_ref(double(1.25f * v - 0.5f)));
  CHECK(close(vr, want, 4e-6));
}

TEST_CASE("every traversal path computes the same bits", "[assign][threads]") {
  // contiguous (unit), broadcast rows (bcast) and strided (gather) operands share the SIMD
  // math, so they compute the same bits (but see Note [Contraction])
  const std::int64_t m = 37, n = 45;  // neither a multiple of the SIMD width
  em::manual_seed(11);
  const auto x = em::randn<float>({m, n}) * 3.f;
  em::tensor<float> xt_c = em::empty<float>({n, m});
  xt_c.t().copy_(x);  // xt_c.t() holds x's values with transposed strides
  const auto xt = xt_c.t();
  CHECK(!xt.is_contiguous());
  CHECK(values(xt) == values(em::tensor<float>(x)));
  auto f = [](const auto& v) { return em::gelu_tanh(v * 1.5f + 0.25f) + em::exp(v) * em::sin(v) - em::erf(v); };
  const em::tensor<float> y_unit = f(x), y_gather = f(xt);
  CHECK(same_across_paths(y_unit, y_gather));
  const auto xs = em::randn<float>({m, 2 * n}).slice(1, 0, 2 * n, 2);  // stepped
  const em::tensor<float> xs_c = xs.clone();
  CHECK(same_across_paths(em::tensor<float>(f(xs)), em::tensor<float>(f(xs_c))));
  // a broadcast row (stride 0, hoisted) against the same row materialized
  const auto row = em::randn<float>({1, n});
  const em::tensor<float> row_full = row.expand({m, n}).clone();
  CHECK(same_across_paths(em::tensor<float>(em::tanh(x) * row), em::tensor<float>(em::tanh(x) * row_full)));
  // double too
  const auto xd = em::randn<double>({m, n});
  em::tensor<double> xd_t = em::empty<double>({n, m});
  xd_t.t().copy_(xd);
  CHECK(same_across_paths(em::tensor<double>(em::exp(xd) + em::tanh(xd)), em::tensor<double>(em::exp(xd_t.t()) + em::tanh(xd_t.t()))));
}

TEST_CASE("dense operands take the flat path and compute the row traversal's bits", "[assign][threads]") {
  // Note [Dense operands]: same-shape contiguous operands skip coalescing and the row odometer;
  // the packets and the task cuts are the row traversal's, so the values are the same bits
  threads_guard guard;
  em::manual_seed(13);
  auto f = [](const auto& x, const auto& y) { return em::exp(x) * y + em::tanh(x * 0.5f) - 2.f; };
  // the last size splits into 2 tasks of elementwise_grain (32768) elements and more (999999
  // took 37 s of the sanitized run, for no more coverage)
  for (const std::int64_t n : {1, 3, 8, 15, 16, 17, 63, 64, 65, 199999}) {
    for (int threads : {1, 2}) {
      em::set_num_threads(threads);
      INFO("n = " << n << ", threads = " << threads);
      const auto x = em::randn<float>({n}), y = em::randn<float>({n});
      const em::tensor<float> dense = f(x, y);
      // the same values through a strided destination (the gather loop)
      auto z = em::empty<float>({n, 2});
      auto dst = z.select(1, 1);
      dst.copy_(f(x, y));
      CHECK(values(dense) == values(dst));
      // and rows of a wider buffer (the unit loop, one row at a time) against their clone
      const std::int64_t r = n > 64 ? 27 : 2, c = n > 64 ? n / 27 : n;  // 27 rows of 7407
      const auto xv = em::randn<float>({r, c + 3}).slice(1, 0, c);
      const auto yv = em::randn<float>({r, c});
      CHECK(!xv.is_contiguous());
      const em::tensor<float> rows = f(xv, yv), rows_dense = f(xv.clone(), yv);
      CHECK(values(rows) == values(rows_dense));
      // every element against the definition
      const auto vx = values(x), vy = values(y), vd = values(dense);
      for (std::size_t i = 0; i < vx.size(); i += 997) {
        const double want = std::exp(double(vx[i])) * vy[i] + std::tanh(double(vx[i]) * 0.5) - 2.0;
        CHECK(vd[i] == Approx(want).epsilon(1e-5).margin(1e-5));
      }
    }
  }
  // an empty tensor writes nothing
  const auto e = em::empty<float>({0});
  CHECK(em::tensor<float>(e + e).numel() == 0);
}

TEST_CASE("streaming stores write the same bits as plain stores", "[assign][threads]") {
  // Note [Streaming stores]: above a size threshold (the last-level cache), dense assignments
  // into a 64-byte-aligned output store with non-temporal stores; here the threshold is lowered
  // so that a small case takes that path, and compared with the plain stores' result
  threads_guard guard;
  auto& min_bytes = em::detail::stream_store_min_bytes();
  const std::int64_t saved = min_bytes.load();
  struct restore {
    std::atomic<std::int64_t>& v;
    std::int64_t old;
    ~restore() { v = old; }
  } restore_threshold{min_bytes, saved};
  CHECK(saved == (std::int64_t{32} << 20));  // the default
  em::manual_seed(17);
  for (const std::int64_t n : {std::int64_t{100003}, std::int64_t{70000}}) {
    const auto x = em::randn<float>({n}), x2 = em::randn<float>({n});
    const auto xd = em::randn<double>({n});
    // f(x): every leaf reads x (the shared loop, Note [Shared leaves]); f(x) + x2: the unit loop
    auto f = [](const auto& v) { return em::gelu_tanh(v) * 0.5f + em::exp(-v * v); };
    auto fd = [](const auto& v) { return em::tanh(v) * v + 2.0; };
    for (int threads : {1, 2}) {
      em::set_num_threads(threads);
      INFO("n = " << n << ", threads = " << threads);
      min_bytes = std::int64_t{1} << 62;  // plain stores
      const em::tensor<float> plain = f(x), plain_two = f(x) + x2;
      const em::tensor<double> plain_d = fd(xd);
      min_bytes = 0;  // stream every aligned output
      const em::tensor<float> streamed = f(x), streamed_two = f(x) + x2;
      const em::tensor<double> streamed_d = fd(xd);
      CHECK(reinterpret_cast<std::uintptr_t>(streamed.data()) % 64 == 0);  // it took the path
      CHECK(same_bits(plain, streamed));
      CHECK(same_bits(plain_two, streamed_two));
      CHECK(same_bits(plain_d, streamed_d));
      // an output view one element in (not 64-byte aligned: plain stores) and in place
      auto buf = em::zeros<float>({n + 1});
      auto view = buf.slice(0, 1, n + 1);
      view.copy_(f(x));
      CHECK(values(view) == values(plain));
      CHECK(buf.data()[0] == 0.f);
      auto y = x.clone();
      y.copy_(f(y));
      CHECK(values(y) == values(plain));
    }
  }
}

TEST_CASE("one tensor used several times: shared loads give the same bits", "[assign][reduce]") {
  // Note [Shared leaves]: x * x loads each packet once; a clone y of x takes the per-leaf path
  em::manual_seed(12);
  for (const std::int64_t n : {1, 15, 16, 17, 100, 70001}) {
    INFO("n = " << n);
    const auto x = em::randn<float>({n});
    const em::tensor<float> y = x.clone();
    auto f = [](const auto& a, const auto& b) { return 0.5f * a * (1.f + em::tanh(0.79788456f * (b + 0.044715f * a * b * a))); };
    const em::tensor<float> shared = f(x, x), separate = f(x, y);
    CHECK(values(shared) == values(separate));
    CHECK(std::memcmp(em::sum(x * x).data(), em::sum(x * y).data(), sizeof(float)) == 0);
    CHECK(em::amax(x * x - x).item() == em::amax(x * y - y).item());
  }
  // same buffer, different views: not shared, still right
  const auto m = em::randn<float>({40, 40});
  const em::tensor<float> mt = m + m.t();
  for (std::int64_t i = 0; i < 40; ++i)
    for (std::int64_t j = 0; j < 40; ++j) CHECK(mt.at({i, j}) == m.at({i, j}) + m.at({j, i}));
  const auto s = em::sum(m * m.t());
  double want = 0;
  for (std::int64_t i = 0; i < 40; ++i)
    for (std::int64_t j = 0; j < 40; ++j) want += double(m.at({i, j})) * m.at({j, i});
  CHECK(s.item() == Approx(want).epsilon(1e-5));
}

TEST_CASE("parallel_for covers every index exactly once", "[parallel]") {
  threads_guard guard;
  for (int threads : {1, 2, 4}) {
    em::set_num_threads(threads);
    for (auto range : {std::pair<std::int64_t, std::int64_t>{0, 0}, {5, 5}, {7, 3}, {0, 1}, {3, 1000},
                       {-50, 50}, {0, 100003}}) {
      const std::int64_t b = range.first, e = range.second;  // captured below: not a binding
      for (std::int64_t grain : {std::int64_t{0}, std::int64_t{1}, std::int64_t{7}, std::int64_t{1000},
                                 std::int64_t{1} << 30}) {
        CAPTURE(threads, b, e, grain);
        const std::int64_t len = std::max<std::int64_t>(0, e - b);
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(len));
        std::atomic<int> calls{0}, bad{0};
        em::parallel_for(b, e, grain, [&](std::int64_t lo, std::int64_t hi) {
          ++calls;
          if (!(b <= lo && lo < hi && hi <= e)) ++bad;
          for (std::int64_t i = lo; i < hi && lo >= b && hi <= e; ++i) ++hits[static_cast<std::size_t>(i - b)];
        });
        CHECK(bad == 0);
        int wrong = 0;
        for (auto& h : hits) wrong += h != 1;
        CHECK(wrong == 0);
        if (len == 0) CHECK(calls == 0);
        if (grain >= len && len > 0) CHECK(calls == 1);  // one chunk is not split
      }
    }
  }
  // a parallel_for inside a task runs inline and still covers its range
  em::set_num_threads(4);
  std::vector<std::atomic<int>> hits(64 * 64);
  em::parallel_for(0, 64, 1, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i)
      em::parallel_for(0, 64, 1, [&](std::int64_t l2, std::int64_t h2) {
        for (std::int64_t j = l2; j < h2; ++j) ++hits[static_cast<std::size_t>(i * 64 + j)];
      });
  });
  int wrong = 0;
  for (auto& h : hits) wrong += h != 1;
  CHECK(wrong == 0);
}

namespace {
struct task_failure {
  int code;
};
}  // namespace

TEST_CASE("an exception thrown in a parallel task propagates unchanged", "[parallel]") {
  threads_guard guard;
  for (int threads : {1, 3, 4}) {
    em::set_num_threads(threads);
    CAPTURE(threads);
    bool caught = false;
    try {
      em::parallel_for(0, 1000, 1, [](std::int64_t lo, std::int64_t hi) {
        if (lo <= 500 && 500 < hi) throw task_failure{42};
      });
    } catch (const task_failure& f) {
      caught = true;
      CHECK(f.code == 42);
    }
    CHECK(caught);
    try {
      em::parallel_for(0, 1000, 1, [](std::int64_t lo, std::int64_t) {
        if (lo == 0) throw std::out_of_range("first chunk failed");
      });
      FAIL("no exception");
    } catch (const std::out_of_range& err) {
      CHECK(std::string(err.what()) == "first chunk failed");
    }
    CHECK_THROWS_AS(em::parallel_for(0, 100, 1, [](std::int64_t, std::int64_t) {
                      em::detail::fail(em::errc::value, "inside a task");
                    }),
                    em::error);
    // the pool still works afterwards
    std::atomic<std::int64_t> sum{0};
    em::parallel_for(0, 1000, 1, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) sum += i;
    });
    CHECK(sum == 999 * 1000 / 2);
  }
}
