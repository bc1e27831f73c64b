// A tiny benchmark harness (no Google Benchmark): a suite of competitors is timed with their
// repetitions interleaved (A B C A B C ...), so that slow drifts of a noisy VM (frequency,
// neighbours, page cache) hit every competitor alike; min and median are reported, with the
// ratio of each to a baseline measured in the same run.
//
//   bench::suite s("alloc+fill 64 MiB", {.reps = 15, .warmup = 2});
//   s.add("std::vector", [&] { std::vector<float> v(n, 1.f); bench::keep(v.data()); });
//   s.add("ember", [&] { auto t = ember::full<float>({n}, 1.f); bench::keep(t.data()); });
//   s.run();
//   s.print("std::vector");   // ratios relative to std::vector
//
// Environment: BENCH_REPS overrides every suite's repetition count.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace bench {

/// Keeps the compiler from optimizing away the computation that produced `p` (and any writes
/// to memory reachable from it): the pointer escapes into an opaque asm statement.
template <class T>
inline void keep(T* p) {
  asm volatile("" : : "g"(p) : "memory");
}
template <class T>
inline void keep(const T& v) {
  asm volatile("" : : "g"(&v) : "memory");
}

struct options {
  int reps = 15;        ///< timed samples per competitor
  int warmup = 2;       ///< untimed rounds before (also interleaved)
  int iters = 1;        ///< calls per sample; time is reported per call. Raise it for bodies
                        ///< under ~10 us: the clock reads (tens of ns on a VM) and the
                        ///< std::function call (a few ns) are amortized over the sample.
};

struct result {
  std::string name;
  std::vector<double> ns;  ///< per-call time of each sample, ns

  double min() const { return ns.empty() ? 0 : *std::min_element(ns.begin(), ns.end()); }
  double median() const {
    if (ns.empty()) return 0;
    std::vector<double> v = ns;
    std::sort(v.begin(), v.end());
    const std::size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  }
};

class suite {
 public:
  explicit suite(std::string title, options opt = {}) : title_(std::move(title)), opt_(opt) {
    if (const char* s = std::getenv("BENCH_REPS"))
      if (int r = std::atoi(s); r > 0) opt_.reps = r;
  }

  suite& add(std::string name, std::function<void()> fn) {
    cases_.push_back({std::move(name), std::move(fn)});
    return *this;
  }

  /// Times every competitor: warm-up rounds, then `reps` rounds; each round runs each
  /// competitor once (one sample of `iters` calls), in registration order.
  const std::vector<result>& run() {
    results_.assign(cases_.size(), {});
    for (std::size_t i = 0; i < cases_.size(); ++i) results_[i].name = cases_[i].name;
    for (int w = 0; w < opt_.warmup; ++w)
      for (auto& c : cases_) sample(c.fn);
    for (int r = 0; r < opt_.reps; ++r)
      for (std::size_t i = 0; i < cases_.size(); ++i)
        results_[i].ns.push_back(sample(cases_[i].fn));
    return results_;
  }

  /// A table: min and median per call, and both as ratios to `baseline` (a competitor's name;
  /// empty: the first). Ratio > 1 means slower than the baseline.
  void print(const std::string& baseline = {}) const {
    const result* base = results_.empty() ? nullptr : &results_.front();
    for (const auto& r : results_)
      if (r.name == baseline) base = &r;
    std::printf("\n== %s  (%d reps x %d calls, interleaved; ratio vs %s)\n", title_.c_str(),
                opt_.reps, opt_.iters, base ? base->name.c_str() : "-");
    std::printf("  %-34s %12s %12s %9s %9s\n", "", "min", "median", "min/x", "med/x");
    for (const auto& r : results_) {
      std::printf("  %-34s %12s %12s %9.2f %9.2f\n", r.name.c_str(), fmt(r.min()).c_str(),
                  fmt(r.median()).c_str(), base ? r.min() / base->min() : 0.0,
                  base ? r.median() / base->median() : 0.0);
    }
    std::fflush(stdout);
  }

  const std::vector<result>& results() const { return results_; }

 private:
  struct entry {
    std::string name;
    std::function<void()> fn;
  };

  double sample(const std::function<void()>& fn) const {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    for (int k = 0; k < opt_.iters; ++k) fn();
    const auto t1 = clock::now();
    return std::chrono::duration<double, std::nano>(t1 - t0).count() / opt_.iters;
  }

  static std::string fmt(double ns) {
    char buf[32];
    if (ns >= 1e6)
      std::snprintf(buf, sizeof buf, "%.3f ms", ns / 1e6);
    else if (ns >= 1e3)
      std::snprintf(buf, sizeof buf, "%.3f us", ns / 1e3);
    else
      std::snprintf(buf, sizeof buf, "%.1f ns", ns);
    return buf;
  }

  std::string title_;
  options opt_;
  std::vector<entry> cases_;
  std::vector<result> results_;
};

}  // namespace bench
