// Datasets: the `dataset` concept (size() and get(i)), tensor_dataset (the rows of tensors that
// share dimension 0, with a gathering get_batch), subset and random_split.
#pragma once

#include <ember/core/error.hpp>
#include <ember/core/random.hpp>
#include <ember/ops/factory.hpp>
#include <ember/ops/index.hpp>
#include <ember/tensor.hpp>

#include <concepts>
#include <cstdint>
#include <numeric>
#include <span>
#include <sstream>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::data {

/// A dataset has `size()` examples and returns the i-th with `get(i)`, i in [0, size()).
/// Note [Dataset threads]: a dataloader with num_workers > 0 calls get (and get_batch) from
/// several threads at once, so they must be safe to call concurrently: read-only access to
/// shared state is, lazily filled caches need a lock. size() is read once per epoch.
///   struct squares { std::int64_t size() const { return 10; }
///                    std::tuple<float, std::int64_t> get(std::int64_t i) const {
///                      return {float(i * i), i}; } };
template <class D>
concept dataset = requires(D& d, std::int64_t i) {
  { d.size() } -> std::convertible_to<std::int64_t>;
  d.get(i);
};

/// A dataset that can also load a whole batch at once, faster than get() per example; the
/// dataloader then uses get_batch(indices) instead of collating get() results.
template <class D>
concept batch_dataset = dataset<D> && requires(D& d, std::span<const std::int64_t> idx) {
  d.get_batch(idx);
};

/// The type of a dataset's examples.
template <dataset D>
using example_t = std::remove_cvref_t<decltype(std::declval<D&>().get(std::int64_t{}))>;

namespace detail {

/// Note [Shuffle]: a uniform permutation of [0, n) by Fisher-Yates, swap k (k = 0, 1, ...)
/// taking 64 random bits from half of counter block start + k/2 of the generator, mapped to
/// [0, i] by a 64x64 -> high 64 multiply. Same generator state, same permutation, anywhere.
inline std::vector<std::int64_t> random_permutation(std::int64_t n, generator& g) {
  std::vector<std::int64_t> p(static_cast<std::size_t>(n));
  std::iota(p.begin(), p.end(), std::int64_t{0});
  if (n < 2) return p;
  const std::uint64_t start = g.reserve(static_cast<std::uint64_t>(n / 2));
  for (std::int64_t i = n - 1, k = 0; i > 0; --i, ++k) {
    const auto w = g.block(start + static_cast<std::uint64_t>(k / 2));
    const int h = 2 * static_cast<int>(k % 2);
    const std::uint64_t bits = (std::uint64_t{w[h]} << 32) | w[h + 1];
    const auto j = static_cast<std::int64_t>(ember::detail::mulhi64(bits, static_cast<std::uint64_t>(i + 1)));
    std::swap(p[static_cast<std::size_t>(i)], p[static_cast<std::size_t>(j)]);
  }
  return p;
}

inline void check_example_index(std::int64_t i, std::int64_t n, const char* op) {
  ember::detail::check(i >= 0 && i < n, errc::index, op, ": index ", i,
                       " is out of range for a dataset of ", n, " examples");
}

}  // namespace detail

/// The rows of one or more tensors (of any element types) that share dimension 0; example i
/// is the tuple of their i-th rows (views, no copy). get_batch gathers a batch with one
/// index_select per tensor.
///   em::data::tensor_dataset ds(images /* (N,64) f32 */, labels /* (N) i64 */);
///   auto [x, y] = ds.get(0);   // x: (64), y: 0-d
template <class... Ts>
class tensor_dataset {
  static_assert(sizeof...(Ts) > 0, "tensor_dataset: give at least one tensor");

 public:
  using example_type = std::tuple<tensor<Ts>...>;

  explicit tensor_dataset(tensor<Ts>... ts) : ts_(std::move(ts)...) {
    bool ok = true;
    std::int64_t n = -1;
    std::apply([&](const auto&... t) { ((ok = ok && t.defined() && t.dim() > 0), ...); }, ts_);
    if (ok) {
      n = std::get<0>(ts_).size(0);
      std::apply([&](const auto&... t) { ((ok = ok && t.size(0) == n), ...); }, ts_);
    }
    if (!ok) {
      std::ostringstream shapes;
      std::apply([&](const auto&... t) {
        const char* sep = "";
        ((shapes << sep << (t.defined() ? t.shape() : ember::shape{}) << (t.defined() ? "" : " (undefined)"),
          sep = ", "), ...);
      }, ts_);
      ember::detail::fail(errc::shape, "tensor_dataset: the tensors must share dimension 0 (one ",
                          "row per example) and have at least one dimension; got shapes ",
                          shapes.str());
    }
  }

  std::int64_t size() const { return std::get<0>(ts_).size(0); }

  /// The i-th rows, views of the dataset's tensors.
  example_type get(std::int64_t i) const {
    detail::check_example_index(i, size(), "tensor_dataset::get");
    return std::apply([i](const auto&... t) { return example_type(t.select(0, i)...); }, ts_);
  }

  /// The rows at `indices`, each tensor gathered into a new (B, ...) tensor.
  example_type get_batch(std::span<const std::int64_t> indices) const {
    for (std::int64_t i : indices) detail::check_example_index(i, size(), "tensor_dataset::get_batch");
    const tensor<std::int64_t> idx =
        from_vector<std::int64_t>(std::vector<std::int64_t>(indices.begin(), indices.end()));
    return std::apply([&](const auto&... t) { return example_type(index_select(t, 0, idx)...); }, ts_);
  }

  const std::tuple<tensor<Ts>...>& tensors() const noexcept { return ts_; }

 private:
  std::tuple<tensor<Ts>...> ts_;
};

/// The examples of a dataset at the given indices (PyTorch's Subset). D is a reference type
/// when made from an lvalue (the dataset must then outlive the subset), else the dataset is
/// held by value.
///   em::data::subset first_ten(ds, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
template <class D>
class subset {
  using base_type = std::remove_cvref_t<D>;
  static_assert(dataset<base_type>, "subset: D must be a dataset (size() and get(i))");

 public:
  template <class U>
    requires std::constructible_from<D, U&&>
  subset(U&& ds, std::vector<std::int64_t> indices)
      : ds_(std::forward<U>(ds)), indices_(std::move(indices)) {
    const std::int64_t n = static_cast<std::int64_t>(ds_.size());
    for (std::int64_t i : indices_) detail::check_example_index(i, n, "subset");
  }

  std::int64_t size() const { return static_cast<std::int64_t>(indices_.size()); }
  decltype(auto) get(std::int64_t i) { return ds_.get(at(i)); }
  decltype(auto) get(std::int64_t i) const
    requires dataset<const std::remove_reference_t<D>>
  {
    return ds_.get(at(i));
  }
  decltype(auto) get_batch(std::span<const std::int64_t> idx)
    requires batch_dataset<base_type>
  {
    return ds_.get_batch(mapped(idx));
  }
  decltype(auto) get_batch(std::span<const std::int64_t> idx) const
    requires batch_dataset<const std::remove_reference_t<D>>
  {
    return ds_.get_batch(mapped(idx));
  }
  const std::vector<std::int64_t>& indices() const noexcept { return indices_; }

 private:
  std::int64_t at(std::int64_t i) const {
    detail::check_example_index(i, size(), "subset::get");
    return indices_[static_cast<std::size_t>(i)];
  }
  std::vector<std::int64_t> mapped(std::span<const std::int64_t> idx) const {
    std::vector<std::int64_t> out;
    out.reserve(idx.size());
    for (std::int64_t i : idx) out.push_back(at(i));
    return out;
  }

  D ds_;
  std::vector<std::int64_t> indices_;
};

template <class U>
subset(U&&, std::vector<std::int64_t>) -> subset<U>;

/// Splits a dataset into non-overlapping random subsets of the given lengths (which must add
/// up to its size), shuffled with `g` (ember's global generator unless given: manual_seed
/// makes the split repeat). From an lvalue the subsets refer to the dataset, from an rvalue
/// each holds a copy.
///   auto parts = em::data::random_split(ds, {80, 20});   // parts[0].size() == 80
template <class U>
  requires dataset<std::remove_cvref_t<U>>
std::vector<subset<U>> random_split(U&& ds, const std::vector<std::int64_t>& lengths,
                                    generator& g = default_generator()) {
  const std::int64_t n = static_cast<std::int64_t>(ds.size());
  std::int64_t total = 0;
  for (std::int64_t l : lengths) {
    ember::detail::check(l >= 0, errc::value, "random_split: negative length ", l);
    total += l;
  }
  ember::detail::check(total == n, errc::value, "random_split: the lengths add up to ", total,
                       " but the dataset has ", n, " examples");
  const std::vector<std::int64_t> perm = detail::random_permutation(n, g);
  std::vector<subset<U>> out;
  std::int64_t off = 0;
  for (std::int64_t l : lengths) {
    out.emplace_back(ds, std::vector<std::int64_t>(perm.begin() + off, perm.begin() + off + l));
    off += l;
  }
  return out;
}

}  // namespace ember::data
