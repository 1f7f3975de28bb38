// What bench_ops and bench_step share: aligned buffers, the start-up banner,
// our own command-line flags (on the programs' parser, cli.h), peak RSS, and a
// reporter that keeps the median of every benchmark so that a program can
// print ratios at the end.
#pragma once
#include <benchmark/benchmark.h>
#include <omp.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "blas_runtime.h"
#include "cli.h"
#include "rng.h"

namespace gannf::bench {

// 64-byte aligned float array (what the CPU back end allocates, so the kernels
// see the same alignment here as in training).
class Floats {
 public:
  Floats() = default;
  explicit Floats(size_t n) : n_(n) {
    p_ = (float*)std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64 + 64);
    if (!p_) throw std::bad_alloc();
    std::memset(p_, 0, n * sizeof(float));
  }
  ~Floats() { std::free(p_); }
  Floats(Floats&& o) noexcept : n_(o.n_), p_(o.p_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  Floats& operator=(Floats&& o) noexcept {
    std::swap(n_, o.n_);
    std::swap(p_, o.p_);
    return *this;
  }
  float* data() { return p_; }
  const float* data() const { return p_; }
  size_t size() const { return n_; }
  float& operator[](size_t i) { return p_[i]; }
  void fill_uniform(Rng& r, float lo = -1.f, float hi = 1.f) {
    for (size_t i = 0; i < n_; i++) p_[i] = (float)(lo + (hi - lo) * r.uniform());
  }
  void fill_normal(Rng& r, float mean, float std) {
    for (size_t i = 0; i < n_; i++) p_[i] = (float)(mean + std * r.normal());
  }

 private:
  size_t n_ = 0;
  float* p_ = nullptr;
};

// The memory roof of the memory-bound ops: the best of 5 copies of a 256 MB
// float array into another (past any cache) by all the OpenMP threads, in
// GB/s counting the read and the write. Kernels that read and write each
// element once (batch norm, activations, Adam) cannot beat it by much.
inline double copy_bandwidth_gbs() {
  const size_t n = (size_t)64 << 20;
  Floats a(n), b(n);  // zero-filled: pages are touched before the timing
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    timespec t0{}, t1{};
    clock_gettime(CLOCK_MONOTONIC, &t0);
#pragma omp parallel
    {
      const size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
      const size_t lo = n * t / nt, hi = n * (t + 1) / nt;
      std::memcpy(b.data() + lo, a.data() + lo, (hi - lo) * sizeof(float));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    best = std::max(best, 2.0 * (double)n * sizeof(float) / s / 1e9);
  }
  return best;
}

// Peak resident set of this process so far, in MB (ru_maxrss is in KiB on Linux).
inline double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

// Share of `threads` cores this process held over a stretch of wall time: its
// CPU time (user + system) over wall time x threads. About 1 on an idle
// machine (OpenMP threads spin while they wait, so waiting counts); well below
// 1 when other work took the cores, which makes the timing pessimistic.
class CpuShare {
 public:
  CpuShare() { reset(); }
  void reset() {
    wall0_ = wall();
    cpu0_ = cpu();
  }
  double get(int threads) const {
    const double w = wall() - wall0_;
    return w > 0 ? (cpu() - cpu0_) / (w * threads) : 0.0;
  }

 private:
  static double wall() {
    timespec t{};
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
  }
  static double cpu() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  }
  double wall0_ = 0, cpu0_ = 0;
};

// Our flags (--name=N or --name N, whole numbers) are taken out of argv before
// Google Benchmark sees it (it refuses flags it does not know); the rest is left
// for it. --help lists ours, then Google Benchmark's.
class Flags {
 public:
  struct Flag {
    std::string name;
    int value;  // the default
    std::string help;
  };
  Flags(int& argc, char** argv, const std::string& program, const std::string& about, const std::vector<Flag>& flags)
      : p_(program, "usage: " + program + " [options] [Google Benchmark's --benchmark_* flags]\n" + about) {
    for (const Flag& f : flags) {
      v_[f.name] = f.value;
      p_.opt(f.name, &v_[f.name], f.help);
    }
    p_.keep_unknown();
    try {
      p_.parse(argc, argv);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", program.c_str(), e.what());
      std::exit(2);
    }
    rest_ = p_.rest();
    if (p_.help_requested) {
      std::fputs(p_.help().c_str(), stdout);
      std::fputs("\nGoogle Benchmark's flags:\n", stdout);
      rest_.push_back("--help");  // Google Benchmark prints its own and exits
    }
    for (const std::string& a : rest_)
      if (a.rfind("--benchmark_format=", 0) == 0) format_ = a.substr(19);
    argc = 1 + (int)rest_.size();
    for (size_t i = 0; i < rest_.size(); i++) argv[1 + i] = rest_[i].data();
    argv[argc] = nullptr;
  }
  int operator[](const std::string& k) const { return v_.at(k); }
  const std::string& format() const { return format_; }
  std::string help() const { return p_.help(); }

 private:
  cli::Parser p_;
  std::map<std::string, int> v_;  // node-based: the parser keeps pointers into it
  std::vector<std::string> rest_;  // argv points into these for Google Benchmark
  std::string format_ = "console";
};

inline void print_banner(FILE* f) {
  const char* ct = std::getenv("OPENBLAS_CORETYPE");
  std::fprintf(f, "# %s, %d OpenMP threads\n# %s (OPENBLAS_CORETYPE=%s)\n", cpu::cpu_model().c_str(),
               omp_get_max_threads(), gannf::cpu::blas_summary().c_str(), ct ? ct : "unset");
}

// The median (or, without --benchmark_repetitions, the single) result of one
// benchmark: seconds per iteration and its counters.
struct Result {
  double seconds = 0;
  benchmark::UserCounters counters;
  int reps = 0;
};

// Forwards everything to the reporter the user asked for and keeps, per
// benchmark name, the median real time per iteration.
class Collector : public benchmark::BenchmarkReporter {
 public:
  explicit Collector(const std::string& format) {
    // CSV is deprecated in Google Benchmark; json and console are offered.
    if (format == "json")
      inner_ = std::make_unique<benchmark::JSONReporter>();
    else
      inner_ = std::make_unique<benchmark::ConsoleReporter>(
          isatty(1) ? benchmark::ConsoleReporter::OO_ColorTabular
                    : benchmark::ConsoleReporter::OO_Tabular);
  }
  bool ReportContext(const Context& c) override { return inner_->ReportContext(c); }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.error_occurred) continue;
      const std::string& name = r.run_name.function_name;
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      auto& res = results_[name];
      if (r.run_type == Run::RT_Iteration) {
        // (Without --benchmark_report_aggregates_only the repetitions come
        // first; keep the first until the median arrives.)
        if (++res.reps > 1) continue;
      } else if (!median) {
        continue;
      } else {
        res.reps = (int)r.repetitions;
      }
      res.seconds = r.GetAdjustedRealTime() * unit_seconds(r.time_unit);
      res.counters = r.counters;
    }
    inner_->ReportRuns(runs);
  }
  void Finalize() override { inner_->Finalize(); }
  const Result* get(const std::string& name) const {
    auto it = results_.find(name);
    return it == results_.end() ? nullptr : &it->second;
  }

 private:
  static double unit_seconds(benchmark::TimeUnit u) {
    switch (u) {
      case benchmark::kNanosecond:
        return 1e-9;
      case benchmark::kMicrosecond:
        return 1e-6;
      case benchmark::kMillisecond:
        return 1e-3;
      default:
        return 1.0;
    }
  }
  std::unique_ptr<benchmark::BenchmarkReporter> inner_;
  std::map<std::string, Result> results_;
};

}  // namespace gannf::bench
