// The intra-op thread pool: set_num_threads / get_num_threads and parallel_for, which splits a
// range into chunks run by the pool's workers and the calling thread. Header-only.
#pragma once

#include <ember/core/error.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace ember {
namespace detail {

/// Note [Thread pool]: n-1 workers sleep on a condition variable; a job is a task count and a
/// function of the task index. Workers and the caller take task indices from an atomic
/// counter until none remain; the caller returns when every task has finished. A parallel_for
/// issued from inside a task runs inline (no nested parallelism, no deadlock). Which thread
/// runs a task never changes what the task computes, so results depend only on how the work
/// is cut into tasks, which callers fix independently of the thread count where it matters.
class thread_pool {
 public:
  explicit thread_pool(int threads) : threads_(std::max(1, threads)) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { work(); });
  }
  ~thread_pool() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const noexcept { return threads_; }

  /// Runs f(i) for i in [0, tasks), spread over the pool; returns when all are done. The
  /// first exception thrown by a task is rethrown here (remaining tasks still run).
  void run(std::int64_t tasks, const std::function<void(std::int64_t)>& f) {
    if (tasks <= 0) return;
    if (tasks == 1 || threads_ == 1 || in_task()) {
      for (std::int64_t i = 0; i < tasks; ++i) f(i);
      return;
    }
    std::lock_guard serial(run_mu_);  // one job at a time
    {
      std::lock_guard lock(mu_);
      job_.store(&f);
      tasks_.store(tasks);
      next_.store(0);
      pending_.store(tasks);
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    take_tasks();
    std::unique_lock lock(mu_);
    // also wait for every worker to leave take_tasks, so none can touch the next job's counter
    done_cv_.wait(lock, [this] { return pending_.load() == 0 && active_ == 0; });
    job_.store(nullptr);
    if (error_) std::rethrow_exception(error_);
  }

  static bool& in_task() noexcept {
    thread_local bool flag = false;
    return flag;
  }

 private:
  void take_tasks() {
    const bool was = in_task();
    in_task() = true;
    for (;;) {
      const std::int64_t i = next_.fetch_add(1);
      if (i >= tasks_.load()) break;
      try {
        (*job_.load())(i);
      } catch (...) {
        std::lock_guard lock(mu_);
        if (!error_) error_ = std::current_exception();
      }
      if (pending_.fetch_sub(1) == 1) {
        std::lock_guard lock(mu_);
        done_cv_.notify_all();
      }
    }
    in_task() = was;
  }

  void work() {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (!job_.load()) continue;
        ++active_;
      }
      take_tasks();
      std::lock_guard lock(mu_);
      if (--active_ == 0) done_cv_.notify_all();
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  std::atomic<const std::function<void(std::int64_t)>*> job_{nullptr};
  std::atomic<std::int64_t> tasks_{0};
  std::atomic<std::int64_t> next_{0};
  std::atomic<std::int64_t> pending_{0};
  std::exception_ptr error_;
  std::uint64_t generation_ = 0;
  int active_ = 0;  // workers inside take_tasks (guarded by mu_)
  bool stop_ = false;
};

inline int default_num_threads() {
  if (const char* s = std::getenv("EMBER_NUM_THREADS")) {
    const int n = std::atoi(s);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

struct pool_holder {
  std::mutex mu;
  std::shared_ptr<thread_pool> pool;
};
inline pool_holder& pool_slot() {
  static auto* h = new pool_holder;  // never destroyed: usable during static destruction
  return *h;
}

inline std::shared_ptr<thread_pool> current_pool() {
  auto& h = pool_slot();
  std::lock_guard lock(h.mu);
  if (!h.pool) h.pool = std::make_shared<thread_pool>(default_num_threads());
  return h.pool;
}

}  // namespace detail

/// Threads used by ember's parallel loops (default: the hardware's cores, or
/// EMBER_NUM_THREADS).
inline int get_num_threads() { return detail::current_pool()->size(); }

/// Sets the number of threads for later ops (1 = no parallelism).
inline void set_num_threads(int n) {
  detail::check(n >= 1, errc::value, "set_num_threads: expects n >= 1, got ", n);
  auto& h = detail::pool_slot();
  std::shared_ptr<detail::thread_pool> old;
  {
    std::lock_guard lock(h.mu);
    if (h.pool && h.pool->size() == n) return;
    old = std::move(h.pool);
    h.pool = std::make_shared<detail::thread_pool>(n);
  }
}

namespace detail {

/// A non-owning reference to a chunk body f(begin, end). Note [One parallel core]:
/// parallel_for is a thin template around one non-template core, parallel_chunks. Every
/// elementwise kernel (each expression type, each traversal) has its own loop body; before,
/// each body also instantiated the pool logic and a std::function (with its manager and type
/// name), about 1.8 MB of a test file's 24 MB of -O0 code. Now a body costs one thunk.
struct chunk_body {
  void* obj;
  void (*call)(void*, std::int64_t, std::int64_t);
};

/// Cuts [begin, end) into at most max_tasks contiguous chunks run over the pool.
inline void parallel_chunks(std::int64_t begin, std::int64_t end, std::int64_t max_tasks,
                            chunk_body f) {
  auto pool = current_pool();
  const std::int64_t tasks = std::min<std::int64_t>(pool->size(), max_tasks);
  if (tasks <= 1 || thread_pool::in_task()) {
    f.call(f.obj, begin, end);
    return;
  }
  const std::int64_t chunk = (end - begin + tasks - 1) / tasks;
  pool->run(tasks, [&](std::int64_t t) {
    const std::int64_t b = begin + t * chunk;
    const std::int64_t e = std::min(end, b + chunk);
    if (b < e) f.call(f.obj, b, e);
  });
}

}  // namespace detail

/// Runs f(begin_i, end_i) over [begin, end) cut into chunks of at least `grain` elements,
/// in parallel when the range is large enough. Chunks are contiguous and cover the range.
template <class F>
void parallel_for(std::int64_t begin, std::int64_t end, std::int64_t grain, F&& f) {
  const std::int64_t n = end - begin;
  if (n <= 0) return;
  const std::int64_t max_tasks = std::max<std::int64_t>(1, n / std::max<std::int64_t>(grain, 1));
  if (max_tasks <= 1) {  // small work: no pool access at all (no lock, no refcount)
    f(begin, end);
    return;
  }
  using body = std::remove_reference_t<F>;
  detail::parallel_chunks(
      begin, end, max_tasks,
      {const_cast<void*>(static_cast<const void*>(std::addressof(f))),
       [](void* o, std::int64_t b, std::int64_t e) { (*static_cast<body*>(o))(b, e); }});
}

}  // namespace ember
