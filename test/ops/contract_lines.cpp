// The kernel lines of the API contract: "other ops" of ../shared/contract/tensors.cpp and the
// non-loss, non-layer lines of ../shared/contract/functional.cpp, compiled and run through the
// umbrella header, with shapes and a few values checked against hand-computed results.
#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace em = ember;
namespace F = ember::nn::functional;

namespace {

/// Naive x·wᵀ + b in double, for F::linear.
std::vector<double> linear_ref(const em::tensor<float>& x, const em::tensor<float>& w,
                               const em::tensor<float>* b) {
  const std::int64_t n = x.size(0), k = x.size(1), o = w.size(0);
  std::vector<double> y(static_cast<std::size_t>(n * o));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < o; ++j) {
      double s = b ? b->at({j}) : 0.0;
      for (std::int64_t p = 0; p < k; ++p) s += double(x.at({i, p})) * w.at({j, p});
      y[static_cast<std::size_t>(i * o + j)] = s;
    }
  return y;
}

}  // namespace

TEST_CASE("contract: other ops lines compile and run", "[contract][ops]") {
  em::manual_seed(42);
  em::tensor<float> a = em::randn<float>({4, 3});
  const auto mm = em::matmul(a, em::randn<float>({3, 5}));
  CHECK(mm.shape() == em::shape{4, 5});
  auto x3 = em::randn<float>({2, 4, 3}), y3 = em::randn<float>({2, 3, 5});
  CHECK(em::mm(a, a.t()).shape() == em::shape{4, 4});
  CHECK(em::bmm(x3, y3).shape() == em::shape{2, 4, 5});
  CHECK(em::cat({a, a}, 0).shape() == em::shape{8, 3});
  CHECK(em::stack({a, a}, 1).shape() == em::shape{4, 2, 3});
  CHECK(em::split(a, 2, 0).size() == 2);
  CHECK(em::chunk(a, 2, 0).size() == 2);
  auto idx = em::from_vector<std::int64_t>({0, 2, 1, 0, 2, 1, 0, 1}, {4, 2});
  auto src = em::ones<float>({4, 2});
  auto labels = em::from_vector<std::int64_t>({1, 3}, {2});
  const auto sel = em::index_select(a, 0, em::from_vector<std::int64_t>({0, 2}, {2}));
  CHECK(sel.at({1, 2}) == a.at({2, 2}));
  const auto ga = em::gather(a, 1, idx);
  CHECK(ga.at({0, 1}) == a.at({0, 2}));
  const auto sa = em::scatter_add(a, 1, idx, src);
  CHECK(sa.at({0, 0}) == a.at({0, 0}) + 1.f);
  CHECK(em::pad(a, {1, 1}, 0.f).shape() == em::shape{4, 5});
  CHECK(em::tril(a).at({0, 1}) == 0.f);
  CHECK(em::triu(a).at({1, 0}) == 0.f);
  const auto oh = em::one_hot(labels, 10);
  CHECK(oh.shape() == em::shape{2, 10});
  CHECK(oh.at({1, 3}) == 1);
  CHECK(em::cumsum(a, 1).at({3, 2}) == Approx(a.at({3, 0}) + a.at({3, 1}) + a.at({3, 2})));
  auto [values, indices] = em::topk(a, 2, 1);
  CHECK(values.shape() == em::shape{4, 2});
  CHECK(values.at({0, 0}) == em::amax(a, 1).at({0}));
  CHECK(indices.at({0, 0}) == em::argmax(a, 1).at({0}));
  try {
    (void)em::matmul(em::zeros<float>({2, 3}), em::zeros<float>({4, 5}));
    FAIL("matmul of (2,3) by (4,5) must throw");
  } catch (const em::error& err) {
    CHECK(err.category() == em::errc::shape);
    CHECK(std::string(err.what()) == "[ember.shape] matmul: cannot multiply (2,3) by (4,5)");
  }
}

TEST_CASE("contract: functional kernel lines compile and run", "[contract][ops]") {
  em::manual_seed(1);
  auto a = em::randn<float>({4, 3});
  std::vector<float> host(12, 1.f);
  auto t12 = em::from_vector<float>(host, {3, 4});
  CHECK(t12.at({2, 3}) == 1.f);
  em::tensor<std::int64_t> am = em::argmax(a, 1);
  CHECK(am.shape() == em::shape{4});
  auto x2 = em::randn<float>({5, 8}), w2 = em::randn<float>({6, 8}), b6 = em::randn<float>({6});
  {
    const auto y = F::linear(x2, w2);
    const auto yb = F::linear(x2, w2, b6);
    const auto r = linear_ref(x2, w2, nullptr), rb = linear_ref(x2, w2, &b6);
    REQUIRE(y.shape() == em::shape{5, 6});
    for (std::int64_t i = 0; i < 30; ++i) {
      CHECK(y.data()[i] == Approx(r[static_cast<std::size_t>(i)]).margin(1e-5));
      CHECK(yb.data()[i] == Approx(rb[static_cast<std::size_t>(i)]).margin(1e-5));
    }
  }
  auto img = em::randn<float>({2, 4, 8, 8}), cw = em::randn<float>({6, 4, 3, 3});
  CHECK(F::conv2d(img, cw, {.bias = b6, .stride = {2, 2}, .padding = {1, 1}, .dilation = 1, .groups = 1})
            .shape() == em::shape{2, 6, 4, 4});
  CHECK(F::max_pool2d(img, {.kernel = {2, 2}, .stride = {2, 2}, .padding = 0}).shape() ==
        em::shape{2, 4, 4, 4});
  CHECK(F::avg_pool2d(img, {.kernel = 2, .stride = 2, .padding = 0, .count_include_pad = true})
            .shape() == em::shape{2, 4, 4, 4});
  const auto ap = F::adaptive_avg_pool2d(img, {.output_size = 1});
  REQUIRE(ap.shape() == em::shape{2, 4, 1, 1});
  const em::tensor<float> plane_means = em::mean(img, {2, 3});
  for (std::int64_t i = 0; i < 8; ++i) CHECK(ap.data()[i] == Approx(plane_means.data()[i]).margin(1e-6));
  auto rm = em::zeros<float>({4}), rv = em::ones<float>({4}), g4 = em::ones<float>({4}), b4 = em::zeros<float>({4});
  const auto bn = F::batch_norm(img, rm, rv, {.weight = g4, .bias = b4, .training = true, .momentum = 0.1, .eps = 1e-5});
  CHECK(bn.shape() == img.shape());
  // running mean moved 10% of the way to the batch mean of channel 0
  CHECK(rm.at({0}) == Approx(0.1 * em::mean(img.select(1, 0)).item()).margin(1e-6));
  auto seq = em::randn<float>({2, 5, 64}), g64 = em::ones<float>({64}), b64 = em::zeros<float>({64});
  const auto ln = F::layer_norm(seq, {.normalized_shape = {64}, .weight = g64, .bias = b64, .eps = 1e-5});
  CHECK(em::mean(ln, -1).at({1, 4}) == Approx(0.0).margin(1e-5));
  auto emb_w = em::randn<float>({10, 3});
  auto indices = em::from_vector<std::int64_t>({0, 3, 9}, {3});
  const auto emb = F::embedding(indices, emb_w, {.padding_idx = 0});
  CHECK(emb.at({1, 2}) == emb_w.at({3, 2}));
  CHECK(F::softmax(x2, -1).shape() == x2.shape());
  CHECK(F::log_softmax(x2, -1).shape() == x2.shape());
  auto q = em::randn<float>({2, 4, 8}), k = em::randn<float>({2, 4, 8}), v = em::randn<float>({2, 4, 8});
  em::tensor<bool> mask = em::ones<float>({4, 4}) > 0.5f;
  const auto o1 = F::scaled_dot_product_attention(q, k, v);
  const auto o2 = F::scaled_dot_product_attention(q, k, v, mask);
  REQUIRE(o1.shape() == em::shape{2, 4, 8});
  for (std::int64_t i = 0; i < o1.numel(); ++i) CHECK(o2.data()[i] == o1.data()[i]);  // all-true mask
}
