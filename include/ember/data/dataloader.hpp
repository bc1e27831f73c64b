// dataloader: iterates over a dataset in batches (collated into tensors), shuffled with a
// seeded generator, optionally loading ahead on background threads that deliver in order.
#pragma once

#include <ember/autograd/meta.hpp>
#include <ember/core/error.hpp>
#include <ember/core/random.hpp>
#include <ember/data/dataset.hpp>
#include <ember/ops/factory.hpp>
#include <ember/ops/join.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::data {

/// Options of a dataloader (PyTorch's DataLoader arguments).
struct dataloader_options {
  std::int64_t batch_size = 1;
  /// A new random order every epoch (else the dataset's order).
  bool shuffle = false;
  /// Skip the last batch when it would be smaller than batch_size.
  bool drop_last = false;
  /// Background threads that load batches ahead (0: load in the iterating thread).
  int num_workers = 0;
  /// Seed of the shuffling generator; when unset, one is drawn from ember's global generator
  /// when the loader is made (so em::manual_seed makes the order repeat).
  std::optional<std::uint64_t> seed = std::nullopt;
  /// Batches each worker may load ahead of the consumer.
  int prefetch_factor = 2;
};

namespace detail {

/// The tensor element type a scalar example field becomes in a batch: its own type when a
/// tensor can hold it, otherwise int64 for integers and double for floating point.
template <class S>
using scalar_element_t =
    std::conditional_t<is_element_v<S>, S, std::conditional_t<std::is_integral_v<S>, std::int64_t, double>>;

template <class E>
struct collate_traits {
  static constexpr bool ok = false;
  using type = void;
};
template <class T>
struct collate_traits<tensor<T>> {
  static constexpr bool ok = true;
  using type = tensor<T>;
  static type collate(std::vector<tensor<T>>& xs) { return stack(xs, 0); }
};
template <class S>
  requires std::is_arithmetic_v<S> || is_element_v<S>
struct collate_traits<S> {
  static constexpr bool ok = true;
  using type = tensor<scalar_element_t<S>>;
  static type collate(std::vector<S>& xs) {
    std::vector<scalar_element_t<S>> v;
    v.reserve(xs.size());
    for (const S& x : xs) v.push_back(static_cast<scalar_element_t<S>>(x));
    return from_vector<scalar_element_t<S>>(v);
  }
};
/// Collates field I of every example, moving it out.
template <std::size_t I, class Tuple>
auto collate_field(std::vector<Tuple>& xs) {
  using F = std::tuple_element_t<I, Tuple>;
  std::vector<F> field;
  field.reserve(xs.size());
  for (Tuple& x : xs) field.push_back(std::move(std::get<I>(x)));
  return collate_traits<F>::collate(field);
}
template <template <class...> class Tup, class... Es>
  requires std::is_same_v<Tup<Es...>, std::tuple<Es...>> || std::is_same_v<Tup<Es...>, std::pair<Es...>>
struct collate_traits<Tup<Es...>> {
  static constexpr bool ok = (collate_traits<Es>::ok && ...);
  using type = Tup<typename collate_traits<Es>::type...>;
  static type collate(std::vector<Tup<Es...>>& xs) {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return type(collate_field<I>(xs)...);
    }(std::index_sequence_for<Es...>{});
  }
};

/// What a batch of D is: get_batch's result, or the collated examples.
template <class D>
struct batch_of {
  using type = typename collate_traits<example_t<D>>::type;
};
template <batch_dataset D>
struct batch_of<D> {
  using type = std::remove_cvref_t<decltype(std::declval<D&>().get_batch(std::span<const std::int64_t>{}))>;
};

template <class D>
constexpr bool loadable() {
  if constexpr (batch_dataset<D>) return true;
  else return collate_traits<example_t<D>>::ok;
}

/// Loads the batch of the given example indices from ds, recording no autograd history.
template <class D>
typename batch_of<D>::type load_batch(D& ds, std::span<const std::int64_t> idx) {
  no_grad_guard ng;
  if constexpr (batch_dataset<D>) {
    return ds.get_batch(idx);
  } else {
    std::vector<example_t<D>> xs;
    xs.reserve(idx.size());
    for (std::int64_t i : idx) xs.push_back(ds.get(i));
    return collate_traits<example_t<D>>::collate(xs);
  }
}

/// Note [Prefetch]: one epoch's loading state. Batch b holds order[b*bs, min((b+1)*bs, n)).
/// Workers claim batch numbers in increasing order from `next_claim`, but only while
/// next_claim < consumed + capacity (capacity = prefetch_factor * num_workers), so at most
/// `capacity` batches are loading or waiting at once; batch b goes to ring slot b % capacity,
/// which its predecessor there has already left. The consumer takes slot `consumed` when it
/// is ready, so batches arrive in order whatever the workers' speed; a worker's exception is
/// stored in the slot and rethrown when the consumer reaches that batch. The epoch's iterator
/// owns the state; destroying it (loop finished or left early, a new begin() assigned over
/// it) sets `stop`, wakes the workers and joins them: a worker finishes at most the batch it
/// is loading, and none waits on the consumer once `stop` is set.
template <class D>
class epoch_state {
 public:
  using batch_type = typename batch_of<D>::type;

  epoch_state(std::shared_ptr<D> ds, std::vector<std::int64_t> order, std::int64_t batch_size,
              std::int64_t num_batches, int workers, int prefetch)
      : ds_(std::move(ds)), order_(std::move(order)), bs_(batch_size), batches_(num_batches),
        capacity_(std::max<std::int64_t>(1, std::int64_t{workers} * prefetch)),
        slots_(workers > 0 ? static_cast<std::size_t>(capacity_) : 0) {
    threads_.reserve(static_cast<std::size_t>(workers));
    try {
      for (int w = 0; w < workers; ++w) threads_.emplace_back([this] { work(); });
    } catch (...) {  // no thread could be started: stop those that were
      shutdown();
      throw;
    }
  }
  ~epoch_state() { shutdown(); }
  epoch_state(const epoch_state&) = delete;
  epoch_state& operator=(const epoch_state&) = delete;

  std::int64_t num_batches() const noexcept { return batches_; }

  /// Batch b (b = 0, 1, ... in turn): from a worker's slot, or loaded here without workers.
  batch_type take(std::int64_t b) {
    if (threads_.empty()) return load_batch(*ds_, indices(b));
    std::unique_lock lock(mu_);
    slot& s = slots_[static_cast<std::size_t>(b % capacity_)];
    ready_cv_.wait(lock, [&] { return s.ready; });
    s.ready = false;
    ++consumed_;
    std::exception_ptr err = std::exchange(s.error, nullptr);
    std::optional<batch_type> value = std::exchange(s.value, std::nullopt);
    lock.unlock();
    work_cv_.notify_all();
    if (err) std::rethrow_exception(err);
    return std::move(*value);
  }

 private:
  struct slot {
    bool ready = false;
    std::optional<batch_type> value;
    std::exception_ptr error;
  };

  std::span<const std::int64_t> indices(std::int64_t b) const {
    const std::int64_t lo = b * bs_, hi = std::min<std::int64_t>(lo + bs_, static_cast<std::int64_t>(order_.size()));
    return std::span<const std::int64_t>(order_).subspan(static_cast<std::size_t>(lo),
                                                         static_cast<std::size_t>(hi - lo));
  }

  void shutdown() noexcept {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void work() {
    while (true) {
      std::int64_t b = 0;
      {
        std::unique_lock lock(mu_);
        work_cv_.wait(lock, [&] {
          return stop_ || next_claim_ >= batches_ || next_claim_ < consumed_ + capacity_;
        });
        if (stop_ || next_claim_ >= batches_) return;
        b = next_claim_++;
      }
      std::optional<batch_type> value;
      std::exception_ptr err;
      try {
        value.emplace(load_batch(*ds_, indices(b)));
      } catch (...) {
        err = std::current_exception();
      }
      {
        std::lock_guard lock(mu_);
        slot& s = slots_[static_cast<std::size_t>(b % capacity_)];
        s.value = std::move(value);
        s.error = err;
        s.ready = true;
      }
      ready_cv_.notify_all();
    }
  }

  const std::shared_ptr<D> ds_;  // owned (a dataset moved into the loader) or not (an lvalue)
  const std::vector<std::int64_t> order_;
  const std::int64_t bs_, batches_, capacity_;
  std::vector<slot> slots_;
  std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_;
  std::int64_t next_claim_ = 0, consumed_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;  // last: started after every other member exists
};

}  // namespace detail

/// Iterates over a dataset in batches: `for (auto&& [xb, yb] : loader)` is one epoch.
/// Examples that are tensors are stacked, arithmetic scalars become a 1-D tensor, and tuples
/// or pairs of those are collated field by field; a dataset with get_batch (tensor_dataset)
/// loads each batch with it instead. Each epoch (each begin()) shuffles anew when asked to;
/// with num_workers > 0, threads load ahead and batches still arrive in order, identical to
/// num_workers = 0. An exception while loading a batch is rethrown when iteration reaches
/// that batch. Leaving the loop early stops and joins the workers.
/// Thread safety: see Note [Dataset threads] (get must be callable concurrently).
/// Lifetime: made from an lvalue dataset, the loader refers to it (D is a reference type) and
/// the dataset must outlive the loader and its iterators; a dataset passed as an rvalue is
/// moved into the loader and shared by its copies and iterators, so an iterator stays valid
/// after its loader is gone.
///   em::data::dataloader loader(ds, {.batch_size = 64, .shuffle = true, .num_workers = 2});
///   for (auto&& [xb, yb] : loader) { /* xb: (64, ...), yb: (64) */ }
template <class D>
class dataloader {
  using base_type = std::remove_reference_t<D>;
  static_assert(dataset<base_type>, "dataloader: the dataset needs size() and get(i)");
  static_assert(detail::loadable<base_type>(),
                "dataloader: examples must be tensors, arithmetic scalars, or std::tuple / "
                "std::pair of those (or the dataset must provide get_batch(indices))");

 public:
  using batch_type = typename detail::batch_of<base_type>::type;

  /// The iterator of one epoch; it owns that epoch's workers (move-only).
  class iterator {
   public:
    using value_type = batch_type;
    using difference_type = std::ptrdiff_t;
    using iterator_concept = std::input_iterator_tag;

    iterator() = default;
    iterator(iterator&&) noexcept = default;
    iterator& operator=(iterator&&) noexcept = default;

    batch_type& operator*() const { return *current_; }
    batch_type* operator->() const { return &*current_; }
    iterator& operator++() {
      ++b_;
      fetch();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept {
      return !it.state_ || it.b_ >= it.state_->num_batches();
    }

   private:
    friend class dataloader;
    explicit iterator(std::unique_ptr<detail::epoch_state<base_type>> state) : state_(std::move(state)) {
      fetch();
    }
    void fetch() {
      current_.reset();
      if (b_ < state_->num_batches()) current_.emplace(state_->take(b_));
    }

    std::unique_ptr<detail::epoch_state<base_type>> state_;
    std::int64_t b_ = 0;
    mutable std::optional<batch_type> current_;
  };

  template <class U>
    requires std::constructible_from<D, U&&>
  dataloader(U&& ds, const dataloader_options& opts = {}) : opts_(opts) {
    if constexpr (std::is_reference_v<D>)
      ds_ = std::shared_ptr<base_type>(std::shared_ptr<void>(), &ds);  // not owned
    else
      ds_ = std::make_shared<base_type>(std::forward<U>(ds));
    ember::detail::check(opts.batch_size >= 1, errc::value,
                         "dataloader: batch_size must be positive, got ", opts.batch_size);
    ember::detail::check(opts.num_workers >= 0, errc::value,
                         "dataloader: num_workers must be >= 0, got ", opts.num_workers);
    ember::detail::check(opts.prefetch_factor >= 1, errc::value,
                         "dataloader: prefetch_factor must be >= 1, got ", opts.prefetch_factor);
    if (opts.seed) {
      seed_ = *opts.seed;
    } else {
      const auto w = default_generator().block(default_generator().reserve(1));
      seed_ = (std::uint64_t{w[0]} << 32) | w[1];
    }
  }

  /// Batches per epoch: ceil(n / batch_size), or floor with drop_last.
  std::int64_t size() const {
    const std::int64_t n = static_cast<std::int64_t>(ds_->size());
    return opts_.drop_last ? n / opts_.batch_size : (n + opts_.batch_size - 1) / opts_.batch_size;
  }

  /// Starts the next epoch (its order drawn now) and returns its first batch.
  iterator begin() {
    const std::int64_t n = static_cast<std::int64_t>(ds_->size());
    std::vector<std::int64_t> order;
    if (opts_.shuffle) {
      order = epoch_order(epoch_, n);
    } else {
      order.resize(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    }
    ++epoch_;
    const std::int64_t batches = size();
    order.resize(static_cast<std::size_t>(opts_.drop_last ? batches * opts_.batch_size : n));
    const int workers = static_cast<int>(std::min<std::int64_t>(opts_.num_workers, batches));
    return iterator(std::make_unique<detail::epoch_state<base_type>>(
        ds_, std::move(order), opts_.batch_size, batches, workers, opts_.prefetch_factor));
  }
  std::default_sentinel_t end() const noexcept { return {}; }

  /// The epoch the next begin() starts (0 first); set it to resume a schedule of orders.
  std::int64_t epoch() const noexcept { return epoch_; }
  void set_epoch(std::int64_t e) {
    ember::detail::check(e >= 0, errc::value, "dataloader::set_epoch: negative epoch ", e);
    epoch_ = e;
  }
  /// The shuffling seed (given, or drawn from the global generator).
  std::uint64_t seed() const noexcept { return seed_; }
  const dataloader_options& options() const noexcept { return opts_; }

 private:
  /// Epoch e's permutation: generator(seed) from block e * (n / 2), so that each epoch has
  /// its own blocks (Note [Shuffle] uses n / 2 per permutation) and any epoch can be redrawn.
  std::vector<std::int64_t> epoch_order(std::int64_t e, std::int64_t n) const {
    generator g(seed_);
    g.set_offset(static_cast<std::uint64_t>(e) * static_cast<std::uint64_t>(std::max<std::int64_t>(n / 2, 1)));
    return detail::random_permutation(n, g);
  }

  std::shared_ptr<base_type> ds_;
  dataloader_options opts_;
  std::uint64_t seed_ = 0;
  std::int64_t epoch_ = 0;
};

template <class U>
dataloader(U&&, const dataloader_options&) -> dataloader<U>;
template <class U>
dataloader(U&&) -> dataloader<U>;

}  // namespace ember::data
