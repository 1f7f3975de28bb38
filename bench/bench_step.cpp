// The full training step on the CPU: GanStep::accumulate over one batch (G
// forward; D on real, backward; D on the fakes, backward for D and for G) and
// Adam on both nets — what gannf-train does per iteration, minus data loading.
// Counters: images/s, the process's peak RSS in MB, and cpu_share (the share of
// the cores the process held while timed: well below 1 means other work on the
// machine slowed this figure down).
//
// Cases: 64x64x3 (the reference DCGAN) and 32x32x1, batch 64, nz 100, f 64
// unless flags say otherwise. bench/peer/torch_step.py times the same step in
// PyTorch; bench/report.sh puts the two side by side.
//
// ru_maxrss is the peak of the whole process so far: the 32x32 case runs first
// so that the 64x64 figure is its own, and report.sh runs each case in a
// process of its own anyway.
//
// Before timing, one step's gradients are compared with the same step in
// double precision at batch 4; a mismatch exits 1. The check runs in a forked
// child, so that its double-precision nets never count towards the peak RSS
// reported here (fork before any OpenMP region has started a thread team).
//
// --breakdown=1 first runs a few steps with every op timed alone
// (bench/op_timer.h) and prints where a step's time goes.
//
//   bench_step [--batch=64] [--nz=100] [--f=64] [--check=1] [--breakdown=0]
//              [Google Benchmark flags]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.h"
#include "dcgan.h"
#include "step_trainer.h"

using namespace gannf;

namespace {

struct Case {
  int image_size, nc;
};

std::string case_name(const DcganConfig& c, int B) {
  return "step/" + std::to_string(c.image_size) + "x" + std::to_string(c.image_size) + "x" +
         std::to_string(c.nc) + "/B" + std::to_string(B);
}

template <class T>
std::vector<T> cast(const std::vector<float>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// Relative L2 distance of float gradients from double ones over a whole net's
// buffer. At batch 4, BN divides by small batch variances, which amplifies
// float rounding; seen: about 1e-6. 1e-4 leaves room for that and is far below
// what a wrong kernel gives (O(1)).
bool check_step(const DcganConfig& cfg, double& worst) {
  const int B = 4;
  bench::StepTrainer<float> f("cpu", cfg, B, 42);
  bench::StepTrainer<double> d("cpu", cfg, B, 42);
  d.G.set_params(cast<double>(f.G.get_params()));
  d.D.set_params(cast<double>(f.D.get_params()));
  const auto [real, noise] = f.random_batch(B, 1);
  f.step->zero_grads();
  d.step->zero_grads();
  const StepStats sf = f.step->accumulate(real.data(), noise.data(), B, 1.0 / B);
  const auto rd = cast<double>(real), nd = cast<double>(noise);
  const StepStats sd = d.step->accumulate(rd.data(), nd.data(), B, 1.0 / B);
  bool ok = std::isfinite(sf.d_loss) && std::isfinite(sf.g_loss) &&
            std::fabs(sf.d_loss - sd.d_loss) < 1e-3 * (1 + std::fabs(sd.d_loss));
  for (auto [nf, nd2] : {std::pair{&f.G, &d.G}, std::pair{&f.D, &d.D}}) {
    const auto gf = nf->get_grads();
    const auto gd = nd2->get_grads();
    double num = 0, den = 0;
    for (size_t i = 0; i < gf.size(); i++) {
      num += (gf[i] - gd[i]) * (gf[i] - gd[i]);
      den += gd[i] * gd[i];
    }
    const double rel = std::sqrt(num / den);
    worst = std::max(worst, rel);
    if (!(rel < 1e-4) || den == 0) {
      std::fprintf(stderr, "FAIL %s: %s gradients differ from double precision by %.3g (rel. L2)\n",
                   cfg.describe().c_str(), nf->name().c_str(), rel);
      ok = false;
    }
  }
  if (!ok)
    std::fprintf(stderr, "FAIL %s: losses float %.6g/%.6g, double %.6g/%.6g\n",
                 cfg.describe().c_str(), sf.d_loss, sf.g_loss, sd.d_loss, sd.g_loss);
  return ok;
}

void bm_step(benchmark::State& st, DcganConfig cfg, int B) {
  bench::StepTrainer<float> t("cpu", cfg, B, 42);
  const auto [real, noise] = t.random_batch(B, 2);
  t.train_step(real.data(), noise.data(), B);  // warm-up: first touch of every buffer
  gannf::bench::CpuShare share;
  for (auto _ : st) {
    StepStats s = t.train_step(real.data(), noise.data(), B);
    benchmark::DoNotOptimize(s);
  }
  if (!t.be->all_finite(t.G.params(), t.G.num_params()) ||
      !t.be->all_finite(t.D.params(), t.D.num_params()))
    st.SkipWithError("parameters became non-finite");
  st.counters["images"] =
      benchmark::Counter((double)B * st.iterations(), benchmark::Counter::kIsRate);
  st.counters["peak_RSS_MB"] = gannf::bench::peak_rss_mb();
  st.counters["cpu_share"] = share.get(omp_get_max_threads());
  st.SetLabel(cfg.describe());
}

double counter(const gannf::bench::Result& r, const char* name) {
  auto it = r.counters.find(name);
  return it == r.counters.end() ? 0.0 : (double)it->second;
}

}  // namespace

int main(int argc, char** argv) {
  gannf::cpu::blas_ensure_coretype(argc, argv);
  gannf::bench::Flags flags(argc, argv, "bench_step",
                            "One full training step (G's and D's gradients, Adam) on the CPU, at 32x32x1 and\n"
                            "64x64x3; its RESULT lines compare with bench/peer/torch_step.py's.",
                            {{"batch", 64, "images per step"},
                             {"nz", 100, "size of the noise vector z"},
                             {"f", 64, "network width (ngf = ndf)"},
                             {"check", 1, "1: check one step against double precision before timing"},
                             {"breakdown", 0, "1: print where a step goes, op by op"}});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    std::fputs(flags.help().c_str(), stderr);
    return 2;
  }
  FILE* info = flags.format() != "console" ? stderr : stdout;
  gannf::bench::print_banner(info);
  const int B = flags["batch"];
  std::vector<DcganConfig> cases;
  for (Case c : {Case{32, 1}, Case{64, 3}}) {
    DcganConfig cfg;
    cfg.image_size = c.image_size;
    cfg.nc = c.nc;
    cfg.nz = flags["nz"];
    cfg.ngf = cfg.ndf = flags["f"];
    try {
      cfg.validate();
      if (B < 2) throw std::invalid_argument("batch must be at least 2 (batch norm)");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 2;
    }
    cases.push_back(cfg);
  }
  if (flags["check"]) {
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      bool ok = true;
      double worst = 0;
      for (const auto& cfg : cases) ok &= check_step(cfg, worst);
      if (ok)
        std::fprintf(info,
                     "# correctness: one step's G and D gradients match double precision "
                     "(batch 4, every case; worst rel. L2 difference %.1e)\n",
                     worst);
      std::fflush(nullptr);
      _exit(ok ? 0 : 1);
    }
    int status = 0;
    const bool ok =
        pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {
      std::fprintf(stderr, "bench_step: float step disagrees with double; not timing it\n");
      return 1;
    }
  }
  if (flags["breakdown"]) {
    char roof[96];
    std::snprintf(roof, sizeof roof, "a %d-thread copy of 256 MB runs at %.1f GB/s here",
                  omp_get_max_threads(), bench::copy_bandwidth_gbs());
    for (const auto& cfg : cases)
      bench::print_step_breakdown(info, "cpu", cfg, B, 1, 3, case_name(cfg, B) + " on the CPU", roof);
  }
  for (const auto& cfg : cases)
    benchmark::RegisterBenchmark(case_name(cfg, B).c_str(),
                                 [cfg, B](benchmark::State& st) { bm_step(st, cfg, B); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);

  gannf::bench::Collector col(flags.format());
  benchmark::RunSpecifiedBenchmarks(&col);
  // One line per case, in the same shape as bench/peer/torch_step.py's.
  for (const auto& cfg : cases) {
    const auto* r = col.get(case_name(cfg, B));
    if (!r) continue;
    std::fprintf(info,
                 "RESULT impl=gannf device=cpu image=%d nc=%d batch=%d threads=%d "
                 "images_per_s=%.1f reps=%d peak_rss_mb=%.0f cpu_share=%.2f\n",
                 cfg.image_size, cfg.nc, B, omp_get_max_threads(), B / r->seconds, r->reps,
                 counter(*r, "peak_RSS_MB"), counter(*r, "cpu_share"));
  }
  benchmark::Shutdown();
  return 0;
}
