// Tests of include/ember/data/dataset.hpp: tensor_dataset (CTAD over mixed element types,
// views, get_batch == stacked rows, shape errors), subset, random_split and the permutation
// behind shuffling (a permutation, uniform over the 3! orders within statistical bounds).
#include <ember/data/dataset.hpp>
#include <ember/ops/factory.hpp>
#include <ember/ops/join.hpp>

#include <catch2/catch.hpp>
#include <support/errors.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <set>
#include <vector>

namespace em = ember;
using ember_test::error_of;
using ember_test::message_of;

namespace {

template <class T>
std::vector<T> values(const em::tensor<T>& t) {
  const auto c = t.contiguous();
  return std::vector<T>(c.data(), c.data() + c.numel());
}

/// images row i = i*100 + column, labels i % 10: every value says where it came from.
em::tensor<float> images(std::int64_t n, std::int64_t d) {
  std::vector<float> v;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) v.push_back(static_cast<float>(i * 100 + j));
  return em::from_vector<float>(v, {n, d});
}

struct squares {
  std::int64_t size() const { return 10; }
  std::tuple<float, std::int64_t> get(std::int64_t i) const { return {float(i * i), i}; }
};

}  // namespace

static_assert(em::data::dataset<squares>);
static_assert(!em::data::batch_dataset<squares>);
static_assert(em::data::batch_dataset<em::data::tensor_dataset<float, std::int64_t>>);
static_assert(std::is_same_v<em::data::example_t<squares>, std::tuple<float, std::int64_t>>);

TEST_CASE("tensor_dataset: CTAD over element types, rows as views", "[dataset]") {
  const auto x = images(100, 64);
  const auto y = em::arange<std::int64_t>(0, 100);
  em::data::tensor_dataset ds(x, y);
  static_assert(std::is_same_v<decltype(ds), em::data::tensor_dataset<float, std::int64_t>>);
  CHECK(ds.size() == 100);
  auto [xi, yi] = ds.get(7);
  CHECK(xi.shape() == em::shape{64});
  CHECK(yi.dim() == 0);
  CHECK(yi.item() == 7);
  CHECK(xi.at({3}) == 703.f);
  CHECK(xi.storage() == x.storage());  // a view, not a copy
  // three tensors of three element types
  em::data::tensor_dataset three(em::zeros<double>({5, 2, 2}), em::ones<bool>({5}),
                                 em::arange<std::int32_t>(0, 5));
  CHECK(std::get<2>(three.get(4)).item() == 4);
  CHECK(std::get<0>(three.get(0)).shape() == em::shape{2, 2});
  CHECK(error_of([&] { ds.get(100); }) == em::errc::index);
  CHECK(error_of([&] { ds.get(-1); }) == em::errc::index);
}

TEST_CASE("tensor_dataset: get_batch gathers the same rows as stacking get", "[dataset]") {
  em::data::tensor_dataset ds(images(20, 3), em::arange<std::int64_t>(0, 20));
  const std::vector<std::int64_t> idx = {5, 0, 19, 5, 7};
  auto [xb, yb] = ds.get_batch(idx);
  std::vector<em::tensor<float>> rows;
  for (auto i : idx) rows.push_back(std::get<0>(ds.get(i)));
  CHECK(xb.shape() == em::shape{5, 3});
  CHECK(values(xb) == values(em::stack(rows, 0)));
  CHECK(values(yb) == idx);
  CHECK(xb.storage() != std::get<0>(ds.tensors()).storage());  // a new tensor
  const std::vector<std::int64_t> bad = {1, 20};
  CHECK_THAT(message_of([&] { ds.get_batch(bad); }),
             Catch::Contains("[ember.index]") && Catch::Contains("index 20 is out of range"));
}

TEST_CASE("tensor_dataset: tensors must share dimension 0", "[dataset]") {
  CHECK_THAT(message_of([] { em::data::tensor_dataset(em::zeros<float>({100, 64}),
                                                      em::zeros<std::int64_t>({99})); }),
             Catch::Contains("[ember.shape]") && Catch::Contains("(100,64), (99)"));
  CHECK(error_of([] { em::data::tensor_dataset(em::zeros<float>({})); }) == em::errc::shape);
  CHECK(error_of([] { em::data::tensor_dataset(em::zeros<float>({2}), em::tensor<float>()); }) ==
        em::errc::shape);
}

TEST_CASE("subset and random_split", "[dataset]") {
  em::data::tensor_dataset ds(images(10, 2), em::arange<std::int64_t>(0, 10));
  em::data::subset sub(ds, {9, 2, 4});
  static_assert(std::is_same_v<decltype(sub), em::data::subset<decltype(ds)&>>);
  CHECK(sub.size() == 3);
  CHECK(std::get<1>(sub.get(0)).item() == 9);
  const std::vector<std::int64_t> idx = {2, 0};
  CHECK(values(std::get<1>(sub.get_batch(idx))) == std::vector<std::int64_t>{4, 9});
  CHECK(error_of([&] { sub.get(3); }) == em::errc::index);
  CHECK(error_of([&] { em::data::subset(ds, {10}); }) == em::errc::index);
  // a subset of a plain dataset (no get_batch)
  em::data::subset sq(squares{}, {3});
  CHECK(std::get<0>(sq.get(0)) == 9.f);

  em::manual_seed(3);
  auto parts = em::data::random_split(ds, {7, 3});
  REQUIRE(parts.size() == 2);
  CHECK(parts[0].size() == 7);
  CHECK(parts[1].size() == 3);
  std::set<std::int64_t> seen;
  for (const auto& p : parts)
    for (auto i : p.indices()) seen.insert(i);
  CHECK(seen.size() == 10);  // disjoint and covering
  em::manual_seed(3);
  CHECK(em::data::random_split(ds, {7, 3})[0].indices() == parts[0].indices());
  em::generator g(11), h(11);
  CHECK(em::data::random_split(squares{}, {5, 5}, g)[1].indices() ==
        em::data::random_split(squares{}, {5, 5}, h)[1].indices());
  CHECK(error_of([&] { em::data::random_split(ds, {7, 4}); }) == em::errc::value);
  CHECK(error_of([&] { em::data::random_split(ds, {11, -1}); }) == em::errc::value);
}

TEST_CASE("random_permutation is a uniform permutation", "[dataset]") {
  em::generator g(1234);
  for (std::int64_t n : {0, 1, 2, 5, 1000}) {
    auto p = em::data::detail::random_permutation(n, g);
    std::sort(p.begin(), p.end());
    std::vector<std::int64_t> want(static_cast<std::size_t>(n));
    std::iota(want.begin(), want.end(), 0);
    CHECK(p == want);
  }
  // 6000 permutations of 3: each of the 6 orders has count ~ Binomial(6000, 1/6), mean 1000,
  // sd 28.9; a bound of 6 sd fails a correct generator with probability ~1e-8
  std::map<std::vector<std::int64_t>, int> counts;
  for (int k = 0; k < 6000; ++k) ++counts[em::data::detail::random_permutation(3, g)];
  CHECK(counts.size() == 6);
  for (const auto& [perm, c] : counts) CHECK(std::abs(c - 1000) < 174);
  // the first element of a 10-permutation: uniform over 10 values (mean 1000 of 10000, sd 30)
  int first[10] = {};
  for (int k = 0; k < 10000; ++k) ++first[em::data::detail::random_permutation(10, g)[0]];
  for (int c : first) CHECK(std::abs(c - 1000) < 180);
}
