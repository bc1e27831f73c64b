// Tests of include/ember/data/dataloader.hpp: batch counts (drop_last), every example once per
// epoch, seeded shuffling (same seed same order, new order each epoch, manual_seed), workers
// giving the batches of num_workers = 0 in the same order, bounded prefetch, collation of user
// examples, exceptions from workers, and leaving a loop early without hanging.
#include <ember/data/dataloader.hpp>
#include <ember/data/dataset.hpp>
#include <ember/ops/factory.hpp>

#include <catch2/catch.hpp>
#include <support/errors.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <ranges>
#include <stdexcept>
#include <thread>
#include <vector>

namespace em = ember;
using ember_test::error_of;

namespace {

template <class T>
std::vector<T> values(const em::tensor<T>& t) {
  const auto c = t.contiguous();
  return std::vector<T>(c.data(), c.data() + c.numel());
}

/// (n, 3) floats whose row i is (i, i + 0.25, i + 0.5) and labels 0..n-1.
em::data::tensor_dataset<float, std::int64_t> numbered(std::int64_t n) {
  std::vector<float> v;
  for (std::int64_t i = 0; i < n; ++i)
    for (float f : {0.f, 0.25f, 0.5f}) v.push_back(static_cast<float>(i) + f);
  return em::data::tensor_dataset(em::from_vector<float>(v, {n, 3}), em::arange<std::int64_t>(0, n));
}

/// The label order of one epoch, checking that each batch's rows match its labels.
template <class L>
std::vector<std::int64_t> epoch_labels(L& loader) {
  std::vector<std::int64_t> out;
  for (auto&& [xb, yb] : loader) {
    const auto x = values(xb);
    const auto y = values(yb);
    REQUIRE(x.size() == 3 * y.size());
    for (std::size_t k = 0; k < y.size(); ++k) CHECK(x[3 * k + 1] == static_cast<float>(y[k]) + 0.25f);
    out.insert(out.end(), y.begin(), y.end());
  }
  return out;
}

std::vector<std::int64_t> iota_vec(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

/// Only get(i) (no get_batch): examples collate through stacking. Sleeps a pseudo-random
/// time per example so that workers finish out of order; counts calls.
struct slow_dataset {
  std::int64_t n = 50;
  int max_sleep_us = 300;
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  std::int64_t size() const { return n; }
  std::tuple<em::tensor<float>, std::int64_t> get(std::int64_t i) const {
    ++*calls;
    if (max_sleep_us > 0)
      std::this_thread::sleep_for(std::chrono::microseconds((i * 7919) % max_sleep_us));
    return {em::full<float>({2}, static_cast<float>(i)), i};
  }
};

struct throwing_dataset {
  std::int64_t bad = 37;
  std::int64_t size() const { return 100; }
  std::int64_t get(std::int64_t i) const {
    if (i == bad) throw std::runtime_error("bad example " + std::to_string(i));
    return i;
  }
};

}  // namespace

using loader_t = em::data::dataloader<em::data::tensor_dataset<float, std::int64_t>&>;
static_assert(std::ranges::input_range<loader_t>);
static_assert(std::is_same_v<loader_t::batch_type, std::tuple<em::tensor<float>, em::tensor<std::int64_t>>>);

TEST_CASE("the API contract's loader: two batches of 100 examples", "[dataloader]") {
  auto images = em::randn<float>({100, 64});
  auto labels = em::randint<std::int64_t>(0, 10, {100});
  em::data::tensor_dataset ds(images, labels);
  em::data::dataloader loader(ds, {.batch_size = 64, .shuffle = true, .drop_last = false, .num_workers = 2});
  static_assert(std::is_same_v<decltype(loader), loader_t>);
  std::vector<std::int64_t> sizes;
  for (auto&& [xb, yb] : loader) {
    CHECK(xb.size(1) == 64);
    sizes.push_back(yb.size(0));
  }
  CHECK(sizes == std::vector<std::int64_t>{64, 36});
}

TEST_CASE("batch counts with and without drop_last", "[dataloader]") {
  struct c { std::int64_t n, bs; bool drop; std::int64_t batches, last; };
  for (const c& k : {c{100, 64, false, 2, 36}, c{100, 64, true, 1, 64}, c{128, 64, false, 2, 64},
                     c{128, 64, true, 2, 64}, c{5, 10, false, 1, 5}, c{5, 10, true, 0, 0},
                     c{0, 4, false, 0, 0}, c{7, 1, false, 7, 1}}) {
    INFO("n " << k.n << " batch_size " << k.bs << " drop_last " << k.drop);
    for (int workers : {0, 2}) {
      em::data::dataloader loader(numbered(k.n), {.batch_size = k.bs, .drop_last = k.drop,
                                                  .num_workers = workers});
      CHECK(loader.size() == k.batches);
      std::int64_t count = 0, last = 0;
      for (auto&& [xb, yb] : loader) {
        ++count;
        last = yb.size(0);
      }
      CHECK(count == k.batches);
      CHECK(last == k.last);
    }
  }
}

TEST_CASE("every example exactly once per epoch; in order without shuffle", "[dataloader]") {
  auto ds = numbered(103);
  for (int workers : {0, 1, 2, 3}) {
    em::data::dataloader plain(ds, {.batch_size = 10, .num_workers = workers});
    CHECK(epoch_labels(plain) == iota_vec(103));
    em::data::dataloader shuffled(ds, {.batch_size = 10, .shuffle = true, .num_workers = workers, .seed = 5});
    for (int epoch = 0; epoch < 3; ++epoch) {
      auto order = epoch_labels(shuffled);
      CHECK(order != iota_vec(103));
      std::sort(order.begin(), order.end());
      CHECK(order == iota_vec(103));
    }
  }
  // drop_last with shuffling drops a different remainder each epoch, each example at most once
  em::data::dataloader dropping(ds, {.batch_size = 10, .shuffle = true, .drop_last = true, .seed = 1});
  auto order = epoch_labels(dropping);
  CHECK(order.size() == 100);
  std::sort(order.begin(), order.end());
  CHECK(std::adjacent_find(order.begin(), order.end()) == order.end());
}

TEST_CASE("shuffling: same seed same orders, new order each epoch, manual_seed", "[dataloader]") {
  auto ds = numbered(64);
  em::data::dataloader a(ds, {.batch_size = 8, .shuffle = true, .seed = 42});
  em::data::dataloader b(ds, {.batch_size = 8, .shuffle = true, .seed = 42});
  em::data::dataloader c(ds, {.batch_size = 8, .shuffle = true, .seed = 43});
  const auto a0 = epoch_labels(a), a1 = epoch_labels(a), a2 = epoch_labels(a);
  CHECK(a0 != a1);
  CHECK(a1 != a2);
  CHECK(epoch_labels(b) == a0);
  CHECK(epoch_labels(b) == a1);
  CHECK(epoch_labels(c) != a0);
  // any epoch's order can be drawn again
  CHECK(a.epoch() == 3);
  a.set_epoch(1);
  CHECK(epoch_labels(a) == a1);
  CHECK(a.seed() == 42);
  // without a seed, the global generator decides: manual_seed makes it repeat
  em::manual_seed(7);
  em::data::dataloader d(ds, {.batch_size = 8, .shuffle = true});
  em::manual_seed(7);
  em::data::dataloader e(ds, {.batch_size = 8, .shuffle = true});
  em::manual_seed(8);
  em::data::dataloader f(ds, {.batch_size = 8, .shuffle = true});
  const auto d0 = epoch_labels(d);
  CHECK(epoch_labels(e) == d0);
  CHECK(epoch_labels(f) != d0);
}

TEST_CASE("workers give the batches of num_workers = 0, in the same order", "[dataloader]") {
  // the tensor_dataset fast path (get_batch) and the per-example path (slow_dataset, whose
  // examples finish out of order across workers)
  auto ds = numbered(230);
  std::vector<std::vector<std::int64_t>> orders;
  for (int workers : {0, 2, 4}) {
    em::data::dataloader loader(ds, {.batch_size = 16, .shuffle = true, .num_workers = workers, .seed = 9});
    orders.push_back(epoch_labels(loader));
    orders.push_back(epoch_labels(loader));
  }
  CHECK(orders[0] == orders[2]);
  CHECK(orders[0] == orders[4]);
  CHECK(orders[1] == orders[3]);
  CHECK(orders[1] == orders[5]);

  std::vector<std::vector<float>> batches[2];
  for (int w = 0; w < 2; ++w) {
    em::data::dataloader loader(slow_dataset{}, {.batch_size = 4, .shuffle = true, .num_workers = 3 * w, .seed = 2});
    static_assert(std::is_same_v<decltype(loader)::batch_type,
                                 std::tuple<em::tensor<float>, em::tensor<std::int64_t>>>);
    for (auto&& [xb, yb] : loader) {
      CHECK(xb.shape() == em::shape{yb.size(0), 2});
      auto v = values(xb);
      for (auto y : values(yb)) v.push_back(static_cast<float>(y));
      batches[w].push_back(v);
    }
  }
  CHECK(batches[0].size() == 13);
  CHECK(batches[0] == batches[1]);
}

TEST_CASE("prefetching is bounded by prefetch_factor * num_workers batches", "[dataloader]") {
  slow_dataset ds{.n = 400, .max_sleep_us = 0};
  em::data::dataloader loader(ds, {.batch_size = 4, .num_workers = 2, .prefetch_factor = 2});
  auto it = loader.begin();  // batch 0 taken: workers may then hold batches 1..4
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(*ds.calls <= 5 * 4);
  CHECK(*ds.calls >= 4);
  ++it;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(*ds.calls <= 6 * 4);
}

TEST_CASE("collation of scalars, tuples, pairs and plain tensors", "[dataloader]") {
  struct mixed {
    std::int64_t size() const { return 5; }
    std::tuple<float, int, bool, std::pair<double, unsigned>> get(std::int64_t i) const {
      return {0.5f * float(i), int(i) - 2, i % 2 == 0, {double(i), unsigned(i * 10)}};
    }
  };
  em::data::dataloader loader(mixed{}, {.batch_size = 3});
  using B = decltype(loader)::batch_type;
  static_assert(std::is_same_v<B, std::tuple<em::tensor<float>, em::tensor<std::int32_t>, em::tensor<bool>,
                                             std::pair<em::tensor<double>, em::tensor<std::int64_t>>>>);
  auto it = loader.begin();
  auto& [f, i, b, p] = *it;
  CHECK(values(f) == std::vector<float>{0.f, 0.5f, 1.f});
  CHECK(values(i) == std::vector<std::int32_t>{-2, -1, 0});
  CHECK(b.at({0}));
  CHECK_FALSE(b.at({1}));
  CHECK(values(p.second) == std::vector<std::int64_t>{0, 10, 20});
  ++it;
  CHECK(std::get<0>(*it).size(0) == 2);
  ++it;
  CHECK(it == std::default_sentinel);

  struct images_only {
    std::int64_t size() const { return 6; }
    em::tensor<float> get(std::int64_t i) const { return em::full<float>({2, 2}, float(i)); }
  };
  em::data::dataloader single(images_only{}, {.batch_size = 4, .num_workers = 1});
  std::vector<em::shape> shapes;
  for (auto&& xb : single) shapes.push_back(xb.shape());
  CHECK(shapes == std::vector<em::shape>{{4, 2, 2}, {2, 2, 2}});

  // examples of different shapes cannot be stacked: the stack error reaches the loop
  struct ragged {
    std::int64_t size() const { return 4; }
    em::tensor<float> get(std::int64_t i) const { return em::zeros<float>({i + 1}); }
  };
  em::data::dataloader bad(ragged{}, {.batch_size = 2, .num_workers = 2});
  CHECK(error_of([&] { for (auto&& xb : bad) (void)xb; }) == em::errc::shape);
}

TEST_CASE("an exception while loading reaches the loop at its batch", "[dataloader]") {
  for (int workers : {0, 1, 3}) {
    INFO("num_workers " << workers);
    em::data::dataloader loader(throwing_dataset{}, {.batch_size = 10, .num_workers = workers});
    int seen = 0;
    try {
      for (auto&& yb : loader) {
        CHECK(yb.at({0}) == 10 * seen);
        ++seen;
      }
      FAIL("no exception");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "bad example 37");
    }
    CHECK(seen == 3);  // batches 0, 1, 2; example 37 is in batch 3
    // the loader stays usable: a dataset that fails in the first batch fails at begin()
    em::data::dataloader first(throwing_dataset{.bad = 0}, {.batch_size = 10, .num_workers = workers});
    CHECK_THROWS_AS(first.begin(), std::runtime_error);
  }
}

TEST_CASE("leaving a loop early or destroying a loader mid-epoch does not hang", "[dataloader]") {
  slow_dataset ds{.n = 2000, .max_sleep_us = 2000};
  const auto start = std::chrono::steady_clock::now();
  for (int k = 0; k < 5; ++k) {
    em::data::dataloader loader(ds, {.batch_size = 8, .shuffle = true, .num_workers = 3});
    int seen = 0;
    for (auto&& batch : loader) {
      (void)batch;
      if (++seen == 2) break;
    }
    CHECK(seen == 2);
    auto it = loader.begin();  // an epoch left running when the loader goes
    ++it;
  }
  {
    auto loader = std::make_unique<em::data::dataloader<slow_dataset&>>(ds, em::data::dataloader_options{.batch_size = 8, .num_workers = 2});
    auto it = loader->begin();
    it = loader->begin();  // restarting abandons the first epoch's workers
    CHECK(std::get<1>(*it).at({0}) == 0);
  }
  {
    // an iterator outlives its loader: the moved-in dataset is shared, the epoch finishes
    auto loader = std::make_unique<em::data::dataloader<slow_dataset>>(
        slow_dataset{.n = 40, .max_sleep_us = 100}, em::data::dataloader_options{.batch_size = 8, .num_workers = 2});
    auto it = loader->begin();
    loader.reset();
    int seen = 1;
    for (++it; it != std::default_sentinel; ++it) ++seen;
    CHECK(seen == 5);
  }
  // a full epoch would take ~2000 * 1 ms / 3 threads; stopping must take far less
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  CHECK(*ds.calls < 2000);
  CHECK(error_of([] { em::data::dataloader l(numbered(3), {.batch_size = 0}); }) == em::errc::value);
  CHECK(error_of([] { em::data::dataloader l(numbered(3), {.num_workers = -1}); }) == em::errc::value);
}
